"""Self-test of the fake upstream: its wire format must satisfy the real ``openai`` SDK.

If these pass, gateway tests built on the fake are exercising realistic upstream traffic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from tests.fakes.upstream import (
    Delay,
    FakeUpstream,
    Garbage,
    Hang,
    Hold,
    Reply,
    Status,
    StreamBreak,
)

USER = [{"role": "user", "content": "hello there friend"}]
TITLE_PROMPT = [
    {"role": "system", "content": "Write a short TITLE for this conversation."},
    {"role": "user", "content": "hi"},
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("up1", model="m-1") as upstream:
        yield upstream


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    """Real SDK client without retries, so error tests stay fast and deterministic."""
    async with openai.AsyncOpenAI(
        base_url=fake.base_url, api_key="k", max_retries=0, timeout=5
    ) as sdk_client:
        yield sdk_client


def sse_payloads(raw: str) -> list[str]:
    """``data:`` payloads of an SSE body, checking every event is ``data: ...\\n\\n``."""
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: ") for e in events[:-1])
    return [e.removeprefix("data: ") for e in events[:-1]]


async def test_non_stream_shape_and_recording(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    body = {"model": "m-1", "messages": USER}
    async with http.post(
        f"{fake.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-1"}
    ) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "m-1"
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "reply 1 from up1", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}

    [req] = fake.requests
    assert (req.method, req.path, req.api_key) == ("POST", "/v1/chat/completions", "sk-1")
    assert req.body == body
    assert req.headers["authorization"] == "Bearer sk-1"
    assert req.messages == USER and req.model == "m-1"
    assert not req.stream and not req.is_title


async def test_sdk_non_stream_and_queue(fake: FakeUpstream, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply("queued answer", usage={"prompt_tokens": 9, "completion_tokens": 1}))
    first = await client.chat.completions.create(model="m-1", messages=USER)
    second = await client.chat.completions.create(model="m-1", messages=USER)
    assert first.choices[0].message.content == "queued answer"
    assert first.usage is not None and first.usage.prompt_tokens == 9
    # The counter counts every non-title chat request, queued or not.
    assert second.choices[0].message.content == "reply 2 from up1"
    assert fake.pending == 0
    assert [r.api_key for r in fake.requests] == ["k", "k"]


async def test_sdk_stream_with_usage(fake: FakeUpstream, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply("one two three four"))
    stream = await client.chat.completions.create(
        model="m-1", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert deltas == ["one", " two", " three", " four"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
    }
    assert len({c.id for c in chunks}) == 1
    assert fake.requests[0].stream and fake.requests[0].include_usage


async def test_raw_sse_without_usage(fake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    body = {"model": "m-1", "messages": USER, "stream": True}
    async with http.post(f"{fake.base_url}/chat/completions", json=body) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        payloads = sse_payloads(await resp.text())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all("usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "reply 1 from up1"
    assert fake.requests[0].api_key is None


async def test_sdk_rate_limit_error(fake: FakeUpstream, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Status(429, headers={"Retry-After": 7}))
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="m-1", messages=USER)
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == "7"


async def test_other_statuses_map_to_sdk_errors(
    fake: FakeUpstream, client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Status(401), Status(503, message="overloaded"), Status(502, body="<html>"))
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="m-1", messages=USER)
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model="m-1", messages=USER)
    assert info.value.status_code == 503 and "overloaded" in info.value.message
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model="m-1", messages=USER)
    assert info.value.status_code == 502


async def test_titles_use_their_own_queue(fake: FakeUpstream, client: openai.AsyncOpenAI) -> None:
    fake.enqueue_title("Queued Title")
    titles = [
        (await client.chat.completions.create(model="m-1", messages=TITLE_PROMPT))
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    chat = await client.chat.completions.create(model="m-1", messages=USER)
    assert titles == ["Queued Title", "Fake Title"]
    assert chat.choices[0].message.content == "reply 1 from up1"
    assert len(fake.chat_requests()) == 3
    assert len(fake.chat_requests(titles=True)) == 2
    assert [r.messages for r in fake.chat_requests(titles=False)] == [USER]


async def test_default_reply_and_models(fake: FakeUpstream, client: openai.AsyncOpenAI) -> None:
    fake.default_reply = lambda messages: f"echo {messages[-1]['content']}"
    reply = await client.chat.completions.create(model="m-1", messages=USER)
    assert reply.choices[0].message.content == "echo hello there friend"
    models = await client.models.list()
    assert [m.id for m in models.data] == ["m-1"]


async def test_stream_break_aborts_without_done(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    fake.enqueue(StreamBreak(after_chunks=2, text="a b c d e"))
    body = {"model": "m-1", "messages": USER, "stream": True}
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{fake.base_url}/chat/completions", json=body) as resp:
            async for data in resp.content.iter_any():
                received += data
    assert b"[DONE]" not in received and b'"finish_reason": "stop"' not in received
    assert received.count(b'"content"') == 3  # role chunk + two content chunks


async def test_garbage(fake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    fake.enqueue(Garbage(), Garbage.no_choices())
    url = f"{fake.base_url}/chat/completions"
    async with http.post(url, json={"messages": USER}) as resp:
        assert resp.status == 200
        with pytest.raises(ValueError):
            json.loads(await resp.text())
    async with http.post(url, json={"messages": USER}) as resp:
        assert "choices" not in await resp.json()


async def test_delay_then_reply(fake: FakeUpstream, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Delay(0.05, then=Reply("late")))
    started = time.monotonic()
    reply = await client.chat.completions.create(model="m-1", messages=USER)
    assert reply.choices[0].message.content == "late"
    assert time.monotonic() - started >= 0.05


async def test_hold_keeps_requests_in_flight_until_released(
    fake: FakeUpstream, client: openai.AsyncOpenAI
) -> None:
    gate = asyncio.Event()
    fake.enqueue(Hold(gate, then=Reply("first")), Hold(gate, then=Status(500)))
    replies = [asyncio.create_task(client.chat.completions.create(model="m-1", messages=USER))
               for _ in range(2)]
    await fake.wait_in_flight(2)
    assert not any(task.done() for task in replies)
    gate.set()
    results = await asyncio.gather(*replies, return_exceptions=True)
    await fake.wait_in_flight(0)
    first = results[0]
    assert not isinstance(first, BaseException) and first.choices[0].message.content == "first"
    assert isinstance(results[1], openai.InternalServerError)
    assert fake.max_in_flight == 2


async def test_stop_is_prompt_while_request_hangs(http: aiohttp.ClientSession) -> None:
    fake = FakeUpstream("hanger")
    await fake.start()
    fake.enqueue(Hang())
    pending = asyncio.create_task(
        http.post(f"{fake.base_url}/chat/completions", json={"messages": USER})
    )
    await fake.wait_for_requests(1)
    started = time.monotonic()
    await fake.stop()
    assert time.monotonic() - started < 0.5
    with pytest.raises(aiohttp.ClientError):
        await pending


async def test_wait_for_requests_times_out(fake: FakeUpstream) -> None:
    with pytest.raises(TimeoutError, match="expected 1 requests"):
        await fake.wait_for_requests(1, timeout=0.05)


async def test_malformed_body_is_400_and_recorded(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{fake.base_url}/chat/completions", data=b"{nope") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert fake.requests[0].body is None and fake.requests[0].raw_body == b"{nope"
