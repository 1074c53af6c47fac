"""The OpenAI-compatible API, driven by the official ``openai`` SDK as any member's tool would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from core.gateway import Gateway, build_gateway
from tests.fakes.upstream import FakeUpstream, Garbage, Status, StreamBreak
from web.app import create_app

from .support import serving


@pytest.fixture
async def base_url(gateway: Gateway) -> AsyncIterator[str]:
    async with serving(gateway) as root:
        yield f"{root}/v1"


@pytest.fixture
async def member(gateway: Gateway) -> str:
    _, key = await gateway.principals.create("user", "ann")
    return key


@pytest.fixture
async def plus_member(gateway: Gateway) -> str:
    _, key = await gateway.principals.create("user", "bob", plus=True)
    return key


@pytest.fixture
async def sdk(base_url: str, member: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=member, max_retries=0)
    yield client
    await client.close()


USER_HI = [{"role": "user", "content": "hi"}]


async def test_create_returns_an_openai_completion_and_stores_the_turn(
    sdk: openai.AsyncOpenAI, gateway: Gateway, upstream_a: FakeUpstream
) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="model-a", messages=[{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": "hi"}],
        temperature=0.3, max_tokens=50,
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "reply 1 from A"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    # Passed upstream as given, with the account's own key.
    sent = upstream_a.chat_requests(titles=False)[0]
    assert sent.api_key == "sk-account-a"
    assert sent.messages[0] == {"role": "system", "content": "be brief"}
    assert sent.body is not None and sent.body["temperature"] == 0.3
    assert sent.body["max_tokens"] == 50
    # Stored as the caller's conversation, prompt = the last user message.
    conversation_id = raw.headers["x-conversation-id"]
    admin = (await gateway.principals.create("admin", "root"))[0]
    conversation, turns = await gateway.recall(admin, conversation_id)
    assert [(t.prompt, t.reply) for t in turns] == [("hi", "reply 1 from A")]
    # /v1 titles are cut from the prompt by default: no second upstream call per request.
    assert conversation.title == "hi"
    assert upstream_a.chat_requests(titles=True) == []


async def test_stream_yields_chunks_and_usage_only_when_asked(
    sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream
) -> None:
    upstream_a.enqueue("one two three", "four five")
    pieces: list[str] = []
    usage = None
    stream = await sdk.chat.completions.create(
        model="model-a", messages=USER_HI, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        else:
            usage = chunk.usage
    assert "".join(pieces) == "one two three"
    assert usage is not None and usage.completion_tokens == 3

    stream = await sdk.chat.completions.create(model="model-a", messages=USER_HI, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)  # no usage chunk without include_usage
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "four five"


async def test_raw_stream_ends_with_done(base_url: str, member: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(
        f"{base_url}/chat/completions", json={"model": "model-a", "messages": USER_HI,
                                              "stream": True},
        headers={"Authorization": f"Bearer {member}"},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Conversation-Id"]
        text = await resp.text()
    assert text.rstrip().endswith("data: [DONE]")


async def test_models_lists_only_the_callers_tiers(
    base_url: str, sdk: openai.AsyncOpenAI, plus_member: str
) -> None:
    assert [m.id for m in (await sdk.models.list()).data] == ["model-a", "model-b"]
    async with openai.AsyncOpenAI(base_url=base_url, api_key=plus_member, max_retries=0) as plus:
        ids = [m.id for m in (await plus.models.list()).data]
        assert ids == ["model-a", "model-b", "model-plus"]
        assert (await plus.models.retrieve("model-plus")).owned_by == "P"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("model-plus")


async def test_model_picks_the_account_that_serves_it(
    sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    for _ in range(3):
        completion = await sdk.chat.completions.create(model="model-b", messages=USER_HI)
        assert completion.choices[0].message.content.endswith("from B")
    assert upstream_a.chat_requests() == []


async def test_error_classes(
    base_url: str, sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        await sdk.chat.completions.create(model="no-such-model", messages=USER_HI)
    assert _error(not_found.value)["code"] == "model_not_found"

    with pytest.raises(openai.PermissionDeniedError) as denied:
        await sdk.chat.completions.create(model="model-plus", messages=USER_HI)
    assert _error(denied.value)["type"] == "permission_error"

    async with openai.AsyncOpenAI(base_url=base_url, api_key="gw_wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as unauth:
            await bad.chat.completions.create(model="model-a", messages=USER_HI)
    assert _error(unauth.value)["code"] == "invalid_api_key"

    with pytest.raises(openai.BadRequestError) as bad_request:
        await sdk.chat.completions.create(model="model-a", messages=[])
    assert _error(bad_request.value)["param"] == "messages"

    with pytest.raises(openai.BadRequestError) as audio:
        await sdk.chat.completions.create(model="model-a", messages=USER_HI,
                                          modalities=["text", "audio"])
    assert _error(audio.value)["param"] == "modalities"

    upstream_a.enqueue(Status(429, headers={"Retry-After": "30"}))
    with pytest.raises(openai.InternalServerError) as unavailable:
        await sdk.chat.completions.create(model="model-a", messages=USER_HI)
    assert unavailable.value.status_code == 503
    assert unavailable.value.response.headers["Retry-After"] == "30"
    assert upstream_b.chat_requests() == []  # model-a is served by A alone: no silent switch


async def test_every_error_uses_the_envelope(base_url: str, member: str) -> None:
    auth = {"Authorization": f"Bearer {member}"}
    async with aiohttp.ClientSession() as session:
        cases: list[tuple[str, str, dict[str, Any], int]] = [
            ("POST", "/chat/completions", {"data": b"{not json", "headers": auth}, 400),
            ("POST", "/chat/completions", {"json": [1, 2], "headers": auth}, 400),
            ("POST", "/chat/completions", {"json": {"messages": USER_HI}}, 401),
            ("GET", "/chat/completions", {"headers": auth}, 405),
            ("GET", "/no-such-endpoint", {"headers": auth}, 404),
            ("POST", "/chat/completions",
             {"json": {"messages": [{"role": "wizard", "content": "x"}]}, "headers": auth}, 400),
            ("POST", "/chat/completions",
             {"json": {"messages": [{"role": ["user"], "content": "x"}]}, "headers": auth}, 400),
        ]
        for method, path, kwargs, status in cases:
            async with session.request(method, base_url + path, **kwargs) as resp:
                body = await resp.json()
                assert resp.status == status, (path, body)
                assert set(body["error"]) == {"message", "type", "param", "code"}, body


async def test_conversation_header_continues_on_the_same_account(
    sdk: openai.AsyncOpenAI, gateway: Gateway, upstream_a: FakeUpstream,
    upstream_b: FakeUpstream,
) -> None:
    first = await sdk.chat.completions.with_raw_response.create(model="model-a",
                                                                messages=USER_HI)
    conversation_id = first.headers["x-conversation-id"]
    history = [*USER_HI, {"role": "assistant", "content": "reply 1 from A"},
               {"role": "user", "content": "and then?"}]
    # model-b would go to B; the pinned conversation stays on A all the same.
    second = await sdk.chat.completions.with_raw_response.create(
        model="model-b", messages=history, extra_headers={"X-Conversation-Id": conversation_id})
    assert second.headers["x-conversation-id"] == conversation_id
    assert second.parse().choices[0].message.content == "reply 2 from A"
    assert upstream_b.chat_requests() == []
    admin = (await gateway.principals.create("admin", "root"))[0]
    _, turns = await gateway.recall(admin, conversation_id)
    assert [t.prompt for t in turns] == ["hi", "and then?"]
    assert turns[1].parent_id == turns[0].id

    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="model-a", messages=USER_HI,
                                          extra_headers={"X-Conversation-Id": "nope"})


async def test_stream_failing_before_any_text_keeps_its_status(
    sdk: openai.AsyncOpenAI, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    upstream_a.enqueue(Status(500))
    upstream_b.enqueue(Status(500))
    with pytest.raises(openai.InternalServerError) as failed:
        await sdk.chat.completions.create(messages=USER_HI, model="model-a", stream=True)
    assert failed.value.status_code == 503


async def test_stream_breaking_mid_way_ends_with_an_error_and_stores_nothing(
    sdk: openai.AsyncOpenAI, gateway: Gateway, upstream_a: FakeUpstream
) -> None:
    upstream_a.enqueue(StreamBreak(after_chunks=2, text="a b c d e"))
    stream = await sdk.chat.completions.create(model="model-a", messages=USER_HI, stream=True)
    with pytest.raises(openai.APIError):
        async for _chunk in stream:
            pass
    admin = (await gateway.principals.create("admin", "root"))[0]
    conversations, total = await gateway.list_conversations(admin, everyone=True)
    assert total == 0 and conversations == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_answer_of_the_wrong_shape_is_a_502_and_cools_the_account(
    sdk: openai.AsyncOpenAI, gateway: Gateway, upstream_a: FakeUpstream, stream: bool,
) -> None:
    first = await sdk.chat.completions.with_raw_response.create(model="model-a",
                                                                messages=USER_HI)
    pinned = {"X-Conversation-Id": first.headers["x-conversation-id"]}
    upstream_a.enqueue(
        Garbage.sse({"id": "c", "choices": [{"index": 0, "delta": {"content": 42}}]})
        if stream else Garbage.json({"choices": [{"message": {"content": "hi"}}], "usage": [1]})
    )
    with pytest.raises(openai.InternalServerError) as failed:
        await sdk.chat.completions.create(model="model-a", messages=USER_HI, stream=stream,
                                          extra_headers=pinned)
    assert failed.value.status_code == 502
    assert _error(failed.value)["code"] == "upstream_garbage"
    account = gateway.pool.get("A")
    assert account is not None and account.health() == "cooling"
    assert account.cooling_reason == "garbage"
    # model-a is served by A alone: a new conversation is refused plainly while A cools.
    with pytest.raises(openai.InternalServerError) as cooling:
        await sdk.chat.completions.create(model="model-a", messages=USER_HI, stream=stream)
    assert cooling.value.status_code == 503


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict)
    return body


async def test_finish_reason_and_out_of_service_models(
    sdk: openai.AsyncOpenAI, gateway: Gateway, upstream_a: FakeUpstream
) -> None:
    from tests.fakes.upstream import Reply

    upstream_a.enqueue(Reply("cut sh", finish_reason="length"))
    completion = await sdk.chat.completions.create(model="model-a", messages=USER_HI,
                                                   max_tokens=2)
    assert completion.choices[0].finish_reason == "length"
    # An account out of service (its key refused) no longer offers its model.
    account = gateway.pool.get("B")
    assert account is not None
    await gateway.pool.set_enabled(account, False)
    assert [m.id for m in (await sdk.models.list()).data] == ["model-a"]


async def test_v1_titles_can_be_asked_of_the_model(
    make_settings: Any, upstream_a: FakeUpstream, aiohttp_client: Any
) -> None:
    from tests.conftest import ENVIRON, account

    settings = make_settings([account("A", upstream_a, "KEY_A")], chat={"v1_titles": True})
    async with build_gateway(settings, environ=ENVIRON) as gateway:
        user, key = await gateway.principals.create("user", "ann")
        client = await aiohttp_client(create_app(gateway))
        resp = await client.post("/v1/chat/completions", json={"model": "model-a",
                                                               "messages": USER_HI},
                                 headers={"Authorization": f"Bearer {key}"})
        assert resp.status == 200
        conversation = await gateway.conversation_for(user, resp.headers["X-Conversation-Id"])
    assert conversation.title == "Fake Title"
    assert upstream_a.chat_requests(titles=True)[0].api_key == "sk-account-a"


async def test_wrong_method_says_which_is_allowed(base_url: str, member: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(
            f"{base_url}/chat/completions", headers={"Authorization": f"Bearer {member}"}) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
