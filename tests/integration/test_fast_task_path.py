"""The task endpoint's fast path (worker/fast_task.py) answers what the FastAPI route
answers: a real worker process, the same deliveries once through the fast path and once
forced through the route (a trace header sends it there)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import Engine, text

from tests.conftest import WorkerProcess

TASK = "/api/admin/worker/process-task"
SECRET = "fast-path-secret-0123456789"
ROUTE = {"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"}


def _post(worker: WorkerProcess, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(worker.url + TASK, json=body, timeout=20,
                      headers={"X-Task-Secret": SECRET, **headers})


def _same(a: httpx.Response, b: httpx.Response) -> None:
    """Equal answers; a Retry-After that counts down to a due time may have crossed one
    second boundary between the two requests (b is sent after a)."""
    assert (a.status_code, a.json(), a.headers["content-type"]) == (
        b.status_code, b.json(), b.headers["content-type"])
    wait_a, wait_b = a.headers.get("retry-after"), b.headers.get("retry-after")
    assert (wait_a is None) == (wait_b is None)
    if wait_a is not None and wait_b is not None:
        assert int(wait_a) - 1 <= int(wait_b) <= int(wait_a), (wait_a, wait_b)


def test_fast_path_and_route_give_the_same_answers(
    start_worker: Callable[..., WorkerProcess], engine: Engine
) -> None:
    worker = start_worker(TASK_SECRET=SECRET, RUN_DISPATCHER="false")
    job = httpx.post(worker.url + "/api/admin/generate/batch", timeout=30, json={
        "prompts": ["a lighthouse", "a harbour"], "style": "none", "count_per_prompt": 1})
    assert job.status_code == 200, job.text
    with engine.begin() as conn:
        first, second = [r.id for r in conn.execute(text(
            "SELECT id FROM generation_tasks WHERE job_id = :j ORDER BY prompt_index"),
            {"j": job.json()["id"]})]
        conn.execute(text("UPDATE generation_tasks SET next_attempt_at = now() + "
                          "interval '20 s' WHERE id = :id"), {"id": second})

    done = _post(worker, {"task_id": str(first)})
    assert (done.status_code, done.json()["outcome"], done.json()["attempt"]) == (
        200, "succeeded", 1)
    _same(_post(worker, {"task_id": str(first)}),
          _post(worker, {"task_id": str(first)}, **ROUTE))  # duplicate
    not_due = _post(worker, {"task_id": str(second)})
    assert not_due.status_code == 503 and int(not_due.headers["retry-after"]) >= 15
    _same(not_due, _post(worker, {"task_id": str(second)}, **ROUTE))
    unknown = str(uuid.uuid4())
    _same(_post(worker, {"task_id": unknown}), _post(worker, {"task_id": unknown}, **ROUTE))
    assert _post(worker, {"task_id": unknown}).json()["outcome"] == "unknown_task"

    # Refusals and bad bodies are the route's, with its answers and logs.
    refused = _post(worker, {"task_id": unknown}, **{"X-Task-Secret": "wrong"})
    assert refused.status_code == 401
    assert refused.json() == {"detail": "missing or invalid task secret"}
    assert "task_auth_refused" in worker.logs()
    bad = _post(worker, {"task_id": "not-a-uuid"})
    assert bad.status_code == 422 and bad.json()["field"] == "task_id"
    extra_keys = _post(worker, {"task_id": unknown, "other": 1})
    assert extra_keys.status_code == 200 and extra_keys.json()["outcome"] == "unknown_task"
    with engine.connect() as conn:
        counters = conn.execute(text("SELECT completed_tasks, failed_tasks FROM "
                                     "generation_jobs WHERE id = :j"),
                                {"j": job.json()["id"]}).one()
    assert tuple(counters) == (1, 0)  # the duplicates moved nothing
