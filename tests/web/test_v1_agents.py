"""The OpenAI Agents SDK (offline, tracing off) runs an agent with a function tool through the
gateway's /v1/responses, on a Chat Completions account and on a Responses account: the model
calls the tool, the SDK runs it and sends its result back, the model answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import openai
import pytest
from agents import (
    Agent,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from core.config import Settings
from core.gateway import build_gateway
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import FakeUpstream, ToolCalls

from .support import serving

set_tracing_disabled(True)  # no trace export to OpenAI's servers from a test


@pytest.fixture
async def sdk(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
              upstream_plus: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    settings = make_settings([
        account("A", upstream_a, "KEY_A"),
        account("R", upstream_plus, "KEY_P", model="model-r", api="responses"),
    ])
    async with build_gateway(settings, environ=ENVIRON) as gateway:
        _, key = await gateway.principals.create("user", "ann")
        async with serving(gateway) as root, openai.AsyncOpenAI(
                base_url=f"{root}/v1", api_key=key, max_retries=0) as client:
            yield client


@pytest.mark.parametrize(("model", "fake"), [("model-a", "upstream_a"),
                                             ("model-r", "upstream_plus")])
async def test_an_agent_calls_a_tool_through_the_gateway(
    sdk: openai.AsyncOpenAI, model: str, fake: str, request: pytest.FixtureRequest,
) -> None:
    upstream: FakeUpstream = request.getfixturevalue(fake)
    upstream.enqueue(ToolCalls((("get_weather", {"city": "Paris"}),)),
                     "It is sunny in Paris.")
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny in {city}"

    agent = Agent(name="weather", instructions="Answer with the weather tool.",
                  tools=[get_weather], model=OpenAIResponsesModel(model=model, openai_client=sdk))
    result = await Runner.run(agent, "What is the weather in Paris?")
    assert asked == ["Paris"]
    assert result.final_output == "It is sunny in Paris."
    second = upstream.chat_requests(titles=False)[1]
    if model == "model-a":  # translated: the call and its result as Chat Completions messages
        assert second.messages[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert second.messages[-1]["role"] == "tool"
        assert second.messages[-1]["content"] == "sunny in Paris"
    else:  # native: the SDK's own items, as it sent them
        assert second.body is not None
        outputs = [i for i in second.body["input"] if i.get("type") == "function_call_output"]
        assert outputs and outputs[0]["output"] == "sunny in Paris"
