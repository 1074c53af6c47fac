"""One log line a request: the access line tells what the request asked of upstream accounts
(which account, model, status, how long); calls made outside a request log their own line."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from core.chat import ChatRequest
from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream, Status
from web.access_log import RedactingAccessLogger
from web.app import create_app

from .support import Api


def _lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == name and r.levelno >= logging.INFO]


async def test_a_request_logs_one_line_with_its_upstream_calls(
    gateway: Gateway, admin_key: str, aiohttp_client: Any, upstream_a: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = TestServer(create_app(gateway))
    await server.start_server(access_log_class=RedactingAccessLogger)
    client = await aiohttp_client(server)
    api = Api(client)
    user, _ = await api.add_user(admin_key, "ann")
    answered = await api.call("/api/chat", {"user": user, "prompt": "hello"})
    assert answered.status == 200
    upstream_a.enqueue(Status(500))  # a follow-up goes back to A, which fails
    failed = await api.call("/api/chat", {"user": user, "prompt": "again",
                                          "conversation_id": answered.body["conversation_id"]})
    assert failed.status == 502
    await client.close()  # waits for every handler, and so for every access line

    chats = [line for line in _lines(caplog, "aiohttp.access") if "/api/chat" in line]
    assert len(chats) == 2
    assert '"POST /api/chat" 200' in chats[0]
    assert " upstream chat account=A model=model-a status=200 stream=False duration_ms=" \
        in chats[0]
    assert '"POST /api/chat" 502' in chats[1] and "upstream chat account=A" in chats[1] \
        and "status=500" in chats[1]
    assert _lines(caplog, "core.upstream") == []  # told on the access lines, not again


async def test_a_call_outside_a_request_logs_its_own_line(
    gateway: Gateway, upstream_a: FakeUpstream, caplog: pytest.LogCaptureFixture,
) -> None:
    # The Discord bot acts through the gateway directly: no access line to tell it on.
    caplog.set_level(logging.INFO)
    member, _ = await gateway.principals.create("user", "bea")
    await gateway.chat(member, ChatRequest(prompt="hello"))
    lines = _lines(caplog, "core.upstream")
    assert len(lines) == 1
    assert lines[0].startswith("upstream chat account=A model=model-a status=200 stream=False")
