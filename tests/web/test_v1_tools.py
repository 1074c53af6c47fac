"""/v1/chat/completions as a drop-in: tools (one call, parallel calls, streamed deltas passed on
as they arrive), the ``tool`` role, content parts with inline images reaching the upstream byte
for byte, ``response_format``, and each exchange recalled as it was stored. Driven by the
official ``openai`` SDK against a recording fake upstream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import pytest

from core.config import Settings
from core.errors import NotFound
from core.gateway import Gateway, build_gateway
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import FakeUpstream, ToolCalls

from .support import serving

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
async def root(gateway: Gateway) -> AsyncIterator[str]:
    async with serving(gateway) as url:
        yield url


@pytest.fixture
async def member(gateway: Gateway) -> str:
    _, key = await gateway.principals.create("user", "ann")
    return key


@pytest.fixture
async def sdk(root: str, member: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{root}/v1", api_key=member,
                                  max_retries=0) as client:
        yield client


async def recall(root: str, key: str, conversation_id: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(
            f"{root}/api/recall", params={"conversation_id": conversation_id},
            headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    messages: list[dict[str, Any]] = body["messages"]
    return messages


async def test_a_tool_round_trip_is_passed_through_and_stored(
    sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream, root: str, member: str
) -> None:
    upstream_a.enqueue(ToolCalls((("get_weather", {"city": "Paris"}),)), "Sunny in Paris.")
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    raw = await sdk.chat.completions.with_raw_response.create(
        model="model-a", messages=asked, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="auto", parallel_tool_calls=False)
    first = raw.parse()
    conversation_id = raw.headers["x-conversation-id"]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name) == ("call_0_get_weather", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    sent = upstream_a.chat_requests(titles=False)[0].body
    assert sent is not None
    assert (sent["tools"], sent["tool_choice"], sent["parallel_tool_calls"]) == (
        [WEATHER_TOOL], "auto", False)

    follow_up = [*asked, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}]
    second = await sdk.chat.completions.create(
        model="model-a", messages=follow_up, tools=[WEATHER_TOOL],  # type: ignore[arg-type]
        extra_headers={"X-Conversation-Id": conversation_id})
    assert second.choices[0].message.content == "Sunny in Paris."
    resent = upstream_a.chat_requests(titles=False)[1]
    assert resent.messages[-1] == {"role": "tool", "tool_call_id": "call_0_get_weather",
                                   "content": '{"sky": "sunny"}'}
    assert resent.messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"

    turns = await recall(root, member, conversation_id)
    assert [t["finish_reason"] for t in turns] == ["tool_calls", "stop"]
    assert turns[0]["exchange"]["messages"] == asked
    stored_call = turns[0]["exchange"]["reply"]["tool_calls"][0]
    assert stored_call["function"] == {"name": "get_weather",
                                       "arguments": json.dumps({"city": "Paris"})}
    # The follow-up stores what it added: the tool's result, then the answer.
    assert turns[1]["exchange"]["messages"] == [follow_up[-1]]
    assert turns[1]["exchange"]["reply"]["content"] == "Sunny in Paris."


async def test_streamed_parallel_tool_calls_arrive_as_the_upstream_sends_them(
    root: str, member: str, upstream_a: FakeUpstream
) -> None:
    gate = asyncio.Event()
    upstream_a.enqueue(ToolCalls((("get_weather", {"city": "Oslo"}), ("get_time", {})),
                                 piece=5, gate=gate))
    chunks: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.post(
            f"{root}/v1/chat/completions", headers={"Authorization": f"Bearer {member}"},
            json={"model": "model-a", "stream": True, "tools": [WEATHER_TOOL, TIME_TOOL],
                  "messages": [{"role": "user", "content": "Oslo weather and the time"}]},
    ) as resp:
        assert resp.status == 200
        conversation_id = resp.headers["X-Conversation-Id"]
        buffer = b""
        async for block in resp.content.iter_any():
            buffer += block
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                data = event.decode().removeprefix("data: ")
                if data != "[DONE]":
                    chunks.append(json.loads(data))
            calls = [c for c in chunks if c["choices"] and
                     c["choices"][0]["delta"].get("tool_calls")]
            if calls and not gate.is_set():
                # The first call's opening delta reached us while the upstream still holds
                # the rest: passed on as it arrived, with its index, id and name.
                assert calls[0]["choices"][0]["delta"]["tool_calls"] == [{
                    "index": 0, "id": "call_0_get_weather", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]
                gate.set()
    assert gate.is_set()
    deltas = [d for c in chunks if c["choices"]
              for d in c["choices"][0]["delta"].get("tool_calls") or []]
    arguments: dict[int, str] = {}
    for delta in deltas:
        arguments[delta["index"]] = arguments.get(delta["index"], "") + \
            delta["function"]["arguments"]
    assert {i: json.loads(a) for i, a in arguments.items()} == {0: {"city": "Oslo"}, 1: {}}
    assert len(deltas) > 4  # the pieces, not one call made whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert len({c["id"] for c in chunks}) == 1  # one completion id throughout
    turns = await recall(root, member, conversation_id)
    assert [c["function"]["name"] for c in turns[0]["exchange"]["reply"]["tool_calls"]] == [
        "get_weather", "get_time"]
    assert turns[0]["finish_reason"] == "tool_calls"


async def test_the_sdk_reassembles_streamed_tool_calls(
    sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream
) -> None:
    upstream_a.enqueue(ToolCalls((("get_weather", {"city": "Rome"}), ("get_time", {}))))
    stream = await sdk.chat.completions.create(
        model="model-a", stream=True, tools=[WEATHER_TOOL, TIME_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Rome?"}])
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    finish = None
    async for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            if call.function and call.function.name:
                names[call.index] = call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (
                call.function.arguments if call.function and call.function.arguments else "")
        finish = chunk.choices[0].finish_reason or finish
    assert names == {0: "get_weather", 1: "get_time"}
    assert json.loads(arguments[0]) == {"city": "Rome"}
    assert finish == "tool_calls"


def png_data_url(size: int = 3000) -> tuple[str, bytes]:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(size)
    return "data:image/png;base64," + base64.b64encode(data).decode(), data


async def test_an_inline_image_reaches_the_upstream_intact_and_is_stored_once(
    sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream, root: str, member: str,
    gateway: Gateway,
) -> None:
    url, data = png_data_url()
    parts = [{"type": "text", "text": "What is in this picture?"},
             {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]
    raw = await sdk.chat.completions.with_raw_response.create(
        model="model-a", messages=[{"role": "user", "content": parts}])  # type: ignore[misc]
    sent = upstream_a.chat_requests(titles=False)[0]
    assert sent.messages == [{"role": "user", "content": parts}]
    assert url.encode() in sent.raw_body  # byte for byte, not re-encoded
    digest = hashlib.sha256(data).hexdigest()
    turns = await recall(root, member, raw.headers["x-conversation-id"])
    assert turns[0]["attachments"] == [{"sha256": digest, "mime_type": "image/png",
                                        "bytes": len(data)}]
    stored_parts = turns[0]["exchange"]["messages"][0]["content"]
    assert stored_parts[1] == {"type": "image_url",
                               "image_url": {"url": f"attachment:{digest}", "detail": "low"}}
    assert turns[0]["prompt"] == "What is in this picture?"

    # Sent again (a caller resending its context): the bytes are kept once.
    again = await sdk.chat.completions.with_raw_response.create(
        model="model-a", messages=[{"role": "user", "content": parts}])  # type: ignore[misc]
    rows = await gateway.storage.db.fetchall("SELECT sha256, size_bytes FROM attachments")
    assert [(r[0], r[1]) for r in rows] == [(digest, len(data))]
    first_id = raw.headers["x-conversation-id"]
    owner = await gateway.authenticate(member)
    assert (await gateway.attachment(owner, first_id, digest)).data == data
    admin, _ = await gateway.principals.create("admin", "root")
    assert (await gateway.attachment(admin, first_id, digest)).mime_type == "image/png"
    bob, _ = await gateway.principals.create("user", "bob")
    with pytest.raises(NotFound):
        await gateway.attachment(bob, first_id, digest)

    # Removing a conversation frees its attachments once no other turn refers to them.
    stored = "SELECT sha256 FROM attachments WHERE sha256 = ?"
    await gateway.remove_conversation(owner, first_id)
    assert await gateway.storage.db.fetchall(stored, (digest,))
    await gateway.remove_conversation(owner, again.headers["x-conversation-id"])
    assert await gateway.storage.db.fetchall(stored, (digest,)) == []


async def test_a_text_message_that_is_a_data_url_is_stored_as_an_attachment(
    sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream, root: str, member: str,
) -> None:
    # A plain {role, content} message whose text is a data URL is not plain text: its bytes
    # are kept once by hash, as from a content part, and the upstream gets the text as sent.
    url, data = png_data_url(500)
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
               {"role": "user", "content": url}]
    raw = await sdk.chat.completions.with_raw_response.create(
        model="model-a", messages=history)  # type: ignore[arg-type]
    assert upstream_a.chat_requests(titles=False)[0].messages == history
    turns = await recall(root, member, raw.headers["x-conversation-id"])
    digest = hashlib.sha256(data).hexdigest()
    assert turns[0]["attachments"] == [{"sha256": digest, "mime_type": "image/png",
                                        "bytes": len(data)}]
    assert turns[0]["exchange"]["messages"][-1] == {"role": "user",
                                                    "content": f"attachment:{digest}"}


async def test_json_schema_response_format_is_passed_as_given(
    sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream, root: str, member: str
) -> None:
    schema = {"type": "json_schema", "json_schema": {
        "name": "city", "strict": True,
        "schema": {"type": "object", "properties": {"name": {"type": "string"}},
                   "required": ["name"], "additionalProperties": False}}}
    upstream_a.enqueue('{"name": "Paris"}')
    raw = await sdk.chat.completions.with_raw_response.create(
        model="model-a", messages=[{"role": "user", "content": "A city?"}],
        response_format=schema)  # type: ignore[arg-type]
    assert json.loads(raw.parse().choices[0].message.content or "") == {"name": "Paris"}
    sent = upstream_a.chat_requests(titles=False)[0].body
    assert sent is not None and sent["response_format"] == schema
    turns = await recall(root, member, raw.headers["x-conversation-id"])
    assert turns[0]["exchange"]["reply"]["content"] == '{"name": "Paris"}'


async def test_attachments_past_the_limit_are_refused_naming_it(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream
) -> None:
    settings = make_settings([account("A", upstream_a, "KEY_A")],
                             chat={"max_attachment_bytes": 2000})
    async with build_gateway(settings, environ=ENVIRON) as gateway:
        _, key = await gateway.principals.create("user", "ann")
        async with serving(gateway) as url, openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
            image, _ = png_data_url(3000)
            with pytest.raises(openai.APIStatusError) as refused:
                await client.chat.completions.create(model="model-a", messages=[{
                    "role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": image}}]}])
    assert refused.value.status_code == 413
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "attachments_too_large"
    assert "max_attachment_bytes" in error["message"] and "2000" in error["message"]
    assert upstream_a.chat_requests() == []


async def test_an_image_larger_than_the_body_limit_is_taken_up_to_the_attachment_limit(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream
) -> None:
    # /v1 bodies may be larger than [server] max_body_bytes by the base64 of
    # [chat] max_attachment_bytes: a photo of a few MB is an ordinary request.
    settings = make_settings([account("A", upstream_a, "KEY_A")],
                             server={"max_body_bytes": 4096},
                             chat={"max_attachment_bytes": 30_000})
    async with build_gateway(settings, environ=ENVIRON) as gateway:
        _, key = await gateway.principals.create("user", "ann")
        async with serving(gateway) as url, openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
            image, _ = png_data_url(20_000)  # 26.7 kB of base64: six times the body limit
            upstream_a.enqueue("A picture of noise.")
            answer = await client.chat.completions.create(model="model-a", messages=[{
                "role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}])
            assert answer.choices[0].message.content == "A picture of noise."
            assert image.encode() in upstream_a.chat_requests(titles=False)[0].raw_body

            # Past the /v1 limit (body limit plus the attachments' base64): refused, named.
            too_big, _ = png_data_url(40_000)
            with pytest.raises(openai.APIStatusError) as refused:
                await client.chat.completions.create(model="model-a", messages=[{
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": too_big}}]}])
    assert refused.value.status_code == 413
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "body_too_large"
    assert "max_body_bytes" in error["message"] and "44096 bytes" in error["message"]
    assert len(upstream_a.chat_requests(titles=False)) == 1


async def test_legacy_functions_logprobs_and_n_are_passed_on(
    sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream
) -> None:
    functions = [WEATHER_TOOL["function"]]
    await sdk.chat.completions.create(
        model="model-a", messages=[{"role": "user", "content": "Paris?"}],
        functions=functions, function_call={"name": "get_weather"},  # type: ignore[list-item]
        logprobs=True, top_logprobs=2, n=2)
    sent = upstream_a.chat_requests(titles=False)[0].body
    assert sent is not None
    assert (sent["functions"], sent["function_call"]) == (functions, {"name": "get_weather"})
    assert (sent["logprobs"], sent["top_logprobs"], sent["n"]) == (True, 2, 2)


async def test_removing_a_user_frees_their_attachments(
    gateway: Gateway, root: str, upstream_a: FakeUpstream
) -> None:
    admin, _ = await gateway.principals.create("admin", "root")
    _, key = await gateway.add_user(admin, userid="u-7", username="cy")
    url, _ = png_data_url(500)
    async with openai.AsyncOpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0) as sdk:
        await sdk.chat.completions.create(model="model-a", messages=[{
            "role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
    assert await gateway.storage.db.fetchall("SELECT sha256 FROM attachments")
    await gateway.remove_user(admin, "u-7")
    assert await gateway.storage.db.fetchall("SELECT sha256 FROM attachments") == []
