"""Conversations as stored: listing newest first with pages, recall oldest turn first, removal,
the usage log, and a client's own references (Discord thread ids) to its users' conversations."""

from __future__ import annotations

import pytest

from core.errors import Conflict, Forbidden, NotFound
from core.gateway import Gateway
from core.models import Principal
from tests.core.conftest import ask
from tests.fakes.upstream import FakeUpstream, Reply


async def test_list_is_newest_first_and_paginated(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    ids = [(await ask(gw, user, f"c{n}")).conversation.id for n in range(5)]
    page, total = await gw.list_conversations(user, limit=2)
    assert total == 5 and [c.id for c in page] == [ids[4], ids[3]]
    page, _ = await gw.list_conversations(user, limit=2, offset=4)
    assert [c.id for c in page] == [ids[0]]
    # A follow-up brings its conversation to the top.
    await ask(gw, user, "again", ids[1])
    page, _ = await gw.list_conversations(user, limit=1)
    assert page[0].id == ids[1] and page[0].turn_count == 2
    # Silly paging values are clamped, not errors.
    page, _ = await gw.list_conversations(user, limit=0, offset=-3)
    assert len(page) == 1


async def test_recall_gives_every_turn_oldest_first(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    first = await ask(gw, user, "one")
    for prompt in ("two", "three"):
        await ask(gw, user, prompt, first.conversation.id)
    conversation, turns = await gw.recall(user, first.conversation.id)
    assert conversation.turn_count == 3 and conversation.title == "Fake Title"
    assert [(t.position, t.prompt) for t in turns] == [(0, "one"), (1, "two"), (2, "three")]
    assert all(t.prompt_utc <= t.reply_utc for t in turns)
    assert turns[0].prompt_utc.endswith("Z") and len(turns[0].prompt_utc) == 24
    _, page = await gw.recall(user, first.conversation.id, limit=1, offset=1)
    assert [t.prompt for t in page] == ["two"]


async def test_removal_takes_the_turns_and_stops_follow_ups(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    first = await ask(gw, user, "one")
    await gw.remove_conversation(user, first.conversation.id)
    assert await gw.conversations.turns(first.conversation.id) == []
    with pytest.raises(NotFound):
        await gw.recall(user, first.conversation.id)
    with pytest.raises(NotFound):
        await ask(gw, user, "two", first.conversation.id)
    with pytest.raises(NotFound):
        await gw.remove_conversation(user, first.conversation.id)
    assert len(upstream_a.chat_requests(titles=False)) == 1
    # The usage log keeps the request that was made.
    row = await gw.storage.db.fetchone(
        "SELECT count(*) FROM usage WHERE outcome = 'ok' AND purpose = 'reply'")
    assert row is not None and row[0] == 1


async def test_usage_log_and_stats(
    gw: Gateway, admin: Principal, user: Principal, upstream_a: FakeUpstream
) -> None:
    upstream_a.enqueue(Reply("hi", usage={"prompt_tokens": 5, "completion_tokens": 2,
                                          "total_tokens": 7}))
    result = await ask(gw, user, "hello")
    row = await gw.storage.db.fetchone("SELECT * FROM usage WHERE purpose = 'reply'")
    assert row is not None
    assert (row["principal_id"], row["conversation_id"], row["account"], row["model"],
            row["endpoint"], row["outcome"], row["input_tokens"], row["output_tokens"]) == (
        user.id, result.conversation.id, "A", "model-a", "api", "ok", 5, 2)
    # The title's call is the member's use too: a row of its own, counted in the tokens but
    # not as a request.
    title = await gw.storage.db.fetchone(
        "SELECT input_tokens, output_tokens, conversation_id FROM usage WHERE purpose = 'title'")
    assert title is not None and title["conversation_id"] == result.conversation.id
    assert title["input_tokens"] > 0 and title["output_tokens"] > 0
    stats = await gw.stats(admin)
    assert (stats["requests"], stats["failures"], stats["input_tokens"], stats["output_tokens"],
            stats["conversations"], stats["turns"]) == (
        1, 0, 5 + title["input_tokens"], 2 + title["output_tokens"], 1, 1)
    with pytest.raises(Forbidden):
        await gw.stats(user)
    account = {a["name"]: a for a in gw.accounts(admin)}["A"]
    assert (account["requests"], account["input_tokens"], account["output_tokens"]) == (1, 5, 2)


async def test_client_references_its_users_conversations(
    gw: Gateway, admin: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    bot_p, bot_key = await gw.add_user(admin, userid="bot", username="bot", role="client")
    other_p, other_key = await gw.add_user(admin, userid="web", username="web", role="client")
    bot, other = await gw.authenticate(bot_key), await gw.authenticate(other_key)
    member = await gw.acting_as(bot, "111", username="member")
    stranger = await gw.acting_as(other, "111", username="member")

    # A reference given with the first prompt is the client's.
    started = await ask(gw, member, "hi", external_ref="thread-1")
    found = await gw.conversation_by_ref(bot, "thread-1")
    assert found is not None and found.id == started.conversation.id
    assert await gw.conversation_by_ref(other, "thread-1") is None

    # One set afterwards, too; the same reference may not name two conversations.
    later = await ask(gw, member, "second")
    await gw.set_conversation_ref(bot, later.conversation.id, "thread-2")
    assert (await gw.conversation_by_ref(bot, "thread-2")).id == later.conversation.id  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        await gw.set_conversation_ref(bot, later.conversation.id, "thread-1")
    # Another client may use the same reference for its own user's conversation...
    theirs = await ask(gw, stranger, "hello")
    await gw.set_conversation_ref(other, theirs.conversation.id, "thread-1")
    assert (await gw.conversation_by_ref(other, "thread-1")).id == theirs.conversation.id  # type: ignore[union-attr]
    # ...but may not label a conversation of a user that is not its own.
    with pytest.raises(NotFound):
        await gw.set_conversation_ref(other, started.conversation.id, "mine-now")
    assert (await gw.conversation_by_ref(bot, "thread-1")).id == started.conversation.id  # type: ignore[union-attr]
    assert bot_p.id == bot.id and other_p.id == other.id


async def test_a_conversation_with_its_recent_turns_in_one_read(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    """What a follow-up reads under its lock (one query on PostgreSQL): the conversation as
    stored now and its last turns, newest first, as the two separate reads give them."""
    first = await ask(gw, user, "one")
    for prompt in ("two", "three"):
        await ask(gw, user, prompt, first.conversation.id)
    repo = gw.conversations
    conversation, turns = await repo.with_recent_turns(first.conversation.id, 2)
    assert conversation == await repo.get(first.conversation.id)
    assert conversation is not None and conversation.turn_count == 3
    assert [t.prompt for t in turns] == ["three", "two"]
    assert turns == await repo.recent_turns(first.conversation.id, 2)
    _, every = await repo.with_recent_turns(first.conversation.id, 500)
    assert [t.position for t in every] == [2, 1, 0]
    assert await repo.with_recent_turns("no-such-conversation", 5) == (None, [])
