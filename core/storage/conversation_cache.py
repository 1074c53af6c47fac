"""The conversations this process answered lately, with their newest turns, kept in memory.

A follow-up reads its conversation and its newest turns before it is answered: two reads that
cost SQLite and the sqlite3 module 10 to 15 % of a follow-up's time on the event loop, and
under load the thread switches around them more (issue 14, bench/ py-spy profiles). With one
process on SQLite every change to a conversation goes through ``ConversationRepo`` in this
process, so what it wrote last is what the database holds: the repository writes through this
cache after each commit, and a follow-up reads it instead.

Only for a database one process owns (SQLite): with several processes (PostgreSQL) another one
may have changed the rows, and the repository reads them every time.

Bounded: at most ``MAX_CONVERSATIONS`` conversations and ``MAX_BYTES`` of their text, the least
recently used going first, and at most ``MAX_TURNS`` turns of each (a longer history is read
from the database).

It also answers which held conversation a /v1 context continues (``head``: the fingerprint of
its last turn, core/context_digest.py), and remembers the last ``MAX_ABSENT`` fingerprints the
database said no conversation of the caller ends (``absent``): a program that sends the same
few-shot examples with every question would otherwise cost a read each time. A fingerprint
stored since is forgotten there; a write whose outcome is unknown forgets them all.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from ..models import Conversation, Turn

MAX_CONVERSATIONS = 2_000
"""Enough for the conversations a community keeps going at once; few enough that a gateway's
memory stays flat however many it has answered (bench/ case 5: ~2 MiB at most here)."""
MAX_BYTES = 16 << 20
MAX_ABSENT = 1_024
MAX_TURNS = 64
TURN_OVERHEAD_BYTES = 600
ENTRY_OVERHEAD_BYTES = 600
"""What a turn and an entry take beyond the turns' text: the records, their ids and times
(measured with tracemalloc: about 1.1 KiB for a conversation with one short turn)."""


def _size(turn: Turn) -> int:
    return (len(turn.prompt) + len(turn.reply) + len(turn.exchange_json or "")
            + TURN_OVERHEAD_BYTES)


@dataclasses.dataclass(slots=True)
class _Entry:
    conversation: Conversation
    turns: list[Turn]
    """Newest first: the conversation's last ``len(turns)`` turns."""
    size: int
    """Of its turns (``_size``); the entry's own overhead is counted apart."""


class ConversationCache:
    def __init__(self, *, max_conversations: int = MAX_CONVERSATIONS,
                 max_bytes: int = MAX_BYTES, max_turns: int = MAX_TURNS) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self.max_conversations = max_conversations
        self.max_bytes = max_bytes
        self.max_turns = max_turns
        self.stamp = 0
        """Counts the writes told to the cache. A read of the database that began at another
        stamp may have seen rows from before a write it would then put back: it is not held."""
        self._heads: dict[bytes, str] = {}
        """The context fingerprint of each held conversation's last turn -> its id."""
        self._absent: OrderedDict[bytes, int] = OrderedDict()
        """Fingerprints no conversation of this owner ends -> the owner."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    # ----------------------------------------------------------------- reads

    def conversation(self, conversation_id: str) -> Conversation | None:
        entry = self._entries.get(conversation_id)
        if entry is None:
            return None
        self._entries.move_to_end(conversation_id)
        return entry.conversation

    def recent_turns(self, conversation_id: str, limit: int) -> list[Turn] | None:
        """The newest ``limit`` turns, newest first; None when they are not all held."""
        entry = self._entries.get(conversation_id)
        if entry is None or (len(entry.turns) < limit
                             and len(entry.turns) < entry.conversation.turn_count):
            return None
        self._entries.move_to_end(conversation_id)
        return entry.turns[:limit]

    def head(self, digest: bytes, owner_id: int) -> tuple[str, str] | None:
        """(conversation id, turn id) of a held conversation of this owner whose last turn
        ends the context of this fingerprint."""
        conversation_id = self._heads.get(digest)
        entry = self._entries.get(conversation_id) if conversation_id else None
        if entry is None or entry.conversation.owner_id != owner_id or not entry.turns:
            return None
        return entry.conversation.id, entry.turns[0].id

    def absent(self, digest: bytes, owner_id: int) -> bool:
        """The database said no conversation of this owner ends this context, and no turn
        with it has been stored since."""
        return self._absent.get(digest) == owner_id

    # ----------------------------------------------------------------- what was read

    def read_absent(self, digest: bytes, owner_id: int, stamp: int) -> None:
        """The database, read at ``stamp``, holds no conversation of this owner that ends
        this context."""
        if stamp != self.stamp:
            return
        self._absent[digest] = owner_id
        self._absent.move_to_end(digest)
        if len(self._absent) > MAX_ABSENT:
            self._absent.popitem(last=False)

    def read_conversation(self, conversation: Conversation, stamp: int) -> None:
        """``conversation`` was just read from the database, the read begun at ``stamp``."""
        if stamp == self.stamp and conversation.id not in self._entries:
            self._put(conversation, [], 0)

    def read_turns(self, conversation_id: str, turns: list[Turn], limit: int,
                   stamp: int) -> None:
        """``turns`` (newest first, at most ``limit``) were just read from the database, the
        read begun at ``stamp``: held with the conversation when they are its newest."""
        entry = self._entries.get(conversation_id)
        if stamp != self.stamp or entry is None or not turns:
            return
        conversation = entry.conversation
        if turns[0].position != conversation.turn_count - 1 \
                or len(turns) < min(limit, conversation.turn_count):
            return  # not what the conversation's row says its newest turns are
        kept = turns[:self.max_turns]
        self._put(conversation, kept, sum(_size(turn) for turn in kept))

    # ----------------------------------------------------------------- what was written
    # Each is told after its commit. A read on the event loop between the commit and this
    # call may already have put the new rows here: each write checks what it finds.

    def created(self, conversation: Conversation, turn: Turn) -> None:
        self.stamp += 1
        self._stored(turn)
        if conversation.turn_count != 1:  # the row is stored with one turn, whatever it said
            conversation = dataclasses.replace(conversation, turn_count=1)
        self._put(conversation, [turn], _size(turn))

    def appended(self, turn: Turn) -> None:
        self.stamp += 1
        self._stored(turn)
        entry = self._entries.get(turn.conversation_id)
        if entry is None:
            return
        held = entry.conversation
        if turn.position != held.turn_count:
            self.forget(turn.conversation_id)  # not the turn after those held: read again
            return
        turns = [turn, *entry.turns]
        size = entry.size + _size(turn)
        if len(turns) > self.max_turns:
            size -= _size(turns.pop())
        self._put(held.touched(turn.reply_utc, turn_count=held.turn_count + 1), turns, size)

    def replaced(self, old: Turn, turn: Turn) -> None:
        self.stamp += 1
        self._stored(turn)
        entry = self._entries.get(turn.conversation_id)
        if entry is None:
            return
        if not entry.turns or entry.turns[0].id != old.id:
            self.forget(turn.conversation_id)
            return
        self._put(entry.conversation.touched(turn.reply_utc), [turn, *entry.turns[1:]],
                  entry.size - _size(entry.turns[0]) + _size(turn))

    def retitled(self, conversation_id: str, old: str, new: str) -> None:
        self.stamp += 1
        entry = self._entries.get(conversation_id)
        if entry is not None and entry.conversation.title == old:
            entry.conversation = dataclasses.replace(entry.conversation, title=new)

    def forget(self, conversation_id: str) -> None:
        """Read this conversation again (a write to it may or may not have been committed,
        so a turn with any fingerprint may now be stored)."""
        self.stamp += 1
        self._absent.clear()
        entry = self._entries.pop(conversation_id, None)
        if entry is not None:
            self._dropped(entry)

    def clear(self) -> None:
        """Everything goes (a member or client was removed, and their conversations with
        them)."""
        self.stamp += 1
        self._entries.clear()
        self._heads.clear()
        self._absent.clear()
        self._bytes = 0

    def _stored(self, turn: Turn) -> None:
        if turn.context_digest is not None:
            self._absent.pop(turn.context_digest, None)

    # ----------------------------------------------------------------- bounds

    def _put(self, conversation: Conversation, turns: list[Turn], size: int) -> None:
        old = self._entries.pop(conversation.id, None)
        if old is not None:
            self._dropped(old)
        if size > self.max_bytes // 4:
            return  # one very long conversation would push out many others: read it
        self._entries[conversation.id] = _Entry(conversation, turns, size)
        self._bytes += size + ENTRY_OVERHEAD_BYTES
        if turns and turns[0].context_digest is not None:
            self._heads[turns[0].context_digest] = conversation.id
        while self._bytes > self.max_bytes or len(self._entries) > self.max_conversations:
            _, oldest = self._entries.popitem(last=False)
            self._dropped(oldest)

    def _dropped(self, entry: _Entry) -> None:
        """``entry`` has left ``_entries``."""
        self._bytes -= entry.size + ENTRY_OVERHEAD_BYTES
        digest = entry.turns[0].context_digest if entry.turns else None
        if digest is not None and self._heads.get(digest) == entry.conversation.id:
            del self._heads[digest]
