"""The images ZIP streamed by a real worker over HTTP: a signed link from the dashboard's
helper works for its job only and until it expires; the ZIP holds every image, each PNG
carries its prompt, model and job id as text chunks, and manifest.csv says per image
what was asked, of which model, at what size, quality and cost."""

from __future__ import annotations

import csv
import io
import time
import uuid
import zipfile
from collections.abc import Callable
from typing import Any

import httpx
from PIL import Image

from core.config import Settings
from core.jobs import export_links
from tests.conftest import WorkerProcess, wait_for

KEY = "export-test-key"
ADMIN = {"X-API-Key": KEY}
PROMPTS = ["a red chair", "a brass lamp, studio light", "[[demo:moderation_blocked]] no"]


def _job(worker: WorkerProcess) -> str:
    body = {"prompts": PROMPTS, "style": "watercolor", "count_per_prompt": 1}
    job = httpx.post(worker.url + "/api/admin/generate/batch", json=body, headers=ADMIN,
                     timeout=30).json()

    def done() -> Any:
        status = httpx.get(f"{worker.url}/api/admin/jobs/{job['id']}/status",
                           headers=ADMIN, timeout=10).json()
        return status if status["progress_percentage"] == 100.0 else None

    wait_for(done, timeout_s=60, message="job finished")
    return str(job["id"])


def test_signed_link_streams_images_with_text_chunks_and_manifest(
    start_worker: Callable[..., WorkerProcess], settings: Settings
) -> None:
    worker = start_worker(API_KEY=KEY, DEMO_IMAGE_PX="64")
    job_id = _job(worker)
    key = export_links.signing_key(Settings(API_KEY=KEY))  # type: ignore[arg-type]
    link = export_links.zip_link(worker.url, uuid.UUID(job_id), key)

    response = httpx.get(link, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert "content-length" not in response.headers  # streamed, not built then sent
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        names = zf.namelist()
        assert len(names) == 3 and names[-1] == "manifest.csv"
        manifest = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
        pictures = {n: Image.open(io.BytesIO(zf.read(n))) for n in names[:2]}
    by_file = {row["file"]: row for row in manifest if row["file"]}
    assert set(by_file) == set(pictures)
    assert {r["prompt"] for r in by_file.values()} == set(PROMPTS[:2])
    for name, picture in pictures.items():
        row = by_file[name]
        assert row["prompt"] in row["styled_prompt"] and "watercolor" in (
            row["styled_prompt"].lower())
        assert (row["model"], row["size"], row["quality"]) == (
            "demo", "1024x1024", "medium")
        assert row["cost_usd"] != ""
        text = picture.text  # type: ignore[attr-defined]
        assert text["prompt"] == row["styled_prompt"]
        assert text["job_id"] == job_id and text["task_id"] == row["task_id"]
        assert text["model"] == "demo/demo"

    # The link names one job, expires, and cannot be forged or reused elsewhere.
    other = link.replace(job_id, str(uuid.uuid4()))
    assert httpx.get(other, timeout=10).status_code == 401
    forged = export_links.zip_link(worker.url, uuid.UUID(job_id), b"not the key")
    assert httpx.get(forged, timeout=10).status_code == 401
    old = export_links.zip_link(worker.url, uuid.UUID(job_id), key,
                                now=time.time() - 2 * export_links.LINK_TTL_S)
    assert httpx.get(old, timeout=10).status_code == 401
    plain = f"{worker.url}{export_links.zip_path(uuid.UUID(job_id))}"
    assert httpx.get(plain, timeout=10).status_code == 401
    assert httpx.get(plain, headers=ADMIN, timeout=30).status_code == 200  # the admin key
    missing = export_links.zip_link(worker.url, uuid.uuid4(), None)
    assert httpx.get(missing, headers=ADMIN, timeout=10).status_code == 404
