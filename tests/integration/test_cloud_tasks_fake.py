"""What gcloud-tasks-emulator cannot show, against testing/cloudtasks_fake.py (the
CloudTasks gRPC service from the google-cloud-tasks protos, the real client over a real
insecure channel): AlreadyExists on a repeated task name, OIDC-signed deliveries to a
worker in production mode, bounded concurrent CreateTask, failed CreateTask calls left
to the sweeper, and queue administration through the CLI. The fake, the production env
and worker are tests/support/cloud_tasks.py's fixtures."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from cli.main import main as cli
from core.config import Settings
from core.dispatch import TaskRef
from core.dispatch.cloudtasks.dispatcher import (
    CREATE_CONCURRENCY,
    QUEUE_MAX_ATTEMPTS,
    CloudTasksDispatcher,
)
from core.jobs import lifecycle
from core.jobs.validation import BatchSpec
from testing.cloudtasks_fake import ADMIN, CloudTasksFake
from tests.conftest import WorkerProcess
from tests.support.worker_api import submit, wait_done


def _rows(engine: Engine, job_id: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT id, status, attempts, cloud_task_name, dispatch_generation, "
            "last_error_code FROM generation_tasks WHERE job_id = :j ORDER BY prompt_index"),
            {"j": job_id}))


def _wait_finished(worker: WorkerProcess, job_id: str) -> dict[str, Any]:
    return wait_done(worker, job_id, timeout_s=60, headers=ADMIN)


def test_production_batch_is_delivered_with_oidc_tokens_and_completes(
    prod_worker: WorkerProcess, fake: CloudTasksFake, engine: Engine,
) -> None:
    job_id = submit(prod_worker, ["a harbour", "a lantern"], headers=ADMIN,
                    count_per_prompt=2)["id"]
    assert _wait_finished(prod_worker, job_id)["status"] == "completed"
    rows = _rows(engine, job_id)
    assert {r.status for r in rows} == {"succeeded"}
    for row in rows:
        (delivery,) = fake.deliveries_for(row.cloud_task_name)
        assert delivery.status == 200
        assert delivery.authorization and delivery.authorization.startswith("Bearer ey")
        assert delivery.url == prod_worker.url + "/api/admin/worker/process-task"
        assert delivery.headers["X-CloudTasks-QueueName"] == "images"
    # Logs Cloud Logging reads: one JSON line per finished delivery, with the ids, the
    # Cloud Tasks task name, attempt, latency and the request's trace.
    done = [json.loads(line) for line in prod_worker.logs().splitlines()
            if '"process_task_done"' in line]
    assert len(done) == 4
    for entry in done:
        assert entry["severity"] == "INFO" and entry["job_id"] == job_id
        assert {"task_id", "cloud_task_name", "attempt", "latency_ms"} <= set(entry)
        assert entry["logging.googleapis.com/trace"].startswith(
            "projects/test-project/traces/")
    metrics = httpx.get(prod_worker.url + "/metrics", timeout=10).text
    assert 'aiwebimage_task_deliveries_total{outcome="succeeded",provider="demo"} 4.0' in metrics
    assert "aiwebimage_provider_latency_seconds_count" in metrics
    assert 'aiwebimage_queue_depth{status="queued"} 0.0' in metrics


def test_repeated_enqueue_is_already_exists_and_a_retry_gets_a_fresh_name(
    prod_worker: WorkerProcess, fake: CloudTasksFake, engine: Engine,
    prod_settings: Settings,
) -> None:
    job_id = submit(prod_worker, ["[[demo:moderation_blocked]] a cat"], headers=ADMIN)["id"]
    assert _wait_finished(prod_worker, job_id)["status"] == "failed"
    (row,) = _rows(engine, job_id)
    dispatcher = CloudTasksDispatcher.from_settings(prod_settings)
    try:
        again = dispatcher.enqueue([TaskRef(row.id, row.dispatch_generation)])
        assert (again.enqueued, again.already_enqueued, again.failed) == (0, 1, 0)
    finally:
        dispatcher.close()
    assert len(fake.deliveries_for(row.cloud_task_name)) == 1

    retried = httpx.post(f"{prod_worker.url}/api/admin/jobs/{job_id}/retry-failed",
                         headers=ADMIN, timeout=30, json={"include_refusals": True})
    assert retried.status_code == 200, retried.text
    _wait_finished(prod_worker, job_id)
    (after,) = _rows(engine, job_id)
    assert after.dispatch_generation == row.dispatch_generation + 1
    assert after.cloud_task_name != row.cloud_task_name
    assert len(fake.deliveries_for(after.cloud_task_name)) == 1
    assert (after.status, after.last_error_code) == ("failed", "moderation_blocked")


def test_large_batch_runs_createtask_concurrently_but_bounded(
    prod_settings: Settings, fake: CloudTasksFake, engine: Engine,
) -> None:
    assert cli(["queue", "pause"]) == 0  # nothing is delivered: no worker runs here
    fake.create_latency_s = 0.05  # a round trip to Cloud Tasks, roughly
    # The queue gets a window of the batch (CLOUD_TASKS_WINDOW); one as large as
    # the batch hands it all over at once, as a large refill or sweep does.
    wide = prod_settings.model_copy(update={"CLOUD_TASKS_WINDOW": 1000})
    job = lifecycle.submit_batch(BatchSpec(prompts=tuple(f"tile {i}" for i in range(1000)),
                                      style="none", count_per_prompt=1),
                            settings=wide)
    assert fake.create_calls == 1000
    # Many calls in flight (not 1,000 round trips in a row), never more than the bound,
    # which sits where Cloud Tasks' guidance puts it (32-100).
    assert 32 <= CREATE_CONCURRENCY <= 100
    assert CREATE_CONCURRENCY // 2 <= fake.max_in_flight_creates <= CREATE_CONCURRENCY
    rows = _rows(engine, job.id)
    assert {r.status for r in rows} == {"queued"}
    assert len({r.cloud_task_name for r in rows}) == 1000
    assert fake.deliveries == []


def test_failed_createtask_calls_stay_pending_until_the_sweeper(
    prod_settings: Settings, fake: CloudTasksFake, engine: Engine,
) -> None:
    assert cli(["queue", "pause"]) == 0
    fake.fail_creates = 3
    job = lifecycle.submit_batch(BatchSpec(prompts=tuple(f"leaf {i}" for i in range(8)),
                                      style="none", count_per_prompt=1),
                            settings=prod_settings)
    assert [r.status for r in _rows(engine, job.id)].count("pending") == 3
    assert cli(["sweep", "--grace-s", "0"]) == 0
    rows = _rows(engine, job.id)
    assert {r.status for r in rows} == {"queued"}
    assert fake.create_calls == 8 + 3


def test_cli_creates_describes_updates_pauses_and_resumes_the_queue(
    prod_settings: Settings, fake: CloudTasksFake, capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    assert cli(["queue", "describe"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["max_dispatches_per_second"] == 10
    assert described["max_concurrent_dispatches"] == 100
    assert described["max_attempts"] == QUEUE_MAX_ATTEMPTS
    assert described["state"] == "RUNNING"
    assert cli(["queue", "update", "--max-dispatches-per-second", "25"]) == 0
    updated = json.loads(capsys.readouterr().out)
    assert (updated["max_dispatches_per_second"], updated["max_concurrent_dispatches"]) == (
        25, 100)
    assert cli(["queue", "pause"]) == 0
    assert capsys.readouterr().out.strip() == "paused"
    assert next(iter(fake.queues.values())).paused
    assert cli(["queue", "status"]) == 0 and capsys.readouterr().out.strip() == "paused"
    assert cli(["queue", "resume"]) == 0
    assert capsys.readouterr().out.strip() == "running"
    # Creating it again resets it to the guide's settings rather than failing.
    assert cli(["queue", "create"]) == 0
    assert json.loads(capsys.readouterr().out)["max_dispatches_per_second"] == 10
