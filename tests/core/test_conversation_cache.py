"""The conversations one SQLite process answered lately, kept in memory: a follow-up reads
nothing from the database, and whatever changes a conversation (a turn, a regenerated answer,
a title, a removal, a member's removal) is what the next reader sees."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from core.errors import NotFound
from core.gateway import Gateway
from core.models import Conversation, Principal, Turn
from core.storage import Storage
from core.storage.conversation_cache import (
    ENTRY_OVERHEAD_BYTES,
    TURN_OVERHEAD_BYTES,
    ConversationCache,
)
from core.storage.conversations import UsageRecord
from core.storage.postgres import PostgresDatabase
from tests.core.conftest import ask
from tests.fakes.upstream import FakeUpstream

# ------------------------------------------------------------------------------ the cache alone


def conversation(turns: int = 1, cid: str = "c1", title: str = "T") -> Conversation:
    return Conversation(id=cid, owner_id=1, title=title, mode="pool", account="A", model="m",
                        client_id=None, external_ref=None, turn_count=turns,
                        created_utc="2026-12-02T00:00:00Z", updated_utc="2026-12-02T00:00:00Z")


def turn(position: int, cid: str = "c1", text: str = "x") -> Turn:
    return Turn(id=f"{cid}-t{position}", conversation_id=cid, parent_id=None, position=position,
                prompt=f"q{position}", reply=text, model="m", upstream_id=None,
                prompt_utc="2026-12-02T00:00:00Z", reply_utc=f"2026-12-02T00:00:{position:02}Z",
                duration_ms=1, input_tokens=1, output_tokens=1)


def test_turns_appended_after_a_new_conversation_are_held_newest_first() -> None:
    cache = ConversationCache()
    cache.created(conversation(), turn(0))
    cache.appended(turn(1))
    cache.appended(turn(2))
    held = cache.conversation("c1")
    assert held is not None and held.turn_count == 3
    assert held.updated_utc == turn(2).reply_utc
    assert [t.position for t in cache.recent_turns("c1", 500) or []] == [2, 1, 0]
    assert [t.position for t in cache.recent_turns("c1", 1) or []] == [2]


def test_a_read_begun_before_a_write_does_not_put_back_what_it_saw() -> None:
    cache = ConversationCache()
    cache.created(conversation(), turn(0))
    stamp = cache.stamp  # a reader starts reading the database here...
    cache.appended(turn(1))  # ...a turn is stored and told meanwhile...
    cache.forget("c1")  # ...and the entry went (say, evicted)
    cache.read_conversation(conversation(turns=1), stamp)  # what the reader saw: stale
    assert cache.conversation("c1") is None

    fresh = cache.stamp
    cache.read_conversation(conversation(turns=2), fresh)
    cache.read_turns("c1", [turn(1), turn(0)], 500, fresh)
    assert [t.position for t in cache.recent_turns("c1", 500) or []] == [1, 0]


def test_turns_that_are_not_the_newest_are_not_held() -> None:
    cache = ConversationCache()
    stamp = cache.stamp
    cache.read_conversation(conversation(turns=3), stamp)
    # The row says three turns; a read that found two (one stored in between) is not held.
    cache.read_turns("c1", [turn(1), turn(0)], 500, stamp)
    assert cache.recent_turns("c1", 1) is None
    # A turn told out of order (the one held is not its predecessor) drops the entry.
    cache.created(conversation(), turn(0))
    cache.appended(turn(2))
    assert cache.conversation("c1") is None


def test_a_long_history_is_held_only_in_part_and_read_whole_from_the_database() -> None:
    cache = ConversationCache(max_turns=3)
    cache.created(conversation(), turn(0))
    for position in range(1, 6):
        cache.appended(turn(position))
    assert [t.position for t in cache.recent_turns("c1", 3) or []] == [5, 4, 3]
    assert cache.recent_turns("c1", 4) is None  # the sixth-newest is not held
    # What it counts is what it holds, however the turns came and went.
    held = [t for t in cache.recent_turns("c1", 3) or []]
    assert cache.size_bytes == ENTRY_OVERHEAD_BYTES + sum(
        len(t.prompt) + len(t.reply) + TURN_OVERHEAD_BYTES for t in held)
    cache.forget("c1")
    assert cache.size_bytes == 0 and len(cache) == 0


def test_memory_is_bounded_least_recently_used_first() -> None:
    big = "y" * 1000
    one = len(big) + len("q0") + TURN_OVERHEAD_BYTES + ENTRY_OVERHEAD_BYTES
    cache = ConversationCache(max_bytes=one * 4 + 10)
    for number in range(4):
        cache.created(conversation(cid=f"c{number}"), turn(0, f"c{number}", big))
    cache.conversation("c0")  # used: c1 is now the least recently used
    cache.created(conversation(cid="c4"), turn(0, "c4", big))
    assert cache.conversation("c1") is None
    assert all(cache.conversation(cid) for cid in ("c0", "c2", "c3", "c4"))
    assert cache.size_bytes <= cache.max_bytes
    # One conversation larger than a quarter of the whole is read, not held.
    cache.created(conversation(cid="huge"), turn(0, "huge", "z" * cache.max_bytes))
    assert cache.conversation("huge") is None and len(cache) == 4

    counted = ConversationCache(max_conversations=2)
    for number in range(5):
        counted.created(conversation(cid=f"c{number}"), turn(0, f"c{number}"))
    assert len(counted) == 2 and counted.conversation("c4") is not None


def test_the_context_a_held_conversation_ends_is_found_while_it_is_the_last_turn() -> None:
    cache = ConversationCache(max_conversations=2)
    first = dataclasses.replace(turn(0), context_digest=b"d0")
    cache.created(conversation(), first)
    assert cache.head(b"d0", owner_id=1) == ("c1", "c1-t0")
    assert cache.head(b"d0", owner_id=2) is None  # another member's: never theirs
    cache.appended(dataclasses.replace(turn(1), context_digest=b"d1"))
    assert cache.head(b"d0", owner_id=1) is None  # no longer the last turn
    assert cache.head(b"d1", owner_id=1) == ("c1", "c1-t1")
    cache.replaced(turn(1), turn(1, text="again"))  # a regenerated answer, no fingerprint
    assert cache.head(b"d1", owner_id=1) is None
    cache.created(conversation(cid="c2"), dataclasses.replace(turn(0, "c2"), context_digest=b"e"))
    cache.created(conversation(cid="c3"), turn(0, "c3"))
    cache.created(conversation(cid="c4"), turn(0, "c4"))  # c2 pushed out: read from the database
    assert cache.head(b"e", owner_id=1) is None


def test_a_context_found_in_no_conversation_is_not_read_again_until_one_may_end_it() -> None:
    cache = ConversationCache()
    stamp = cache.stamp
    cache.read_absent(b"few-shot", 1, stamp)
    assert cache.absent(b"few-shot", 1) and not cache.absent(b"few-shot", 2)
    # A turn that ends that very context is stored: it is read again.
    cache.created(conversation(), dataclasses.replace(turn(0), context_digest=b"few-shot"))
    assert not cache.absent(b"few-shot", 1)
    # A read begun before a write is not remembered; a write of unknown outcome forgets all.
    stamp = cache.stamp
    cache.appended(turn(1))
    cache.read_absent(b"other", 1, stamp)
    assert not cache.absent(b"other", 1)
    cache.read_absent(b"other", 1, cache.stamp)
    assert cache.absent(b"other", 1)
    cache.forget("c1")
    assert not cache.absent(b"other", 1)


def test_a_title_changes_only_from_the_one_it_replaces() -> None:
    cache = ConversationCache()
    cache.created(conversation(title="New chat"), turn(0))
    cache.retitled("c1", "Something else", "Late")
    assert (cache.conversation("c1") or conversation()).title == "New chat"
    cache.retitled("c1", "New chat", "Weather in Paris")
    assert (cache.conversation("c1") or conversation()).title == "Weather in Paris"


# ------------------------------------------------------------------------------ in the gateway


@dataclasses.dataclass
class Reads:
    sql: list[str] = dataclasses.field(default_factory=list)

    def of(self, table: str) -> list[str]:
        return [s for s in self.sql if f"FROM {table} " in s]


@pytest.fixture
def reads(gw: Gateway) -> Iterator[Reads]:
    """The SELECTs the gateway sends its database."""
    db: Any = gw.storage.db
    seen = Reads()
    fetchone, fetchall = db.fetchone, db.fetchall

    async def counted_one(sql: str, *args: Any, **kwargs: Any) -> Any:
        seen.sql.append(sql)
        return await fetchone(sql, *args, **kwargs)

    async def counted_all(sql: str, *args: Any, **kwargs: Any) -> Any:
        seen.sql.append(sql)
        return await fetchall(sql, *args, **kwargs)

    db.fetchone, db.fetchall = counted_one, counted_all
    yield seen
    db.fetchone, db.fetchall = fetchone, fetchall


@pytest.mark.sqlite_only
async def test_a_follow_up_reads_its_conversation_and_history_from_memory(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, reads: Reads,
) -> None:
    first = await ask(gw, user, "one")
    second = await ask(gw, user, "two", first.conversation.id)
    reads.sql.clear()
    third = await ask(gw, user, "three", first.conversation.id)
    assert reads.of("conversations") == [] and reads.of("turns") == []
    # ...and answers as from the database: the whole history, in order, the right parent.
    last = upstream_a.chat_requests(titles=False)[-1]
    assert [m["content"] for m in last.messages] == [
        "one", first.turn.reply, "two", second.turn.reply, "three"]
    assert third.turn.parent_id == second.turn.id and third.conversation.turn_count == 3


@pytest.mark.sqlite_only
async def test_after_a_restart_the_first_follow_up_reads_then_the_next_do_not(
    gw: Gateway, user: Principal, reads: Reads,
) -> None:
    first = await ask(gw, user, "one")
    gw.storage.conversations._cache.clear()  # type: ignore[union-attr]  # as a new process
    await ask(gw, user, "two", first.conversation.id)
    assert reads.of("conversations") and reads.of("turns")
    reads.sql.clear()
    await ask(gw, user, "three", first.conversation.id)
    assert reads.of("conversations") == [] and reads.of("turns") == []


async def test_what_changes_a_conversation_is_what_the_next_reader_sees(
    gw: Gateway, user: Principal, admin: Principal, upstream_a: FakeUpstream,
) -> None:
    first = await ask(gw, user, "one")
    await ask(gw, user, "two", first.conversation.id)
    # A regenerated answer: the next follow-up's history carries it, not the one it replaced.
    regenerated = await gw.regenerate(user, first.conversation.id,
                                      (await gw.recall(user, first.conversation.id))[1][-1].id)
    await ask(gw, user, "three", first.conversation.id)
    sent = [m["content"] for m in upstream_a.chat_requests(titles=False)[-1].messages]
    assert sent[-2:] == [regenerated.turn.reply, "three"]
    conversation, turns = await gw.recall(user, first.conversation.id)
    assert conversation.turn_count == len(turns) == 3

    # Removed: gone for its owner at once, and a follow-up is refused.
    await gw.remove_conversation(user, first.conversation.id)
    with pytest.raises(NotFound):
        await gw.recall(user, first.conversation.id)
    asked = len(upstream_a.chat_requests())
    with pytest.raises(NotFound):
        await ask(gw, user, "four", first.conversation.id)
    assert len(upstream_a.chat_requests()) == asked  # refused before any upstream call

    # A member removed takes their conversations with them, held ones too.
    kept = await ask(gw, user, "five")
    await gw.remove_user(admin, "ann")
    assert await gw.storage.conversations.get(kept.conversation.id) is None


def test_only_a_database_of_one_process_gets_the_cache() -> None:
    shared = Storage(PostgresDatabase("postgresql://nobody@127.0.0.1:1/none"))
    assert shared.conversations._cache is None  # another process may change its rows


@pytest.mark.sqlite_only  # on PostgreSQL a cancelled write is rolled back: nothing to see
async def test_a_turn_stored_for_a_caller_who_left_is_in_the_next_history(
    gw: Gateway, user: Principal,
) -> None:
    """The caller is cancelled while its turn is being committed: the write stands (group
    commit), so the next follow-up must see that turn, whatever was held before."""
    gw.storage.commit_on_the_loop_when(lambda: False)  # busy: writes go to the group commit
    first = await ask(gw, user, "one")
    repo = gw.storage.conversations
    cid = first.conversation.id
    second = dataclasses.replace(first.turn, id=first.turn.id + "-2", position=1,
                                 parent_id=first.turn.id, prompt="two", reply="two's reply")
    usage = UsageRecord(principal_id=user.id, client_id=None, conversation_id=cid,
                        account="A", model="m", endpoint="api", outcome="ok",
                        created_utc=second.reply_utc, duration_ms=1)
    storing = asyncio.create_task(repo.append_turn(second, usage))
    await asyncio.sleep(0)  # queued for the next group commit
    storing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await storing
    await repo.log_usage(usage)  # committed after it: the cancelled write is in by now
    conversation = await repo.get(cid)
    assert conversation is not None and conversation.turn_count == 2
    assert [t.prompt for t in await repo.recent_turns(cid, 500)] == ["two", "one"]
