"""The SQLite backend: one process, one WAL file, group commit.

Connections to one WAL database: a writer and a reader, each on a thread of its own, and one
on the event loop's thread for reads by key (``quick=True``: a conversation, its last turns)
and for the writes of a quiet gateway. In WAL mode a reader sees every committed write and
never waits for the writer.

Writes take one of two ways, serialised by one asyncio lock (statements of two coroutines must
never interleave inside one transaction):

- ``write(statements)``, for the hot path (storing a turn, a usage row): run on the writer's
  own thread. Writes that arrive together are *group-committed*: one thread hop and one COMMIT
  for the whole batch. Under load this turns N transactions of five hops each into one. When
  a write of the batch fails, the batch is rolled back and run again with each write in its
  own SAVEPOINT, so that the failure rolls back only that write (a savepoint for every write,
  failing or not, cost a statement journal each: 24 ``pwrite`` calls a request).
  When the gateway is quiet (``commit_on_the_loop_when``) and the writer has nothing to do, a
  ``quick`` write (a few rows by key) commits on the event loop's thread instead: see
  ``_commit_on_the_loop``.
- ``transaction()``, for the rest (admin actions): an async context with the connection.

Only one process may use the file: locks and change announcements live in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import aiosqlite

from ..clock import iso, utc_now
from ..locks import KeyedLocks, KeyLock
from .database import (
    ChangeListener,
    Dialect,
    IntegrityError,
    Row,
    Statement,
    StorageError,
    StorageUnavailable,
)
from .migrations_sqlite import MIGRATIONS

log = logging.getLogger(__name__)

WriteOp = Callable[[sqlite3.Connection], Any]
CHECKPOINT_EVERY_S = 1.0
"""How often the WAL is folded into the database, off the write path."""
MAX_BATCH = 256
"""Writes committed together at most; a bound on how long one COMMIT holds the others."""

# A bool, None or bytes is not an exact int, float, str or bytearray, so the sqlite3 module
# looks for ``__adapt__`` and ``__conform__`` before binding it, and a miss on the protocol's
# type formats an AttributeError's message: about 2,000 to 5,000 instructions a value, for
# three bools and about four Nones a stored turn (callgrind, the writer's thread), and a /v1
# turn's context fingerprint. A registered adapter is found by one dictionary lookup. SQLite
# stores the same 0, 1, NULL and blobs as before; ``{}.get(None)`` is None, from a C function
# (a lambda costs half as much again); ``bytes(b)`` is ``b`` itself.
sqlite3.register_adapter(bool, int)
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
sqlite3.register_adapter(bytes, bytes)


class SqliteDatabase:
    dialect: Dialect = "sqlite"
    shared = False
    changes_reliable = True

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._quick: sqlite3.Connection | None = None
        """On the event loop's thread: reads by key (``_quick_read``), a quiet gateway's
        writes (``_commit_on_the_loop``)."""
        self._quiet: Callable[[], bool] = _never
        self._write_lock = asyncio.Lock()
        self._pending: list[tuple[WriteOp, asyncio.Future[Any]]] = []
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._locks = KeyedLocks()
        self._listeners: dict[str, list[ChangeListener]] = {}

    def __repr__(self) -> str:
        return f"SQLite database {self.path}"

    async def open(self) -> None:
        if self.path.parent and str(self.path) != ":memory:":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageUnavailable(
                    f"cannot create the folder of {self.path}: {exc}") from None
        try:
            self._writer = await self._connect()
            await self._writer.execute("PRAGMA journal_mode = WAL")
            await self._migrate()
            # Checkpoints (copying the WAL into the database, with an fsync) run on a
            # connection and thread of their own, never inside a commit: done by SQLite's
            # auto-checkpoint, every thousandth commit waited several milliseconds (bench/).
            await self._writer.execute(_NO_AUTOCHECKPOINT)
            self._reader = await self._connect()
            self._quick = sqlite3.connect(self.path, isolation_level=None)
            self._quick.row_factory = sqlite3.Row
            # Busy: the read or write goes to its thread, which waits; the loop never does.
            # The writer's pragmas make it read the schema now: the migrations are done,
            # and nothing changes the schema while the store is open.
            self._quick.execute("PRAGMA busy_timeout = 0")
            for pragma in (*_WRITER_PRAGMAS, _NO_AUTOCHECKPOINT):
                self._quick.execute(pragma)
            self._checkpointer = await self._connect()
            self._checkpoints = asyncio.create_task(self._checkpoint_now_and_then())
        except sqlite3.DatabaseError as exc:
            await self.close()
            raise StorageUnavailable(f"cannot open the SQLite database {self.path}: {exc}") \
                from None
        except BaseException:
            await self.close()  # no connection thread left behind by a failed start
            raise

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a read never opens a
        # transaction that pins an old WAL snapshot.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        for pragma in _WRITER_PRAGMAS:
            await conn.execute(pragma)
        return conn

    async def _checkpoint_now_and_then(self) -> None:
        assert self._checkpointer is not None
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            try:
                # PASSIVE: copies what it can without waiting for the writer or readers.
                await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed (will retry): %s", exc)

    async def __aenter__(self) -> SqliteDatabase:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._flusher is not None and self._writer is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)  # writes in flight land
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
            self._checkpoints = None
        if self._writer is not None and self._checkpointer is not None:
            # Leave a small database behind: fold the WAL in and empty it.
            try:
                await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("final WAL checkpoint failed: %s", exc)
        if self._quick is not None:
            self._quick.close()
            self._quick = None
        for conn in (self._checkpointer, self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._checkpointer = self._reader = self._writer = None

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StorageUnavailable("the database is not open")
        return self._writer

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StorageUnavailable("the database is not open")
        return self._reader

    # ----------------------------------------------------------------- reads

    async def fetchone(self, sql: str, params: Sequence[Any] = (), *,
                       quick: bool = False) -> Row | None:
        if quick and (found := self._quick_read(sql, params)) is not None:
            return next(iter(found), None)
        # execute_fetchall is one hop to the connection's thread; a cursor would take three.
        rows = await self.reader.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: Sequence[Any] = (), *,
                       quick: bool = False) -> list[Row]:
        if quick and (found := self._quick_read(sql, params)) is not None:
            return found
        return list(await self.reader.execute_fetchall(sql, params))

    def _quick_read(self, sql: str, params: Sequence[Any]) -> list[Row] | None:
        """A read by an index, on the event loop: a few rows by key take SQLite tens of
        microseconds, less than the hop to the reader's thread and back (two thread
        wake-ups; about 50,000 instructions a read, issue 14). None when the database is
        busy (a recovery, the last checkpoint at close): never waiting on the event loop,
        the read then goes to the reader's thread, which waits."""
        if self._quick is None:
            return None
        try:
            return self._quick.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            # The extended code: a recovery in progress is SQLITE_BUSY_RECOVERY (261).
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            raise

    # ----------------------------------------------------------------- writes

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Transaction]:
        """One write transaction; committed on success, rolled back on any exception."""
        async with self._write_lock:
            conn = self.writer
            await conn.execute("BEGIN IMMEDIATE")
            tx = _Transaction(conn)
            try:
                yield tx
            except sqlite3.IntegrityError as exc:
                await conn.execute("ROLLBACK")
                raise IntegrityError(str(exc)) from None
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
        for channel, payload in tx.announcements:
            await self._announce(channel, payload)

    async def write(self, statements: Sequence[Statement], *, guarded: bool = False,
                    quick: bool = False) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            # One cursor for all the statements: Connection.execute makes one a statement,
            # and the connection keeps a weak reference to each (about 2,000 instructions).
            cursor = conn.cursor()
            for number, (sql, params) in enumerate(statements):
                if cursor.execute(sql, params).rowcount == 0 and guarded and number == 0:
                    return False
            return True

        try:
            return bool(await self._write_op(op, quick=quick))
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from None

    def commit_on_the_loop_when(self, quiet: Callable[[], bool]) -> None:
        """``quiet()``: True when nothing else waits for the event loop (the gateway: at most
        one turn being answered). A ``quick`` write made then, with the writer idle, commits
        on the loop's own thread."""
        self._quiet = quiet

    async def _write_op(self, op: WriteOp, *, quick: bool = False) -> Any:
        """Run ``op(connection)`` in a write transaction, group-committed with the writes that
        arrive meanwhile. Returns what ``op`` returns, or raises what it raised (its own
        changes, and only those, rolled back). ``quick``: a few rows by key, which may be
        committed on the loop (``_commit_on_the_loop``); a write that may touch a whole table
        never is."""
        if quick and self._quiet() and not self._pending and not self._write_lock.locked() and (
                self._flusher is None or self._flusher.done()):
            outcome = self._commit_on_the_loop(op)
            if outcome is not None:
                ok, value = outcome
                if ok:
                    return value
                raise value
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    def _commit_on_the_loop(self, op: WriteOp) -> tuple[bool, Any] | None:
        """``op`` committed on the event loop's thread, or None when the database is busy
        (another process writes, a recovery): nothing was committed, and the write goes to
        the writer's thread, which waits.

        Why: a write handed to the writer's thread wakes it, and its answer wakes the loop
        again. When one request at a time is being answered, those two wake-ups of an idle
        core and aiosqlite's hand-over cost more than the commit itself, and the loop has
        nothing else to do meanwhile (c=1: 64,000 instructions fewer a request, about 0.1 ms
        at p50; bench/). Under load the writer's thread runs SQLite beside the loop and
        batches commits, so writes go there. No checkpoint runs here (``wal_autocheckpoint =
        0``) and a commit in WAL mode with ``synchronous = NORMAL`` waits for no disk, so the
        loop is held for the statements only."""
        if self._quick is None:
            return None
        try:
            return _run_batch(self._quick, [op])[0]
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None  # _run_batch rolled back whatever it began
            raise

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                async with self._write_lock:
                    # aiosqlite's documented surface runs one statement per hop; its _execute
                    # runs a function on the connection's own thread, which is what a batch
                    # needs. The test suite covers it, so a change there fails loudly.
                    outcomes = await self.writer._execute(  # type: ignore[no-untyped-call]
                        _run_batch, self.writer._conn,
                        [op for op, _ in batch])
            except BaseException as exc:  # the whole batch failed (COMMIT, closed store)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception)
                                             else StorageUnavailable("the database was closed"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # the caller was cancelled; its write stands
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    # ----------------------------------------------------------------- one process only

    def lock(self, key: str) -> KeyLock:
        return self._locks[key]

    def subscribe(self, channel: str, listener: ChangeListener) -> None:
        self._listeners.setdefault(channel, []).append(listener)

    async def _announce(self, channel: str, payload: str) -> None:
        for listener in self._listeners.get(channel, ()):
            outcome = listener(payload)
            if outcome is not None:
                await outcome

    def leadership(self, name: str) -> _SoleLeader:
        return _SoleLeader()

    async def backup(self, target: str | Path) -> None:
        """A consistent copy of the live database (SQLite's online backup), written to a
        temporary file and renamed, so ``target`` is never a half-written database."""
        target = Path(target)
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)

        def copy(conn: sqlite3.Connection) -> None:
            with contextlib.closing(sqlite3.connect(partial)) as out:
                conn.backup(out, pages=4096)

        await self.reader._execute(copy, self.reader._conn)  # type: ignore[no-untyped-call]
        partial.replace(target)

    # ----------------------------------------------------------------- migrations

    async def _migrate(self) -> None:
        conn = self.writer
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations ("
            " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, applied_utc TEXT NOT NULL)"
        )
        async with conn.execute("SELECT name FROM _migrations") as cursor:
            applied = {row[0] for row in await cursor.fetchall()}
        unknown = applied - {name for name, _ in MIGRATIONS}
        if unknown:
            raise StorageError(
                f"database {self.path} has migrations this code does not know: {sorted(unknown)};"
                " it was written by a newer version"
            )
        for number, (name, sql) in enumerate(MIGRATIONS, start=1):
            if name in applied:
                continue
            log.info("applying migration %s", name)
            # executescript commits first, so run the statements one by one in our transaction.
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements_of(sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO _migrations (id, name, applied_utc) VALUES (?, ?, ?)",
                    (number, name, iso(utc_now())),
                )
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")


class _Transaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self.announcements: list[tuple[str, str]] = []

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._conn.execute(sql, params)
        return int(cursor.rowcount)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def notify(self, channel: str, payload: str = "") -> None:
        self.announcements.append((channel, payload))


class _SoleLeader:
    """On SQLite the one process always leads."""

    async def acquire(self) -> None:
        return None

    async def lost(self) -> None:
        await asyncio.Event().wait()

    async def release(self) -> None:
        return None


_WRITER_PRAGMAS = (
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
    # Statement journals and temporary tables in memory, not in temporary files.
    "PRAGMA temp_store = MEMORY",
)
_NO_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint = 0"


def _never() -> bool:
    return False


def _run_batch(conn: sqlite3.Connection, ops: list[WriteOp]) -> list[tuple[bool, Any]]:
    """On the writer's thread: every op in one transaction, one COMMIT for all. If one fails,
    all are rolled back and run again one by one (``_run_each``). An op only runs SQL on the
    connection, so running it twice is safe."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            outcomes.append((True, op(conn)))
        conn.execute("COMMIT")
        return outcomes
    except Exception:  # noqa: BLE001 - an op failed (or COMMIT did): retried one by one
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return _run_each(conn, ops)


def _run_each(conn: sqlite3.Connection, ops: list[WriteOp]) -> list[tuple[bool, Any]]:
    """Every op in its own savepoint, one COMMIT for all: a failing op rolls back only its
    own changes, and hands its error to its caller."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            conn.execute("SAVEPOINT op")
            try:
                outcomes.append((True, op(conn)))
            except Exception as exc:  # noqa: BLE001 - handed back to the op's caller
                conn.execute("ROLLBACK TO op")
                outcomes.append((False, exc))
            conn.execute("RELEASE op")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def statements_of(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
