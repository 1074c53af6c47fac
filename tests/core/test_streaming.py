"""Streaming through a listener: started, then the deltas in order, then the title; the stored
reply is exactly what was streamed, and usage is asked for and stored."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from core.chat import ChatRequest, StartInfo
from core.config import Settings
from core.errors import UpstreamError
from core.gateway import Gateway
from core.models import Principal
from tests.conftest import account
from tests.core.conftest import Listener, new_user
from tests.fakes.upstream import Delay, FakeUpstream, Reply, Status, StreamBreak

TEXT = "The quick brown fox\njumps over the lazy dog, **twice**.\n\n```py\nprint(1)\n```"
USAGE = {"prompt_tokens": 11, "completion_tokens": 17, "total_tokens": 28}


async def test_new_conversation_streams_deltas_in_order(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    upstream_a.enqueue(Reply(TEXT, usage=USAGE, chunk_delay=0.02))
    listener = Listener()
    result = await gw.chat(user, ChatRequest(prompt="tell me"), listener)

    kinds = [kind for kind, _ in listener.events]
    assert kinds[0] == "started" and kinds.count("started") == 1
    assert kinds.count("title") == 1
    deltas = listener.of("delta")
    assert len(deltas) > 5  # it came in pieces, apart, so it went on in pieces
    assert "".join(deltas) == TEXT == result.turn.reply
    info = listener.of("started")[0]
    assert (info.conversation_id, info.message_id, info.parent_id, info.is_new) == (
        result.conversation.id, result.turn.id, None, True)
    assert (info.account, info.model) == ("A", "model-a")
    assert listener.of("title") == [result.conversation.title]

    sent = upstream_a.chat_requests(titles=False)[-1]
    assert sent.stream and sent.include_usage
    assert (result.turn.input_tokens, result.turn.output_tokens) == (11, 17)
    row = await gw.storage.db.fetchone("SELECT outcome, input_tokens, output_tokens FROM usage"
                                       " WHERE purpose = 'reply'")
    assert tuple(row) == ("ok", 11, 17)  # type: ignore[arg-type]
    stored = (await gw.recall(user, result.conversation.id))[1][0]
    assert stored.reply == TEXT


async def test_follow_up_streams_with_its_parent(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    first = await gw.chat(user, ChatRequest(prompt="one"))
    upstream_a.enqueue(Reply("second answer in pieces", usage=USAGE))
    listener = Listener()
    result = await gw.chat(user, ChatRequest(prompt="two", conversation_id=first.conversation.id),
                           listener)
    info = listener.of("started")[0]
    assert (info.conversation_id, info.parent_id, info.is_new) == (
        first.conversation.id, first.turn.id, False)
    assert listener.of("title") == []  # follow-ups keep their title
    assert "".join(listener.of("delta")) == "second answer in pieces" == result.turn.reply
    assert upstream_a.chat_requests(titles=False)[-1].include_usage
    assert result.turn.output_tokens == 17


async def test_without_a_listener_usage_is_stored_too(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    upstream_a.enqueue(Reply("plain", usage=USAGE))
    result = await gw.chat(user, ChatRequest(prompt="tell me"))
    assert (result.turn.input_tokens, result.turn.output_tokens) == (11, 17)
    assert result.turn.upstream_id and result.turn.upstream_id.startswith("chatcmpl-")


async def test_a_stream_that_breaks_after_text_is_an_error_and_not_stored(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    upstream_a.enqueue(StreamBreak(after_chunks=3, text="one two three four five six"))
    listener = Listener()
    with pytest.raises(UpstreamError) as caught:
        await gw.chat(user, ChatRequest(prompt="tell me"), listener)
    assert caught.value.status == 502 and "'A'" in caught.value.message
    assert "".join(listener.of("delta")) == "one two three"
    # The caller already saw text from A: no second answer from B is spliced on.
    assert upstream_b.chat_requests(titles=False) == []
    assert (await gw.list_conversations(user))[1] == 0


async def test_a_retry_on_another_account_restarts_before_any_text(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    upstream_a.enqueue(Delay(0.05, Status(500)))  # A's title arrives before its failure
    listener = Listener()
    result = await gw.chat(user, ChatRequest(prompt="tell me"), listener)
    assert result.conversation.account == "B"
    kinds = [kind for kind, _ in listener.events]
    # A front may be told "started" again (it then replaces the first): the last start names
    # the account that answers, and no text comes before it.
    last_start = max(i for i, kind in enumerate(kinds) if kind == "started")
    assert listener.events[last_start][1].account == "B"
    assert "delta" not in kinds[:last_start]
    assert "".join(listener.of("delta")) == result.turn.reply == "reply 1 from B"
    assert listener.of("title")[-1] == result.conversation.title


class SlowStart(Listener):
    """A front whose ``started`` takes a while (a Discord thread being created)."""

    def __init__(self) -> None:
        super().__init__()
        self.title_seen = asyncio.Event()

    async def started(self, info: StartInfo) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.title_seen.wait(), 0.2)
        await super().started(info)

    async def title(self, title: str) -> None:
        self.title_seen.set()
        await super().title(title)


@pytest.mark.parametrize("generate_title", [True, False])
async def test_the_title_never_comes_before_started(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, generate_title: bool
) -> None:
    listener = SlowStart()
    await gw.chat(user, ChatRequest(prompt="tell me", generate_title=generate_title), listener)
    kinds = [kind for kind, _ in listener.events]
    assert kinds[0] == "started" and kinds.count("title") == 1


async def test_chunks_that_arrive_together_go_on_as_one_delta(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    # The fake writes every chunk at once: they arrive in one read, and the caller gets the
    # text in one piece instead of one write per token.
    upstream_a.enqueue(Reply("a b c d e f g h", usage=USAGE))
    listener = Listener()
    result = await gw.chat(user, ChatRequest(prompt="tell me"), listener)
    assert "".join(listener.of("delta")) == "a b c d e f g h" == result.turn.reply
    assert len(listener.of("delta")) < 8


@pytest.mark.parametrize("asked", [{}, {"max_tokens": 16}, {"max_completion_tokens": 16}])
async def test_estimated_usage_never_exceeds_the_max_tokens_asked(
    open_gateway: Callable[..., Awaitable[Gateway]],
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream, asked: dict[str, int],
) -> None:
    # llama.cpp streams no usage: the output is estimated from the text, which at ~3.5
    # characters a token over-counts a reply cut at max_tokens (295 estimated for 256 asked).
    gw = await open_gateway(make_settings([account("A", upstream_a, "KEY_A", max_tokens=20)]))
    who = await new_user(gw)
    upstream_a.enqueue(Reply("word " * 200, usage={}, finish_reason="length"))
    listener = Listener()
    result = await gw.chat(who, ChatRequest(prompt="go on", options=dict(asked)), listener)
    limit = asked.get("max_tokens") or asked.get("max_completion_tokens") or 20
    assert result.turn.output_tokens == limit
    row = await gw.storage.db.fetchone("SELECT output_tokens FROM usage WHERE purpose = 'reply'")
    assert row is not None and row[0] == limit
