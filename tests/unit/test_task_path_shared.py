"""The task endpoint has one auth check, one answer encoder and one path constant, whether a
delivery is answered by the fast path (worker/fast_task.py) or by the FastAPI route
(worker/routes/tasks.py).

The in-process tests run the real app (create_app) through its whole ASGI stack, and
compare what each path answers for the same request: every auth rule (including a client
that is not loopback and an OIDC verifier, which a worker process on loopback cannot show)
and every outcome class. The processor is scripted: the subject here is the HTTP layer
around it, and a real one cannot be made to answer stopping or lost_lease on demand
(tests/integration/test_fast_task_path.py compares the two paths on a real worker and
database). Which path processed a delivery is read from the call stack, so a comparison
of the route with itself cannot pass for one of the fast path with the route."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import httpx
import pytest

from core import worker_url
from core.config import Settings
from core.delivery.processing import DeliveryOutcome
from core.dispatch.cloudtasks import dispatcher
from core.dispatch.cloudtasks.oidc import make_verifier
from testing.cloudtasks_fake import SERVICE_ACCOUNT, TestIdentity
from worker import deps, fast_task, responses
from worker.app import create_app
from worker.routes import tasks

SECRET = "shared-path-secret-0123456789"
API_KEY = "shared-path-admin-key-0123456789"
ROUTE = ("X-Cloud-Trace-Context", "105445aa7843bc8bf206b12000100000/1;o=1")
WORKER = "http://127.0.0.1:8080"
LOOPBACK = "127.0.0.1"
ELSEWHERE = "203.0.113.7"

Headers = Sequence[tuple[str, str | bytes]]


def _via_route() -> bool:
    """Whether the route's endpoint is on the call stack (an awaiting coroutine's frame is
    the caller of the one it awaits)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is tasks.process_task.__code__:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class ScriptedProcessor:
    """Answers every delivery with ``outcome`` and notes which path asked."""

    def __init__(self) -> None:
        self.outcome = DeliveryOutcome(200, "succeeded", "", attempt=1)
        self.paths: list[str] = []

    async def process(self, task_id: uuid.UUID, *, attempt_floor: int = 0,
                      log_extra: dict[str, Any] | None = None) -> DeliveryOutcome:
        self.paths.append("route" if _via_route() else "fast")
        return replace(self.outcome, task_id=str(task_id))


def _app(verifier: Any = None, **values: Any) -> tuple[Any, ScriptedProcessor]:
    settings = Settings.model_validate({"ENVIRONMENT": "test", "API_KEY": API_KEY,
                                        "WORKER_URL": WORKER, **values})
    app = create_app(settings)
    processor = ScriptedProcessor()
    app.state.processor = processor
    app.state.oidc_verifier = verifier
    return app, processor


def _deliver(app: Any, client: str, headers: Headers,
             body: bytes | None = None) -> httpx.Response:
    task_id = uuid.UUID("6f1c2d3e-4b5a-4c6d-8e7f-8091a2b3c4d5")
    content = body if body is not None else b'{"task_id":"%s"}' % str(task_id).encode()

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=WORKER) as http:
            return await http.post(worker_url.TASK_PATH, content=content, headers=[
                (b"content-type", b"application/json"),
                *((k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers)])

    return asyncio.run(send())


def _answer(r: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    kept = ("content-type", "content-length", "retry-after", "www-authenticate")
    return r.status_code, r.content, {k: r.headers[k] for k in kept if k in r.headers}


def _both(app: Any, processor: ScriptedProcessor, client: str,
          headers: Headers) -> tuple[httpx.Response, list[str], httpx.Response, list[str]]:
    """The same delivery as it comes (the fast path may take it) and forced through the
    route; each with the paths that processed it."""
    processor.paths.clear()
    first = _deliver(app, client, headers)
    first_paths = list(processor.paths)
    processor.paths.clear()
    routed = _deliver(app, client, [*headers, ROUTE])
    return first, first_paths, routed, list(processor.paths)


# (case, TASK_SECRET, client, headers, status, whether the fast path may answer it)
LOCAL_CASES: list[tuple[str, str | None, str, Headers, int, bool]] = [
    ("the secret", SECRET, LOOPBACK, [("X-Task-Secret", SECRET)], 200, True),
    ("the secret, from elsewhere", SECRET, ELSEWHERE, [("X-Task-Secret", SECRET)], 200, True),
    ("no secret header", SECRET, LOOPBACK, [], 401, False),
    ("a wrong secret", SECRET, LOOPBACK, [("X-Task-Secret", "wrong")], 401, False),
    ("an empty secret", SECRET, LOOPBACK, [("X-Task-Secret", "")], 401, False),
    ("the secret cut short", SECRET, LOOPBACK, [("X-Task-Secret", SECRET[:-1])], 401, False),
    ("the secret and more", SECRET, LOOPBACK, [("X-Task-Secret", SECRET + "x")], 401, False),
    ("the secret in another case", SECRET, LOOPBACK,
     [("X-Task-Secret", SECRET.upper())], 401, False),
    ("a secret, not ASCII", SECRET, LOOPBACK,
     [("X-Task-Secret", "s\u00e9cret".encode())], 401, False),
    ("the admin key", SECRET, LOOPBACK, [("X-API-Key", API_KEY)], 401, False),
    ("the admin key as bearer", SECRET, LOOPBACK,
     [("Authorization", f"Bearer {API_KEY}")], 401, False),
    ("the admin key as the secret", SECRET, LOOPBACK, [("X-Task-Secret", API_KEY)], 401, False),
    ("a wrong secret, then the secret", SECRET, LOOPBACK,
     [("X-Task-Secret", "wrong"), ("X-Task-Secret", SECRET)], 401, False),
    ("the secret, then a wrong one", SECRET, LOOPBACK,
     [("X-Task-Secret", SECRET), ("X-Task-Secret", "wrong")], 200, True),
    ("no secret set, loopback", None, LOOPBACK, [], 200, True),
    ("no secret set, loopback 127.0.0.2", None, "127.0.0.2", [], 200, True),
    ("no secret set, IPv6 loopback", None, "::1", [], 200, True),
    ("no secret set, localhost", None, "localhost", [], 200, True),
    ("no secret set, elsewhere", None, ELSEWHERE, [], 403, False),
    ("no secret set, elsewhere with a secret", None, ELSEWHERE,
     [("X-Task-Secret", "anything")], 403, False),
    ("no secret set, a host name", None, "worker.internal", [], 403, False),
    ("Cloud Tasks headers in local mode", SECRET, LOOPBACK,
     [("X-Task-Secret", SECRET), ("X-CloudTasks-TaskName", "t-1"),
      ("X-CloudTasks-TaskRetryCount", "2")], 200, False),
    ("Cloud Tasks headers, no secret", SECRET, LOOPBACK,
     [("X-CloudTasks-TaskName", "t-1")], 401, False),
    ("an Origin", SECRET, LOOPBACK, [("X-Task-Secret", SECRET), ("Origin", WORKER)], 200, False),
]


@pytest.mark.parametrize(("secret", "client", "headers", "status", "fast"),
                         [c[1:] for c in LOCAL_CASES], ids=[c[0] for c in LOCAL_CASES])
def test_both_paths_give_each_local_auth_case_the_same_answer(
    secret: str | None, client: str, headers: Headers, status: int, fast: bool,
) -> None:
    app, processor = _app(TASK_SECRET=secret)
    first, first_paths, routed, routed_paths = _both(app, processor, client, headers)
    assert _answer(first) == _answer(routed)
    assert first.status_code == status, first.text
    accepted = status == 200
    assert first_paths == ([("fast" if fast else "route")] if accepted else [])
    assert routed_paths == (["route"] if accepted else [])


def test_in_cloud_tasks_mode_the_route_answers_under_the_same_check() -> None:
    # Without OIDC (not production) the secret still decides; the fast path stays out.
    app, processor = _app(TASK_SECRET=SECRET, USE_CLOUD_TASKS=True, GCP_PROJECT="p",
                          CLOUD_TASKS_SERVICE_ACCOUNT=SERVICE_ACCOUNT)
    for headers, status in (([("X-Task-Secret", SECRET)], 200), ([], 401),
                            ([("X-Task-Secret", "wrong")], 401)):
        first, first_paths, routed, _ = _both(app, processor, LOOPBACK, headers)
        assert _answer(first) == _answer(routed) and first.status_code == status
        assert first_paths == (["route"] if status == 200 else [])


@pytest.fixture
def identity() -> Iterator[TestIdentity]:
    key = TestIdentity()
    yield key
    key.stop()


def test_with_an_oidc_verifier_only_its_token_counts_on_either_path(
    identity: TestIdentity,
) -> None:
    settings = Settings.model_validate({
        "ENVIRONMENT": "test", "WORKER_URL": WORKER, "OIDC_CERTS_URL": identity.serve(),
        "CLOUD_TASKS_SERVICE_ACCOUNT": SERVICE_ACCOUNT})
    app, processor = _app(make_verifier(settings), TASK_SECRET=SECRET)
    good = identity.token(audience=WORKER, email=SERVICE_ACCOUNT)
    other = identity.token(audience=WORKER, email="someone@p.iam.gserviceaccount.com")
    cases: list[tuple[Headers, int]] = [
        ([("Authorization", f"Bearer {good}")], 200),
        # The shared secret is no way around the token, on the fast path either.
        ([("X-Task-Secret", SECRET)], 401),
        ([("X-Task-Secret", SECRET), ("Authorization", "Bearer not-a-token")], 401),
        ([("Authorization", f"Bearer {other}")], 403),
    ]
    for headers, status in cases:
        first, first_paths, routed, _ = _both(app, processor, LOOPBACK, headers)
        assert _answer(first) == _answer(routed), headers
        assert first.status_code == status, (headers, first.text)
        assert first_paths == (["route"] if status == 200 else [])
        if status != 200:
            assert first.headers["www-authenticate"] == "Bearer"


OUTCOMES = [
    DeliveryOutcome(200, "succeeded", "", attempt=1),
    DeliveryOutcome(200, "failed", "", attempt=3, error_code="moderation_blocked"),
    DeliveryOutcome(429, "retry", "", attempt=1, error_code="rate_limited", retry_after_s=7.5),
    DeliveryOutcome(500, "retry", "", attempt=2, error_code="server_error", retry_after_s=0.2),
    DeliveryOutcome(200, "duplicate", "", attempt=1),
    DeliveryOutcome(503, "busy", "", attempt=1, retry_after_s=29.9),
    DeliveryOutcome(503, "busy", "", retry_after_s=1.0),
    DeliveryOutcome(503, "not_due", "", attempt=2, retry_after_s=19.2),
    DeliveryOutcome(503, "stopping", "", retry_after_s=1.0),
    DeliveryOutcome(200, "unknown_task", ""),
    DeliveryOutcome(200, "lost_lease", "", attempt=2),
    DeliveryOutcome(200, "lost_lease", "", attempt=2, error_code="server_error"),
]


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: f"{o.outcome}-{o.http_status}")
def test_both_paths_answer_each_outcome_alike(outcome: DeliveryOutcome) -> None:
    app, processor = _app(TASK_SECRET=SECRET)
    processor.outcome = outcome
    first, first_paths, routed, routed_paths = _both(
        app, processor, LOOPBACK, [("X-Task-Secret", SECRET)])
    assert (first_paths, routed_paths) == (["fast"], ["route"])
    assert _answer(first) == _answer(routed)
    expected = replace(outcome, task_id="6f1c2d3e-4b5a-4c6d-8e7f-8091a2b3c4d5")
    assert first.status_code == outcome.http_status
    assert first.json() == expected.body()
    assert first.headers.get("retry-after") == outcome.retry_after_header()
    assert first.headers["content-type"] == "application/json"


def test_both_paths_use_one_auth_check_one_encoder_and_one_task_path() -> None:
    # Each module names the same objects: a copy in either is a different object.
    assert fast_task.check_task_delivery is deps.check_task_delivery
    assert fast_task.DeliveryAnswer is responses.DeliveryAnswer
    assert tasks.DeliveryAnswer is responses.DeliveryAnswer
    assert fast_task.TASK_PATH is worker_url.TASK_PATH
    # The Cloud Tasks dispatcher builds its URL with core.worker_url, keeping no copy.
    assert not hasattr(dispatcher, "TASK_PATH")
    assert dispatcher.worker_urls is worker_url
    assert [getattr(r, "path", None) for r in tasks.router.routes] == [worker_url.TASK_PATH]
    assert "_equal" not in vars(fast_task) and "_is_loopback" not in vars(fast_task)


def test_both_paths_call_the_shared_check_and_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    # Named, and also called: a path that kept the import but checked or answered in its
    # own way would leave its side of the record empty.
    checked: list[str] = []
    encoded: list[str] = []
    check = deps.check_task_delivery

    def recording_check(*args: Any, **kwargs: Any) -> Any:
        checked.append("route" if _via_route_caller() else "fast")
        return check(*args, **kwargs)

    class RecordingAnswer(responses.DeliveryAnswer):
        def __init__(self, outcome: DeliveryOutcome) -> None:
            encoded.append("route" if _via_route() else "fast")
            super().__init__(outcome)

    for module in (deps, fast_task):
        monkeypatch.setattr(module, "check_task_delivery", recording_check)
    for module in (tasks, fast_task):
        monkeypatch.setattr(module, "DeliveryAnswer", RecordingAnswer)
    app, processor = _app(TASK_SECRET=SECRET)
    first, _, routed, _ = _both(app, processor, LOOPBACK, [("X-Task-Secret", SECRET)])
    assert first.status_code == routed.status_code == 200
    assert (checked, encoded) == (["fast", "route"], ["fast", "route"])


def _via_route_caller() -> bool:
    """The auth check is called from the route's dependency, not from its endpoint."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is deps.require_task_auth.__code__:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def test_a_body_the_fast_path_does_not_take_goes_to_the_route_whole() -> None:
    app, processor = _app(TASK_SECRET=SECRET)
    secret = [("X-Task-Secret", SECRET)]
    bad = _deliver(app, LOOPBACK, secret, body=b'{"task_id": "not-a-uuid"}')
    assert bad.status_code == 422 and bad.json()["field"] == "task_id"
    assert processor.paths == []
    # Keys beyond task_id are ignored by the route's model, and so by the fast path.
    extra = _deliver(app, LOOPBACK, secret,
                     body=b'{"task_id": "6f1c2d3e-4b5a-4c6d-8e7f-8091a2b3c4d5", "other": 1}')
    assert extra.status_code == 200 and processor.paths == ["fast"]
