"""Fault 5: duplicate, late and out-of-order deliveries, sent by hand to real workers
(their dispatchers off), as Cloud Tasks' at-least-once delivery may send them."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine, text

from tests.conftest import WorkerProcess
from tests.reliability import (
    TASK,
    assert_counters_match_rows,
    assert_exactly_once,
    submit,
    task_ids,
)

Answer = tuple[int, str, str | None]


def _deliver(worker: WorkerProcess, task_id: str) -> Answer:
    r = httpx.post(worker.url + TASK, json={"task_id": task_id}, timeout=30)
    return r.status_code, r.json().get("outcome", ""), r.headers.get("retry-after")


def test_same_task_five_times_concurrently_on_two_workers_succeeds_once(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    workers = [start_worker(RUN_DISPATCHER="false", DEMO_LATENCY_MS="400") for _ in range(2)]
    job_id = submit(workers[0], ["one picture", "another picture"])["id"]
    target = sorted(task_ids(engine, job_id))[0]
    barrier = threading.Barrier(5)

    def deliver(i: int) -> Answer:
        barrier.wait()
        return _deliver(workers[i % 2], target)

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(deliver, range(5)))
    assert [a[:2] for a in answers].count((200, "succeeded")) == 1, answers
    for status, outcome, retry_after in answers:
        if outcome != "succeeded":
            # during the live lease: retry later (503 + Retry-After); after it: done (200)
            assert (status, outcome) in {(503, "busy"), (200, "duplicate")}, answers
            assert status == 200 or int(retry_after or 0) >= 1
    assert _deliver(workers[1], target)[:2] == (200, "duplicate")
    with engine.connect() as conn:
        attempts = conn.execute(text("SELECT attempts FROM generation_tasks WHERE id=:t"),
                                {"t": target}).scalar()
    assert attempts == 1  # the refused duplicates never counted as attempts
    assert assert_counters_match_rows(engine, job_id) == {"succeeded": 1, "queued": 1}
    assert_exactly_once(engine, tmp_path / "images", job_id)


def test_delivery_of_a_cancelled_jobs_task_and_of_unknown_ids_change_nothing(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    worker = start_worker(RUN_DISPATCHER="false", DEMO_LATENCY_MS="0")
    job_id = submit(worker, [f"cancelled picture {i}" for i in range(3)])["id"]
    cancel = httpx.post(f"{worker.url}/api/admin/jobs/{job_id}/cancel", timeout=10)
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    for task_id in task_ids(engine, job_id):
        assert _deliver(worker, task_id)[:2] == (200, "duplicate")  # done: do not retry
    # An id nothing will ever exist under: 2xx, or Cloud Tasks would retry it for nothing.
    assert _deliver(worker, str(uuid.uuid4()))[:2] == (200, "unknown_task")
    for bad in ({"task_id": "not-a-uuid"}, {"task_id": 7}, {}, {"task_id": None}):
        r = httpx.post(worker.url + TASK, json=bad, timeout=10)
        assert r.status_code == 422 and r.json()["field"] == "task_id", r.text
    assert assert_counters_match_rows(engine, job_id) == {"cancelled": 3}
    with engine.connect() as conn:
        attempts = conn.execute(text("SELECT max(attempts) FROM generation_tasks "
                                     "WHERE job_id=:j"), {"j": job_id}).scalar()
    assert attempts == 0
    assert not (tmp_path / "images" / job_id).exists()


def test_late_answer_of_an_expired_lease_does_not_finish_the_task_twice(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    # Delivery 1 outlives its lease; delivery 2 (Cloud Tasks' retry after the deadline)
    # claims the task again. Delivery 1 ends first but no longer owns the task.
    worker = start_worker(RUN_DISPATCHER="false", DEMO_LATENCY_MS="2500",
                          DISPATCH_DEADLINE_S="1", TASK_LEASE_S="1.5")
    job_id = submit(worker, ["a slow picture"])["id"]
    (target,) = task_ids(engine, job_id)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(_deliver, worker, target)
        time.sleep(1.9)
        second = pool.submit(_deliver, worker, target)
        answers = first.result(), second.result()
    assert [a[:2] for a in answers] == [(200, "lost_lease"), (200, "succeeded")]
    with engine.connect() as conn:
        attempts = conn.execute(text("SELECT attempts FROM generation_tasks WHERE id=:t"),
                                {"t": target}).scalar()
    assert attempts == 2
    assert assert_counters_match_rows(engine, job_id) == {"succeeded": 1}
    assert_exactly_once(engine, tmp_path / "images", job_id)
