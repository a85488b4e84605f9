"""The table decides every retry; Cloud Tasks only carries (core/dispatch/cloudtasks/handover.py).

A production worker behind testing/cloudtasks_fake.py (the real google-cloud-tasks
client, OIDC-signed deliveries) and the OpenAI stub: a retry is a new named Cloud Task of
the next generation scheduled at the row's next_attempt_at, created before the delivery is
answered 2xx; a superseded generation changes nothing; a failed CreateTask is answered
503 so the queue retries the delivery; the worker logs the queue's retry config."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import Engine, text

from cli.main import main as cli
from core.config import Settings
from testing.cloudtasks_fake import ADMIN, CloudTasksFake, TestIdentity
from testing.openai_stub import OpenAIStub, Reply
from tests.conftest import WorkerProcess, wait_for
from tests.support.cloud_tasks import answered, worker_on_port
from tests.support.worker_api import submit

TASK_PATH = "/api/admin/worker/process-task"
QUEUE_PATH = "projects/test-project/locations/us-central1/queues/images"


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture
def prod_env(prod_env: dict[str, str], stub: OpenAIStub) -> dict[str, str]:
    prod_env.update(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
                    OPENAI_API_KEY=stub.api_key, PROVIDER_RATE_WAIT_S="0",
                    # the table caps a Retry-After at its max backoff
                    RETRY_MAX_BACKOFF_S="10")
    return prod_env


@pytest.fixture
def worker(prod_worker: WorkerProcess) -> WorkerProcess:
    return prod_worker


def _submit(worker: WorkerProcess, prompt: str) -> str:
    return str(submit(worker, [prompt], headers=ADMIN)["id"])


def _row(engine: Engine, job_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT id, status, attempts, dispatch_generation, cloud_task_name, updated_at, "
            "handover_generation FROM generation_tasks WHERE job_id = :j"), {"j": job_id}).one()


def _first_name(engine: Engine, job_id: str) -> str:
    """Generation 0's Cloud Task name (the row may have moved on already)."""
    from core.dispatch import TaskRef
    from core.dispatch.cloudtasks.dispatcher import task_id_for

    row = _row(engine, job_id)
    return QUEUE_PATH + "/tasks/" + task_id_for(TaskRef(row.id, 0))


def _wait_done(engine: Engine, job_id: str, timeout_s: float = 60) -> Any:
    return wait_for(lambda: (r := _row(engine, job_id)).status in ("succeeded", "failed")
                    and r, timeout_s=timeout_s, interval_s=0.1, message="the task to finish")


def test_a_rate_limited_attempt_is_a_new_task_scheduled_at_the_retry_after(
    worker: WorkerProcess, fake: CloudTasksFake, stub: OpenAIStub, engine: Engine,
) -> None:
    stub.on_prompt("a heron", Reply.rate_limited(retry_after_s=3))
    job_id = _submit(worker, "a heron")
    first_name = _first_name(engine, job_id)
    row = _wait_done(engine, job_id)
    assert (row.status, row.attempts, row.dispatch_generation) == ("succeeded", 2, 1)
    assert row.cloud_task_name != first_name and row.handover_generation is None
    (first,) = fake.deliveries_for(first_name)
    (second,) = answered(fake, row.cloud_task_name)
    # The first delivery was answered 2xx once the next Cloud Task existed: the queue never
    # retried it; the next one was due at the provider's Retry-After, not the queue's backoff.
    assert first.status == 200 and second.status == 200
    created = fake.created[row.cloud_task_name]
    scheduled = created.schedule_time.timestamp()
    assert scheduled - first.finished_at >= 3.0 - 0.5
    assert second.started_at >= scheduled
    assert second.started_at - first.started_at >= 3.0
    calls = stub.calls_for("a heron")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at_s - calls[0].at_s >= 3.0
    handed = [json.loads(line) for line in worker.logs().splitlines()
              if '"action": "handover"' in line]
    assert [h["dispatch_generation"] for h in handed] == [1]


def test_a_superseded_generation_is_answered_200_and_changes_nothing(
    worker: WorkerProcess, fake: CloudTasksFake, stub: OpenAIStub, engine: Engine,
    identity: TestIdentity, prod_env: dict[str, str],
) -> None:
    stub.on_prompt("a kite", Reply.rate_limited(retry_after_s=1))
    job_id = _submit(worker, "a kite")
    first_name = _first_name(engine, job_id)
    before = _wait_done(engine, job_id)
    assert before.dispatch_generation == 1
    # The queue delivering the old generation again (a duplicate, or a retry of a delivery
    # whose answer was lost): nothing moves, no model call.
    token = identity.token(audience=prod_env["WORKER_URL"],
                           email=prod_env["CLOUD_TASKS_SERVICE_ACCOUNT"])
    calls = len(stub.calls)
    response = httpx.post(worker.url + TASK_PATH, timeout=10, json={"task_id": str(before.id)},
                          headers={"Authorization": f"Bearer {token}",
                                   "X-CloudTasks-TaskName": first_name.rsplit("/", 1)[-1],
                                   "X-CloudTasks-QueueName": "images",
                                   "X-CloudTasks-TaskRetryCount": "3"})
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "superseded"
    after = _row(engine, job_id)
    assert after == before
    assert len(stub.calls) == calls


def test_a_failed_createtask_is_answered_503_and_the_queue_retries_the_delivery(
    worker: WorkerProcess, fake: CloudTasksFake, stub: OpenAIStub, engine: Engine,
) -> None:
    stub.on_prompt("a quay", Reply.rate_limited(retry_after_s=2))
    assert cli(["queue", "pause"]) == 0
    job_id = _submit(worker, "a quay")
    first_name = _first_name(engine, job_id)
    fake.fail_creates = 1  # the hand-over's CreateTask
    assert cli(["queue", "resume"]) == 0
    row = _wait_done(engine, job_id)
    assert (row.status, row.dispatch_generation) == ("succeeded", 1)
    statuses = [d.status for d in answered(fake, first_name)]
    assert statuses[0] == 503 and statuses[-1] == 200
    # Either the queue's retry of the first delivery ran the task (when it came after the
    # Retry-After), or the next generation, created by the retry or by the worker's check
    # loop, did: at most one delivery of it, and the model was paid once either way.
    assert len(fake.deliveries_for(row.cloud_task_name)) <= 1
    # The provider was asked once per table attempt: the queue's retries of the first
    # delivery did not call it again before its Retry-After.
    assert [c.status for c in stub.calls_for("a quay")] == [429, 200]


def test_the_worker_says_what_the_queue_config_means_for_retries(
    worker: WorkerProcess, fake: CloudTasksFake,
) -> None:
    line = wait_for(lambda: next((json.loads(x) for x in worker.logs().splitlines()
                                  if '"queue_config"' in x), None), timeout_s=20,
                    message="the queue config line")
    assert line["severity"] == "INFO"
    assert line["message"].startswith("queue images: max_attempts 100, backoff 0.05\u201310 s")
    assert "task retries are scheduled by the worker" in line["message"]


def test_an_unreadable_queue_config_is_one_warning_naming_the_role(
    prod_env: dict[str, str], settings: Settings, fake: CloudTasksFake, tmp_path: Path,
) -> None:
    assert cli(["queue", "create"]) == 0
    fake.fail_get_queue = grpc.StatusCode.PERMISSION_DENIED
    process = worker_on_port(prod_env, tmp_path).start()
    try:
        lines = wait_for(lambda: [json.loads(x) for x in process.logs().splitlines()
                                  if '"queue_config_unread"' in x] or None, timeout_s=20,
                         message="the warning")
        time.sleep(0.5)
        logs = process.logs()
    finally:
        process.stop()
    assert len(lines) == 1 and lines[0]["severity"] == "WARNING"
    assert "roles/cloudtasks.viewer" in lines[0]["message"]
    assert "Traceback" not in logs


def test_generation_names_are_parsed_only_for_their_own_task() -> None:
    from core.dispatch import TaskRef
    from core.dispatch.cloudtasks.dispatcher import task_id_for
    from core.dispatch.cloudtasks.handover import generation_of, is_superseded

    task = uuid.uuid4()
    assert generation_of(task, task_id_for(TaskRef(task, 3))) == 3
    assert generation_of(task, f"projects/p/locations/l/queues/q/tasks/"
                               f"{task_id_for(TaskRef(task, 0))}") == 0
    assert generation_of(task, task_id_for(TaskRef(uuid.uuid4(), 3))) is None
    assert generation_of(task, "1234567890") is None and generation_of(task, None) is None
    assert is_superseded(0, 1) and not is_superseded(1, 1) and not is_superseded(2, 1)
    assert not is_superseded(None, 4)


def test_expired_leases_are_taken_over_by_the_worker_check_not_the_stranded_sweep(
    prod_env: dict[str, str], settings: Settings, fake: CloudTasksFake, engine: Engine,
    tmp_path: Path,
) -> None:
    # Two tasks whose Cloud Run instance died mid-delivery and whose queue tasks are gone
    # (nothing will redeliver them): one with an attempt left, one at MAX_ATTEMPTS.
    prod_env.update(MAX_ATTEMPTS="2", LEASE_CHECK_INTERVAL_S="1",
                    K_SERVICE="aiwebimage-worker")
    assert cli(["queue", "create"]) == 0
    assert cli(["queue", "pause"]) == 0
    process = worker_on_port(prod_env, tmp_path).start()
    try:
        job_id = submit(process, ["a mill", "a weir"], headers=ADMIN)["id"]
        with engine.begin() as conn:
            rows = list(conn.execute(text(
                "SELECT id, cloud_task_name FROM generation_tasks WHERE job_id = :j "
                "ORDER BY prompt_index"), {"j": job_id}))
            for row, attempts in zip(rows, (1, 2), strict=True):
                conn.execute(text(
                    "UPDATE generation_tasks SET status = 'running', attempts = :a, "
                    "lease_until = now() - interval '10 seconds', lease_owner = 'dead', "
                    "claim_token = gen_random_uuid() WHERE id = :id"),
                    {"a": attempts, "id": row.id})
        for row in rows:
            fake.live.pop(row.cloud_task_name)  # the queue holds nothing for them
        assert cli(["queue", "resume"]) == 0
        started = time.monotonic()

        def finished() -> list[Any] | None:
            with engine.connect() as conn:
                done = list(conn.execute(text(
                    "SELECT status, attempts, crashes, last_error_code, last_error, "
                    "dispatch_generation FROM generation_tasks WHERE job_id = :j "
                    "ORDER BY prompt_index"), {"j": job_id}))
            return done if all(r.status in ("succeeded", "failed") for r in done) else None

        mill, weir = wait_for(finished, timeout_s=30, interval_s=0.1, message="take-over")
        took_s = time.monotonic() - started
        logs = process.logs()
    finally:
        process.stop()
    print(f"\nexpired leases taken over and finished {took_s:.1f} s after the queue resumed")
    assert (mill.status, mill.attempts, mill.crashes, mill.dispatch_generation) == (
        "succeeded", 2, 1, 1)
    assert (weir.status, weir.last_error_code, weir.crashes) == ("failed", "worker_crashed", 1)
    assert "stopped 1 times" in weir.last_error
    assert '"lease_takeover"' in logs and '"stranded_requeue"' not in logs


def test_the_expired_lease_probe_reads_the_running_lease_index(engine: Engine) -> None:
    # Many finished rows, a few running: the frequent check must not scan the table.
    from core.db.queries import sql

    with engine.begin() as conn:
        job = conn.execute(text(
            "INSERT INTO generation_jobs (id, status, total_tasks, style, count_per_prompt, "
            "provider, model, size, quality) VALUES (gen_random_uuid(), 'running', 20000, "
            "'none', 1, 'demo', 'demo', '1024x1024', 'medium') RETURNING id")).scalar_one()
        conn.execute(text(
            "INSERT INTO generation_tasks (id, job_id, prompt_index, image_index, prompt, "
            "style, status, lease_until) SELECT gen_random_uuid(), :j, i, 0, 'p', 'none', "
            "CASE WHEN i % 1000 = 0 THEN 'running' ELSE 'succeeded' END, "
            "CASE WHEN i % 1000 = 0 THEN now() END FROM generate_series(1, 20000) i"),
            {"j": job})
        conn.execute(text("ANALYZE generation_tasks"))
        plan = "\n".join(r[0] for r in conn.execute(
            text("EXPLAIN " + sql("expired_lease_ids")), {"grace_s": 5, "limit": 200}))
    assert "generation_tasks_running_lease_idx" in plan, plan


def test_a_handover_cut_short_by_a_crash_is_finished_by_the_worker_check(
    prod_env: dict[str, str], settings: Settings, fake: CloudTasksFake, engine: Engine,
    tmp_path: Path,
) -> None:
    # A delivery marked the row (outbox step 1) and died before CreateTask: the queue holds
    # nothing for generation 1, and generation 0's task is gone (it had been answered).
    prod_env.update(LEASE_CHECK_INTERVAL_S="1")
    assert cli(["queue", "create"]) == 0
    assert cli(["queue", "pause"]) == 0
    process = worker_on_port(prod_env, tmp_path).start()
    try:
        job_id = _submit(process, "a dune")
        first_name = _first_name(engine, job_id)
        fake.live.pop(first_name)
        with engine.begin() as conn:
            conn.execute(text(
                "UPDATE generation_tasks SET handover_generation = 1, "
                "handover_marked_at = now() - interval '1 minute' WHERE job_id = :j"),
                {"j": job_id})
        assert cli(["queue", "resume"]) == 0
        row = _wait_done(engine, job_id, timeout_s=40)
        logs = process.logs()
    finally:
        process.stop()
    assert (row.status, row.dispatch_generation, row.handover_generation) == (
        "succeeded", 1, None)
    assert fake.deliveries_for(first_name) == []
    assert [d.status for d in answered(fake, row.cloud_task_name)] == [200]
    assert '"handover_recovered"' in logs
