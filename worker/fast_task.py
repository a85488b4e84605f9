"""The local dispatcher's deliveries, answered without FastAPI's routing.

The HTTP hop is the contract; the framework around it was not needed for the common
case. Under py-spy (GIL samples) uvicorn -> Starlette -> FastAPI -> the route, before the
endpoint ran, was 0.4 ms of the worker's 2 ms of CPU per task: a dozen middleware layers,
route matching over every router, five header parameters and a body model solved per
request. This ASGI middleware answers exactly one shape of request itself: a POST to
the task path with a small JSON body ``{"task_id": <uuid>}``, in local mode (no Cloud
Tasks, no OIDC), with no Cloud Tasks or trace headers and no Origin.

It is a thin adapter over the route's own parts, not a second copy of them: who may
deliver is ``worker.deps.check_task_delivery`` (the check behind the route's
``require_task_auth``), the delivery is ``TaskProcessor.process``, and the answer is
``worker.responses.DeliveryAnswer`` (the route's too); database errors go to the app's
own exception handlers. tests/unit/test_task_path_shared.py holds them to that.

Anything else, and any doubt (a refused delivery, a body that is not exactly that), goes
to FastAPI untouched, with the body it already read replayed: refusals, validation errors
and their logs stay the route's.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.worker_url import TASK_PATH
from worker.deps import check_task_delivery
from worker.responses import DeliveryAnswer

# The dispatcher's body is {"task_id":"<36 characters>"}: anything much longer is not
# one of its deliveries.
MAX_FAST_BODY_BYTES = 256
_JSON = b"application/json"
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# Headers that mean a delivery the route must see (Cloud Tasks' logging extras, CORS).
_ROUTE_HEADERS = frozenset((b"origin", b"x-cloud-trace-context"))


class FastTaskPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != TASK_PATH
                or scope["method"] != "POST"):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        if not self._accepted(scope):
            await self.app(scope, receive, send)
            return
        body = await _read_small_body(receive)
        task_id = _task_id(body) if body is not None else None
        processor = getattr(state, "processor", None)
        if task_id is None or processor is None:
            await self.app(scope, _replay(body or b"", receive), send)
            return
        try:
            outcome = await processor.process(task_id, attempt_floor=0, log_extra={})
        except Exception as exc:
            await _handled(scope, exc, send)
            return
        await DeliveryAnswer(outcome)(scope, receive, send)

    def _accepted(self, scope: Scope) -> bool:
        """A local delivery of the fast shape that check_task_delivery accepts; False for
        anything the route must see itself (it then checks, refuses and logs)."""
        state = scope["app"].state
        settings = state.settings
        verifier = getattr(state, "oidc_verifier", None)
        if settings.USE_CLOUD_TASKS or verifier is not None:
            return False
        offered: bytes | None = None
        json_body = False
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"x-task-secret":
                if offered is None:  # the first one, as the route's request.headers reads it
                    offered = value
            elif name == b"content-type":
                json_body = value.split(b";", 1)[0].strip().lower() == _JSON
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name in _ROUTE_HEADERS or name.startswith(b"x-cloudtasks-"):
                return False
        if not json_body or length is None or length > MAX_FAST_BODY_BYTES:
            return False
        client = scope.get("client")
        return check_task_delivery(
            settings, verifier, secret=offered.decode("latin-1") if offered is not None else None,
            authorization=None, client=client[0] if client else None) is None


async def _read_small_body(receive: Receive) -> bytes | None:
    """The whole body, or None if the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _task_id(body: bytes) -> UUID | None:
    try:
        parsed: Any = json.loads(body)
        value = parsed.get("task_id") if isinstance(parsed, dict) else None
        # The route's model takes a string id; anything else is the route's to refuse.
        if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
            return UUID(value)
        return None
    except ValueError:
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _handled(scope: Scope, exc: Exception, send: Send) -> None:
    """The app's own exception handler for ``exc`` (database down -> 503), else re-raise
    to the server's error middleware, as the route's exception would go."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response = await handler(Request(scope), exc)
            await response(scope, _no_body, send)
            return
    raise exc


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
