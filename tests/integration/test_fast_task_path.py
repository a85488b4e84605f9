"""The task endpoint's fast path (worker/fast_task.py) answers what the FastAPI route
answers: a real worker process, the same deliveries once through the fast path and once
forced through the route (a trace header sends it there). Every outcome a worker on a
real database can be brought to, and every auth case a client on loopback can present;
tests/unit/test_task_path_shared.py adds the rest (other client addresses, OIDC, the
outcomes only a stop or a lost lease gives) and holds both paths to one auth check and
one encoder."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import Engine, text

from tests.conftest import WorkerProcess

TASK = "/api/admin/worker/process-task"  # the public contract, spelled out
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


def _alike(a: httpx.Response, b: httpx.Response) -> None:
    """Equal answers for two tasks in the same state (their ids differ)."""
    body_a, body_b = a.json(), b.json()
    assert body_a.pop("task_id") != body_b.pop("task_id")
    assert (a.status_code, body_a, a.headers["content-type"]) == (
        b.status_code, body_b, b.headers["content-type"])
    wait_a, wait_b = a.headers.get("retry-after"), b.headers.get("retry-after")
    assert (wait_a is None) == (wait_b is None)
    if wait_a is not None and wait_b is not None:
        assert int(wait_a) >= 1 and abs(int(wait_a) - int(wait_b)) <= 1, (wait_a, wait_b)


def _tasks(worker: WorkerProcess, engine: Engine, prompts: list[str]) -> list[uuid.UUID]:
    job = httpx.post(worker.url + "/api/admin/generate/batch", timeout=30, json={
        "prompts": prompts, "style": "none", "count_per_prompt": 1})
    assert job.status_code == 200, job.text
    with engine.connect() as conn:
        return [r.id for r in conn.execute(text(
            "SELECT id FROM generation_tasks WHERE job_id = :j ORDER BY prompt_index"),
            {"j": job.json()["id"]})]


def test_every_outcome_a_worker_gives_is_answered_alike_on_both_paths(
    start_worker: Callable[..., WorkerProcess], engine: Engine
) -> None:
    worker = start_worker(TASK_SECRET=SECRET, RUN_DISPATCHER="false")
    kinds = {"succeeded": "a lighthouse", "failed": "[[demo:moderation_blocked]] a cat",
             "rate limited": "[[demo:rate_limit]] a dog", "server error":
             "[[demo:server_error]] a fox", "busy": "a boat"}
    ids = _tasks(worker, engine, [f"{p} {n}" for p in kinds.values() for n in (1, 2)])
    pairs = dict(zip(kinds, zip(ids[::2], ids[1::2], strict=True), strict=True))
    with engine.begin() as conn:  # another delivery holds these two
        conn.execute(text("UPDATE generation_tasks SET status = 'running', attempts = 1, "
                          "lease_until = now() + interval '30 s' WHERE id IN (:a, :b)"),
                     {"a": pairs["busy"][0], "b": pairs["busy"][1]})
    expected = {"succeeded": (200, "succeeded"), "failed": (200, "failed"),
                "rate limited": (429, "retry"), "server error": (500, "retry"),
                "busy": (503, "busy")}
    for kind, (fast_id, route_id) in pairs.items():
        fast = _post(worker, {"task_id": str(fast_id)})
        routed = _post(worker, {"task_id": str(route_id)}, **ROUTE)
        assert (fast.status_code, fast.json()["outcome"]) == expected[kind], (kind, fast.text)
        _alike(fast, routed)
    assert int(_post(worker, {"task_id": str(pairs["busy"][0])}).headers["retry-after"]) > 20


# Headers of deliveries each path must refuse alike (the route refuses, and logs, them).
REFUSED: list[dict[str, str]] = [
    {}, {"X-Task-Secret": ""}, {"X-Task-Secret": "wrong"}, {"X-Task-Secret": SECRET[:-1]},
    {"X-Task-Secret": SECRET + "x"}, {"X-Task-Secret": SECRET.upper()},
    {"X-API-Key": SECRET}, {"Authorization": f"Bearer {SECRET}"},
    {"X-CloudTasks-TaskName": "t-1"},
]


def test_every_auth_case_from_loopback_is_answered_alike_on_both_paths(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    unknown = {"task_id": str(uuid.uuid4())}
    worker = start_worker(TASK_SECRET=SECRET, RUN_DISPATCHER="false")
    for headers in REFUSED:
        fast = httpx.post(worker.url + TASK, json=unknown, headers=headers, timeout=20)
        routed = httpx.post(worker.url + TASK, json=unknown, headers={**headers, **ROUTE},
                            timeout=20)
        assert fast.status_code == 401, headers
        _same(fast, routed)
    # A wrong secret first is the one that counts, on either path.
    twice = [("X-Task-Secret", "wrong"), ("X-Task-Secret", SECRET)]
    fast = httpx.post(worker.url + TASK, json=unknown, headers=twice, timeout=20)
    routed = httpx.post(worker.url + TASK, json=unknown, headers=[*twice, *ROUTE.items()],
                        timeout=20)
    assert fast.status_code == 401
    _same(fast, routed)
    # Each refusal is logged once, by the route: the fast path only hands it on.
    refusals = 2 * (len(REFUSED) + 1)
    assert worker.logs().count('"task_auth_refused"') == refusals
    accepted = [{"X-Task-Secret": SECRET},
                {"X-Task-Secret": SECRET, "X-CloudTasks-TaskName": "t-1",
                 "X-CloudTasks-TaskRetryCount": "3"}]
    for headers in accepted:
        fast = _post(worker, unknown, **headers)
        assert fast.json()["outcome"] == "unknown_task"
        _same(fast, _post(worker, unknown, **headers, **ROUTE))

    # Without a TASK_SECRET (development) a loopback client may deliver, on either path.
    open_worker = start_worker(RUN_DISPATCHER="false")
    fast = httpx.post(open_worker.url + TASK, json=unknown, timeout=20)
    assert (fast.status_code, fast.json()["outcome"]) == (200, "unknown_task")
    _same(fast, httpx.post(open_worker.url + TASK, json=unknown, headers=ROUTE, timeout=20))


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
