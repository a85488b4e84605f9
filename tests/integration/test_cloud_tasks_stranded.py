"""Tasks stranded in Cloud Tasks mode: rows left queued (or running on a dead lease) after
the queue lost their task. Against testing/cloudtasks_fake.py (the CloudTasks gRPC
service; the real google-cloud-tasks client over a real channel), real PostgreSQL, and a
real worker in production mode (OIDC) for the end-to-end case.

Rows are made stale by moving their timestamps back in SQL: the sweep's threshold is half
an hour, and the point is what it does with rows past it, not the waiting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, text

from cli.main import main as cli
from core.config import Settings
from core.db.queries import q
from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher
from core.dispatch.cloudtasks.stranded import Candidate, is_candidate
from core.dispatch.cloudtasks.sweeper import sweep_stranded
from core.jobs import lifecycle
from core.jobs.validation import BatchSpec
from testing.cloudtasks_fake import ADMIN, CloudTasksFake
from tests.conftest import free_port, wait_for
from tests.support.cloud_tasks import emulator_values, worker_on_port
from tests.support.worker_api import wait_done

STALE_S = 1800.0


@pytest.fixture
def long_retries(prod_env: dict[str, str]) -> None:
    """The queue keeps retrying deliveries that reach nobody for about a minute (102
    attempts, 0.5 s apart) instead of giving up within two seconds: its tasks stay held."""
    prod_env["MAX_ATTEMPTS"] = "100"


@pytest.fixture
def dispatcher(prod_env: dict[str, str], settings: Settings
               ) -> Iterator[CloudTasksDispatcher]:
    assert cli(["queue", "create"]) == 0
    assert cli(["queue", "pause"]) == 0  # nothing delivered until a test resumes
    cloud = CloudTasksDispatcher.from_settings(settings)
    yield cloud
    cloud.close()


def _submit(settings: Settings, n: int) -> Any:
    return lifecycle.submit_batch(BatchSpec(prompts=tuple(f"stranded {i}" for i in range(n)),
                                       style="none", count_per_prompt=1), settings=settings)


def _rows(engine: Engine, job_id: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT id, status, attempts, cloud_task_name, dispatch_generation, updated_at, "
            "next_attempt_at FROM generation_tasks WHERE job_id = :j ORDER BY prompt_index"),
            {"j": job_id}))


def _age(engine: Engine, ids: list[Any], *, seconds: float = 3600) -> None:
    """As if these rows had sat untouched (and unchecked) for ``seconds``."""
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE generation_tasks SET updated_at = now() - make_interval(secs => :s), "
            "next_attempt_at = now() - make_interval(secs => :s) WHERE id = ANY(:ids)"),
            {"s": seconds, "ids": ids})


def _sweep_cli(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli(["sweep", "--stranded"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.usefixtures("long_retries")
def test_cli_skips_a_paused_queue_leaves_held_tasks_and_requeues_a_deleted_one(
    dispatcher: CloudTasksDispatcher, fake: CloudTasksFake, settings: Settings,
    engine: Engine, capsys: pytest.CaptureFixture[str],
) -> None:
    job = _submit(settings, 3)
    gone, held, _fresh = before = _rows(engine, job.id)
    assert {r.status for r in before} == {"queued"}
    dispatcher.client.delete_task(name=gone.cloud_task_name)
    assert gone.cloud_task_name not in fake.live
    _age(engine, [gone.id, held.id])  # fresh stays recent: not even asked about
    aged = _rows(engine, job.id)

    # Paused: the queue holds its tasks; the sweep asks nothing and moves nothing.
    code, out = _sweep_cli(capsys)
    assert (code, out["skipped"], out["checked"], out["requeued"]) == (0, "queue paused", 0, 0)
    assert fake.get_task_calls == 0
    assert _rows(engine, job.id) == aged

    assert cli(["queue", "resume"]) == 0  # deliveries now reach nobody: tasks stay held
    code, out = _sweep_cli(capsys)
    assert code == 0, out
    assert (out["skipped"], out["checked"], out["held"], out["unknown"], out["requeued"],
            out["enqueued"], out["failed"]) == (None, 2, 1, 0, 1, 1, 0)
    assert fake.get_task_calls == 2
    g, h, f = _rows(engine, job.id)
    # The lost task: a new generation, a new name, which the queue now holds.
    assert (g.status, g.dispatch_generation) == ("queued", 1)
    assert g.cloud_task_name != gone.cloud_task_name and g.cloud_task_name in fake.live
    # The held one: untouched but for the note of its check (next_attempt_at).
    assert (h.status, h.dispatch_generation, h.cloud_task_name, h.updated_at) == (
        "queued", 0, held.cloud_task_name, aged[1].updated_at)
    assert h.next_attempt_at > aged[1].next_attempt_at
    assert f == aged[2]
    # Straight away again: the requeued row is fresh, the held one was just checked.
    code, out = _sweep_cli(capsys)
    assert (code, out["checked"], out["requeued"]) == (0, 0, 0)
    assert fake.get_task_calls == 2


@pytest.mark.usefixtures("long_retries")
def test_an_unanswered_lookup_leaves_the_row_until_the_queue_answers(
    dispatcher: CloudTasksDispatcher, fake: CloudTasksFake, settings: Settings,
    engine: Engine,
) -> None:
    job = _submit(settings, 1)
    (row,) = _rows(engine, job.id)
    dispatcher.client.delete_task(name=row.cloud_task_name)
    _age(engine, [row.id])
    aged = _rows(engine, job.id)
    dispatcher.resume()
    fake.fail_get_tasks = grpc.StatusCode.UNAVAILABLE
    swept = sweep_stranded(dispatcher, stale_s=STALE_S)
    assert (swept.checked, swept.unknown, swept.held, swept.requeued) == (1, 1, 0, 0)
    # Not even the check is noted: the row is asked about again next sweep.
    assert _rows(engine, job.id) == aged
    fake.fail_get_tasks = grpc.StatusCode.UNIMPLEMENTED  # what the PyPI emulator answers
    swept = sweep_stranded(dispatcher, stale_s=STALE_S)
    assert (swept.checked, swept.unknown, swept.requeued) == (1, 1, 0)
    assert _rows(engine, job.id) == aged
    assert fake.create_calls == 1
    fake.fail_get_tasks = None
    swept = sweep_stranded(dispatcher, stale_s=STALE_S)
    assert (swept.checked, swept.requeued, swept.enqueue.enqueued) == (1, 1, 1)
    (moved,) = _rows(engine, job.id)
    assert (moved.status, moved.dispatch_generation) == ("queued", 1)


@pytest.mark.usefixtures("long_retries")
def test_a_purged_queue_gets_its_unfinished_tasks_back(
    dispatcher: CloudTasksDispatcher, fake: CloudTasksFake, settings: Settings,
    engine: Engine,
) -> None:
    job = _submit(settings, 3)
    before = _rows(engine, job.id)
    dispatcher.client.purge_queue(name=dispatcher.queue_path)
    assert fake.live == {}
    _age(engine, [r.id for r in before])
    dispatcher.resume()
    swept = sweep_stranded(dispatcher, stale_s=STALE_S)
    assert (swept.checked, swept.requeued, swept.enqueue.enqueued) == (3, 3, 3)
    after = _rows(engine, job.id)
    assert [r.dispatch_generation for r in after] == [1, 1, 1]
    assert {r.cloud_task_name for r in after} == set(fake.live)


def test_a_queue_that_cannot_be_read_is_not_swept(
    dispatcher: CloudTasksDispatcher, fake: CloudTasksFake, settings: Settings,
    engine: Engine, capsys: pytest.CaptureFixture[str],
) -> None:
    job = _submit(settings, 1)
    _age(engine, [r.id for r in _rows(engine, job.id)])
    aged = _rows(engine, job.id)
    # Its tasks all answer NOT_FOUND now; that must not read as "all lost".
    dispatcher.client.delete_queue(name=dispatcher.queue_path)
    code, out = _sweep_cli(capsys)
    assert (code, out["skipped"], out["checked"]) == (1, "queue state unknown", 0)
    assert fake.get_task_calls == 0
    assert _rows(engine, job.id) == aged


class _QueueDeletedMeanwhile(CloudTasksDispatcher):
    """The queue is deleted while the sweep asks about its tasks."""

    def holds(self, task_name: str) -> bool | None:
        self.client.delete_queue(name=self.queue_path)
        return super().holds(task_name)


def test_a_queue_deleted_during_the_sweep_proves_nothing(
    dispatcher: CloudTasksDispatcher, fake: CloudTasksFake, settings: Settings,
    engine: Engine,
) -> None:
    job = _submit(settings, 1)
    _age(engine, [r.id for r in _rows(engine, job.id)])
    aged = _rows(engine, job.id)
    dispatcher.resume()
    swept = sweep_stranded(_QueueDeletedMeanwhile(settings, dispatcher.client),
                           stale_s=STALE_S)
    assert (swept.checked, swept.unknown, swept.requeued) == (1, 1, 0)
    assert fake.get_task_calls == 1
    assert _rows(engine, job.id) == aged


# gcloud-tasks-emulator (PyPI) has no GetTask: it answers UNIMPLEMENTED (HTTP 501).
@pytest.fixture
def emulator_env(env: dict[str, str], emulator: str) -> dict[str, str]:
    # the emulator's deliveries reach nobody; the rows stay queued
    env.update(emulator_values(emulator, free_port()))
    return env


def test_against_the_emulator_which_cannot_look_tasks_up_nothing_moves(
    emulator_env: dict[str, str], settings: Settings, engine: Engine,
) -> None:
    assert settings.CLOUD_TASKS_EMULATOR_HOST == emulator_env["CLOUD_TASKS_EMULATOR_HOST"]
    assert cli(["queue", "create"]) == 0
    job = _submit(settings, 2)
    _age(engine, [r.id for r in _rows(engine, job.id)])
    aged = _rows(engine, job.id)
    cloud = CloudTasksDispatcher.from_settings(settings)
    try:
        swept = sweep_stranded(cloud, stale_s=STALE_S)
    finally:
        cloud.close()
    assert (swept.skipped, swept.checked, swept.unknown, swept.requeued) == (None, 2, 2, 0)
    assert _rows(engine, job.id) == aged


class _ClaimedMeanwhile(CloudTasksDispatcher):
    """A delivery claims each row between the sweep's read and the queue's answer."""

    engine: Engine

    def holds(self, task_name: str) -> bool | None:
        with self.engine.begin() as conn:
            conn.execute(text(
                "UPDATE generation_tasks SET status = 'running', attempts = attempts + 1, "
                "lease_until = now() + interval '1 minute', updated_at = now() "
                "WHERE cloud_task_name = :n"), {"n": task_name})
        return super().holds(task_name)


@pytest.mark.usefixtures("long_retries")
def test_a_row_claimed_while_the_queue_is_asked_is_not_requeued(
    dispatcher: CloudTasksDispatcher, fake: CloudTasksFake, settings: Settings,
    engine: Engine,
) -> None:
    job = _submit(settings, 1)
    (row,) = _rows(engine, job.id)
    dispatcher.client.delete_task(name=row.cloud_task_name)  # NOT_FOUND when asked
    _age(engine, [row.id])
    racing = _ClaimedMeanwhile(settings, dispatcher.client)
    racing.engine = engine
    dispatcher.resume()
    swept = sweep_stranded(racing, stale_s=STALE_S)
    assert (swept.checked, swept.requeued, swept.enqueue.enqueued) == (1, 0, 0)
    (after,) = _rows(engine, job.id)
    assert (after.status, after.dispatch_generation, after.cloud_task_name) == (
        "running", 0, row.cloud_task_name)
    assert fake.create_calls == 1


@pytest.mark.parametrize(
    ("status", "updated_s", "lease_s", "checked_s"),
    [
        ("queued", 3600, None, 3600),
        ("queued", 3600, None, 60),
        ("queued", 60, None, 3600),
        ("queued", 3600, None, -30),
        ("running", 7200, 3600, 7200),
        ("running", 7200, 60, 7200),
        ("running", 7200, -60, 7200),
        ("running", 7200, 3600, 60),
        ("pending", 7200, None, 7200),
        ("succeeded", 7200, None, 7200),
    ],
)
def test_the_sql_picks_exactly_the_rows_the_pure_rule_does(
    dispatcher: CloudTasksDispatcher, settings: Settings, engine: Engine,
    status: str, updated_s: float, lease_s: float | None, checked_s: float,
) -> None:
    job = _submit(settings, 1)
    (row,) = _rows(engine, job.id)
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE generation_tasks SET status = :st, "
            "updated_at = now() - make_interval(secs => :u), "
            "lease_until = now() - make_interval(secs => CAST(:l AS float)), "
            "next_attempt_at = now() - make_interval(secs => :c) WHERE id = :id"),
            {"st": status, "u": updated_s, "l": lease_s, "c": checked_s, "id": row.id})
        picked = conn.execute(q("stranded_candidates"), {"stale_s": STALE_S, "limit": 10}).all()
        full = conn.execute(text(
            "SELECT id, job_id, status, dispatch_generation, updated_at, lease_until, "
            "next_attempt_at, cloud_task_name, now() AS db_now FROM generation_tasks "
            "WHERE id = :id"), {"id": row.id}).one()
    candidate = Candidate(**{k: getattr(full, k) for k in Candidate.__dataclass_fields__})
    assert [r.id for r in picked] == (
        [row.id] if is_candidate(candidate, now=full.db_now, stale_s=STALE_S) else [])


def test_worker_sweep_recovers_tasks_the_queue_lost_and_the_job_completes(
    dispatcher: CloudTasksDispatcher, fake: CloudTasksFake, settings: Settings,
    engine: Engine, prod_env: dict[str, str], tmp_path: Path,
) -> None:
    job = _submit(settings, 4)
    deleted, died, gave_up_a, gave_up_b = before = _rows(engine, job.id)
    # Deleted by an operator; the next one deleted too while a worker that had claimed it
    # died (running, lease long gone); the last two dropped by the queue after max_attempts
    # of deliveries that never reached a worker.
    dispatcher.client.delete_task(name=deleted.cloud_task_name)
    dispatcher.client.delete_task(name=died.cloud_task_name)
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE generation_tasks SET status = 'running', attempts = 1, "
            "lease_until = now() - interval '1 hour' WHERE id = :id"), {"id": died.id})
    # A queue that gives up quickly (ours keeps trying for hours): 7 attempts.
    attempts = 7
    dispatcher.client.update_queue(
        queue=tasks_v2.Queue(name=dispatcher.queue_path,
                             retry_config=tasks_v2.RetryConfig(max_attempts=attempts)),
        update_mask=field_mask_pb2.FieldMask(paths=["retry_config.max_attempts"]))
    dispatcher.resume()
    wait_for(lambda: not ({gave_up_a.cloud_task_name, gave_up_b.cloud_task_name}
                          & set(fake.live)), timeout_s=30, message="the queue to give up")
    assert len(fake.deliveries_for(gave_up_a.cloud_task_name)) == attempts
    _age(engine, [r.id for r in before])
    assert {r.status for r in _rows(engine, job.id)} == {"queued", "running"}

    worker = worker_on_port({**prod_env, "SWEEP_INTERVAL_S": "0.5"}, tmp_path).start()
    try:
        status = wait_done(worker, str(job.id), timeout_s=60, headers=ADMIN)
        logs = worker.logs()
    finally:
        worker.stop()
    assert status["status"] == "completed"
    rows = _rows(engine, job.id)
    assert {r.status for r in rows} == {"succeeded"}
    for old, new in zip(before, rows, strict=True):
        assert new.dispatch_generation == 1
        assert new.cloud_task_name != old.cloud_task_name
        (delivery,) = fake.deliveries_for(new.cloud_task_name)
        assert delivery.status == 200
    assert fake.deliveries_for(deleted.cloud_task_name) == []
    assert fake.deliveries_for(died.cloud_task_name) == []
    recovered = [json.loads(line) for line in logs.splitlines()
                 if '"stranded_requeue"' in line]
    assert sorted((e["task_id"], e["was_status"]) for e in recovered) == sorted(
        (str(r.id), "running" if r.id == died.id else "queued") for r in before)
    assert all(e["severity"] == "WARNING" for e in recovered)


def test_cli_refuses_a_stranded_sweep_on_the_local_queue(
    settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    # The local queue is its table: its loop re-delivers expired leases itself.
    assert not settings.USE_CLOUD_TASKS
    assert cli(["sweep", "--stranded"]) == 2
    assert "USE_CLOUD_TASKS" in capsys.readouterr().err
