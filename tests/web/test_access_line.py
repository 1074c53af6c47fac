"""One log line a request: the access line tells what the request asked of upstream accounts
(which account, model, status, how long); calls made outside a request log their own line."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.chat import ChatRequest
from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream, Hang, Status
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


async def test_a_streamed_reply_and_embeddings_are_told_on_their_access_lines(
    gateway: Gateway, aiohttp_client: Any, upstream_a: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    _, key = await gateway.principals.create("user", "ann")
    server = TestServer(create_app(gateway))
    await server.start_server(access_log_class=RedactingAccessLogger)
    client = await aiohttp_client(server)
    auth = {"Authorization": f"Bearer {key}"}
    async with client.post("/v1/chat/completions", headers=auth, json={
            "model": "model-a", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}) as streamed:
        assert streamed.status == 200
        assert (await streamed.text()).endswith("data: [DONE]\n\n")
    async with client.post("/v1/embeddings", headers=auth,
                           json={"model": "model-a", "input": "some text"}) as embedded:
        assert embedded.status == 200, await embedded.text()
    await client.close()

    access = _lines(caplog, "aiohttp.access")
    (chat,) = [line for line in access if "/v1/chat/completions" in line]
    assert " upstream chat account=A model=model-a status=200 stream=True " in chat
    (embeddings,) = [line for line in access if "/v1/embeddings" in line]
    assert " upstream embeddings account=A model=model-a status=200 stream=False " in embeddings
    assert _lines(caplog, "core.upstream") == []


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


@pytest.mark.parametrize("runner_options", [{}, {"access_log": None}],
                         ids=["aiohttp's access logger", "no access log"])
async def test_without_our_access_line_the_call_logs_its_own(
    gateway: Gateway, upstream_a: FakeUpstream, caplog: pytest.LogCaptureFixture,
    runner_options: dict[str, Any],
) -> None:
    # Served by a runner whose access lines are not ours (or that writes none), the call's
    # line is not kept for a line that never comes.
    caplog.set_level(logging.INFO)
    _, key = await gateway.principals.create("user", "ann")
    runner = web.AppRunner(create_app(gateway), **runner_options)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"messages": [{"role": "user", "content": "hi"}]}) as answer:
            assert answer.status == 200
    finally:
        await runner.cleanup()
    lines = _lines(caplog, "core.upstream")
    assert len(lines) == 1 and lines[0].startswith("upstream chat account=")


async def test_a_request_cancelled_at_shutdown_still_logs_its_call(
    gateway: Gateway, upstream_a: FakeUpstream, caplog: pytest.LogCaptureFixture,
) -> None:
    # A server stopping cancels the handlers still running past its grace: no access line
    # will be written for them, so the call that was under way says so on its own line.
    caplog.set_level(logging.INFO)
    _, key = await gateway.principals.create("user", "ann")
    runner = web.AppRunner(create_app(gateway), access_log_class=RedactingAccessLogger,
                           shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    upstream_a.enqueue(Hang())
    async with aiohttp.ClientSession() as session:
        call = asyncio.ensure_future(session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"messages": [{"role": "user", "content": "hi"}]}))
        await upstream_a.wait_in_flight(1)
        await runner.cleanup()
        with pytest.raises(aiohttp.ClientError):
            await call
    lines = _lines(caplog, "core.upstream")
    assert len(lines) == 1 and lines[0].startswith("upstream chat account=A")
    assert "status=-" in lines[0]


async def test_above_info_there_is_no_access_line(
    gateway: Gateway, admin_key: str, aiohttp_client: Any, upstream_a: FakeUpstream,
) -> None:
    # --log-level WARNING: neither the access line nor the call it would tell is logged.
    # (A handler of any level sees what loggers let through; bot.py's writes all of it.)
    seen: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = seen.append  # type: ignore[method-assign]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    root.addHandler(catcher)
    try:
        server = TestServer(create_app(gateway))
        await server.start_server(access_log_class=RedactingAccessLogger)
        client = await aiohttp_client(server)
        api = Api(client)
        user, _ = await api.add_user(admin_key, "ann")
        assert (await api.call("/api/chat", {"user": user, "prompt": "hello"})).status == 200
        await client.close()
    finally:
        root.removeHandler(catcher)
        root.setLevel(level)
    assert [r.getMessage() for r in seen if r.levelno < logging.WARNING] == []
