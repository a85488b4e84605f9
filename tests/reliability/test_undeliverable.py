"""No silent loop: WORKER_URL in the deployment guide's form (the full task
URL) works; a delivery that cannot reach the handler (404, refused connection, 401 from a
mismatched TASK_SECRET) is recorded on the row with the status and URL, counted on
/metrics, shown on /healthz, logged once per cause, and the task ends as `undeliverable`
within 10 s instead of looping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.conftest import REPO_ROOT, WorkerProcess, free_port, stop_process, wait_for
from tests.support.worker_api import submit

TASK_PATH = "/api/admin/worker/process-task"
SHOWN_WITHIN_S = 10.0


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def _worker(workers: list[WorkerProcess], env: dict[str, str], tmp_path: Path,
            **overrides: str) -> WorkerProcess:
    port = free_port()
    values = {**env, "UNDELIVERABLE_MAX_TRIES": "3", **overrides}
    values = {k: v.replace("{PORT}", str(port)) for k, v in values.items()}
    worker = WorkerProcess(env=values, port=port,
                           log_path=tmp_path / f"worker-{len(workers)}.log")
    workers.append(worker)
    return worker.start()


def _submit(worker: WorkerProcess, n: int) -> str:
    return str(submit(worker, [f"a lighthouse {i}" for i in range(n)])["id"])


def _job(engine: Engine, job_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, completed_tasks, failed_tasks, total_tasks "
                                 "FROM generation_jobs WHERE id = :j"), {"j": job_id}).one()


def _tasks(engine: Engine, job_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT status, attempts, undeliverable_tries, last_error_code, last_error "
            "FROM generation_tasks WHERE job_id = :j"), {"j": job_id}))


def test_worker_url_in_the_guides_form_completes_a_batch(
        workers: list[WorkerProcess], env: dict[str, str], tmp_path: Path,
        engine: Engine) -> None:
    worker = _worker(workers, env, tmp_path,
                     WORKER_URL="http://127.0.0.1:{PORT}" + TASK_PATH)
    job_id = _submit(worker, 20)
    wait_for(lambda: _job(engine, job_id).status == "completed", timeout_s=60,
             message="the batch")
    assert {t.status for t in _tasks(engine, job_id)} == {"succeeded"}
    health = httpx.get(worker.url + "/healthz", timeout=5).json()
    assert health["status"] == "ok", health
    wait_for(lambda: "task URL answers" in worker.logs(), timeout_s=20,
             message="the start-up self-check")


def _assert_shown_and_ended(worker: WorkerProcess, engine: Engine, job_id: str, *,
                            started: float, cause: str, status_text: str, url: str,
                            log_source: Callable[[], str]) -> None:
    def ended() -> bool:
        return _job(engine, job_id).status in ("failed", "completed_with_errors")

    wait_for(ended, timeout_s=SHOWN_WITHIN_S + 20, message="the undeliverable job to end")
    elapsed_s = time.monotonic() - started
    print(f"\nundeliverable ({cause}): job ended after {elapsed_s:.1f} s")
    assert elapsed_s < SHOWN_WITHIN_S, elapsed_s
    tasks = _tasks(engine, job_id)
    for task in tasks:
        assert task.status == "failed" and task.last_error_code == "undeliverable"
        assert task.attempts == 0 and task.undeliverable_tries == 3
        assert status_text in task.last_error and url in task.last_error
        assert "secret" not in task.last_error.lower() or "TASK_SECRET" in task.last_error
    job = _job(engine, job_id)
    assert job.failed_tasks == job.total_tasks == len(tasks)

    health = httpx.get(worker.url + "/healthz", timeout=5).json()
    assert health["status"] == "degraded"
    assert any(status_text in r and url in r for r in health["reasons"]), health
    metrics = httpx.get(worker.url + "/metrics", timeout=5).text
    assert f'aiwebimage_undeliverable_recent{{cause="{cause}"}}' in metrics
    # Logged once per cause and URL, at ERROR, with the URL.
    lines = [json.loads(line) for line in log_source().splitlines()
             if line.startswith("{") and '"action": "undeliverable"' in line]
    assert len(lines) == 1, lines
    assert lines[0]["severity"] == "ERROR" and url in lines[0]["message"]


def test_a_wrong_path_404_is_recorded_shown_and_ends(
        workers: list[WorkerProcess], env: dict[str, str], tmp_path: Path,
        engine: Engine) -> None:
    worker = _worker(workers, env, tmp_path, WORKER_URL="http://127.0.0.1:{PORT}/v2")
    url = worker.url + "/v2" + TASK_PATH
    started = time.monotonic()
    job_id = _submit(worker, 5)
    _assert_shown_and_ended(worker, engine, job_id, started=started, cause="http_404",
                            status_text="HTTP 404", url=url,
                            log_source=worker.logs)
    metrics = httpx.get(worker.url + "/metrics", timeout=5).text
    assert 'aiwebimage_undeliverable_deliveries_total{cause="http_404"} 15.0' in metrics
    # The start-up self-check said so too, before any task.
    wait_for(lambda: "this worker's task URL does not answer" in worker.logs(),
             timeout_s=20, message="the start-up self-check")
    assert any("start-up check" in r for r in
               httpx.get(worker.url + "/healthz", timeout=5).json()["reasons"])


def test_a_refused_connection_is_recorded_shown_and_ends(
        workers: list[WorkerProcess], env: dict[str, str], tmp_path: Path,
        engine: Engine) -> None:
    dead = free_port()  # nothing listens there
    worker = _worker(workers, env, tmp_path, WORKER_URL=f"http://127.0.0.1:{dead}")
    started = time.monotonic()
    job_id = _submit(worker, 3)
    _assert_shown_and_ended(worker, engine, job_id, started=started, cause="connect_refused",
                            status_text="connection refused",
                            url=f"http://127.0.0.1:{dead}{TASK_PATH}",
                            log_source=worker.logs)


def test_a_mismatched_task_secret_401_is_recorded_shown_and_ends(
        workers: list[WorkerProcess], env: dict[str, str], tmp_path: Path,
        engine: Engine) -> None:
    worker = _worker(workers, env, tmp_path, RUN_DISPATCHER="false",
                     TASK_SECRET="the-workers-secret-value")
    log_path = tmp_path / "dispatcher.log"
    dispatcher_env = {**os.environ, **env, "UNDELIVERABLE_MAX_TRIES": "3",
                      "WORKER_URL": worker.url, "TASK_SECRET": "another-secret-value"}
    with log_path.open("wb") as log:
        dispatcher = subprocess.Popen([sys.executable, "-m", "worker.dispatcher"],
                                      cwd=REPO_ROOT, env=dispatcher_env, stdout=log,
                                      stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        job_id = _submit(worker, 3)
        try:
            wait_for(lambda: _job(engine, job_id).status == "failed", timeout_s=30,
                     message="the job")
        finally:
            stop_process(dispatcher)
        logs = log_path.read_text()
        for secret in ("the-workers-secret-value", "another-secret-value"):
            assert secret not in logs
        # The worker's /healthz shows what the separate dispatcher recorded.
        _assert_shown_and_ended(worker, engine, job_id, started=started, cause="http_401",
                                status_text="HTTP 401", url=worker.url + TASK_PATH,
                                log_source=lambda: logs)
    finally:
        stop_process(dispatcher)


def test_a_tls_error_is_recorded_shown_and_ends(
        workers: list[WorkerProcess], env: dict[str, str], tmp_path: Path,
        engine: Engine) -> None:
    # https:// to a port that speaks plain HTTP: the TLS handshake fails.
    worker = _worker(workers, env, tmp_path, WORKER_URL="https://127.0.0.1:{PORT}")
    url = f"https://127.0.0.1:{worker.port}{TASK_PATH}"
    started = time.monotonic()
    job_id = _submit(worker, 2)
    _assert_shown_and_ended(worker, engine, job_id, started=started, cause="tls_error",
                            status_text="TLS error", url=url, log_source=worker.logs)
