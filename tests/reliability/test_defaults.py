"""Recovery with the product's DEFAULT lease, renewal, backoff and poll settings (the
other reliability tests shrink them): what a deployment gets. Each prints its figures.

Only the demo model's picture size is shrunk (CPU on a shared machine, not a timing).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from core.providers.demo import read_call_log
from tests.conftest import WorkerProcess, wait_for
from tests.reliability import (
    assert_counters_match_rows,
    assert_exactly_once,
    rows_by_status,
    submit,
    task_ids,
    wait_finished,
)

# The test environment's shrunk timings, dropped so the worker runs on its defaults.
SHRUNK = ("RETRY_MIN_BACKOFF_S", "RETRY_MAX_BACKOFF_S", "DISPATCH_POLL_S",
          "DISPATCH_DEADLINE_S", "DEMO_LATENCY_MS", "TASK_LEASE_S", "LEASE_RENEW_S",
          "SHUTDOWN_GRACE_S", "MAX_ATTEMPTS", "LOCAL_MAX_CONCURRENCY")


def _defaults(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in SHRUNK:
        env.pop(name, None)
        # The settings fixture exported them too; worker processes inherit os.environ.
        monkeypatch.delenv(name, raising=False)
    calls = tmp_path / "model-calls.log"
    env.update(DEMO_IMAGE_PX="64", DEMO_CALL_LOG=str(calls))
    return calls


def _assert_defaults(worker: WorkerProcess) -> None:
    """The worker really runs on the defaults (its log's start line says which)."""
    line = next(x for x in worker.logs().splitlines() if '"worker_start"' in x)
    assert '"lease_s": 30.0' in line and '"renew_every_s": 10.0' in line, line
    assert '"dispatch_deadline_s": 300.0' in line and '"demo_latency_ms": 300' in line, line


def _mid_batch(engine: Engine, job_id: str) -> bool:
    """40 done and several deliveries running: a kill now cuts some (on a loaded machine
    there are moments between a wave's end and the next claim with none running)."""
    rows = rows_by_status(engine, job_id)
    return rows.get("succeeded", 0) >= 40 and rows.get("running", 0) >= 3


def _finished_at(engine: Engine, job_id: str) -> float:
    """Seconds since the epoch at which the job finished (the database's clock)."""
    with engine.connect() as conn:
        return float(conn.execute(text(
            "SELECT EXTRACT(EPOCH FROM finished_at) FROM generation_jobs WHERE id=:j"),
            {"j": job_id}).scalar())


def _db_now(engine: Engine) -> float:
    with engine.connect() as conn:
        return float(conn.execute(text("SELECT EXTRACT(EPOCH FROM now())")).scalar())


def _no_traceback(log: str) -> None:
    assert "Traceback" not in log, log[-3000:]
    assert '"severity": "ERROR"' not in log, log[-3000:]


@pytest.mark.defaults
@pytest.mark.slow
def test_sigkill_mid_200_task_batch_with_defaults_completes_within_45_s_of_restart(
    start_worker: Callable[..., WorkerProcess], engine: Engine, env: dict[str, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls_log = _defaults(env, tmp_path, monkeypatch)
    worker = start_worker()
    _assert_defaults(worker)
    job_id = submit(worker, [f"defaults kill picture {i}" for i in range(200)])["id"]
    wait_for(lambda: _mid_batch(engine, job_id), timeout_s=120, interval_s=0.02,
             message="40 tasks done and deliveries in flight")
    worker.kill()
    cut = task_ids(engine, job_id, "running")
    restarted_at = _db_now(engine)
    worker.start()
    rows = wait_finished(engine, job_id, timeout_s=120)
    recovery_s = _finished_at(engine, job_id) - restarted_at

    assert rows == {"succeeded": 200}
    assert assert_counters_match_rows(engine, job_id) == {"succeeded": 200}
    assert_exactly_once(engine, tmp_path / "images", job_id)
    assert cut, "the kill cut no delivery: nothing was tested"
    calls = read_call_log(str(calls_log))
    everyone = task_ids(engine, job_id)
    assert set(calls) == everyone
    assert all(calls[t] <= 2 for t in cut), {t: calls[t] for t in cut}
    assert all(calls[t] == 1 for t in everyone - cut)
    print(f"FIGURES defaults_sigkill: tasks=200 cut={len(cut)} "
          f"recovery_s={recovery_s:.1f} (bound 45) model_calls={sum(calls.values())} "
          f"max_calls_interrupted={max(calls[t] for t in cut)} others=1")
    assert recovery_s <= 45.0


@pytest.mark.defaults
@pytest.mark.slow
def test_sigterm_mid_batch_with_defaults_completes_within_15_s_of_restart_no_traceback(
    start_worker: Callable[..., WorkerProcess], engine: Engine, env: dict[str, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls_log = _defaults(env, tmp_path, monkeypatch)
    worker = start_worker()
    _assert_defaults(worker)
    job_id = submit(worker, [f"defaults stop picture {i}" for i in range(100)])["id"]
    wait_for(lambda: _mid_batch(engine, job_id), timeout_s=120, interval_s=0.02,
             message="40 tasks done and deliveries in flight")
    assert worker.proc is not None
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(timeout=30)
    stop_s = time.monotonic() - sent
    stranded = task_ids(engine, job_id, "running")
    restarted_at = _db_now(engine)
    worker.start()
    rows = wait_finished(engine, job_id, timeout_s=60)
    recovery_s = _finished_at(engine, job_id) - restarted_at

    assert rows == {"succeeded": 100}
    assert_counters_match_rows(engine, job_id)
    assert_exactly_once(engine, tmp_path / "images", job_id)
    assert stranded == set()  # a clean stop leaves no running row behind
    calls = read_call_log(str(calls_log))
    # In-flight work finished inside the grace, also work whose claim was on its way when
    # the stop began.
    assert [t for t, n in calls.items() if n != 1] == []
    _no_traceback(worker.logs())
    print(f"FIGURES defaults_sigterm: tasks=100 stop_s={stop_s:.1f} (grace 8) "
          f"recovery_s={recovery_s:.1f} (bound 15) stranded=0 tracebacks=0")
    assert recovery_s <= 15.0


@pytest.mark.slow
def test_sigterm_releases_work_longer_than_the_grace_and_it_runs_again_at_once(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path,
) -> None:
    worker = start_worker(DEMO_LATENCY_MS="60000", SHUTDOWN_GRACE_S="1",
                          LOCAL_MAX_CONCURRENCY="3")
    job_id = submit(worker, [f"long picture {i}" for i in range(3)])["id"]
    wait_for(lambda: rows_by_status(engine, job_id).get("running", 0) == 3, timeout_s=30,
             message="3 tasks running")
    assert worker.proc is not None
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(timeout=30)
    stop_s = time.monotonic() - sent
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT status, attempts, free_attempts, last_error_code, lease_until, "
            "next_attempt_at <= now() AS due FROM generation_tasks WHERE job_id=:j"),
            {"j": job_id}).all()
    assert [(r.status, r.attempts, r.free_attempts, r.last_error_code, r.lease_until, r.due)
            for r in rows] == [("queued", 1, 1, "worker_stopping", None, True)] * 3
    _no_traceback(worker.logs())
    assert stop_s < 10.0  # inside Cloud Run's 10 s
    worker.env["DEMO_LATENCY_MS"] = "0"
    worker.start()
    assert wait_finished(engine, job_id, timeout_s=30) == {"succeeded": 3}
    print(f"FIGURES sigterm_release: in_flight=3 grace_s=1 stop_s={stop_s:.1f} released=3")
