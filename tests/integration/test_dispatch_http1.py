"""The local dispatcher's keep-alive HTTP/1.1 client (core.dispatch.local.http1) against real
servers on loopback: a raw asyncio server (to control framing and closes) and the real
worker app under uvicorn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest

from core.dispatch import undeliverable
from core.dispatch.local.http1 import KeepAliveClient, plain_http_target

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/api/admin/worker/process-task"


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


def test_keeps_one_connection_alive_across_requests_and_reads_both_framings() -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head, body = await _read_request(reader)
                seen.append(head + body)
                if len(seen) % 2:
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
                                 b"Content-Length: 21\r\n\r\n{\"outcome\":\"not_due\"}")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server, url = await _serve(handler)
        client = KeepAliveClient(url, timeout_s=5, connect_timeout_s=5, max_idle=4)
        try:
            first = await client.post(b'{"task_id":"x"}', {"X-Task-Secret": "s"})
            second = await client.post(b'{"task_id":"y"}', {})
            third = await client.post(b'{"task_id":"z"}', {})
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()
        assert (first.status_code, first.headers["retry-after"], first.json()) == (
            503, "7", {"outcome": "not_due"})
        assert (second.status_code, second.json()) == (200, {"a": 1})
        assert third.status_code == 503
        assert connections == 1  # kept alive
        assert seen[0].startswith(b"POST /api/admin/worker/process-task HTTP/1.1\r\n")
        assert b"\r\nX-Task-Secret: s\r\n" in seen[0] and seen[0].endswith(b'{"task_id":"x"}')

    asyncio.run(main())


def test_connection_close_and_refused_and_timeout_map_to_httpx_errors() -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    released = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
            await released.wait()  # never answers while the client waits
        finally:
            writer.close()

    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    async def main() -> None:
        server, url = await _serve(closing)
        client = KeepAliveClient(url, timeout_s=5, connect_timeout_s=5, max_idle=4)
        assert (await client.post(b"{}", {})).status_code == 200
        assert not client._idle  # "Connection: close" is not kept
        assert (await client.post(b"{}", {})).status_code == 200  # a new connection
        server.close()
        await server.wait_closed()

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        refused_url = f"http://127.0.0.1:{port}/t"
        refused = KeepAliveClient(refused_url, timeout_s=1, connect_timeout_s=1, max_idle=1)
        with pytest.raises(httpx.ConnectError) as exc:
            await refused.post(b"{}", {})
        cause = undeliverable.classify(refused_url, error=exc.value)
        assert cause is not None and cause.code == "connect_refused"

        for handler, error in ((silent, httpx.ReadTimeout), (hangs_up, httpx.RemoteProtocolError)):
            server, url = await _serve(handler)
            client = KeepAliveClient(url, timeout_s=0.5, connect_timeout_s=1, max_idle=1)
            with pytest.raises(error) as raised:
                await client.post(b"{}", {})
            # Not undeliverable: the handler may have run (an ordinary retry).
            assert undeliverable.classify(url, error=raised.value) is None
            released.set()
            await asyncio.sleep(0.05)  # the handlers close their side
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_only_plain_http_without_a_proxy_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert plain_http_target("http://127.0.0.1:8080/api/admin/worker/process-task")
    assert not plain_http_target("https://worker.example/api/admin/worker/process-task")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    assert not plain_http_target("http://worker.internal:8080/t")
    monkeypatch.setenv("NO_PROXY", "worker.internal")
    assert plain_http_target("http://worker.internal:8080/t")
