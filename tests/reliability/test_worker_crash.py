"""A task that kills its worker (the demo model's [[crash-worker]] marker exits the process
hard mid-task) fails as worker_crashed after MAX_ATTEMPTS; the rest of its job succeeds.

The test is the worker's supervisor: it starts the worker again each time it dies, as
systemd or Cloud Run would. Each restart frees the previous boot's tasks at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from core.providers.demo import CRASH_EXIT_STATUS, read_call_log
from tests.conftest import WorkerProcess
from tests.reliability import assert_counters_match_rows, rows_by_status, submit

MAX_ATTEMPTS = 3
PROMPTS = [f"a calm picture {i}" for i in range(12)]
# Crashes 1.5 s into its attempt, long after the others' 50 ms: the tasks in flight beside
# it have finished by then, so it is the one that keeps dying.
KILLER = "this one takes the worker down [[crash-worker:1500]]"


@pytest.mark.slow
def test_a_task_that_kills_the_worker_fails_worker_crashed_and_the_job_goes_on(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    calls_log = tmp_path / "calls.log"
    worker = start_worker(MAX_ATTEMPTS=str(MAX_ATTEMPTS), DEMO_LATENCY_MS="50",
                          LOCAL_MAX_CONCURRENCY="2", DEMO_IMAGE_PX="32",
                          DEMO_CALL_LOG=str(calls_log))
    job_id = submit(worker, [*PROMPTS[:4], KILLER, *PROMPTS[4:]])["id"]
    restarts, deadline = 0, time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = rows_by_status(engine, job_id)
        if not any(rows.get(s) for s in ("pending", "queued", "running")):
            break
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            assert worker.proc.returncode == CRASH_EXIT_STATUS, worker.logs()[-2000:]
            restarts += 1
            worker.start()
        time.sleep(0.1)
    rows = assert_counters_match_rows(engine, job_id)
    assert rows == {"succeeded": len(PROMPTS), "failed": 1}
    with engine.connect() as conn:
        killer = conn.execute(text(
            "SELECT id, attempts, crashes, last_error_code, last_error FROM generation_tasks "
            "WHERE job_id=:j AND status='failed'"), {"j": job_id}).one()
        job = conn.execute(text("SELECT status FROM generation_jobs WHERE id=:j"),
                           {"j": job_id}).scalar()
    assert (killer.last_error_code, killer.attempts, killer.crashes) == (
        "worker_crashed", MAX_ATTEMPTS, MAX_ATTEMPTS)
    assert killer.last_error == f"the worker stopped {MAX_ATTEMPTS} times during this task"
    assert restarts == MAX_ATTEMPTS  # it was not delivered again after failing
    assert job == "completed_with_errors"
    calls = read_call_log(str(calls_log))
    assert calls[str(killer.id)] == MAX_ATTEMPTS
    print(f"FIGURES worker_crash: max_attempts={MAX_ATTEMPTS} restarts={restarts} "
          f"killer_calls={calls[str(killer.id)]} others_succeeded={rows['succeeded']}")
