"""A small OpenAI-compatible images server for tests and benchmarks.

It speaks ``POST /v1/images/generations`` the way the real API does (``b64_json`` PNGs,
a ``usage`` block, OpenAI-shaped error bodies and rate-limit headers), so the real
``openai`` client talks to it over real HTTP on 127.0.0.1. ``GET /v1/models/{id}``
answers the worker's start-up key check (401 ``invalid_api_key`` for a wrong key).

Usage::

    from testing.openai_stub import OpenAIStub, Reply

    with OpenAIStub(images_per_minute=600, latency_s=1.0) as stub:
        settings: OPENAI_BASE_URL = stub.base_url, OPENAI_API_KEY = stub.api_key
        stub.script(Reply.rate_limited(retry_after_s=2), Reply.ok())  # next requests, in order
        stub.on_prompt("a cat", Reply.server_error(), Reply.ok())     # requests whose prompt
                                                                      # contains "a cat"
        stub.default = Reply.moderation()                             # when nothing is scripted
        ...
        stub.stats   # Stats(requests=.., accepted=.., limited=.., failed=.., images=..)
        stub.snapshot()  # a consistent copy of stats while requests are in flight
        stub.calls   # every request: prompt, model, size, quality, n, status, at_s
        stub.billed_by_prompt()  # Counter: answered-with-an-image calls per prompt

Options:

- ``latency_s``: how long an accepted request takes before its answer (the model's time).
- ``images_per_minute``: a real sliding 60 s window over accepted images. A request that
  would exceed it answers 429 with ``retry-after`` (seconds until the window has room) and
  ``x-ratelimit-limit-images`` / ``-remaining-images`` / ``-reset-images`` headers, and
  counts in ``stats.limited``. ``None`` = unlimited.
- ``api_key``: when set, any other bearer token answers 401 ``invalid_api_key``.
- ``image_px``: side of the (tiny, valid) PNG returned.

Scripted replies (``Reply``): ``ok()``, ``rate_limited(retry_after_s)``,
``server_error(status=500)``, ``hang(seconds)`` (answers nothing until ``seconds`` pass or
the stub stops: a client timeout), ``moderation()`` (400 ``moderation_blocked``),
``bad_request(code)``, ``auth_error()`` (401).

Also runnable alone, for a benchmark in another process::

    python -m testing.openai_stub --port 8099 --images-per-minute 600 --latency-s 1
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from testing.openai_batch_stub import BatchAPI
from testing.png import png_bytes

WINDOW_S = 60.0
DEFAULT_API_KEY = "sk-test-stub"


@dataclass(frozen=True)
class Reply:
    """What the stub answers to one request."""

    kind: str  # ok | rate_limited | server_error | hang | bad_request | auth_error
    status: int = 200
    code: str | None = None
    retry_after_s: float | None = None
    hang_s: float = 0.0

    @classmethod
    def ok(cls) -> Reply:
        return cls("ok")

    @classmethod
    def rate_limited(cls, retry_after_s: float = 1.0) -> Reply:
        return cls("rate_limited", 429, "rate_limit_exceeded", retry_after_s=retry_after_s)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls("server_error", status, "server_error")

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Reply:
        return cls("hang", hang_s=seconds)

    @classmethod
    def moderation(cls) -> Reply:
        return cls("bad_request", 400, "moderation_blocked")

    @classmethod
    def bad_request(cls, code: str = "invalid_value") -> Reply:
        return cls("bad_request", 400, code)

    @classmethod
    def auth_error(cls) -> Reply:
        return cls("auth_error", 401, "invalid_api_key")


@dataclass
class Stats:
    requests: int = 0  # every POST to the images endpoint
    accepted: int = 0  # answered 200
    limited: int = 0  # answered 429 (scripted or by images_per_minute)
    failed: int = 0  # answered another error, or hung
    images: int = 0  # images returned


@dataclass(frozen=True)
class Call:
    prompt: str
    model: str | None
    size: str | None
    quality: str | None
    n: int
    status: int  # 0 for a hang the client gave up on
    at_s: float  # time.monotonic() at arrival
    authorization: str | None = field(default=None, repr=False)


class OpenAIStub:
    """An OpenAI images API on 127.0.0.1, in a background thread. See the module doc."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        images_per_minute: int | None = None,
        api_key: str | None = DEFAULT_API_KEY,
        image_px: int = 8,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.latency_s = latency_s
        self.images_per_minute = images_per_minute
        self.api_key = api_key or DEFAULT_API_KEY
        self._check_key = api_key is not None
        self.image_px = image_px
        self.default: Reply = Reply.ok()
        self.stats = Stats()
        self.calls: list[Call] = []
        self._script: collections.deque[Reply] = collections.deque()
        self._by_prompt: dict[str, collections.deque[Reply]] = {}
        self._window: collections.deque[float] = collections.deque()  # accepted image times
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # /v1/files and /v1/batches (the Batch API), in testing/openai_batch_stub.py.
        self.batches = BatchAPI(self._stopping)
        self.request_bodies: list[dict[str, Any]] = []  # every images request's JSON body
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL should be (the client appends /images/generations)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIStub:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging and sleeping handlers
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        """Answer the next requests (any prompt without its own script) with these."""
        with self._lock:
            self._script.extend(replies)

    def on_prompt(self, fragment: str, *replies: Reply) -> None:
        """Answer the next requests whose prompt contains ``fragment`` with these, in order;
        then fall back to ``default``."""
        with self._lock:
            self._by_prompt.setdefault(fragment, collections.deque()).extend(replies)

    def calls_for(self, fragment: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if fragment in c.prompt]

    def billed_by_prompt(self) -> collections.Counter[str]:
        """Model calls that were answered with an image (the ones OpenAI bills), per
        prompt: tests give each task its own prompt, so this counts calls per task (image
        file names cannot: an overwrite makes a second call look like the first)."""
        with self._lock:
            return collections.Counter(c.prompt for c in self.calls if c.status == 200)

    def snapshot(self) -> Stats:
        """A consistent copy of the counters (safe while requests are in flight)."""
        with self._lock:
            return dataclasses.replace(self.stats)

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = Stats()
            self.calls = []

    # -- decisions (under the lock) --------------------------------------------------
    def _next_reply(self, prompt: str) -> Reply:
        for fragment, replies in self._by_prompt.items():
            if fragment in prompt:
                return replies.popleft() if replies else self.default
        return self._script.popleft() if self._script else self.default

    def _admit(self, n: int, now: float) -> tuple[bool, float, int]:
        """Sliding-window limit: (admitted, seconds until room, remaining after)."""
        limit = self.images_per_minute
        if limit is None:
            return True, 0.0, 0
        while self._window and now - self._window[0] >= WINDOW_S:
            self._window.popleft()
        if len(self._window) + n <= limit:
            self._window.extend([now] * n)
            return True, 0.0, limit - len(self._window)
        # Room appears when enough of the oldest entries leave the window.
        overflow = len(self._window) + n - limit
        oldest_needed = self._window[min(overflow, len(self._window)) - 1]
        return False, max(0.001, WINDOW_S - (now - oldest_needed)), limit - len(self._window)

    def _handle(self, body: dict[str, Any], authorization: str | None
                ) -> tuple[int, dict[str, str], dict[str, Any] | None, float]:
        """(status, headers, json body or None for a hang, delay before answering)."""
        now = time.monotonic()
        prompt = str(body.get("prompt", ""))
        n = int(body.get("n") or 1)
        with self._lock:
            self.stats.requests += 1
            if self._check_key and authorization != f"Bearer {self.api_key}":
                reply = Reply.auth_error()
            else:
                reply = self._next_reply(prompt)
            headers: dict[str, str] = {}
            if reply.kind == "ok":
                admitted, wait_s, remaining = self._admit(n, now)
                if self.images_per_minute is not None:
                    headers.update({
                        "x-ratelimit-limit-images": str(self.images_per_minute),
                        "x-ratelimit-remaining-images": str(max(0, remaining)),
                        "x-ratelimit-reset-images": f"{wait_s:.3f}s",
                    })
                if not admitted:
                    reply = Reply.rate_limited(retry_after_s=round(wait_s, 3))
            status = 0 if reply.kind == "hang" else reply.status
            self.calls.append(Call(prompt, body.get("model"), body.get("size"),
                                   body.get("quality"), n, status, now, authorization))
            if reply.kind == "ok":
                self.stats.accepted += 1
                self.stats.images += n
            elif reply.kind == "rate_limited":
                self.stats.limited += 1
            else:
                self.stats.failed += 1
        if reply.kind == "hang":
            return 0, {}, None, reply.hang_s
        if reply.kind == "ok":
            data = [{"b64_json": base64.b64encode(png_bytes(self.image_px, i + len(prompt)))
                     .decode()} for i in range(n)]
            return 200, headers, {
                "created": int(time.time()),
                "data": data,
                "background": "opaque", "output_format": "png",
                "quality": body.get("quality") or "auto", "size": body.get("size") or "auto",
                "usage": {
                    "input_tokens": 10 + len(prompt.split()),
                    "input_tokens_details": {"text_tokens": 10 + len(prompt.split()),
                                             "image_tokens": 0},
                    "output_tokens": 1056 * n,
                    "total_tokens": 10 + len(prompt.split()) + 1056 * n,
                },
            }, self.latency_s
        if reply.kind == "rate_limited":
            assert reply.retry_after_s is not None
            headers["retry-after"] = f"{reply.retry_after_s:g}"
            headers["retry-after-ms"] = str(int(reply.retry_after_s * 1000))
        error_type = {400: "invalid_request_error", 401: "invalid_request_error",
                      429: "requests"}.get(reply.status, "server_error")
        if reply.code == "moderation_blocked":
            error_type = "image_generation_user_error"
        message = {
            "moderation_blocked": "Your request was rejected by the safety system.",
            "rate_limit_exceeded": "Rate limit reached for images per min.",
            "invalid_api_key": "Incorrect API key provided.",
        }.get(reply.code or "", f"The server had an error (stub {reply.status}).")
        return reply.status, headers, {"error": {
            "message": message, "type": error_type, "param": None, "code": reply.code,
        }}, 0.0


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}


def _handler_for(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _send(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if stub.batches.handles(self.path):
                stub.batches.serve(self, "GET", b"", self._send)
                return
            # GET /v1/models/{model}: the cheap authenticated call the worker makes at
            # start to check OPENAI_API_KEY (core.startup.check_openai_key).
            prefix = "/v1/models/"
            if not self.path.startswith(prefix) or len(self.path) <= len(prefix):
                self._send(404, {}, _error("not found", None))
                return
            if stub._check_key and self.headers.get("authorization") != (
                    f"Bearer {stub.api_key}"):
                self._send(401, {}, {"error": {
                    "message": "Incorrect API key provided.", "type": "invalid_request_error",
                    "param": None, "code": "invalid_api_key"}})
                return
            self._send(200, {}, {"id": self.path[len(prefix):], "object": "model",
                                 "created": 0, "owned_by": "openai"})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if stub.batches.handles(self.path):
                stub.batches.serve(self, "POST", raw, self._send)
                return
            if self.path.rstrip("/") != "/v1/images/generations":
                self._send(404, {}, _error("not found", None))
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send(400, {}, _error("bad json", "invalid_json"))
                return
            stub.request_bodies.append(body)  # the options a request carried
            auth = self.headers.get("authorization")
            status, headers, payload, delay_s = stub._handle(body, auth)
            if delay_s and stub._stopping.wait(delay_s):
                self.close_connection = True
                return
            if payload is None:  # a hang: drop the connection without an answer
                self.close_connection = True
                return
            try:
                self._send(status, headers, payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                self.close_connection = True

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An OpenAI-compatible images stub server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--images-per-minute", type=int, default=None)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args(argv)
    stub = OpenAIStub(port=args.port, latency_s=args.latency_s,
                      images_per_minute=args.images_per_minute, api_key=args.api_key)
    with stub:
        print(json.dumps({"base_url": stub.base_url, "api_key": stub.api_key}), flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
