"""With Supabase Storage (supabase-py against testing/storage_stub.py, a real HTTP
server on loopback) the gallery hands the browser bucket URLs, and the ZIP export reads
the images back through the same Storage interface."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine

from core.config import Settings
from dashboard import data
from testing.storage_stub import StorageStub
from tests.dashboard.conftest import open_page, seeded_job

BUCKET = "generated-images"


@pytest.fixture
def stub() -> Iterator[StorageStub]:
    with StorageStub(bucket=BUCKET) as server:
        yield server


@pytest.fixture
def supabase_env(env: dict[str, str], stub: StorageStub) -> dict[str, str]:
    env.update(STORAGE_BACKEND="supabase", SUPABASE_URL=stub.url, SUPABASE_KEY=stub.key,
               SUPABASE_BUCKET=BUCKET)
    return env


@pytest.mark.usefixtures("supabase_env")
def test_gallery_uses_bucket_urls_and_zip_reads_the_bucket(
    settings: Settings, engine: Engine, stub: StorageStub
) -> None:
    job = seeded_job(settings, engine, ["a red chair", "a brass lamp"])
    assert job.completed_tasks == 2
    assert len([k for k in stub.objects if k.startswith(f"{BUCKET}/{job.id}/")]) == 4

    at = open_page("app_pages/job.py", job_id=str(job.id))
    urls = [url for image in at.image for url in image.value]
    assert len(urls) == 2
    assert all(url.startswith(stub.url) and "/thumbs/" in url for url in urls)
    for url in urls:  # what the browser would load
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200 and response.content[8:12] == b"WEBP"

    with zipfile.ZipFile(io.BytesIO(data.images_zip(job.id)())) as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(pngs) == 2 and all(zf.read(n).startswith(b"\x89PNG") for n in pngs)
