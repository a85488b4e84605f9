"""Batch mode in Cloud Tasks mode: a production worker (OIDC-verified deliveries) behind
testing/cloudtasks_fake.py, the OpenAI provider pointed at the stub's Batch API.
Submitting schedules a planning task; each batch then has its own chain of poll tasks to
/api/admin/worker/batch-poll (one name per round) until it is done."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from core.batch.poller import POLL_PATH
from core.config import Settings
from testing.cloudtasks_fake import ADMIN, CloudTasksFake
from testing.openai_stub import OpenAIStub
from tests.conftest import wait_for
from tests.support.cloud_tasks import worker_on_port


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture
def prod_env(prod_env: dict[str, str], stub: OpenAIStub) -> dict[str, str]:
    prod_env.update(IMAGE_PROVIDER="openai", OPENAI_API_KEY=stub.api_key,
                    OPENAI_BASE_URL=stub.base_url, BATCH_CHUNK_SIZE="2", BATCH_POLL_S="0.2")
    return prod_env


def test_batch_mode_runs_on_scheduled_poll_tasks(
    prod_env: dict[str, str], prod_settings: Settings, fake: CloudTasksFake,
    stub: OpenAIStub, engine: Engine, tmp_path: Path,
) -> None:
    worker = worker_on_port(prod_env, tmp_path).start()
    try:
        response = httpx.post(worker.url + "/api/admin/generate/batch", headers=ADMIN,
                              timeout=30, json={"prompts": ["a harbour", "a lantern", "a kite"],
                                                "mode": "batch", "model": "gpt-image-2",
                                                "size": "1024x1024", "quality": "low"})
        assert response.status_code == 200, response.text
        job_id = response.json()["id"]

        def finished() -> bool:
            body = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status", headers=ADMIN,
                             timeout=10).json()
            return bool(body["status"] == "completed")

        wait_for(finished, timeout_s=90, interval_s=0.2, message="the batch-mode job")
    finally:
        worker.stop()
    polls = [d for d in fake.deliveries if d.url.endswith(POLL_PATH)]
    assert polls and all(d.status == 200 for d in polls)
    assert all(d.authorization and d.authorization.startswith("Bearer ey") for d in polls)
    # No delivery went to the realtime task endpoint; two batches (2 + 1 tasks), once each.
    assert not [d for d in fake.deliveries if d.url.endswith("/process-task")]
    seen = stub.batches.snapshot()
    assert (seen.batches_created, seen.requests_run) == (2, 3)
    assert stub.snapshot().requests == 0
    with engine.connect() as conn:
        states = conn.execute(text("SELECT state, openai_status FROM openai_batches "
                                   "WHERE job_id = :j"), {"j": job_id}).all()
    assert {tuple(s) for s in states} == {("done", "completed")}
