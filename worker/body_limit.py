"""Request bodies over MAX_BODY_BYTES: 413 with the answer ErrorBody declares,
``{"detail": "request body over N bytes", "field": "body"}``.

FastAPI does the counting: the app includes every router with ``max_body_size`` (Starlette's
RequestBodyLimitMiddleware around each route), which stops a body, chunked or not, as
soon as it crosses the limit, before it is read whole; ``install`` renders that 413 in
the form above. Not on the app itself: there it would wrap every request, the fast
path's deliveries (worker/fast_task.py) included, and would overwrite this module's
answer below with its own.

What the framework cannot answer the same way is a request whose Content-Length already
says it is over the limit. Starlette then swaps whatever the app sends for a plain-text
``Content Too Large`` inside ``send``, where no exception handler sees it, and only once
the endpoint has answered: a POST that reads no body (cancel, retry) would act first and
answer 413 after. ``DeclaredLength`` refuses those before the app runs, with the JSON
answer; it is all that is left of this worker's own limit.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


def install(app: FastAPI, max_bytes: int) -> None:
    """Refuse declared lengths over ``max_bytes`` up front; answer the framework's own
    413 (``max_body_size`` on the routers) in the same form."""
    app.add_middleware(DeclaredLength, max_bytes=max_bytes)
    too_large = _answer(max_bytes)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 413:
            return Response(too_large, status_code=413, media_type="application/json")
        return await http_exception_handler(request, exc)

    app.add_exception_handler(HTTPException, http_error)


class DeclaredLength:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = _answer(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                # Not a number: the server has refused it already (400).
                if name == b"content-length" and value.isdigit() and (
                        int(value) > self.max_bytes):
                    await send({"type": "http.response.start", "status": 413,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length",
                                             str(len(self.too_large)).encode())]})
                    await send({"type": "http.response.body", "body": self.too_large})
                    return
        await self.app(scope, receive, send)


def _answer(max_bytes: int) -> bytes:
    return json.dumps({"detail": f"request body over {max_bytes} bytes",
                       "field": "body"}).encode()
