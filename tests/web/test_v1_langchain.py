"""LangChain's ``ChatOpenAI`` (installed from the registry, run offline) as an organisation's
agent would use it against /v1: a chat whose history it keeps itself, and a tool round trip.
It never sends ``X-Conversation-Id``; the gateway still keeps each session as one
conversation, on one account."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from core.config import Settings
from core.gateway import Gateway, build_gateway
from core.models import Principal
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import FakeUpstream, ToolCalls

from .support import serving


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
                  upstream_b: FakeUpstream) -> AsyncIterator[Gateway]:
    settings = make_settings([account("A", upstream_a, "KEY_A"),
                              account("B", upstream_b, "KEY_B", model="model-a")])
    async with build_gateway(settings, environ=ENVIRON) as gw:
        yield gw


@pytest.fixture
async def member(gateway: Gateway) -> tuple[Principal, str]:
    return await gateway.principals.create("user", "ann")


@pytest.fixture
async def llm(gateway: Gateway, member: tuple[Principal, str]) -> AsyncIterator[ChatOpenAI]:
    async with serving(gateway) as root:
        yield ChatOpenAI(model="model-a", base_url=f"{root}/v1", api_key=member[1],
                         max_retries=0)


async def _conversations(gateway: Gateway, member: Principal) -> list[list[str]]:
    """The member's conversations, each as its turns' prompts."""
    page, _ = await gateway.conversations.list_page(owner_id=member.id, limit=50, offset=0)
    return [[t.prompt for t in await gateway.conversations.turns(c.id)] for c in page]


async def test_a_langchain_chat_is_one_conversation(
    llm: ChatOpenAI, gateway: Gateway, member: tuple[Principal, str],
) -> None:
    history = [SystemMessage("You are terse."), HumanMessage("Name a colour.")]
    answers = []
    for question in ("Another?", "One more?", None):
        answer = await llm.ainvoke(history)
        answers.append(answer.content)
        if question:
            history += [answer, HumanMessage(question)]
    # One account answered the whole session, where new conversations alternate A and B.
    assert len({str(a).rsplit(" ", 1)[-1] for a in answers}) == 1
    assert await _conversations(gateway, member[0]) == [
        ["Name a colour.", "Another?", "One more?"]]


async def test_a_langchain_tool_round_trip_is_one_conversation(
    llm: ChatOpenAI, gateway: Gateway, member: tuple[Principal, str],
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    for fake in (upstream_a, upstream_b):
        fake.enqueue(ToolCalls((("get_weather", {"city": "Paris"}),)), "Sunny in Paris.")

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    agent = llm.bind_tools([get_weather])
    history: list = [HumanMessage("Weather in Paris?")]
    call = await agent.ainvoke(history)
    assert call.tool_calls and call.tool_calls[0]["args"] == {"city": "Paris"}
    history += [call, ToolMessage(get_weather.invoke(call.tool_calls[0]["args"]),
                                  tool_call_id=call.tool_calls[0]["id"])]
    final = await agent.ainvoke(history)
    assert final.content == "Sunny in Paris."
    assert await _conversations(gateway, member[0]) == [
        ["Weather in Paris?", "Weather in Paris?"]]
