"""Accounts with ``api = "responses"``: the upstream keeps the conversation, so a follow-up sends
only the new prompt and the previous response id, and only the first account can resolve it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from core.chat import ChatRequest, StartInfo
from core.config import Settings
from core.errors import Conflict
from core.gateway import Gateway, build_gateway
from core.models import Principal
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import FakeUpstream


@pytest.fixture
async def stateful() -> AsyncIterator[tuple[FakeUpstream, FakeUpstream]]:
    async with FakeUpstream("R1", model="resp-model") as r1, \
            FakeUpstream("R2", model="resp-model") as r2:
        yield r1, r2


@pytest.fixture
def responses_settings(make_settings: Callable[..., Settings],
                       stateful: tuple[FakeUpstream, FakeUpstream]) -> Settings:
    r1, r2 = stateful
    return make_settings([account("R1", r1, "KEY_A", api="responses"),
                          account("R2", r2, "KEY_B", api="responses")])


class Collect:
    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.titles: list[str] = []

    async def started(self, info: StartInfo) -> None:
        return None

    async def delta(self, text: str) -> None:
        self.deltas.append(text)

    async def title(self, title: str) -> None:
        self.titles.append(title)


async def _user(gateway: Gateway) -> Principal:
    user, _ = await gateway.principals.create("user", "ann")
    return user


async def test_follow_up_sends_only_the_new_prompt_and_the_previous_response_id(
    responses_settings: Settings, stateful: tuple[FakeUpstream, FakeUpstream]
) -> None:
    r1, r2 = stateful
    async with build_gateway(responses_settings, environ=ENVIRON) as gateway:
        ann = await _user(gateway)
        first = await gateway.chat(ann, ChatRequest(prompt="remember 42"))
        assert first.conversation.account == "R1"
        sent = r1.chat_requests(titles=False)[0]
        assert sent.path == "/v1/responses"
        assert sent.body is not None and sent.body["store"] is True
        assert sent.messages == [{"role": "user", "content": "remember 42"}]
        assert sent.api_key == "sk-account-a"
        assert first.turn.upstream_id in r1.stored_responses
        assert first.conversation.title == "Fake Title"  # the title is asked of R1 too
        assert r1.chat_requests(titles=True)

        # A new conversation goes round robin to R2; the follow-up stays with R1.
        other = await gateway.chat(ann, ChatRequest(prompt="another"))
        assert other.conversation.account == "R2"
        listener = Collect()
        follow = await gateway.chat(ann, ChatRequest(prompt="what number?",
                                                     conversation_id=first.conversation.id),
                                    listener)
    follow_up = r1.chat_requests(titles=False)[1]
    assert follow_up.messages == [{"role": "user", "content": "what number?"}]
    assert follow_up.previous_response_id == first.turn.upstream_id
    assert follow_up.stream
    assert "".join(listener.deltas) == follow.turn.reply == "reply 2 from R1"
    assert follow.turn.upstream_id != first.turn.upstream_id
    assert follow.turn.output_tokens == 4  # "reply 2 from R1", counted by the fake
    assert len(r2.chat_requests(titles=False)) == 1  # only "another"


async def test_a_follow_up_whose_account_is_gone_fails_instead_of_losing_history(
    make_settings: Callable[..., Settings], responses_settings: Settings,
    stateful: tuple[FakeUpstream, FakeUpstream]
) -> None:
    _, r2 = stateful
    async with build_gateway(responses_settings, environ=ENVIRON) as gateway:
        ann = await _user(gateway)
        first = await gateway.chat(ann, ChatRequest(prompt="remember 42"))
    # R1 leaves the configuration; R2 could not resolve R1's response id.
    without_r1 = make_settings([account("R2", r2, "KEY_B", api="responses")])
    async with build_gateway(without_r1, environ=ENVIRON) as gateway:
        with pytest.raises(Conflict) as gone:
            await gateway.chat(ann, ChatRequest(prompt="what number?",
                                                conversation_id=first.conversation.id))
    assert gone.value.code == "account_gone"
    assert "R1" in gone.value.message
    assert r2.chat_requests() == []
