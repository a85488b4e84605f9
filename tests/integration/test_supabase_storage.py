"""Supabase Storage through supabase-py against testing/storage_stub.py (a real HTTP
server speaking the Storage REST endpoints): object paths, content types, upsert on
redelivery, public and signed URLs, errors that name no secret."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text

from core.config import Settings
from core.errors import StorageError
from core.storage.supabase_storage import SupabaseStorage
from testing.storage_stub import StorageStub
from tests.conftest import WorkerProcess, wait_for

BUCKET = "generated-images"


@pytest.fixture
def stub() -> Iterator[StorageStub]:
    with StorageStub(bucket=BUCKET) as server:
        yield server


@pytest.fixture
def make_storage(settings: Settings, stub: StorageStub
                 ) -> Iterator[Callable[..., SupabaseStorage]]:
    made: list[SupabaseStorage] = []

    def _make(**update: object) -> SupabaseStorage:
        values = {"SUPABASE_URL": stub.url, "SUPABASE_BUCKET": BUCKET, **update}
        values["SUPABASE_KEY"] = SecretStr(str(values["SUPABASE_KEY"]))  # model_copy: raw
        made.append(SupabaseStorage.from_settings(settings.model_copy(update=values)))
        return made[-1]

    yield _make
    for storage in made:
        storage.close()


def test_worker_stores_image_and_thumbnail_under_their_object_paths(
    start_worker: Callable[..., WorkerProcess], engine: Engine, stub: StorageStub,
) -> None:
    worker = start_worker(STORAGE_BACKEND="supabase", SUPABASE_URL=stub.url,
                          SUPABASE_KEY=stub.key, SUPABASE_BUCKET=BUCKET)
    response = httpx.post(worker.url + "/api/admin/generate/batch", timeout=30, json={
        "prompts": ["a copper kettle", "a paper crane"], "style": "none",
        "count_per_prompt": 1})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    wait_for(lambda: httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status", timeout=10)
             .json()["status"] == "completed", timeout_s=60, message="the job")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, image_path, thumbnail_path FROM generation_tasks "
                                 "WHERE job_id = :j"), {"j": job_id}).all()
    assert len(rows) == 2
    for row in rows:
        assert row.image_path == f"{job_id}/{row.id}.png"
        assert row.thumbnail_path == f"{job_id}/thumbs/{row.id}.webp"
        image = stub.objects[f"{BUCKET}/{row.image_path}"]
        thumb = stub.objects[f"{BUCKET}/{row.thumbnail_path}"]
        assert (image.content_type, image.data[:4]) == ("image/png", b"\x89PNG")
        assert (thumb.content_type, thumb.data[8:12]) == ("image/webp", b"WEBP")
    assert len(stub.objects) == 4
    uploads = [headers for method, _, headers in stub.requests if method == "POST"]
    assert len(uploads) == 4
    assert all(h.get("x-upsert") == "true" for h in uploads)
    # Deleting the job removes its objects from the bucket too (core.jobs.retention).
    deleted = httpx.delete(f"{worker.url}/api/admin/jobs/{job_id}", timeout=30)
    assert deleted.status_code == 200 and deleted.json()["objects_deleted"] == 4
    assert stub.objects == {}


def test_a_redelivered_upload_overwrites_instead_of_failing(
    make_storage: Callable[..., SupabaseStorage], stub: StorageStub,
) -> None:
    storage = make_storage(SUPABASE_KEY=stub.key)
    storage.save("job/task.png", b"\x89PNG first", "image/png")
    storage.save("job/task.png", b"\x89PNG second", "image/png")
    stored = stub.objects[f"{BUCKET}/job/task.png"]
    assert (stored.data, stored.version, stored.content_type) == (
        b"\x89PNG second", 2, "image/png")
    assert storage.read("job/task.png") == b"\x89PNG second"
    assert len(stub.objects) == 1


def test_public_and_signed_urls_serve_the_object(
    make_storage: Callable[..., SupabaseStorage], stub: StorageStub,
) -> None:
    public = make_storage(SUPABASE_KEY=stub.key)
    public.save("j/t.png", b"\x89PNG pixels", "image/png")
    url = public.url("j/t.png")
    assert url == f"{stub.url}/storage/v1/object/public/{BUCKET}/j/t.png"
    assert httpx.get(url).content == b"\x89PNG pixels"

    signed = make_storage(SUPABASE_KEY=stub.key, SUPABASE_SIGNED_URLS=True,
                      SIGNED_URL_TTL_S=120)
    url = signed.url("j/t.png")
    assert url.startswith(f"{stub.url}/storage/v1/object/sign/{BUCKET}/j/t.png?token=")
    answer = httpx.get(url)
    assert (answer.status_code, answer.headers["content-type"]) == (200, "image/png")
    assert answer.content == b"\x89PNG pixels"
    assert httpx.get(url[:-4] + "0000").status_code == 400  # a forged token is refused
    sign_calls = [p for m, p, _ in stub.requests if m == "POST" and "/object/sign/" in p]
    assert len(sign_calls) == 1


def test_errors_become_storage_errors_without_the_key(
    make_storage: Callable[..., SupabaseStorage], stub: StorageStub,
) -> None:
    wrong = make_storage(SUPABASE_KEY="not-the-service-key")
    with pytest.raises(StorageError) as refused:
        wrong.save("j/t.png", b"x", "image/png")
    assert "not-the-service-key" not in str(refused.value)
    right = make_storage(SUPABASE_KEY=stub.key)
    with pytest.raises(StorageError, match=r"not_found|Object not found"):
        right.read("j/missing.png")


def test_delete_keeps_the_job_when_storage_refuses(
    start_worker: Callable[..., WorkerProcess], stub: StorageStub,
) -> None:
    worker = start_worker(STORAGE_BACKEND="supabase", SUPABASE_URL=stub.url,
                          SUPABASE_KEY=stub.key, SUPABASE_BUCKET=BUCKET)
    job_id = httpx.post(worker.url + "/api/admin/generate/batch", timeout=30,
                        json={"prompts": ["a copper kettle"]}).json()["id"]
    wait_for(lambda: httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status", timeout=10)
             .json()["status"] == "completed", timeout_s=60, message="the job")
    worker_key, stub.key = stub.key, "rotated-service-key"  # storage now refuses the worker
    refused = httpx.delete(f"{worker.url}/api/admin/jobs/{job_id}", timeout=60)
    assert refused.status_code == 503
    assert "the job is kept" in refused.json()["detail"]
    assert worker_key not in refused.text
    assert httpx.get(f"{worker.url}/api/admin/jobs/{job_id}").status_code == 200
    audit = httpx.get(f"{worker.url}/api/admin/audit").json()["entries"]
    assert audit == []  # rolled back with the rows
