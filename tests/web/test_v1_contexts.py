"""A /v1 history sent without ``X-Conversation-Id``, as agent frameworks send it, continues the
conversation it comes from: on the account that started it, stored as a follow-up (what it
adds), one conversation for the whole session. When it cannot (another member's, a branch of
an older turn, a model of its own, the account out), a new conversation answers, as before.
Driven by the official ``openai`` SDK; both storage engines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest

from core.config import Settings
from core.gateway import Gateway, build_gateway
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import FakeUpstream, Hold, ToolCalls

from .support import serving

SYSTEM = {"role": "system", "content": "You are terse."}
QUESTION = {"role": "user", "content": "Name a colour."}


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
                  upstream_b: FakeUpstream, upstream_plus: FakeUpstream,
                  ) -> AsyncIterator[Gateway]:
    # Two accounts serving one model: a new conversation goes to the next one in turn.
    # A third serves another model.
    settings = make_settings([account("A", upstream_a, "KEY_A"),
                              account("B", upstream_b, "KEY_B", model="model-a"),
                              account("C", upstream_plus, "KEY_P", model="model-c")])
    async with build_gateway(settings, environ=ENVIRON) as gw:
        yield gw


@pytest.fixture
async def root(gateway: Gateway) -> AsyncIterator[str]:
    async with serving(gateway) as url:
        yield url


async def _sdk(root: str, gateway: Gateway, name: str) -> openai.AsyncOpenAI:
    _, key = await gateway.principals.create("user", name)
    return openai.AsyncOpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0)


@pytest.fixture
async def sdk(root: str, gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    client = await _sdk(root, gateway, "ann")
    yield client
    await client.close()


async def _ask(sdk: openai.AsyncOpenAI, messages: list[dict[str, Any]],
               **options: Any) -> tuple[str, Any]:
    """(conversation id, message) of one call, the history as given, no header."""
    raw = await sdk.chat.completions.with_raw_response.create(
        model=options.pop("model", "model-a"), messages=messages, **options)  # type: ignore[arg-type]
    return raw.headers["x-conversation-id"], raw.parse().choices[0].message


async def _stored(gateway: Gateway, conversation_id: str) -> list[Any]:
    admin = (await gateway.principals.create("admin", f"root-{conversation_id}"))[0]
    _, turns = await gateway.recall(admin, conversation_id)
    return turns


async def test_an_agents_history_continues_one_conversation_on_its_account(
    sdk: openai.AsyncOpenAI, gateway: Gateway, upstream_a: FakeUpstream,
    upstream_b: FakeUpstream,
) -> None:
    history: list[dict[str, Any]] = [SYSTEM, QUESTION]
    first, reply = await _ask(sdk, history)
    started_on = reply.content.rsplit(" ", 1)[-1]  # "reply 1 from A"
    ids = [first]
    for question in ("Another?", "And one more?"):
        history += [{"role": "assistant", "content": reply.content},
                    {"role": "user", "content": question}]
        conversation_id, reply = await _ask(sdk, history)
        ids.append(conversation_id)
        assert reply.content.endswith(f"from {started_on}")  # not the next account in turn
    assert ids == [first] * 3
    other = upstream_b if started_on == "A" else upstream_a
    assert other.chat_requests() == []
    # The whole context still went upstream as the caller sent it.
    sent = (upstream_a if started_on == "A" else upstream_b).chat_requests()[-1]
    assert sent.messages == history
    turns = await _stored(gateway, first)
    assert [t.prompt for t in turns] == ["Name a colour.", "Another?", "And one more?"]
    assert [t.parent_id for t in turns] == [None, turns[0].id, turns[1].id]
    # Each follow-up stores what it added, not the history again.
    assert turns[0].exchange["messages"] == [SYSTEM, QUESTION]
    assert turns[2].exchange["messages"] == [{"role": "user", "content": "And one more?"}]


async def test_a_session_may_name_its_conversation_on_some_calls_and_not_others(
    sdk: openai.AsyncOpenAI, gateway: Gateway,
) -> None:
    history: list[dict[str, Any]] = [QUESTION]
    first, reply = await _ask(sdk, history)
    history += [{"role": "assistant", "content": reply.content},
                {"role": "user", "content": "Another?"}]
    named = await sdk.chat.completions.with_raw_response.create(
        model="model-a", messages=history,  # type: ignore[arg-type]
        extra_headers={"X-Conversation-Id": first})
    assert named.headers["x-conversation-id"] == first
    history += [{"role": "assistant", "content": named.parse().choices[0].message.content},
                {"role": "user", "content": "And one more?"}]
    assert (await _ask(sdk, history))[0] == first
    assert [t.prompt for t in await _stored(gateway, first)] == [
        "Name a colour.", "Another?", "And one more?"]


async def test_a_streamed_session_continues_too(
    sdk: openai.AsyncOpenAI, gateway: Gateway,
) -> None:
    history: list[dict[str, Any]] = [QUESTION]
    ids = []
    for question in ("Another?", None):
        raw = await sdk.chat.completions.with_raw_response.create(
            model="model-a", messages=history, stream=True)  # type: ignore[arg-type]
        ids.append(raw.headers["x-conversation-id"])
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse()
                        if c.choices])
        if question:
            history += [{"role": "assistant", "content": text},
                        {"role": "user", "content": question}]
    assert ids[0] == ids[1]
    assert [t.prompt for t in await _stored(gateway, ids[0])] == ["Name a colour.", "Another?"]


async def test_a_tool_round_trip_continues_though_the_arguments_are_rewritten(
    sdk: openai.AsyncOpenAI, gateway: Gateway, upstream_a: FakeUpstream,
    upstream_b: FakeUpstream,
) -> None:
    for fake in (upstream_a, upstream_b):
        fake.enqueue(ToolCalls((("get_weather", {"city": "Paris", "unit": "C"}),)),
                     "Sunny, 21 C.")
    ask = {"role": "user", "content": "Weather in Paris?"}
    first, message = await _ask(sdk, [ask], tools=[{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object"}}}])
    call = message.tool_calls[0]
    # As LangChain sends it back: the arguments parsed, then written with its own spacing.
    echoed = {"role": "assistant", "content": None, "tool_calls": [{
        "id": call.id, "type": "function", "function": {
            "name": call.function.name,
            "arguments": json.dumps(json.loads(call.function.arguments), indent=1)}}]}
    result = {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}
    second, message = await _ask(sdk, [ask, echoed, result])
    assert second == first
    assert message.content == "Sunny, 21 C."
    turns = await _stored(gateway, first)
    assert turns[1].exchange["messages"] == [result]


async def test_what_cannot_continue_starts_a_new_conversation(
    root: str, sdk: openai.AsyncOpenAI, gateway: Gateway,
) -> None:
    first, reply = await _ask(sdk, [QUESTION])
    echoed = {"role": "assistant", "content": reply.content}
    branch_a = [QUESTION, echoed, {"role": "user", "content": "Why?"}]
    assert (await _ask(sdk, branch_a))[0] == first
    # A second branch from the first turn: that turn is no longer the last. The branch is a
    # conversation of its own, holding the whole context it was given.
    branch_b = [QUESTION, echoed, {"role": "user", "content": "Another?"}]
    other, _ = await _ask(sdk, branch_b)
    assert other != first
    assert (await _stored(gateway, other))[0].exchange["messages"] == branch_b
    # A reply the caller edited is a context no turn ended.
    edited = [QUESTION, {"role": "assistant", "content": "Teal."},
              {"role": "user", "content": "Why?"}]
    assert (await _ask(sdk, edited))[0] not in (first, other)
    # The same history from another member is never this member's conversation.
    async with await _sdk(root, gateway, "bob") as bob:
        theirs, _ = await _ask(bob, branch_a)
    assert theirs not in (first, other)
    assert [t.prompt for t in await _stored(gateway, first)] == ["Name a colour.", "Why?"]


async def test_another_model_or_an_account_out_starts_anew(
    sdk: openai.AsyncOpenAI, gateway: Gateway,
) -> None:
    first, reply = await _ask(sdk, [QUESTION])
    started_on = reply.content.rsplit(" ", 1)[-1]
    history = [QUESTION, {"role": "assistant", "content": reply.content},
               {"role": "user", "content": "Another?"}]
    # The conversation's account taken out of service: the session goes on elsewhere, where
    # a caller naming the conversation would be told the account is out.
    pinned = gateway.pool.get(started_on)
    assert pinned is not None
    await gateway.pool.set_enabled(pinned, False)
    moved, reply = await _ask(sdk, history)
    assert moved != first
    assert not reply.content.endswith(f"from {started_on}")
    with pytest.raises(openai.InternalServerError):  # 503 account_out
        await sdk.chat.completions.create(model="model-a", messages=history,
                                          extra_headers={"X-Conversation-Id": first})
    await gateway.pool.set_enabled(pinned, True)
    # The same history asked of another model: that model's account answers, anew.
    elsewhere, reply = await _ask(sdk, history, model="model-c")
    assert elsewhere not in (first, moved)
    assert reply.content.endswith("from P")
    # Back in service, the account continues its conversation again.
    assert (await _ask(sdk, history))[0] == first


async def test_two_branches_at_once_one_continues_and_one_starts_anew(
    sdk: openai.AsyncOpenAI, gateway: Gateway, upstream_a: FakeUpstream,
    upstream_b: FakeUpstream,
) -> None:
    first, reply = await _ask(sdk, [QUESTION])
    pinned = upstream_a if reply.content.endswith("from A") else upstream_b
    gate = asyncio.Event()
    pinned.enqueue(Hold(gate, "held"))
    echoed = {"role": "assistant", "content": reply.content}
    branches = [[QUESTION, echoed, {"role": "user", "content": q}] for q in ("Why?", "How?")]
    calls = [asyncio.create_task(_ask(sdk, branch)) for branch in branches]
    # One holds the conversation (its lock) while its account answers; the other waits.
    await pinned.wait_in_flight(1)
    gate.set()
    ids = sorted([conversation_id for conversation_id, _ in await asyncio.gather(*calls)])
    assert first in ids and len(set(ids)) == 2
    assert len(await _stored(gateway, first)) == 2
    other = next(i for i in ids if i != first)
    assert len((await _stored(gateway, other))[0].exchange["messages"]) == 3


async def test_a_reply_echoed_as_text_parts_is_the_same_reply(
    sdk: openai.AsyncOpenAI,
) -> None:
    first, reply = await _ask(sdk, [QUESTION])
    echoed = {"role": "assistant", "content": [{"type": "text", "text": reply.content}]}
    assert (await _ask(sdk, [QUESTION, echoed, {"role": "user", "content": "Why?"}]))[0] \
        == first


async def test_a_streamed_tool_call_echoed_as_assembled_continues(
    sdk: openai.AsyncOpenAI, gateway: Gateway, upstream_a: FakeUpstream,
    upstream_b: FakeUpstream,
) -> None:
    for fake in (upstream_a, upstream_b):
        fake.enqueue(ToolCalls((("get_weather", {"city": "Paris"}),)), "Sunny.")
    ask = {"role": "user", "content": "Weather in Paris?"}
    raw = await sdk.chat.completions.with_raw_response.create(
        model="model-a", messages=[ask], stream=True,  # type: ignore[list-item]
        tools=[{"type": "function", "function": {"name": "get_weather",
                                                 "parameters": {"type": "object"}}}])
    first = raw.headers["x-conversation-id"]
    # As a client puts the call together from its deltas (id and name first, then the
    # arguments in pieces).
    calls: dict[int, dict[str, Any]] = {}
    async for chunk in raw.parse():
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
            call["id"] = delta.id or call["id"]
            if delta.function is not None:
                call["function"]["name"] += delta.function.name or ""
                call["function"]["arguments"] += delta.function.arguments or ""
    assert len(calls) == 1
    echoed = {"role": "assistant", "content": None, "tool_calls": [calls[0]]}
    result = {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"}
    second, message = await _ask(sdk, [ask, echoed, result])
    assert second == first
    assert message.content == "Sunny."


async def test_tool_arguments_nested_past_any_parser_are_no_server_error(
    sdk: openai.AsyncOpenAI,
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    echoed = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": deep}}]}
    result = {"role": "tool", "tool_call_id": "call_1", "content": "done"}
    _, message = await _ask(sdk, [QUESTION, echoed, result])
    assert message.content
