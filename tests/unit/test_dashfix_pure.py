"""Pure pieces of the dashboard fixes outside the dashboard: the operator's time zone
setting, PNG text chunks, signed export links, the retry message."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from PIL import Image
from pydantic import ValidationError

from core.config import Settings
from core.jobs import export_links
from core.jobs.lifecycle import RetryResult
from core.jobs.views import JobView
from core.storage import png_text


def test_dashboard_timezone_is_checked_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_TIMEZONE", "Europe/Paris")
    assert Settings().DASHBOARD_TIMEZONE == "Europe/Paris"
    monkeypatch.setenv("DASHBOARD_TIMEZONE", "Mars/Olympus_Mons")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [e["loc"][0] for e in caught.value.errors()] == ["DASHBOARD_TIMEZONE"]


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format="PNG")
    return out.getvalue()


def test_png_text_chunks_are_read_back_and_the_picture_is_untouched() -> None:
    original = _png()
    prompt = "a teapot, «studio» light — 茶"
    tagged = png_text.with_text(original, png_text.image_fields(
        prompt=prompt, model="gpt-image-1", provider="openai", job_id="J", task_id="T"))
    picture = Image.open(io.BytesIO(tagged))
    picture.load()
    assert picture.text["prompt"] == prompt  # type: ignore[attr-defined]
    assert picture.text["model"] == "openai/gpt-image-1"  # type: ignore[attr-defined]
    assert picture.text["job_id"] == "J"  # type: ignore[attr-defined]
    assert picture.tobytes() == Image.open(io.BytesIO(original)).tobytes()
    assert png_text.with_text(b"RIFF....WEBP", {"prompt": "x"}) == b"RIFF....WEBP"


def test_export_links_bind_job_expiry_and_key() -> None:
    job = uuid.uuid4()
    key = b"k"
    link = export_links.zip_link("http://127.0.0.1:1/", job, key, now=1000.0, ttl_s=60)
    query = dict(p.split("=") for p in link.split("?", 1)[1].split("&"))
    expires, sig = int(query["expires"]), query["sig"]
    assert link.startswith(f"http://127.0.0.1:1/api/exports/jobs/{job}/images.zip?")
    assert export_links.link_ok(key, job, expires, sig, now=1030.0)
    assert not export_links.link_ok(key, job, expires, sig, now=1061.0)  # expired
    assert not export_links.link_ok(key, uuid.uuid4(), expires, sig, now=1030.0)
    assert not export_links.link_ok(b"other", job, expires, sig, now=1030.0)
    assert not export_links.link_ok(key, job, expires + 1, sig, now=1030.0)
    assert not export_links.link_ok(key, job, expires, None, now=1030.0)


def test_retry_message_says_count_cost_and_refusals() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    view = JobView(uuid.uuid4(), "completed_with_errors", 3, 1, 2, 0, "none", 1, "openai",
                   "gpt-image-1", "1024x1024", "medium", Decimal("0.12"), now, now, None,
                   None)
    dry = RetryResult(1, view, refusals_left=1, estimated_cost_usd=Decimal("0.042"),
                      dry_run=True)
    assert dry.message() == ("Would requeue 1 failed task(s) (estimated $0.0420); "
                             "1 refusal(s) left alone (a retry would be refused again).")
    assert RetryResult(2, view).message() == "Requeued 2 failed task(s)."
    assert dry.body()["estimated_cost_usd"] == 0.042 and dry.body()["dry_run"] is True
