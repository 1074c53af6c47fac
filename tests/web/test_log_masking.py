"""No key reaches the log, whatever logs it: bot.py's log handler masks bearer tokens,
``user=``/``client=``/``admin=`` parameters and anything shaped like a gateway key in every
line, aiohttp's own included (it logs a request it cannot parse with its raw header bytes)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Iterator

import pytest
from aiohttp.test_utils import TestServer

import bot
from core.gateway import Gateway
from web.access_log import RedactingAccessLogger
from web.app import create_app


@pytest.fixture
def gateway_log() -> Iterator[Callable[[], str]]:
    """The log as bot.py writes it; calling the fixture's value ends it and gives its text."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    listener = bot.configure_logging("DEBUG", stream)
    stopped = False

    def read() -> str:
        nonlocal stopped
        if not stopped:
            listener.stop()  # writes out every queued line
            stopped = True
        return stream.getvalue()

    try:
        yield read
    finally:
        read()
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


async def send(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_a_key_in_a_header_aiohttp_cannot_parse_is_masked(
    gateway: Gateway, gateway_log: Callable[[], str],
) -> None:
    _, key = await gateway.principals.create("user", "ann")
    server = TestServer(create_app(gateway))
    await server.start_server(access_log_class=RedactingAccessLogger)
    try:
        for bad in (b"\x01", b"\x7f"):  # bytes aiohttp refuses in a header
            answer = await send(server.port, b"GET /api/recall HTTP/1.1\r\nHost: x\r\n"
                                b"Authorization: Bearer " + key[:12].encode() + bad
                                + key[12:].encode() + b"\r\nConnection: close\r\n\r\n")
            assert answer.split(b" ", 2)[1] == b"400", answer[:200]
        await send(server.port, f"GET /api/recall?user={key}&limit=1 HTTP/1.1\r\nHost: x\r\n"
                                f"Connection: close\r\n\r\n".encode())
    finally:
        await server.close()
    other = logging.getLogger("somewhere.else")
    other.warning("retrying with Authorization: Bearer %s", key)
    other.info("a key on its own: %s; admin=%s&x=1", key, key)
    try:
        raise ValueError(f"bad key {key}")
    except ValueError:
        other.exception("failed")

    text = gateway_log()
    assert "Bearer ***" in text and "user=***" in text and "admin=***" in text, text
    assert "Error handling request" in text, text  # aiohttp did log the unparsable ones
    assert key not in text
    assert key[3:12] not in text and key[12:] not in text, text
