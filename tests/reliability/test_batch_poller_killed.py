"""A 1,000-task batch-mode job through the OpenAI stub's Batch API, with the worker (and
its batch poller) SIGKILLed in the middle of downloading an output file and started
again: every task completes exactly once, nothing already stored is stored again, and no
second batch is made for the same tasks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from testing.openai_stub import OpenAIStub
from tests.conftest import WorkerProcess, wait_for

TASKS = 1000
CHUNK = 400  # three batches: 400, 400, 200


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        server.batches.line_delay_s = 0.01  # a download takes seconds: room to kill it
        yield server


def _counts(engine: Engine, job_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM generation_tasks "
                                 "WHERE job_id = :j GROUP BY status"), {"j": job_id}).all()
    return {r[0]: int(r[1]) for r in rows}


@pytest.mark.slow
def test_batch_job_completes_once_with_the_poller_killed_mid_download(
    start_worker: Callable[..., WorkerProcess], stub: OpenAIStub, engine: Engine,
    env: dict[str, str],
) -> None:
    overrides = {"IMAGE_PROVIDER": "openai", "OPENAI_BASE_URL": stub.base_url,
                 "OPENAI_API_KEY": stub.api_key, "OPENAI_TIMEOUT_S": "30",
                 "BATCH_CHUNK_SIZE": str(CHUNK), "BATCH_POLL_S": "0.2",
                 "STORAGE_BACKEND": "local", "LOG_LEVEL": "WARNING"}
    worker = start_worker(**overrides)
    response = httpx.post(worker.url + "/api/admin/generate/batch", timeout=60, json={
        "prompts": [f"a catalogue item number {i}" for i in range(TASKS)],
        "model": "gpt-image-2", "size": "1024x1024", "quality": "low", "mode": "batch"})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    assert httpx.get(f"{worker.url}/api/admin/jobs/{job_id}", timeout=10).json()["mode"] == "batch"

    # Kill it while it streams an output file: some tasks stored, most not yet.
    wait_for(lambda: _counts(engine, job_id).get("succeeded", 0) >= 150, timeout_s=120,
             message="the poller to be part way through an output file")
    worker.kill()
    killed_at = time.time()
    before = _counts(engine, job_id).get("succeeded", 0)
    with engine.connect() as conn:
        ingesting = conn.execute(text("SELECT count(*) FROM openai_batches "
                                      "WHERE job_id = :j AND state = 'ingesting'"),
                                 {"j": job_id}).scalar_one()
        stored_before = [r[0] for r in conn.execute(text(
            "SELECT image_path FROM generation_tasks WHERE job_id = :j "
            "AND status = 'succeeded'"), {"j": job_id})]
    assert 0 < before < TASKS and ingesting == 1, (before, ingesting)

    worker.start()
    wait_for(lambda: _counts(engine, job_id).get("succeeded", 0) == TASKS, timeout_s=240,
             message="every task to succeed after the restart")

    with engine.connect() as conn:
        job = conn.execute(text("SELECT status, completed_tasks, failed_tasks FROM "
                                "generation_jobs WHERE id = :j"), {"j": job_id}).one()
        batches = conn.execute(text("SELECT state, openai_status, task_count FROM "
                                    "openai_batches WHERE job_id = :j"), {"j": job_id}).all()
    root = Path(env["LOCAL_STORAGE_DIR"]) / job_id
    images = sorted(root.glob("*.png"))
    thumbs = sorted((root / "thumbs").glob("*.webp"))
    seen = stub.batches.snapshot()
    print(f"\nmodel calls: {seen.requests_run} batch requests + "
          f"{stub.snapshot().requests} realtime; batches created {seen.batches_created}; "
          f"files uploaded {seen.files_uploaded}; output downloads {seen.downloads_started}; "
          f"stored images {len(images)}, thumbnails {len(thumbs)}; "
          f"succeeded before the kill {before}")
    assert tuple(job) == ("completed", TASKS, 0)  # the counter moved once per task
    assert sorted(b.task_count for b in batches) == [200, CHUNK, CHUNK]
    assert {(b.state, b.openai_status) for b in batches} == {("done", "completed")}
    assert seen.batches_created == 3 and seen.files_uploaded == 3  # no second batch
    assert seen.requests_run == TASKS and stub.snapshot().requests == 0
    assert seen.downloads_started >= 4  # the interrupted file was read again
    assert len(images) == TASKS and len(thumbs) == TASKS
    # What was stored before the kill was not written again after the restart.
    rewritten = [p for p in stored_before
                 if (Path(env["LOCAL_STORAGE_DIR"]) / p).stat().st_mtime > killed_at]
    assert rewritten == []
