"""What the repositories ask of a database, whatever the engine behind it.

The repositories (principals, conversations, sessions, account state) are written once, in the
SQL that SQLite and PostgreSQL share, with ``?`` placeholders; each backend runs it its own way:

- ``SqliteDatabase``: one process, a writer and a reader connection on one WAL file (and reads
  by key on the event loop), hot writes group-committed, per-key locks in memory, changes
  announced to this process only.
- ``PostgresDatabase``: any number of processes, an asyncpg pool, per-key locks as advisory
  locks, changes announced to every process with LISTEN/NOTIFY.

Errors: an integrity violation (a duplicate key, a lost race) surfaces as ``IntegrityError``,
which the repositories turn into the domain's ``Conflict``; a database that cannot be reached or
used surfaces as ``StorageUnavailable``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

from ..errors import GatewayError

Dialect = Literal["sqlite", "postgresql"]
Statement = tuple[str, Sequence[Any]]
ChangeListener = Callable[[str], Awaitable[None] | None]
"""Called with a change's payload (e.g. an account name) on every process."""


class StorageError(Exception):
    """The storage cannot be used; the message says why, in words an operator can act on."""


class StorageUnavailable(StorageError, GatewayError):
    """The database cannot be reached (or was lost): a 503 for a request that meets it."""

    status = 503
    code = "storage_unavailable"

    def __init__(self, message: str) -> None:
        GatewayError.__init__(self, message, retry_after=5)


class IntegrityError(StorageError):
    """A write broke a constraint: a duplicate key, or a reference to a row that is gone."""


class Row(Protocol):
    """A result row: by column name or position (sqlite3.Row and asyncpg.Record both are)."""

    def __getitem__(self, key: str | int, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]:
        """The values, in the columns' order."""
        ...

    def keys(self) -> Any: ...


class Transaction(Protocol):
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def notify(self, channel: str, payload: str = "") -> None:
        """Announce a change to every process once this transaction commits."""
        ...


class Database(Protocol):
    dialect: Dialect
    shared: bool
    """True when other processes may use the same database (PostgreSQL)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = (), *,
                       quick: bool = False) -> Row | None:
        """The first row. ``quick``: a read of a few rows by an index (a conversation by
        its id, its last turns), which an engine may answer without a hop to another
        thread (SQLite)."""
        ...

    async def fetchall(self, sql: str, params: Sequence[Any] = (), *,
                       quick: bool = False) -> list[Row]: ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        ...

    async def write(self, statements: Sequence[Statement], *, guarded: bool = False,
                    quick: bool = False) -> bool:
        """The hot path's writes (a turn, a usage row), as one transaction. ``guarded``: when
        the first statement changes no row, nothing more runs and the answer is False.
        ``quick``: a few rows by key, which an engine may commit without a hop to another
        thread when nothing else waits (SQLite, ``commit_on_the_loop_when``); never a write
        that may touch a whole table. No statement may depend on another's effect, nor two
        change one row: PostgreSQL may run them as the parts of one statement, which all see
        the database as it was before it."""
        ...

    def commit_on_the_loop_when(self, quiet: Callable[[], bool]) -> None:
        """``quiet()``: True when nothing else waits for the event loop. An engine may then
        commit a ``quick`` write on the loop's own thread rather than hand it to another
        (SQLite); others ignore it."""
        ...

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Held by one holder at a time across every process sharing the database; waiters
        are served in the order they came (per process)."""
        ...

    def subscribe(self, channel: str, listener: ChangeListener) -> None:
        """``listener(payload)`` for every change announced on ``channel``, by any process."""
        ...

    @property
    def changes_reliable(self) -> bool:
        """False while announcements from other processes may be missed (PostgreSQL's
        listening connection is down): caches must not be trusted meanwhile."""
        ...

    def leadership(self, name: str) -> Leadership: ...


class Leadership(Protocol):
    """Which one process runs a singleton (the Discord bot)."""

    async def acquire(self) -> None:
        """Wait until this process leads (at once on SQLite)."""
        ...

    async def lost(self) -> None:
        """Return when this process no longer leads (its database connection was lost)."""
        ...

    async def release(self) -> None: ...
