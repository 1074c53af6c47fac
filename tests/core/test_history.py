"""History sent upstream is the stored chain trimmed to the account's context budget, oldest
turns first; a prompt that cannot fit at all is refused before anything is sent or stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.config import Settings
from core.errors import TooLarge
from core.gateway import Gateway
from core.models import Principal
from tests.conftest import account
from tests.core.conftest import OpenGateway, ask, new_user
from tests.fakes.upstream import FakeUpstream

LONG_REPLY = "x" * 175  # about 54 estimated tokens; a turn with a short prompt costs about 58


async def _gateway(open_gateway: OpenGateway, make_settings: Callable[..., Settings],
                   fake: FakeUpstream, context_tokens: int,
                   **tables: Any) -> tuple[Gateway, Principal]:
    gw = await open_gateway(make_settings(
        [account("A", fake, "KEY_A", context_tokens=context_tokens)], **tables))
    user = await new_user(gw)
    return gw, user


async def test_oldest_turns_are_dropped_first(
    open_gateway: OpenGateway, make_settings: Callable[..., Settings], upstream_a: FakeUpstream
) -> None:
    # 256 tokens of context keep a quarter for the reply: three long turns fit, four do not.
    gw, user = await _gateway(open_gateway, make_settings, upstream_a, 256)
    upstream_a.default_reply = lambda messages: LONG_REPLY
    cid = (await ask(gw, user, "p1")).conversation.id
    for n in (2, 3, 4):
        await ask(gw, user, f"p{n}", cid)
        sent = upstream_a.chat_requests(titles=False)[-1].messages
        assert [m["content"] for m in sent if m["role"] == "user"] == [
            f"p{k}" for k in range(1, n + 1)]  # up to three turns: everything is sent

    await ask(gw, user, "p5", cid)
    sent = upstream_a.chat_requests(titles=False)[-1].messages
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "p2"), ("assistant", LONG_REPLY),
        ("user", "p3"), ("assistant", LONG_REPLY),
        ("user", "p4"), ("assistant", LONG_REPLY),
        ("user", "p5"),
    ]
    # Trimming is only what is sent: every turn stays stored.
    _, turns = await gw.recall(user, cid)
    assert [t.prompt for t in turns] == ["p1", "p2", "p3", "p4", "p5"]


async def test_system_prompt_is_sent_first_and_counts_against_the_budget(
    open_gateway: OpenGateway, make_settings: Callable[..., Settings], upstream_a: FakeUpstream
) -> None:
    gw, user = await _gateway(open_gateway, make_settings, upstream_a, 256,
                              chat={"system_prompt": "y" * 175})
    upstream_a.default_reply = lambda messages: LONG_REPLY
    cid = (await ask(gw, user, "p1")).conversation.id
    await ask(gw, user, "p2", cid)
    await ask(gw, user, "p3", cid)
    await ask(gw, user, "p4", cid)
    sent = upstream_a.chat_requests(titles=False)[-1].messages
    assert sent[0] == {"role": "system", "content": "y" * 175}
    # The system prompt takes one turn's room: two turns are kept, not three.
    assert [m["content"] for m in sent if m["role"] == "user"] == ["p2", "p3", "p4"]


async def test_max_tokens_reserves_room_for_the_reply(
    open_gateway: OpenGateway, make_settings: Callable[..., Settings], upstream_a: FakeUpstream
) -> None:
    gw, user = await _gateway(open_gateway, make_settings, upstream_a, 256)
    upstream_a.default_reply = lambda messages: LONG_REPLY
    cid = (await ask(gw, user, "p1")).conversation.id
    await ask(gw, user, "p2", cid)
    await ask(gw, user, "p3", cid)
    await ask(gw, user, "p4", cid, options={"max_tokens": 128})
    sent = upstream_a.chat_requests(titles=False)[-1]
    assert sent.body is not None and sent.body["max_tokens"] == 128
    # Half the context kept for the reply leaves room for two turns, not the usual three.
    assert [m["content"] for m in sent.messages if m["role"] == "user"] == ["p2", "p3", "p4"]


async def test_a_prompt_bigger_than_the_context_is_too_large(
    open_gateway: OpenGateway, make_settings: Callable[..., Settings], upstream_a: FakeUpstream
) -> None:
    gw, user = await _gateway(open_gateway, make_settings, upstream_a, 64)
    huge = "word " * 80  # 400 characters: far over a 64-token context
    with pytest.raises(TooLarge) as caught:
        await ask(gw, user, huge)
    assert caught.value.status == 413 and "64" in caught.value.message
    assert upstream_a.requests == []
    assert (await gw.list_conversations(user))[1] == 0

    cid = (await ask(gw, user, "hi")).conversation.id
    with pytest.raises(TooLarge):
        await ask(gw, user, huge, cid)
    _, turns = await gw.recall(user, cid)
    assert len(turns) == 1
    assert len(upstream_a.chat_requests(titles=False)) == 1


async def test_a_prompt_over_max_prompt_chars_is_too_large(
    open_gateway: OpenGateway, make_settings: Callable[..., Settings], upstream_a: FakeUpstream
) -> None:
    gw, user = await _gateway(open_gateway, make_settings, upstream_a, 8192,
                              chat={"max_prompt_chars": 50})
    with pytest.raises(TooLarge) as caught:
        await ask(gw, user, "a" * 51)
    assert caught.value.code == "prompt_too_large" and "50" in caught.value.message
    assert upstream_a.requests == []
    assert (await ask(gw, user, "a" * 50)).turn.prompt == "a" * 50


async def test_an_empty_prompt_gets_the_default_prompt(
    open_gateway: OpenGateway, make_settings: Callable[..., Settings], upstream_a: FakeUpstream
) -> None:
    gw, user = await _gateway(open_gateway, make_settings, upstream_a, 8192,
                              chat={"default_prompt": "Say hello."})
    result = await ask(gw, user, "   ")
    assert result.turn.prompt == "Say hello."
    assert upstream_a.chat_requests(titles=False)[-1].messages[-1]["content"] == "Say hello."
