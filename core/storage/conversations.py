"""Conversations, turns and the usage log.

A turn is one row. Adding a turn inserts that row, bumps the conversation's counters and appends
one usage row, in a single transaction: nothing is ever rewritten whole.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .. import exchange
from ..errors import Conflict
from ..exchange import Attachment
from ..models import Conversation, Turn
from ..records import frozen_record
from .conversation_cache import ConversationCache
from .database import Database, IntegrityError, Statement

NO_LIMIT = 2**62
QUICK_TURNS = 16
"""Reading at most this many turns is a quick read (``Database.fetchall(quick=True)``): a few
hundred microseconds at most, even of long replies."""
_CONVERSATION_COLUMNS = (
    "id, owner_id, title, mode, account, model, client_id, external_ref, turn_count,"
    " created_utc, updated_utc"
)
_TURN_INSERT_VALUES = "VALUES (" + ", ".join(["?"] * 16) + ")"
_TURN_COLUMNS = (
    "id, conversation_id, parent_id, position, prompt, reply, model, upstream_id, prompt_utc,"
    " reply_utc, duration_ms, input_tokens, output_tokens, exchange_json, stopped,"
    " context_digest"
)
# An attachment already stored (the same bytes, sent again) is kept as it is.
_ATTACHMENT_INSERT = (
    "INSERT INTO attachments (sha256, mime_type, size_bytes, data, created_utc)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING"
)
_TURN_ATTACHMENT_INSERT = "INSERT INTO turn_attachments (turn_id, sha256) VALUES (?, ?)"


def _names(columns: str) -> tuple[str, ...]:
    # Interned, as the dataclasses' parameter names are: a keyword argument found by identity
    # is one pointer comparison, one of another string object a string comparison with each
    # parameter in turn (the row's own column names cost ~70,000 instructions a follow-up).
    return tuple(sys.intern(name.strip()) for name in columns.split(","))


_CONVERSATION_FIELDS = _names(_CONVERSATION_COLUMNS)
_TURN_FIELDS = _names(_TURN_COLUMNS)
_WITH_RECENT_TURNS = (  # PostgreSQL's: a conversation without turns is one row of NULL turn
    f"SELECT {', '.join('c.' + n for n in _CONVERSATION_FIELDS)},"
    f" {', '.join('t.' + n for n in _TURN_FIELDS)} FROM conversations c"
    f" LEFT JOIN LATERAL (SELECT {_TURN_COLUMNS} FROM turns WHERE conversation_id = c.id"
    " ORDER BY position DESC LIMIT ?) t ON true WHERE c.id = ? ORDER BY t.position DESC"
)


# Each row read from ``SELECT {_..._COLUMNS}``: values taken in that order, as reading them by
# name would make sqlite3.Row compare the name with each column's in turn.
def _conversation(row: Iterable[Any]) -> Conversation:
    return Conversation(**dict(zip(_CONVERSATION_FIELDS, row, strict=True)))


def _turn(row: Iterable[Any]) -> Turn:
    fields = dict(zip(_TURN_FIELDS, row, strict=True))
    fields["stopped"] = bool(fields["stopped"])  # SQLite answers 0 or 1
    return Turn(**fields)


@frozen_record
class UsageRecord:
    principal_id: int | None
    client_id: int | None
    conversation_id: str | None
    account: str | None
    model: str | None
    endpoint: str
    outcome: str
    created_utc: str
    duration_ms: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None
    """What the call cost the organisation (None: own key, or no account answered)."""
    estimated: bool = False
    """The tokens are the gateway's estimate: the upstream reported none."""
    purpose: str = "reply"
    """"reply", or "title" for the call that named a new conversation."""
    own_key: bool = False
    """Made with the member's own key: their spending, never counted against budgets."""

    @property
    def tokens(self) -> int:
        return (self.input_tokens or 0) + (self.output_tokens or 0)


_USAGE_INSERT = (
    "INSERT INTO usage (principal_id, client_id, conversation_id, account, model, endpoint,"
    " outcome, created_utc, duration_ms, input_tokens, output_tokens, cost, estimated, purpose,"
    " own_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def usage_statement(u: UsageRecord) -> Statement:
    return (_USAGE_INSERT, _usage_params(u))


def _usage_params(u: UsageRecord) -> tuple[Any, ...]:
    return (u.principal_id, u.client_id, u.conversation_id, u.account, u.model, u.endpoint,
            u.outcome, u.created_utc, u.duration_ms, u.input_tokens, u.output_tokens, u.cost,
            u.estimated, u.purpose, u.own_key)


def _turn_params(t: Turn) -> tuple[Any, ...]:
    return (t.id, t.conversation_id, t.parent_id, t.position, t.prompt, t.reply, t.model,
            t.upstream_id, t.prompt_utc, t.reply_utc, t.duration_ms, t.input_tokens,
            t.output_tokens, t.exchange_json, t.stopped, t.context_digest)


def _attachment_statements(turn: Turn, attachments: Sequence[Attachment],
                           known: set[str]) -> list[Statement]:
    """The attachments' rows (the bytes only of those not stored yet) and the turn's
    references to them."""
    statements: list[Statement] = []
    for a in attachments:
        if a.sha256 not in known:
            statements.append((_ATTACHMENT_INSERT,
                               (a.sha256, a.mime_type, len(a.data), a.data, turn.reply_utc)))
        statements.append((_TURN_ATTACHMENT_INSERT, (turn.id, a.sha256)))
    return statements


def _unreferenced(hashes: Sequence[str]) -> Statement:
    """Remove those of these attachments no turn refers to any more."""
    return (f"DELETE FROM attachments WHERE sha256 IN ({', '.join('?' * len(hashes))})"
            " AND NOT EXISTS (SELECT 1 FROM turn_attachments ta"
            " WHERE ta.sha256 = attachments.sha256)", tuple(hashes))


class ConversationRepo:
    def __init__(self, db: Database, cache: ConversationCache | None = None) -> None:
        """``cache``: only for a database no other process writes (SQLite)."""
        self.db = db
        self._cache = cache
        # Ties in time are broken by insertion order: SQLite's rowid, PostgreSQL's seq.
        self._insertion_order = "rowid" if db.dialect == "sqlite" else "seq"

    async def get(self, conversation_id: str) -> Conversation | None:
        cache = self._cache
        if cache is not None and (held := cache.conversation(conversation_id)) is not None:
            return held
        stamp = cache.stamp if cache is not None else 0
        row = await self.db.fetchone(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,),
            quick=True)
        if not row:
            return None
        conversation = _conversation(row)
        if cache is not None:
            cache.read_conversation(conversation, stamp)
        return conversation

    async def by_external_ref(self, client_id: int, ref: str) -> Conversation | None:
        row = await self.db.fetchone(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
            " WHERE client_id = ? AND external_ref = ?",
            (client_id, ref), quick=True)
        return _conversation(row) if row else None

    async def list_page(
        self, *, owner_id: int | None, client_id: int | None = None, limit: int, offset: int
    ) -> tuple[list[Conversation], int]:
        """Newest first. ``owner_id`` None lists everyone's (admin audit); ``client_id`` narrows
        that to the users of one client."""
        if owner_id is not None:
            where, params = "owner_id = ?", [owner_id]
        elif client_id is not None:
            where = "owner_id IN (SELECT id FROM principals WHERE client_id = ?)"
            params = [client_id]
        else:
            where, params = "1 = 1", []
        total = await self.db.fetchone(f"SELECT count(*) FROM conversations WHERE {where}",
                                          params)
        rows = await self.db.fetchall(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE {where}"
            f" ORDER BY updated_utc DESC, {self._insertion_order} DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_conversation(r) for r in rows], int(total[0]) if total else 0

    async def turns(self, conversation_id: str, *, limit: int = -1, offset: int = 0) -> list[Turn]:
        """Turns oldest first; ``limit`` -1: all of them."""
        rows = await self.db.fetchall(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE conversation_id = ?"
            " ORDER BY position LIMIT ? OFFSET ?",
            # SQLite takes no OFFSET without a LIMIT, PostgreSQL no negative LIMIT.
            (conversation_id, limit if limit >= 0 else NO_LIMIT, offset),
        )
        return [_turn(r) for r in rows]

    async def recent_turns(self, conversation_id: str, limit: int, *,
                           expected: int | None = None) -> list[Turn]:
        """The last ``limit`` turns, newest first: history is trimmed from the oldest end, so
        reading backwards lets the caller stop as soon as the budget is spent. ``expected``:
        about how many turns the conversation has (its ``turn_count`` as last read)."""
        cache = self._cache
        if cache is not None and (held := cache.recent_turns(conversation_id, limit)) is not None:
            return held
        stamp = cache.stamp if cache is not None else 0
        few = min(limit, limit if expected is None else expected) <= QUICK_TURNS
        rows = await self.db.fetchall(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE conversation_id = ?"
            " ORDER BY position DESC LIMIT ?",
            # A few turns (a /v1 follow-up's parent, a short conversation) on the event loop;
            # a long history (hundreds of turns: milliseconds) on the reader's thread.
            (conversation_id, limit), quick=few)
        turns = [_turn(r) for r in rows]
        if cache is not None:
            cache.read_turns(conversation_id, turns, limit, stamp)
        return turns

    async def with_recent_turns(self, conversation_id: str, limit: int,
                                ) -> tuple[Conversation | None, list[Turn]]:
        """The conversation and its last ``limit`` turns, newest first (a follow-up, under
        the conversation's lock). On PostgreSQL in one round trip, where ``get`` then
        ``recent_turns`` made two of a follow-up's five; the cache answers both for
        SQLite."""
        if self._cache is not None or self.db.dialect != "postgresql":
            conversation = await self.get(conversation_id)
            if conversation is None:
                return None, []
            return conversation, await self.recent_turns(conversation_id, limit,
                                                         expected=conversation.turn_count)
        rows = await self.db.fetchall(_WITH_RECENT_TURNS, (limit, conversation_id))
        if not rows:
            return None, []
        first = tuple(rows[0])
        width = len(_CONVERSATION_FIELDS)
        turns = [_turn(tuple(row)[width:]) for row in rows if row[width] is not None]
        return _conversation(first[:width]), turns

    async def ending_context(self, owner_id: int, digest: bytes) -> tuple[str, str] | None:
        """(conversation id, turn id) of the owner's turn that ends the /v1 context of this
        fingerprint (core/context_digest.py) and is its conversation's last. When several
        do (the same script run twice), any of them: each holds that very context. (No
        ORDER BY: SQLite would build a sorter for it, about 15,000 instructions a lookup.)
        With one process on SQLite the cache answers for the conversations it holds and the
        fingerprints found in none lately, without a read."""
        cache = self._cache
        stamp = 0
        if cache is not None:
            if (held := cache.head(digest, owner_id)) is not None:
                return held
            if cache.absent(digest, owner_id):
                return None
            stamp = cache.stamp
        row = await self.db.fetchone(
            "SELECT t.conversation_id, t.id FROM turns t"
            " JOIN conversations c ON c.id = t.conversation_id"
            " WHERE t.context_digest = ? AND c.owner_id = ? AND t.position = c.turn_count - 1"
            " LIMIT 1", (digest, owner_id), quick=True)
        if row:
            return row[0], row[1]
        if cache is not None:
            cache.read_absent(digest, owner_id, stamp)
        return None

    async def turn(self, turn_id: str) -> Turn | None:
        row = await self.db.fetchone(f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = ?",
                                     (turn_id,), quick=True)
        return _turn(row) if row else None

    async def attachments(self, conversation_id: str,
                          hashes: Iterable[str]) -> dict[str, Attachment]:
        """The stored attachments of these hashes that a turn of this conversation refers
        to: a hash named in another member's conversation is not theirs to send."""
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        rows = await self.db.fetchall(
            "SELECT a.sha256, a.mime_type, a.data FROM attachments a"
            f" WHERE a.sha256 IN ({', '.join('?' * len(wanted))}) AND EXISTS"
            " (SELECT 1 FROM turn_attachments ta JOIN turns t ON t.id = ta.turn_id"
            "  WHERE ta.sha256 = a.sha256 AND t.conversation_id = ?)",
            [*wanted, conversation_id])
        return {r["sha256"]: Attachment(r["sha256"], r["mime_type"], bytes(r["data"]))
                for r in rows}

    async def _stored(self, attachments: Sequence[Attachment]) -> set[str]:
        """Which of these are stored already: a /v1 caller resends its whole context, so the
        same image comes with every request, and its bytes need not travel again."""
        if not attachments:
            return set()
        hashes = sorted({a.sha256 for a in attachments})
        rows = await self.db.fetchall(
            f"SELECT sha256 FROM attachments WHERE sha256 IN ({', '.join('?' * len(hashes))})",
            hashes)
        return {r[0] for r in rows}

    async def prune_attachments(self) -> None:
        """Remove the attachments no turn refers to any more (after a user's removal took
        their conversations with it)."""
        await self.db.write([("DELETE FROM attachments WHERE NOT EXISTS (SELECT 1 FROM"
                              " turn_attachments ta WHERE ta.sha256 = attachments.sha256)", ())])

    async def attachment_of(self, conversation_id: str, sha256: str) -> Attachment | None:
        """An attachment, if a turn of this conversation refers to it."""
        row = await self.db.fetchone(
            "SELECT a.sha256, a.mime_type, a.data FROM attachments a"
            " JOIN turn_attachments ta ON ta.sha256 = a.sha256"
            " JOIN turns t ON t.id = ta.turn_id"
            " WHERE t.conversation_id = ? AND a.sha256 = ? LIMIT 1", (conversation_id, sha256))
        return Attachment(row["sha256"], row["mime_type"], bytes(row["data"])) if row else None

    async def create_with_turn(
        self, conversation: Conversation, turn: Turn, usage: UsageRecord,
        attachments: Sequence[Attachment] = (),
        extra: Sequence[Statement] = (),
    ) -> None:
        """Store a new conversation together with its first turn, or nothing."""
        c = conversation
        try:
            await self.db.write([
                (f"INSERT INTO conversations ({_CONVERSATION_COLUMNS})"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (c.id, c.owner_id, c.title, c.mode, c.account, c.model, c.client_id,
                  c.external_ref, 1, c.created_utc, c.updated_utc)),
                (f"INSERT INTO turns ({_TURN_COLUMNS}) {_TURN_INSERT_VALUES}", _turn_params(turn)),
                (_USAGE_INSERT, _usage_params(usage)),
                *_attachment_statements(turn, attachments, await self._stored(attachments)),
                *extra,
            ], quick=True)
        except IntegrityError as exc:
            raise Conflict(f"could not store the conversation: {exc}") from None
        except BaseException:
            self._unsure(conversation.id)
            raise
        if self._cache is not None:
            self._cache.created(conversation, turn)

    def _unsure(self, conversation_id: str) -> None:
        """A write failed in a way that does not say whether it was committed (the caller
        cancelled while it was, the database went away): its conversation is read again."""
        if self._cache is not None:
            self._cache.forget(conversation_id)

    async def append_turn(self, turn: Turn, usage: UsageRecord,
                          attachments: Sequence[Attachment] = (),
                          extra: Sequence[Statement] = ()) -> bool:
        """Append a follow-up turn. False when the conversation was removed meanwhile."""
        try:
            appended = await self.db.write([
                ("UPDATE conversations SET turn_count = turn_count + 1, updated_utc = ?"
                 " WHERE id = ?", (turn.reply_utc, turn.conversation_id)),
                (f"INSERT INTO turns ({_TURN_COLUMNS}) {_TURN_INSERT_VALUES}", _turn_params(turn)),
                (_USAGE_INSERT, _usage_params(usage)),
                *_attachment_statements(turn, attachments, await self._stored(attachments)),
                *extra,
            ], guarded=True, quick=True)
        except IntegrityError as exc:
            # The turn's position was taken: another process answered this conversation
            # without its lock (never by this gateway's own code path).
            if self._cache is not None:
                self._cache.forget(turn.conversation_id)
            raise Conflict(f"could not store the turn: {exc}") from None
        except BaseException:
            self._unsure(turn.conversation_id)
            raise
        if self._cache is not None:
            if appended:
                self._cache.appended(turn)
            else:
                self._cache.forget(turn.conversation_id)
        return appended

    async def replace_last_turn(self, old: Turn, turn: Turn, usage: UsageRecord,
                                attachments: Sequence[Attachment] = (),
                                extra: Sequence[Statement] = ()) -> bool:
        """Put ``turn`` in the place of ``old`` (a regenerated answer), in one transaction,
        with the attachments it refers to (those of ``old`` no turn refers to any more go).
        False when ``old`` is no longer there (removed meanwhile)."""
        held = sorted(exchange.references(old.exchange)) if old.exchange_json else []
        pruned = [_unreferenced(held)] if held else []
        try:
            replaced = await self.db.write([
                ("DELETE FROM turns WHERE id = ?", (old.id,)),
                ("UPDATE conversations SET updated_utc = ? WHERE id = ?",
                 (turn.reply_utc, turn.conversation_id)),
                (f"INSERT INTO turns ({_TURN_COLUMNS}) {_TURN_INSERT_VALUES}",
                 _turn_params(turn)),
                (_USAGE_INSERT, _usage_params(usage)),
                *_attachment_statements(turn, attachments, await self._stored(attachments)),
                *pruned,
                *extra,
            ], guarded=True, quick=True)
        except IntegrityError as exc:
            # An attachment read as stored was removed meanwhile (its other conversation
            # went): nothing was stored; the member may try again.
            raise Conflict(f"could not store the turn: {exc}") from None
        except BaseException:
            self._unsure(turn.conversation_id)
            raise
        if self._cache is not None:
            if replaced:
                self._cache.replaced(old, turn)
            else:
                self._cache.forget(turn.conversation_id)
        return replaced

    async def replace_titles(self, titles: Sequence[tuple[str, str, str]],
                             extra: Sequence[Statement] = ()) -> None:
        """New titles, each ``(conversation id, old, new)`` unless the title changed since it
        was ``old`` (core/title_batch.py), with ``extra`` (the titles' usage rows), in one
        transaction."""
        try:
            await self.db.write([
                *extra,
                *(("UPDATE conversations SET title = ? WHERE id = ? AND title = ?",
                   (new, conversation_id, old)) for conversation_id, old, new in titles),
            ], quick=True)
        except BaseException:
            for conversation_id, _, _ in titles:
                self._unsure(conversation_id)
            raise
        if self._cache is not None:
            for conversation_id, old, new in titles:
                self._cache.retitled(conversation_id, old, new)

    async def log_usage(self, usage: UsageRecord, extra: Sequence[Statement] = ()) -> None:
        await self.db.write([(_USAGE_INSERT, _usage_params(usage)), *extra], quick=True)

    async def delete(self, conversation_id: str) -> bool:
        try:
            return await self._delete(conversation_id)
        finally:
            if self._cache is not None:
                self._cache.forget(conversation_id)

    async def _delete(self, conversation_id: str) -> bool:
        async with self.db.transaction() as tx:
            held = [r[0] for r in await tx.fetchall(
                "SELECT DISTINCT ta.sha256 FROM turn_attachments ta"
                " JOIN turns t ON t.id = ta.turn_id WHERE t.conversation_id = ?",
                (conversation_id,))]
            removed = bool(await tx.execute("DELETE FROM conversations WHERE id = ?",
                                            (conversation_id,)))
            if held:
                # Its attachments go with it, unless another turn still refers to them.
                await tx.execute(*_unreferenced(held))
            return removed

    async def set_external_ref(self, conversation_id: str, client_id: int, ref: str | None) -> None:
        if self._cache is not None:
            self._cache.forget(conversation_id)
        try:
            async with self.db.transaction() as tx:
                await tx.execute(
                    "UPDATE conversations SET client_id = ?, external_ref = ? WHERE id = ?",
                    (client_id, ref, conversation_id),
                )
        except IntegrityError:
            raise Conflict(f"reference {ref!r} already names another conversation") from None
        finally:
            if self._cache is not None:
                self._cache.forget(conversation_id)

    async def usage_stats(self, *, client_id: int | None = None) -> dict[str, Any]:
        """Totals of the usage log and the store; ``client_id`` narrows them to one client's
        users."""
        usage_where = owned = ""
        params: tuple[int, ...] = ()
        if client_id is not None:
            usage_where = " WHERE client_id = ?"
            owned = " WHERE owner_id IN (SELECT id FROM principals WHERE client_id = ?)"
            params = (client_id,)
        row = await self.db.fetchone(
            "SELECT sum(CASE WHEN purpose <> 'title' THEN 1 ELSE 0 END) AS requests,"
            " coalesce(sum(input_tokens), 0) AS input_tokens,"
            " coalesce(sum(output_tokens), 0) AS output_tokens,"
            " coalesce(sum(cost), 0) AS cost,"
            " sum(CASE WHEN outcome <> 'ok' THEN 1 ELSE 0 END) AS failures"
            f" FROM usage{usage_where}", params
        )
        conversations = await self.db.fetchone(f"SELECT count(*) FROM conversations{owned}",
                                                   params)
        turns = await self.db.fetchone(
            "SELECT count(*) FROM turns WHERE conversation_id IN"
            f" (SELECT id FROM conversations{owned})", params
        )
        return {
            "requests": (row["requests"] or 0) if row else 0,
            "failures": (row["failures"] or 0) if row else 0,
            "input_tokens": row["input_tokens"] if row else 0,
            "output_tokens": row["output_tokens"] if row else 0,
            "cost": round(float(row["cost"] or 0), 6) if row else 0.0,
            "conversations": conversations[0] if conversations else 0,
            "turns": turns[0] if turns else 0,
        }
