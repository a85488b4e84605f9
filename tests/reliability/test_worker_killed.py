"""Fault 1: the worker is SIGKILLed several times during a 500-task batch."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.conftest import WorkerProcess, wait_for
from tests.reliability import (
    assert_counters_match_rows,
    assert_exactly_once,
    rows_by_status,
    submit,
    task_ids,
    wait_finished,
)

BATCH_SIZE = 500
KILL_AT_SUCCEEDED = (60, 180, 300)


@pytest.mark.slow
def test_sigkill_three_times_in_a_500_task_batch_loses_and_duplicates_nothing(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    # A short deadline and lease so deliveries cut by a kill come back within seconds.
    worker = start_worker(DEMO_LATENCY_MS="60", DEMO_IMAGE_PX="32", DISPATCH_DEADLINE_S="2",
                          TASK_LEASE_S="3", LOCAL_MAX_CONCURRENCY="10", MAX_ATTEMPTS="10")
    job_id = submit(worker, [f"kill test picture {i}" for i in range(BATCH_SIZE)])["id"]
    running_at_kill: list[int] = []
    cut_by_kill: set[str] = set()
    for threshold in KILL_AT_SUCCEEDED:
        # Killed while deliveries run: on a loaded machine the moment a threshold is passed
        # can fall between waves (everything queued), and the kill then cuts nothing.
        def due(t: int = threshold) -> bool:
            rows = rows_by_status(engine, job_id)
            return rows.get("succeeded", 0) >= t and rows.get("running", 0) > 0

        wait_for(due, timeout_s=45, interval_s=0.02, message=f"{threshold} tasks done")
        worker.kill()
        cut = task_ids(engine, job_id, "running")
        running_at_kill.append(len(cut))
        cut_by_kill |= cut
        time.sleep(0.2)
        worker.start()

    rows = wait_finished(engine, job_id, timeout_s=60)
    assert rows == {"succeeded": BATCH_SIZE}
    assert assert_counters_match_rows(engine, job_id) == {"succeeded": BATCH_SIZE}
    assert_exactly_once(engine, tmp_path / "images", job_id)
    with engine.connect() as conn:
        job = conn.execute(text("SELECT status, finished_at FROM generation_jobs WHERE id=:j"),
                           {"j": job_id}).one()
        stuck = conn.execute(text("SELECT count(*) FROM generation_tasks WHERE status='running' "
                                  "AND lease_until < now()")).scalar()
        redelivered = conn.execute(text("SELECT count(*) FROM generation_tasks "
                                        "WHERE job_id=:j AND attempts > 1"),
                                   {"j": job_id}).scalar()
    assert job.status == "completed" and job.finished_at is not None
    assert stuck == 0
    # The kills really cut deliveries in flight, and those tasks came back and finished once.
    assert sum(running_at_kill) > 0
    assert redelivered and redelivered > 0
    with engine.connect() as conn:
        cut_rows = conn.execute(text("SELECT id, status, attempts FROM generation_tasks "
                                     "WHERE id = ANY(:ids)"),
                                {"ids": list(cut_by_kill)}).all()
    # Every delivery the kills cut short was delivered again and finished exactly once.
    assert len(cut_rows) == len(cut_by_kill)
    assert all(r.status == "succeeded" and r.attempts >= 2 for r in cut_rows)
    print(f"FIGURES kill: faults={len(KILL_AT_SUCCEEDED)} tasks={BATCH_SIZE} "
          f"running_at_kill={running_at_kill} cut={len(cut_by_kill)} redelivered={redelivered} "
          "lost=0 duplicates=0")
