"""Cloud Tasks mode: the queue holds a bounded window of a job's tasks, refilled
from the table as tasks finish, and a cancel of a running 5,000-task job acts at once: no
delivery starts more than 2 s after the cancel. A production worker behind the Cloud Tasks
fake (the real google-cloud-tasks client, OIDC-signed deliveries), the demo model."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import Engine, text

from testing.cloudtasks_fake import ADMIN, CloudTasksFake
from tests.conftest import WorkerProcess, wait_for

WINDOW = 20
TASKS = 5000


@pytest.fixture
def prod_env(prod_env: dict[str, str]) -> dict[str, str]:
    prod_env.update(CLOUD_TASKS_WINDOW=str(WINDOW), DEMO_LATENCY_MS="100",
                    DEMO_IMAGE_PX="32", MAX_TASKS_PER_BATCH=str(TASKS),
                    MAX_PROMPTS_PER_BATCH=str(TASKS))
    return prod_env


@pytest.fixture
def worker(prod_worker: WorkerProcess) -> WorkerProcess:
    return prod_worker


def _counts(engine: Engine, job_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {r.status: int(r.n) for r in conn.execute(text(
            "SELECT status, count(*) AS n FROM generation_tasks WHERE job_id = :j "
            "GROUP BY status"), {"j": job_id}).all()}


def test_window_is_bounded_refilled_and_a_cancel_stops_deliveries_within_2_s(
        worker: WorkerProcess, fake: CloudTasksFake, engine: Engine) -> None:
    response = httpx.post(worker.url + "/api/admin/generate/batch", headers=ADMIN, timeout=120,
                          json={"prompts": [f"window {i}" for i in range(TASKS)]})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    peak = 0

    def progressed() -> bool:
        nonlocal peak
        peak = max(peak, len(fake.live))
        return _counts(engine, job_id).get("succeeded", 0) >= 3 * WINDOW

    # Refilled as tasks finish: three windows' worth done, never more than the window held.
    wait_for(progressed, timeout_s=120, interval_s=0.05, message="three windows done")
    assert peak <= WINDOW
    assert len(fake.created) < TASKS / 2  # the rest waited in the table
    cancelled_at = time.time()
    answer = httpx.post(f"{worker.url}/api/admin/jobs/{job_id}/cancel", headers=ADMIN,
                        timeout=30)
    assert answer.status_code == 200, answer.text
    time.sleep(5.0)
    late = [d for d in fake.deliveries if d.started_at > cancelled_at + 2.0]
    counts = _counts(engine, job_id)
    print(f"FIGURES window={WINDOW} peak_held={peak} created={len(fake.created)} "
          f"deliveries={len(fake.deliveries)} late_after_2s={len(late)} counts={counts}")
    assert late == []
    assert counts.get("queued", 0) == counts.get("pending", 0) == counts.get("running", 0) == 0
    assert counts.get("failed", 0) == 0
