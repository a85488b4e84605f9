"""Billed cost of a mixed job: a batch-mode job whose batch expires part way, with the
operator's choice to finish in realtime. Some tasks are billed at batch price, the rest at
the realtime price; every task's cost must be exactly its usage (what the stub answered)
times the rates in the data file, and the job's total the sum, in the API and the CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import Engine, text

from core.billing import charges
from core.billing.prices import DEFAULT_PRICES_FILE
from core.jobs import export
from testing.openai_batch_stub import usage_for
from testing.openai_stub import OpenAIStub
from tests.conftest import WorkerProcess, wait_for


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


def _rates(model: str) -> dict[str, Decimal]:
    """Read the data file by hand (not through core.billing.prices), so the test checks the code."""
    with DEFAULT_PRICES_FILE.open() as f:
        return {r["rate"]: Decimal(r["usd"]) for r in csv.DictReader(f)
                if r["model"] == model and r["rate"] != "per_image"}


def test_mixed_job_cost_is_usage_times_rates_and_the_total_is_the_sum(
    start_worker: Callable[..., WorkerProcess], stub: OpenAIStub, engine: Engine
) -> None:
    worker = start_worker(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
                          OPENAI_API_KEY=stub.api_key, OPENAI_TIMEOUT_S="10",
                          BATCH_CHUNK_SIZE="10", BATCH_POLL_S="0.2", STORAGE_BACKEND="local")
    stub.batches.expire_next(done=4)
    prompts = [f"a {'very ' * i}tall bookshelf" for i in range(10)]
    response = httpx.post(worker.url + "/api/admin/generate/batch", timeout=30, json={
        "prompts": prompts, "model": "gpt-image-2", "size": "1024x1024", "quality": "high",
        "mode": "batch", "batch_fallback": "realtime"})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    wait_for(lambda: httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status",
                               timeout=10).json()["progress_percentage"] == 100.0,
             timeout_s=120, message="the job to finish")

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, prompt, status, billed_mode, input_tokens, input_image_tokens, "
            "output_tokens FROM generation_tasks WHERE job_id = :j"), {"j": job_id}).all()
    assert {r.status for r in rows} == {"succeeded"}
    modes = sorted(r.billed_mode or "realtime" for r in rows)
    assert modes == ["batch"] * 4 + ["realtime"] * 6
    assert stub.snapshot().requests == 6 and stub.batches.snapshot().requests_run == 4

    rates = _rates("gpt-image-2")
    total = Decimal(0)
    for r in rows:
        if r.billed_mode == "batch":
            sent = usage_for(r.prompt, "high")
            text_in, out, factor = sent["input_tokens"], sent["output_tokens"], Decimal("0.5")
        else:  # the realtime stub's usage: 10 + words input, 1056 output
            text_in, out, factor = 10 + len(r.prompt.split()), 1056, Decimal(1)
        assert (r.input_tokens, r.output_tokens) == (text_in, out)
        expected = (Decimal(text_in) * rates["text_input_per_1m"]
                    + Decimal(out) * rates["image_output_per_1m"]) / 1_000_000 * factor
        got = charges.task_cost_usd("gpt-image-2", "openai", input_tokens=r.input_tokens,
                                    output_tokens=r.output_tokens,
                                    input_image_tokens=r.input_image_tokens,
                                    billed_mode=r.billed_mode)
        assert got == expected, r.prompt
        total += expected

    billed = charges.job_cost(job_id, "gpt-image-2", "openai", engine=engine)  # type: ignore[arg-type]
    assert billed.actual_usd == total and billed.billed_tasks == 10
    detail = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}", timeout=10).json()
    assert detail["actual_cost_usd"] == pytest.approx(float(total), abs=1e-9)
    assert detail["mode"] == "batch" and detail["estimated_cost_usd"] is not None
    print(f"\nbilled: {total} USD for 10 tasks (4 batch, 6 realtime); "
          f"estimate {detail['estimated_cost_usd']}")

    out = io.StringIO()
    export.write_tasks_csv(job_id, out, engine=engine)  # type: ignore[arg-type]
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert sum(Decimal(row["cost_usd"]) for row in table) == total


def test_bad_batch_options_are_refused_naming_the_field(
    start_worker: Callable[..., WorkerProcess], stub: OpenAIStub
) -> None:
    worker = start_worker(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
                          OPENAI_API_KEY=stub.api_key)
    cases = [
        ({"mode": "fast"}, "mode", "must be one of realtime, batch"),
        ({"model": "gpt-image-1"}, "model", "shut down"),
        ({"mode": "batch", "model": "chatgpt-image-latest", "confirm_unknown_price": True},
         "model", "not offered in batch mode"),
        ({"model": "gpt-image-2.6-flare"}, "model", "confirm_unknown_price"),
        ({"output_format": "gif"}, "output_format", "png, webp, jpeg"),
        ({"output_compression": 50}, "output_compression", "webp or jpeg"),
        ({"output_format": "jpeg", "background": "transparent"}, "background", "png or webp"),
        ({"moderation": "off"}, "moderation", "auto, low"),
        ({"batch_fallback": "drop"}, "batch_fallback", "batch, realtime"),
    ]
    for extra, field, words in cases:
        response = httpx.post(worker.url + "/api/admin/generate/batch", timeout=30,
                              json={"prompts": ["a chair"], **extra})
        assert response.status_code == 422, (extra, response.text)
        body = response.json()
        assert body["field"] == field and words in body["message"], (extra, body)
    assert stub.batches.snapshot().files_uploaded == 0


def test_realtime_jobs_send_their_image_options_with_every_call(
    start_worker: Callable[..., WorkerProcess], stub: OpenAIStub, engine: Engine
) -> None:
    worker = start_worker(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
                          OPENAI_API_KEY=stub.api_key, OPENAI_TIMEOUT_S="10")
    response = httpx.post(worker.url + "/api/admin/generate/batch", timeout=30, json={
        "prompts": ["a chair", "a lamp"], "model": "gpt-image-2", "quality": "low",
        "output_format": "jpeg", "output_compression": 60, "background": "opaque",
        "moderation": "low"})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    wait_for(lambda: httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status",
                               timeout=10).json()["status"] == "completed",
             timeout_s=60, message="the realtime job")
    assert len(stub.request_bodies) == 2
    for body in stub.request_bodies:
        assert (body["model"], body["output_format"], body["output_compression"],
                body["background"], body["moderation"]) == (
            "gpt-image-2", "jpeg", 60, "opaque", "low")
