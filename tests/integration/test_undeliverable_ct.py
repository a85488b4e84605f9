"""core.dispatch.cloudtasks.undeliverable against a real PostgreSQL and the Cloud Tasks fake (the
real google-cloud-tasks client), one check at a time: tries are the queue's dispatch count
(looking twice counts nothing twice), a missing viewer role is one WARNING line, a task
the queue no longer holds is left to the stranded sweep, and nothing is read when no row
waits."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from core.config import Settings
from core.db.queries import q
from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher
from core.dispatch.cloudtasks.undeliverable import check_undelivered
from core.jobs import lifecycle
from core.jobs.validation import BatchSpec
from testing.cloudtasks_fake import CloudTasksFake, gcloud_queue
from tests.conftest import wait_for
from tests.integration.test_leases import run
from tests.support.cloud_tasks import create_queue


class _NotFound(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST


@pytest.fixture
def target() -> Iterator[str]:
    """A loopback server that answers 404 to everything (a wrong WORKER_URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    server.daemon_threads = True
    import threading

    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def ct_env(env: dict[str, str], fake: CloudTasksFake, target: str) -> dict[str, str]:
    env.update({"USE_CLOUD_TASKS": "true", "GCP_PROJECT": "test-project",
                "GCP_LOCATION": "us-central1", "QUEUE_NAME": "images",
                "CLOUD_TASKS_EMULATOR_HOST": fake.host, "WORKER_URL": target,
                "UNDELIVERABLE_MAX_TRIES": "100"})
    return env


@pytest.fixture
def ct_settings(ct_env: dict[str, str], settings: Settings) -> Settings:
    """The conftest's settings, built from ``env`` once ``ct_env`` has added to it."""
    return settings


@pytest.fixture
def dispatcher(ct_settings: Settings, fake: CloudTasksFake) -> Iterator[CloudTasksDispatcher]:
    dispatcher = CloudTasksDispatcher.from_settings(ct_settings)
    create_queue(dispatcher, gcloud_queue(dispatcher.queue_path, max_dispatches_per_second=10.0,
                                          max_concurrent_dispatches=10))
    yield dispatcher
    dispatcher.close()


def _submit(settings: Settings, engine: Engine, dispatcher: CloudTasksDispatcher,
            n: int) -> list[Any]:
    job = lifecycle.submit_batch(BatchSpec(tuple(f"p {i}" for i in range(n)), "none", 1),
                            settings=settings, engine=engine, dispatcher=dispatcher)
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT id, cloud_task_name FROM generation_tasks WHERE job_id = :j "
            "ORDER BY prompt_index"), {"j": job.id}))


def _check(settings: Settings, dispatcher: CloudTasksDispatcher) -> Any:
    return run(settings, lambda eng: check_undelivered(settings, eng, dispatcher,
                                                       grace_s=0.0))


def _task(engine: Engine, task_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT status, undeliverable_tries, last_error_code, last_error, "
            "next_attempt_at < now() - interval '10 min' AS left_to_sweep "
            "FROM generation_tasks WHERE id = :id"), {"id": task_id}).one()


def _occurrences(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT COALESCE(sum(occurrences), 0) FROM delivery_problems")).scalar_one())


def test_tries_are_the_queues_dispatch_count_not_one_per_look(
        ct_settings: Settings, engine: Engine, dispatcher: CloudTasksDispatcher,
        fake: CloudTasksFake) -> None:
    (row,) = _submit(ct_settings, engine, dispatcher, 1)
    wait_for(lambda: len(fake.deliveries_for(row.cloud_task_name)) >= 3, timeout_s=30,
             message="three 404 deliveries")
    dispatcher.client.pause_queue(name=dispatcher.queue_path)  # the count stops moving
    wait_for(lambda: not fake.live[row.cloud_task_name].in_flight, timeout_s=10)
    dispatched = len(fake.deliveries_for(row.cloud_task_name))
    first = _check(ct_settings, dispatcher)
    second = _check(ct_settings, dispatcher)
    assert (first.looked, first.recorded, second.looked, second.recorded) == (1, 1, 1, 0)
    task = _task(engine, row.id)
    assert (task.status, task.undeliverable_tries, task.last_error_code) == (
        "queued", dispatched, "undeliverable")
    assert "HTTP 404" in task.last_error and "check WORKER_URL" in task.last_error
    assert _occurrences(engine) == dispatched  # the queue's dispatches, counted once


def test_at_the_bound_the_task_fails_once_and_its_cloud_task_is_deleted(
        ct_settings: Settings, engine: Engine, dispatcher: CloudTasksDispatcher,
        fake: CloudTasksFake) -> None:
    ct_settings = ct_settings.model_copy(update={"UNDELIVERABLE_MAX_TRIES": 3})
    rows = _submit(ct_settings, engine, dispatcher, 2)
    wait_for(lambda: all(len(fake.deliveries_for(r.cloud_task_name)) >= 3 for r in rows),
             timeout_s=30, message="three 404 deliveries each")
    result = _check(ct_settings, dispatcher)
    again = _check(ct_settings, dispatcher)
    assert (result.failed, again.looked) == (2, 0)
    assert not [r for r in rows if r.cloud_task_name in fake.live]
    with engine.connect() as conn:
        job = conn.execute(text(
            "SELECT j.status, j.failed_tasks FROM generation_jobs j JOIN generation_tasks t "
            "ON t.job_id = j.id WHERE t.id = :id"), {"id": rows[0].id}).one()
    assert (job.status, job.failed_tasks) == ("failed", 2)


def test_a_missing_viewer_role_is_one_warning_line(
        ct_settings: Settings, engine: Engine, dispatcher: CloudTasksDispatcher,
        fake: CloudTasksFake, caplog: pytest.LogCaptureFixture) -> None:
    from core.dispatch.cloudtasks import undeliverable

    undeliverable._warned.clear()
    (row,) = _submit(ct_settings, engine, dispatcher, 1)
    fake.fail_get_tasks = grpc.StatusCode.PERMISSION_DENIED
    with caplog.at_level(logging.DEBUG, logger="core.dispatch.cloudtasks.undeliverable"):
        for _ in range(3):
            assert _check(ct_settings, dispatcher).unknown == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cloudtasks.viewer" in warnings[0].getMessage()
    assert _task(engine, row.id).undeliverable_tries == 0


def test_a_task_the_queue_no_longer_holds_is_left_to_the_stranded_sweep(
        ct_settings: Settings, engine: Engine, dispatcher: CloudTasksDispatcher,
        fake: CloudTasksFake) -> None:
    dispatcher.client.pause_queue(name=dispatcher.queue_path)
    (row,) = _submit(ct_settings, engine, dispatcher, 1)
    dispatcher.client.delete_task(name=row.cloud_task_name)
    assert _check(ct_settings, dispatcher).gone == 1
    task = _task(engine, row.id)
    assert (task.status, task.undeliverable_tries, task.left_to_sweep) == ("queued", 0, True)
    assert _check(ct_settings, dispatcher).looked == 0  # out of this check's window


def test_nothing_waiting_means_no_lookup(
        ct_settings: Settings, engine: Engine, dispatcher: CloudTasksDispatcher,
        fake: CloudTasksFake) -> None:
    calls = fake.get_task_calls
    assert _check(ct_settings, dispatcher).looked == 0
    assert fake.get_task_calls == calls
    with engine.connect() as conn:
        # A tiny table is scanned whichever way; without seq scans the planner shows the
        # partial index answers the query (what keeps a quiet check cheap on a big table).
        conn.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(
            text("EXPLAIN " + q("undelivered_candidates").text),
            {"grace_s": 2.0, "window_s": 600.0, "limit": 50}))
    assert "generation_tasks_due_idx" in plan
