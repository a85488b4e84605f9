"""Fault 6: the operator cancels, or retries failed tasks, while the batch runs."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.conftest import WorkerProcess, wait_for
from tests.reliability import (
    assert_counters_match_rows,
    assert_exactly_once,
    rows_by_status,
    submit,
    wait_finished,
)


@pytest.mark.slow
def test_cancel_during_a_run_leaves_a_consistent_final_state(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    worker = start_worker(DEMO_LATENCY_MS="150", DEMO_IMAGE_PX="32", LOCAL_MAX_CONCURRENCY="5")
    job_id = submit(worker, [f"cancel picture {i}" for i in range(120)])["id"]
    wait_for(lambda: rows_by_status(engine, job_id).get("succeeded", 0) >= 15, timeout_s=30,
             message="some progress")
    # Two operators press cancel at once.
    url = f"{worker.url}/api/admin/jobs/{job_id}/cancel"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: httpx.post(url, timeout=10), range(2)))
    assert [a.status_code for a in answers] == [200, 200]
    rows = wait_finished(engine, job_id, timeout_s=30)
    time.sleep(1.0)  # anything still in flight would land now
    assert rows_by_status(engine, job_id) == rows
    assert set(rows) <= {"succeeded", "cancelled"} and rows["cancelled"] > 0
    assert sum(rows.values()) == 120
    assert_counters_match_rows(engine, job_id)
    assert_exactly_once(engine, tmp_path / "images", job_id)
    status = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status", timeout=10).json()
    assert status["status"] == "cancelled" and status["progress_percentage"] == 100.0
    # Cancel is idempotent; retry-failed on a cancelled job is refused.
    assert httpx.post(url, timeout=10).status_code == 200
    retry = httpx.post(f"{worker.url}/api/admin/jobs/{job_id}/retry-failed", timeout=10)
    assert retry.status_code == 409
    print(f"FIGURES cancel: tasks=120 succeeded={rows['succeeded']} "
          f"cancelled={rows['cancelled']}")


@pytest.mark.slow
def test_retry_failed_during_a_run_keeps_counters_exact(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    worker = start_worker(DEMO_LATENCY_MS="100", DEMO_IMAGE_PX="32", MAX_ATTEMPTS="3",
                          LOCAL_MAX_CONCURRENCY="4")
    # Refused prompts fail at once (and again after each retry), ahead of the fine ones.
    bad = [f"refused {i} [[demo:moderation_blocked]]" for i in range(5)]
    prompts = bad + [f"fine picture {i}" for i in range(120)]
    job_id = submit(worker, prompts)["id"]
    wait_for(lambda: rows_by_status(engine, job_id).get("failed", 0) >= 3, timeout_s=30,
             message="failures while the batch runs")
    assert rows_by_status(engine, job_id).get("queued", 0) > 50  # the batch is still running
    # Retry-failed pressed three times at once while the batch runs.
    url = f"{worker.url}/api/admin/jobs/{job_id}/retry-failed"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: httpx.post(url, timeout=10,
                                                     json={"include_refusals": True}),
                                range(3)))
    assert all(a.status_code == 200 for a in answers)
    requeued = sum(a.json()["requeued"] for a in answers)
    assert requeued >= 3
    assert_counters_match_rows(engine, job_id)

    rows = wait_finished(engine, job_id, timeout_s=60)
    assert rows == {"succeeded": 120, "failed": 5}
    assert_counters_match_rows(engine, job_id)
    assert_exactly_once(engine, tmp_path / "images", job_id)
    with engine.connect() as conn:
        failed = conn.execute(text(
            "SELECT attempts, dispatch_generation, last_error_code FROM generation_tasks "
            "WHERE job_id=:j AND status='failed'"), {"j": job_id}).all()
        job = conn.execute(text("SELECT status, finished_at FROM generation_jobs WHERE id=:j"),
                           {"j": job_id}).one()
    assert sum(f.dispatch_generation for f in failed) == requeued  # each retry ran again
    assert all(f.attempts == 1 and f.last_error_code == "moderation_blocked" for f in failed)
    assert job.status == "completed_with_errors" and job.finished_at is not None
