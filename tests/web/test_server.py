"""The server against clients that hold connections without using them (slowloris): header,
body and keep-alive deadlines, and a connection cap that still lets a normal request in."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from core.config import ServerSettings
from core.gateway import Gateway
from web.app import create_app
from web.server import EdgeServer

StartEdge = Callable[..., Awaitable[EdgeServer]]


@pytest.fixture
async def start_edge(gateway: Gateway) -> AsyncIterator[StartEdge]:
    servers: list[EdgeServer] = []

    async def start(**settings: Any) -> EdgeServer:
        edge = EdgeServer(create_app(gateway), ServerSettings(host="127.0.0.1", port=0,
                                                              **settings))
        await edge.start()
        servers.append(edge)
        return edge

    yield start
    for edge in servers:
        await edge.stop()


def url(edge: EdgeServer, path: str = "/healthz") -> str:
    return f"http://127.0.0.1:{edge.addresses[0][1]}{path}"


async def connect(edge: EdgeServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", edge.addresses[0][1])


async def closed_by_server(reader: asyncio.StreamReader, within: float = 10) -> bytes:
    """Everything the server sent until it closed the connection."""
    return await asyncio.wait_for(reader.read(), within)


async def test_a_slowloris_connection_is_closed_after_the_header_timeout(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(header_timeout_s=0.5)
    reader, writer = await connect(edge)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    closed = asyncio.ensure_future(closed_by_server(reader))
    try:
        for n in range(100):  # a header line every 0.1 s, never the blank line
            if closed.done():
                break
            writer.write(f"X-Slow-{n}: 1\r\n".encode())
            await asyncio.wait([closed], timeout=0.1)
        assert await closed == b""
    finally:
        writer.close()
    assert 0.45 <= time.monotonic() - started < 3
    assert edge.timed_out == 1 and edge.open_connections == 0


async def test_a_slow_body_and_an_idle_keep_alive_are_closed(
    start_edge: StartEdge, caplog: pytest.LogCaptureFixture,
) -> None:
    edge = await start_edge(body_timeout_s=0.5, keepalive_timeout_s=0.5)
    reader, writer = await connect(edge)
    started = time.monotonic()
    writer.write(b"POST /api/recall HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"limit\":")
    assert await closed_by_server(reader) == b""
    assert 0.45 <= time.monotonic() - started < 3
    writer.close()

    reader, writer = await connect(edge)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    answered = time.monotonic()
    await closed_by_server(reader)  # the rest of the answer, then the idle close
    assert 0.45 <= time.monotonic() - answered < 3
    writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_later_requests_on_a_connection_are_not_held_to_the_header_timeout(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(header_timeout_s=0.3, keepalive_timeout_s=30)
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(url(edge)) as resp:
                assert resp.status == 200
            await asyncio.sleep(0.4)  # idle past the header time-out, within keep-alive
    assert edge.timed_out == 0


async def test_many_slow_connections_do_not_stop_a_normal_request(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(max_connections=50, header_timeout_s=60)
    slow = []
    for _ in range(200):
        reader, writer = await connect(edge)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        slow.append((reader, writer))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                async with session.get(url(edge), timeout=aiohttp.ClientTimeout(total=5)) as r:
                    assert r.status == 200
        assert edge.open_connections <= 50
        assert edge.evicted >= 150
    finally:
        for _, writer in slow:
            writer.close()


async def test_when_every_connection_is_busy_a_new_one_is_refused(
    start_edge: StartEdge, caplog: pytest.LogCaptureFixture,
) -> None:
    edge = await start_edge(max_connections=2, body_timeout_s=60)
    busy = []
    for _ in range(2):  # requests whose bodies are still coming: serving, not idle
        reader, writer = await connect(edge)
        writer.write(b"POST /api/recall HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        busy.append((reader, writer))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(50):
                async with session.get(url(edge)) as resp:
                    status, headers, raw = resp.status, resp.headers, await resp.read()
                if status == 503:
                    break
                await asyncio.sleep(0.02)  # until both requests have started
            assert status == 503 and headers["Retry-After"] == "1"
            body = json.loads(raw)
            assert body["code"] == "too_many_connections" and body["status"] == "error"
        assert edge.refused >= 1
    finally:
        for _, writer in busy:
            writer.close()
    await edge.stop()  # the two requests end with their clients: no error logged for them
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
