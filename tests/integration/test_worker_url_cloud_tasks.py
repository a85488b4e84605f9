"""Cloud Tasks mode through testing/cloudtasks_fake.py with WORKER_URL as the
deployment guide writes it (the full task URL): the task target is not doubled, the OIDC
audience the enqueuer asks for is the one the worker's verifier accepts, and a batch
completes. A wrong WORKER_URL (404 from every try), a refused connection or a refused
token (401) no longer loops: the worker's frequent checks read the queue's record of each
task (core.dispatch.cloudtasks.undeliverable), show the cause within seconds and fail the task as
`undeliverable` at UNDELIVERABLE_MAX_TRIES, deleting its Cloud Task."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from cli.main import main as cli
from core import db
from core.config import get_settings
from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher
from testing.cloudtasks_fake import ADMIN, CloudTasksFake, TestIdentity, gcloud_queue
from tests.conftest import WorkerProcess, free_port, wait_for
from tests.support.cloud_tasks import answered, create_queue, production_env, worker_on_port
from tests.support.worker_api import submit

TASK_PATH = "/api/admin/worker/process-task"
# The settings' defaults (the test env shortens them): what the CLI queue retries at.
DEFAULT_BACKOFF = {"RETRY_MIN_BACKOFF_S": "1.0", "RETRY_MAX_BACKOFF_S": "300.0"}


@contextmanager
def _running(env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity,
             tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, queue: str, path: str,
             **extra: str) -> Iterator[tuple[WorkerProcess, Engine]]:
    """A production worker behind the fake whose WORKER_URL is its address plus ``path``,
    this process's settings from the same env, the queue made as ``queue`` says (before
    the worker starts); the worker stopped and the settings forgotten after."""
    env.update(production_env(env, fake, identity))
    env.update({"WORKER_URL": f"http://127.0.0.1:{env['PORT']}{path}", **extra})
    worker = worker_on_port(dict(env), tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    _create_queue(queue)
    worker.start()
    try:
        yield worker, db.get_engine(env["DATABASE_URL"])
    finally:
        worker.stop()
        get_settings.cache_clear()


def _submit(worker: WorkerProcess, n: int) -> str:
    return str(submit(worker, [f"a kite {i}" for i in range(n)], headers=ADMIN)["id"])


def _job(engine: Engine, job_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, failed_tasks, total_tasks FROM "
                                 "generation_jobs WHERE id = :j"), {"j": job_id}).one()


def test_the_guides_full_task_url_completes_through_cloud_tasks(
        env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with _running(env, fake, identity, tmp_path, monkeypatch, queue="cli",
                  path=TASK_PATH) as (worker, engine):
        job_id = _submit(worker, 6)
        wait_for(lambda: _job(engine, job_id).status == "completed", timeout_s=60,
                 message="the batch")
        with engine.connect() as conn:
            names = [r[0] for r in conn.execute(text(
                "SELECT cloud_task_name FROM generation_tasks WHERE job_id = :j"),
                {"j": job_id})]
        for name in names:
            (delivery,) = answered(fake, name)
            assert delivery.status == 200  # the OIDC token verified on the worker
            assert delivery.url == worker.url + TASK_PATH  # not doubled


def _create_queue(how: str) -> None:
    """The queue the CLI makes (100 attempts at our backoff, ~7 h of transport retries) or
    the one the guide's gcloud command makes (Cloud Tasks' defaults: 100 attempts from
    0.1 s doubling to an hour)."""
    if how == "cli":
        assert cli(["queue", "create"]) == 0
        return
    dispatcher = CloudTasksDispatcher.from_settings(get_settings())
    try:
        create_queue(dispatcher, gcloud_queue(dispatcher.queue_path,
                                              max_dispatches_per_second=10.0,
                                              max_concurrent_dispatches=100))
    finally:
        dispatcher.close()


def _until_undeliverable(worker: WorkerProcess, engine: Engine, job_id: str, n: int,
                         reason_part: str, label: str) -> tuple[float, float, list[str]]:
    """Seconds from submit until /healthz shows the cause and until the job has ended
    (default timings: LEASE_CHECK_INTERVAL_S 10 s, UNDELIVERABLE_MAX_TRIES 5), printed."""
    started = time.monotonic()

    def reasons() -> list[str]:
        body = httpx.get(worker.url + "/healthz", timeout=5).json()
        return [r for r in body["reasons"] if reason_part in r]

    found = wait_for(reasons, timeout_s=60, interval_s=0.2,
                     message="/healthz to show the undeliverable deliveries")
    shown_s = time.monotonic() - started
    wait_for(lambda: _job(engine, job_id).status == "failed", timeout_s=150, interval_s=0.5,
             message="the tasks to end as undeliverable")
    ended_s = time.monotonic() - started
    print(f"\n{label}: shown on /healthz after {shown_s:.1f} s, "
          f"{n} tasks ended undeliverable after {ended_s:.1f} s")
    job = _job(engine, job_id)
    assert (job.failed_tasks, job.total_tasks) == (n, n)  # counted exactly once
    return shown_s, ended_s, found


def _ended_rows(engine: Engine, job_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT status, last_error_code, last_error, undeliverable_tries, "
            "cloud_task_name FROM generation_tasks WHERE job_id = :j"), {"j": job_id}))


def _queue_stopped(fake: CloudTasksFake, names: list[str]) -> None:
    """The failed tasks' Cloud Tasks are deleted: the queue no longer retries them."""
    assert not [n for n in names if n in fake.live]
    before = len(fake.deliveries)
    time.sleep(3)
    assert not [d for d in fake.deliveries[before:] if d.task_name in names]


@pytest.mark.parametrize("queue", ["cli", "gcloud"])
def test_a_wrong_worker_url_ends_as_undeliverable_in_cloud_tasks_mode(
        env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, queue: str) -> None:
    # Default settings: the queue's own retries would go on for hours (CLI queue) or for
    # 100 attempts (gcloud defaults); the worker's checks see the 404s within seconds.
    with _running(env, fake, identity, tmp_path, monkeypatch, queue=queue, path="/v2",
                  **DEFAULT_BACKOFF) as (worker, engine):
        job_id = _submit(worker, 2)
        shown_s, _, found = _until_undeliverable(worker, engine, job_id, 2,
                                                 "Cloud Tasks deliveries get HTTP 404",
                                                 f"wrong WORKER_URL (404), {queue} queue")
        assert worker.url + "/v2" + TASK_PATH in found[0]
        assert shown_s < 30  # one check interval (10 s) plus margin for a loaded machine
        rows = _ended_rows(engine, job_id)
        for row in rows:
            assert (row.status, row.last_error_code) == ("failed", "undeliverable")
            assert worker.url + "/v2" + TASK_PATH in row.last_error
            assert row.undeliverable_tries >= 5
            # tries are the queue's dispatches, not one per look
            assert row.undeliverable_tries <= len(fake.deliveries_for(row.cloud_task_name))
        assert all(d.status == 404 for d in fake.deliveries)
        _queue_stopped(fake, [r.cloud_task_name for r in rows])
        health = httpx.get(worker.url + "/healthz", timeout=5).json()
        assert health["status"] == "degraded"
        metrics = httpx.get(worker.url + "/metrics", timeout=5).text
        assert 'aiwebimage_undeliverable_recent{cause="http_404"}' in metrics


@pytest.mark.parametrize("queue", ["cli", "gcloud"])
def test_a_refused_connection_ends_as_undeliverable_in_cloud_tasks_mode(
        env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, queue: str) -> None:
    # WORKER_URL names a port nobody listens on: every dispatch is refused (UNAVAILABLE),
    # and this worker cannot connect to it either.
    dead = free_port()
    with _running(env, fake, identity, tmp_path, monkeypatch, queue=queue, path="",
                  **DEFAULT_BACKOFF, WORKER_URL=f"http://127.0.0.1:{dead}") as (worker, engine):
        job_id = _submit(worker, 2)
        _, _, found = _until_undeliverable(worker, engine, job_id, 2,
                                           "Cloud Tasks deliveries cannot connect",
                                           f"refused connection, {queue} queue")
        assert f"127.0.0.1:{dead}" in found[0]
        rows = _ended_rows(engine, job_id)
        for row in rows:
            assert (row.status, row.last_error_code) == ("failed", "undeliverable")
            assert "connection refused" in row.last_error
        assert all(d.status == 0 for d in fake.deliveries)
        _queue_stopped(fake, [r.cloud_task_name for r in rows])


@pytest.mark.parametrize("queue", ["cli", "gcloud"])
def test_refused_cloud_tasks_deliveries_show_within_seconds_and_end(
        env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, queue: str) -> None:
    # The worker trusts another signing key than the one the queue's tokens carry: every
    # delivery is answered 401, as with a mismatched OIDC setup in production.
    other = TestIdentity()
    try:
        with _running(env, fake, identity, tmp_path, monkeypatch, queue=queue, path="",
                      **DEFAULT_BACKOFF, OIDC_CERTS_URL=other.serve()) as (worker, engine):
            started = time.monotonic()
            job_id = _submit(worker, 1)

            def reasons() -> list[str]:
                body = httpx.get(worker.url + "/healthz", timeout=5).json()
                return [r for r in body["reasons"] if "refused Cloud Tasks deliveries" in r]

            # This worker's own refusal shows at once (worker.refusals) ...
            found = wait_for(reasons, timeout_s=10, interval_s=0.2,
                             message="/healthz to show the refused deliveries")
            print(f"\n401, {queue} queue: this worker's refusal on /healthz after "
                  f"{time.monotonic() - started:.1f} s")
            assert "HTTP 401" in found[0] and worker.url + TASK_PATH in found[0]
            metrics = httpx.get(worker.url + "/metrics", timeout=5).text
            assert 'aiwebimage_undeliverable_recent{cause="refused_401"}' in metrics
            # ... and the queue's record of the task ends it.
            _until_undeliverable(worker, engine, job_id, 1,
                                 "Cloud Tasks deliveries get HTTP 401",
                                 f"401 (OIDC key mismatch), {queue} queue")
            rows = _ended_rows(engine, job_id)
            assert [(r.status, r.last_error_code) for r in rows] == [
                ("failed", "undeliverable")]
            assert "HTTP 401" in rows[0].last_error
            assert "Bearer" not in rows[0].last_error  # never the token
            assert all(d.status == 401 for d in fake.deliveries)
            _queue_stopped(fake, [r.cloud_task_name for r in rows])
    finally:
        other.stop()
