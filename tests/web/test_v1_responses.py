"""/v1/responses for callers, with the official ``openai`` SDK: a new response starts a
conversation, ``previous_response_id`` continues it on the account that produced it, natively
on an ``api = "responses"`` account and translated to Chat Completions on an ``api = "chat"``
one, streamed and not; tools and images as content parts; each exchange recalled as stored."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import pytest

from core.config import Settings
from core.gateway import Gateway, build_gateway
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import FakeUpstream, ToolCalls

from .support import serving

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


class Setup:
    def __init__(self, gateway: Gateway, client: openai.AsyncOpenAI, root: str,
                 key: str) -> None:
        self.gateway, self.client, self.root, self.key = gateway, client, root, key

    async def recall(self, conversation_id: str) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(
                f"{self.root}/api/recall", params={"conversation_id": conversation_id},
                headers={"Authorization": f"Bearer {self.key}"}) as resp:
            assert resp.status == 200, await resp.text()
            turns: list[dict[str, Any]] = (await resp.json())["messages"]
        return turns


@pytest.fixture
async def setup(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
                upstream_b: FakeUpstream, upstream_plus: FakeUpstream
                ) -> AsyncIterator[Setup]:
    """A and B: Chat Completions accounts both serving model-a; R: a Responses account."""
    settings = make_settings([
        account("A", upstream_a, "KEY_A"),
        account("B", upstream_b, "KEY_B", model="model-a"),
        account("R", upstream_plus, "KEY_P", model="model-r", api="responses"),
    ])
    async with build_gateway(settings, environ=ENVIRON) as gateway:
        _, key = await gateway.principals.create("user", "ann")
        async with serving(gateway) as root, openai.AsyncOpenAI(
                base_url=f"{root}/v1", api_key=key, max_retries=0) as client:
            yield Setup(gateway, client, root, key)


def _requests(*fakes: FakeUpstream) -> list[Any]:
    return [r for fake in fakes for r in fake.chat_requests(titles=False)]


async def test_chat_account_new_and_continued_response(
    setup: Setup, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    first = await setup.client.responses.create(model="model-a", input="Hello there",
                                                instructions="Be brief.")
    assert first.id.startswith("resp_") and first.status == "completed"
    served = upstream_a if upstream_a.chat_requests() else upstream_b
    other = upstream_b if served is upstream_a else upstream_a
    assert first.output_text == f"reply 1 from {served.name}"
    assert served.chat_requests()[0].messages == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]

    # Continued: on the same account, though round robin would give a new conversation the
    # other (which serves model-a too), with the history rebuilt from the stored exchange.
    second = await setup.client.responses.create(
        model="model-a", input="And then?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert other.chat_requests() == []
    kept = await setup.client.responses.retrieve(second.id)
    assert (kept.id, kept.output_text, kept.previous_response_id) == (
        second.id, second.output_text, first.id)
    sent = served.chat_requests()[-1].messages
    assert sent == [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hello there"},
                    {"role": "assistant", "content": f"reply 1 from {served.name}"},
                    {"role": "user", "content": "And then?"}]
    raw = await setup.client.responses.with_raw_response.create(
        model="model-a", input="Go on", previous_response_id=second.id)
    assert raw.parse().output_text.startswith("reply")

    turns = await setup.recall(raw.headers["x-conversation-id"])
    assert len(turns) == 3 and turns[0]["exchange"]["api"] == "responses"
    assert turns[1]["exchange"]["messages"] == [{"role": "user", "content": "And then?"}]


async def test_forking_an_earlier_response_is_refused_plainly(setup: Setup) -> None:
    first = await setup.client.responses.create(model="model-a", input="one")
    await setup.client.responses.create(model="model-a", input="two",
                                        previous_response_id=first.id)
    with pytest.raises(openai.ConflictError) as fork:
        await setup.client.responses.create(model="model-a", input="again",
                                            previous_response_id=first.id)
    assert isinstance(fork.value.body, dict)
    assert fork.value.body["code"] == "response_not_latest"


async def test_responses_account_is_used_natively(
    setup: Setup, upstream_plus: FakeUpstream
) -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Hi R"}]}]
    first = await setup.client.responses.create(
        model="model-r", input=items, instructions="Be kind.",  # type: ignore[arg-type]
        metadata={"job": "7"})
    assert first.output_text == "reply 1 from P"
    sent = upstream_plus.chat_requests()[0].body
    assert sent is not None
    assert (sent["input"], sent["instructions"], sent["metadata"]) == (
        items, "Be kind.", {"job": "7"})
    upstream_first = next(iter(upstream_plus.stored_responses))
    assert first.id != upstream_first  # ours, leading back to our conversation

    second = await setup.client.responses.create(model="model-r", input="More",
                                                 previous_response_id=first.id)
    assert second.output_text == "reply 2 from P"
    chained = upstream_plus.chat_requests()[1].body
    assert chained is not None
    assert chained["previous_response_id"] == upstream_first
    assert chained["input"] == "More"


@pytest.mark.parametrize("model", ["model-a", "model-r"])
async def test_streamed_responses_events(
    setup: Setup, model: str, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    upstream_a.enqueue("one two three")
    upstream_b.enqueue("one two three")
    async with setup.client.responses.stream(model=model, input="Count") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    expected = "one two three" if model == "model-a" else "reply 1 from P"
    assert final.output_text == expected
    assert final.id.startswith("resp_")

    # Continued, streamed too, on the account that produced it.
    stream2 = await setup.client.responses.create(model=model, input="Again", stream=True,
                                                  previous_response_id=final.id)
    text = ""
    completed = None
    async for event in stream2:
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            completed = event.response
    assert completed is not None and completed.output_text == text and text
    assert completed.previous_response_id == final.id


async def test_tools_and_images_through_a_chat_account(
    setup: Setup, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    for fake in (upstream_a, upstream_b):
        fake.enqueue(ToolCalls((("get_weather", {"city": "Paris"}),)), "Sunny.")
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG a picture").decode()
    first = await setup.client.responses.create(
        model="model-a", tools=[WEATHER],  # type: ignore[list-item]
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Weather where this was taken?"},
            {"type": "input_image", "image_url": image, "detail": "auto"}]}])
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    served = upstream_a if upstream_a.chat_requests() else upstream_b
    sent = served.chat_requests()[0]
    assert sent.messages[0]["content"][1] == {"type": "image_url",
                                              "image_url": {"url": image, "detail": "auto"}}
    assert sent.body is not None and sent.body["tools"] == [{"type": "function", "function": {
        k: WEATHER[k] for k in ("name", "description", "parameters")}}]

    second = await setup.client.responses.create(
        model="model-a", previous_response_id=first.id, tools=[WEATHER],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": '{"sky": "clear"}'}])
    assert second.output_text == "Sunny."
    history = served.chat_requests()[1].messages
    assert history[1]["tool_calls"][0]["id"] == call.call_id
    assert history[2] == {"role": "tool", "tool_call_id": call.call_id,
                          "content": '{"sky": "clear"}'}
    # The image went again, restored from the attachment stored once by its hash.
    assert history[0]["content"][1]["image_url"]["url"] == image


async def test_unknown_foreign_and_unstored_responses_cannot_be_continued(
    setup: Setup
) -> None:
    with pytest.raises(openai.NotFoundError):
        await setup.client.responses.create(model="model-a", input="x",
                                            previous_response_id="resp_" + "0" * 32)
    private = await setup.client.responses.create(model="model-a", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        await setup.client.responses.create(model="model-a", input="y",
                                            previous_response_id=private.id)
    mine = await setup.client.responses.create(model="model-a", input="x")
    _, other_key = await setup.gateway.principals.create("user", "bob")
    async with openai.AsyncOpenAI(base_url=f"{setup.root}/v1", api_key=other_key,
                                  max_retries=0) as bob:
        with pytest.raises(openai.NotFoundError):
            await bob.responses.create(model="model-a", input="y",
                                       previous_response_id=mine.id)
    with pytest.raises(openai.BadRequestError) as builtin:
        await setup.client.responses.create(model="model-a", input="x",
                                            tools=[{"type": "web_search"}])
    assert isinstance(builtin.value.body, dict)
    assert builtin.value.body["param"] == "tools[0]"


async def test_chat_completions_with_tools_on_a_responses_account(
    setup: Setup, upstream_plus: FakeUpstream
) -> None:
    tool = {"type": "function", "function": {k: WEATHER[k] for k in (
        "name", "description", "parameters")}}
    schema = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
    upstream_plus.enqueue(ToolCalls((("get_weather", {"city": "Oslo"}),)),
                          ToolCalls((("get_weather", {"city": "Rome"}),)))
    done = await setup.client.chat.completions.create(
        model="model-r", messages=[{"role": "user", "content": "Oslo?"}],
        tools=[tool], tool_choice={"type": "function",  # type: ignore[list-item]
                                   "function": {"name": "get_weather"}},
        response_format=schema)  # type: ignore[arg-type]
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and done.choices[0].finish_reason == "tool_calls"
    sent = upstream_plus.chat_requests()[0]
    assert sent.path == "/v1/responses" and sent.body is not None
    assert sent.body["tools"] == [{"type": "function", **tool["function"]}]  # type: ignore[dict-item]
    assert sent.body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert sent.body["text"] == {"format": {"type": "json_schema", "name": "w",
                                            "schema": {"type": "object"}}}

    stream = await setup.client.chat.completions.create(
        model="model-r", stream=True, tools=[tool],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Rome?"}])
    calls = [c for chunk in [c async for c in stream] if chunk.choices
             for c in chunk.choices[0].delta.tool_calls or []]
    assert [(c.index, c.function.name) for c in calls] == [  # type: ignore[union-attr]
        (0, "get_weather")]


async def test_fields_reach_the_upstream_or_are_refused_never_dropped(
    setup: Setup, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
    upstream_plus: FakeUpstream,
) -> None:
    hi = [{"role": "user", "content": "hi"}]
    # A Chat Completions account takes every field, those the gateway does not know too.
    await setup.client.chat.completions.create(
        model="model-a", messages=hi, seed=7,  # type: ignore[arg-type]
        extra_body={"guided_choice": ["yes", "no"]})
    sent = _requests(upstream_a, upstream_b)[0].body
    assert sent is not None and (sent["seed"], sent["guided_choice"]) == (7, ["yes", "no"])

    # A Responses account has no counterpart for them: refused, naming the field.
    for kwargs, param in (({"seed": 7}, "seed"),
                          ({"extra_body": {"guided_choice": ["a"]}}, "guided_choice")):
        with pytest.raises(openai.BadRequestError) as refused:
            await setup.client.chat.completions.create(
                model="model-r", messages=hi, **kwargs)  # type: ignore[arg-type]
        assert isinstance(refused.value.body, dict)
        assert refused.value.body["param"] == param
        assert "Chat Completions" in refused.value.body["message"]
    # What it has a counterpart for is translated.
    await setup.client.chat.completions.create(model="model-r", messages=hi,
                                               reasoning_effort="low")  # type: ignore[arg-type]
    body = upstream_plus.chat_requests()[-1].body
    assert body is not None and body["reasoning"] == {"effort": "low"}

    # The other way: a Responses-only field goes to a Responses account, as given.
    await setup.client.responses.create(model="model-r", input="x", truncation="auto")
    body = upstream_plus.chat_requests()[-1].body
    assert body is not None and body["truncation"] == "auto"
    with pytest.raises(openai.BadRequestError) as refused:
        await setup.client.responses.create(model="model-a", input="x", truncation="auto")
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "truncation"


@pytest.mark.parametrize("model", ["model-a", "model-r"])
async def test_streamed_tool_calls_as_responses_events(
    setup: Setup, model: str, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
    upstream_plus: FakeUpstream,
) -> None:
    for fake in (upstream_a, upstream_b, upstream_plus):
        fake.enqueue(ToolCalls((("get_weather", {"city": "Oslo"}), ("get_weather", {}))))
    async with setup.client.responses.stream(
            model=model, input="Oslo?", tools=[WEATHER]) as stream:  # type: ignore[list-item]
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"}), ("get_weather", {})]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-1] == "response.completed" and final.id.startswith("resp_")


async def test_a_chat_completions_tool_result_reaches_a_responses_account(
    setup: Setup, upstream_plus: FakeUpstream
) -> None:
    tool = {"type": "function", "function": {k: WEATHER[k] for k in (
        "name", "description", "parameters")}}
    upstream_plus.enqueue(ToolCalls((("get_weather", {"city": "Oslo"}),)), "Clear skies.")
    asked = [{"role": "user", "content": "Oslo?"}]
    raw = await setup.client.chat.completions.with_raw_response.create(
        model="model-r", messages=asked, tools=[tool])  # type: ignore[arg-type, list-item]
    message = raw.parse().choices[0].message
    call = message.tool_calls[0]  # type: ignore[index]
    final = await setup.client.chat.completions.create(
        model="model-r", tools=[tool],  # type: ignore[list-item]
        messages=[*asked, message.model_dump(exclude_none=True),  # type: ignore[list-item]
                  {"role": "tool", "tool_call_id": call.id, "content": "clear"}],
        extra_headers={"X-Conversation-Id": raw.headers["x-conversation-id"]})
    assert final.choices[0].message.content == "Clear skies."
    body = upstream_plus.chat_requests()[1].body
    assert body is not None and body["previous_response_id"]  # chained upstream
    assert body["input"] == [{"type": "function_call_output", "call_id": call.id,
                              "output": "clear"}]
