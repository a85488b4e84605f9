"""Pure parts of batch mode and pricing: JSONL lines, result parsing, line splitting,
the price file (and PRICES_FILE overrides), billed cost, the model list."""

from __future__ import annotations

import base64
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from core.batch import jsonl
from core.batch.runner import iter_lines
from core.billing import prices
from core.errors import ConfigError
from core.providers import image_models

TASK = uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_request_line_is_one_json_line_with_the_task_id_as_custom_id() -> None:
    line = jsonl.request_line(TASK, "a chair", "gpt-image-2", "1024x1024", "low",
                              {"output_format": "webp", "output_compression": 80})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    body = json.loads(line)
    assert body == {"custom_id": str(TASK), "method": "POST", "url": "/v1/images/generations",
                    "body": {"model": "gpt-image-2", "prompt": "a chair", "n": 1,
                             "size": "1024x1024", "quality": "low", "output_format": "webp",
                             "output_compression": 80}}


def _ok_line(image: bytes, **usage: int) -> bytes:
    return json.dumps({"id": "batch_req_1", "custom_id": str(TASK), "response": {
        "status_code": 200, "request_id": "r", "body": {
            "data": [{"b64_json": base64.b64encode(image).decode()}], "output_format": "jpeg",
            "usage": {"input_tokens": usage.get("input", 0), "output_tokens": usage.get("out", 0),
                      "input_tokens_details": {"image_tokens": usage.get("img", 0),
                                               "text_tokens": 0}}}}}).encode()


def test_a_success_line_gives_the_image_bytes_and_the_usage() -> None:
    result = jsonl.parse_result(_ok_line(b"\x89PNG-bytes", input=30, out=1056, img=10))
    assert isinstance(result, jsonl.Succeeded)
    assert (result.task_id, result.image, result.output_format) == (TASK, b"\x89PNG-bytes",
                                                                    "jpeg")
    assert result.usage == prices.Usage(input_tokens=30, output_tokens=1056, input_image_tokens=10)
    assert result.usage.input_text_tokens == 20
    assert jsonl.peek_custom_id(_ok_line(b"x")) == TASK


@pytest.mark.parametrize(("record", "code", "retryable"), [
    # a refusal in the output file: final
    ({"response": {"status_code": 400, "body": {"error": {
        "code": "moderation_blocked", "message": "rejected"}}}}, "moderation_blocked", False),
    # a server error in the error file: the next batch may succeed
    ({"response": {"status_code": 500, "body": {"error": {"code": "server_error",
                                                           "message": "oops"}}}},
     "server_error", True),
    # not run before the window closed: the next batch
    ({"response": None, "error": {"code": "batch_expired", "message": "expired"}},
     "batch_expired", True),
    # 200 without an image: retry
    ({"response": {"status_code": 200, "body": {"data": []}}}, "empty_response", True),
    # rate limited inside the batch
    ({"response": {"status_code": 429, "body": {}}}, "http_429", True),
])
def test_error_lines_fail_or_go_to_the_next_batch(record: dict[str, object], code: str,
                                                  retryable: bool) -> None:
    result = jsonl.parse_result(json.dumps({"custom_id": str(TASK), **record}).encode())
    assert isinstance(result, jsonl.Failed)
    assert (result.code, result.retryable) == (code, retryable)


def test_unreadable_lines_are_refused() -> None:
    for bad in (b"not json", b'{"custom_id": "not-a-uuid"}', b"{}"):
        with pytest.raises(jsonl.BadLine):
            jsonl.parse_result(bad)


def test_lines_are_split_across_chunks_and_blank_lines_dropped() -> None:
    chunks = [b'{"a":', b'1}\n{"b"', b":2}\n\n", b'{"c":3}']
    assert list(iter_lines(iter(chunks))) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_token_cost_is_usage_times_rates_and_batch_is_half() -> None:
    table = prices.load_prices(None)
    usage = prices.Usage(input_tokens=50, output_tokens=4160, input_image_tokens=20)
    realtime = prices.task_cost_usd("gpt-image-2", usage, table=table)
    # 30 text x $5 + 20 image x $8 + 4160 output x $30, per million
    assert realtime == Decimal("0.125110")
    assert prices.task_cost_usd("gpt-image-2", usage, mode="batch", table=table) == realtime / 2
    assert prices.task_cost_usd("gpt-image-2.6-flare", usage, table=table) is None


def test_estimates_come_from_the_published_per_image_figures() -> None:
    assert prices.price_per_image("openai", "gpt-image-2", "1024x1024", "medium") == Decimal(
        "0.053")
    assert prices.estimate_cost_usd("openai", "gpt-image-2", "1024x1024", "high", 10,
                                  mode="batch") == Decimal("1.0550")
    # auto: budget for the dearest published combination
    assert prices.price_per_image("openai", "gpt-image-1.5", "auto", "auto") == Decimal("0.2")
    assert prices.price_per_image("openai", "gpt-image-2", "1024x1536", "low") is None
    assert prices.price_per_image("demo", "demo", "1024x1024", "low") == 0


def test_every_price_row_has_a_date_and_a_source() -> None:
    import csv

    with prices.DEFAULT_PRICES_FILE.open() as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["as_of"] and r["source"] for r in rows)
    assert {"gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini", "gpt-image-1"} <= {
        r["model"] for r in rows}


def test_prices_file_override_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "prices.csv"
    good.write_text("model,rate,size,quality,usd,as_of,source\n"
                    "gpt-image-2.6-flare,text_input_per_1m,,,1,2026-12-01,ops\n"
                    "gpt-image-2.6-flare,image_input_per_1m,,,2,2026-12-01,ops\n"
                    "gpt-image-2.6-flare,image_output_per_1m,,,10,2026-12-01,ops\n")
    table = prices.load_prices(str(good))
    assert prices.task_cost_usd("gpt-image-2.6-flare", prices.Usage(0, 1_000_000),
                              table=table) == Decimal(10)
    bad = tmp_path / "bad.csv"
    bad.write_text("model,rate,size,quality,usd,as_of,source\nx,per_image,1,low,abc,d,s\n")
    with pytest.raises(ConfigError, match=r"bad\.csv line 2: usd .abc. is not a number"):
        prices.load_prices(str(bad))
    partial = tmp_path / "partial.csv"
    partial.write_text("model,rate,size,quality,usd,as_of,source\n"
                       "m,text_input_per_1m,,,1,d,s\n")
    with pytest.raises(ConfigError, match="lacks image_input_per_1m"):
        prices.load_prices(str(partial))
    with pytest.raises(ConfigError, match="cannot be read"):
        prices.load_prices(str(tmp_path / "missing.csv"))


def test_the_model_list_follows_the_installed_openai_package() -> None:
    assert {"gpt-image-1", "dall-e-2", "dall-e-3"} <= image_models.shut_down_models()
    offered = image_models.selectable_models()
    assert "gpt-image-2" in offered and "gpt-image-1" not in offered
    assert not any(m.startswith("dall-e") for m in offered)
    assert set(image_models.batch_models()) == {m for m in offered
                                                if m.startswith("gpt-image-")}
    assert image_models.default_model(None) == "gpt-image-2"
    assert image_models.default_model("gpt-image-1-mini") == "gpt-image-1-mini"
