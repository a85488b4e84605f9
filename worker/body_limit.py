"""Refuse request bodies over a size limit before they are read whole."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply_413(send, "invalid Content-Length")
                    return
                if declared > self.max_bytes:
                    await _reply_413(send, f"request body over {self.max_bytes} bytes")
                    return
        received = 0
        response_started = False
        refused = False
        replied = False

        async def limited_receive() -> Message:
            # Past the limit the app is told the client went away, so it stops reading; an
            # exception here would be turned into a 400 by FastAPI's body parsing.
            nonlocal received, refused, replied, response_started
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not response_started:
                        response_started = replied = True
                        await _reply_413(send, f"request body over {self.max_bytes} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if replied:
                return  # the 413 is the answer; drop whatever the app says to the "disconnect"
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)


async def _reply_413(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail, "field": "body"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
