"""The local dispatcher's HTTP/1.1 client for a plain-http task URL: keep-alive POSTs of a
small JSON body, nothing else (docs/performance.md: the dispatcher's httpx request path).

The HTTP hop is the delivery contract (the one Cloud Tasks uses), so it stays; what it
cost did not have to. Under py-spy (GIL samples) httpx's request path was 30 % of the
worker's CPU per task on the overhead benchmark: per request it builds a Request and a
Response model, runs auth and redirect handling, enters anyio cancel scopes and scans
(poll()s) every pooled connection. This client keeps idle connections in a stack, writes
one prepared request and reads the status line, headers and a Content-Length or chunked
body. Errors are httpx's own classes (ConnectError, ConnectTimeout, ReadTimeout,
RemoteProtocolError...), so the dispatcher's retry and undeliverable rules
(core.dispatch.undeliverable) see what they saw before. https, and http through a
proxy from the environment, stay on httpx (``plain_http_target``).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

# uvicorn closes an idle keep-alive connection after 5 s; ours are dropped before that so
# a request is never written into a connection the server is closing.
MAX_IDLE_S = 4.0
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


@dataclass
class Answer:
    """What the dispatcher reads of a response."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    content: bytes = b""

    def json(self) -> Any:
        return json.loads(self.content)


def plain_http_target(url: str) -> bool:
    """Whether this client serves ``url``: http, and no proxy from the environment that
    httpx would have used for it (pure but for reading the environment)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = urllib.request.getproxies()
    if "http" in proxies or "all" in proxies:
        return bool(urllib.request.proxy_bypass(parts.hostname))
    return True


class _Conn:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        return (not self.reader.at_eof() and not self.writer.is_closing()
                and now - self.idle_since < MAX_IDLE_S)

    def close(self) -> None:
        self.writer.close()


class KeepAliveClient:
    """POSTs to one http URL over kept-alive connections (at most ``max_idle`` kept)."""

    def __init__(self, url: str, *, timeout_s: float, connect_timeout_s: float,
                 max_idle: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not a plain http URL: {url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self._idle: list[_Conn] = []

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def post(self, body: bytes, headers: dict[str, str]) -> Answer:
        request = b"".join((
            self._head,
            *(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items()),
            b"Content-Length: %d\r\n\r\n" % len(body), body))
        conn = self._checkout()
        if conn is None:
            conn = await self._connect()
        try:
            conn.writer.write(request)
            async with asyncio.timeout(self.timeout_s):
                answer, keep = await _read_response(conn.reader)
        except TimeoutError as exc:
            conn.close()
            raise httpx.ReadTimeout("timed out waiting for the task handler") from exc
        except (OSError, EOFError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.close()
            raise httpx.RemoteProtocolError(
                f"the task handler's connection failed: {type(exc).__name__}") from exc
        except BaseException:
            conn.close()  # cancelled mid-response: the connection's state is unknown
            raise
        if keep and len(self._idle) < self.max_idle:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    def _checkout(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: least likely to be closed
            if conn.usable(now):
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out"
                                       ) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Conn(reader, writer)


async def _read_response(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    """One response: (answer, whether the connection may be reused)."""
    status_line = await reader.readuntil(b"\r\n")
    version, _, rest = status_line.decode("latin-1").partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not an HTTP/1.x response")
    status = int(rest[:3])
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError("response headers too large")
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    keep = version != "HTTP/1.0" and headers.get("connection", "").lower() != "close"
    if status in (204, 304) or 100 <= status < 200:
        return Answer(status, headers), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        content = await _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= MAX_BODY_BYTES:
            raise ValueError("response body too large")
        content = await reader.readexactly(length)
    else:
        content = await reader.read(MAX_BODY_BYTES)  # until the server closes
        keep = False
    return Answer(status, headers, content), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields, up to the empty line
            return b"".join(parts)
        total += size
        if total > MAX_BODY_BYTES:
            raise ValueError("response body too large")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
