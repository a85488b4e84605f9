"""Deliveries this worker refused: in Cloud Tasks mode the queue does the
delivering, so a mismatched OIDC audience or service account shows only as 401/403
answers here until the queue drops the task. This ASGI middleware notes each such answer
to a Cloud Tasks delivery (it carries X-CloudTasks-TaskName) in delivery_problems, so
/healthz, /metrics and the dashboard banner show it within seconds. At most one write
per cause every NOTE_INTERVAL_S, off the request's path, so refused traffic cannot turn
into database load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from core.dispatch import undeliverable
from core.worker_url import TASK_PATH, task_url

log = logging.getLogger(__name__)

NOTE_INTERVAL_S = 10.0
_HINT = {401: "the token was rejected (OIDC audience must be WORKER_URL; check "
              "OIDC_CERTS_URL / the signing key)",
         403: "the token is for another identity (CLOUD_TASKS_SERVICE_ACCOUNT)"}


class RefusedDeliveries:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._last: dict[int, float] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(TASK_PATH):
            await self.app(scope, receive, send)
            return
        status = 0

        async def watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status in _HINT and any(k == b"x-cloudtasks-taskname" for k, _ in scope["headers"]):
            now = time.monotonic()
            if now - self._last.get(status, -NOTE_INTERVAL_S) >= NOTE_INTERVAL_S:
                self._last[status] = now
                task = asyncio.create_task(self._note(scope, status))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _note(self, scope: Any, status: int) -> None:
        app = scope.get("app")
        engine = getattr(getattr(app, "state", None), "engine", None)
        settings = getattr(getattr(app, "state", None), "settings", None)
        if engine is None or settings is None or not settings.WORKER_URL:
            return
        url = undeliverable.safe_url(task_url(settings.WORKER_URL))
        cause = undeliverable.Cause(f"refused_{status}",
                                    f"HTTP {status} from {url}: this worker refused Cloud "
                                    f"Tasks deliveries: {_HINT[status]}")
        undeliverable.note(cause, url, max_tries=settings.UNDELIVERABLE_MAX_TRIES)
        try:
            async with engine.begin() as conn:
                await undeliverable.seen(conn, cause, url, 1)
        except Exception as exc:  # the log line above already says it
            log.debug("could not note a refused delivery: %s", type(exc).__name__)
