"""The SQLite store: connections, pragmas, migrations, and group commit.

Two connections to one WAL database: a writer and a reader. In WAL mode the reader sees every
committed write and never waits for the writer.

Writes take one of two ways, serialised by one asyncio lock (statements of two coroutines must
never interleave inside one transaction):

- ``write(op)``, for the hot path (storing a turn, a usage row): ``op`` is a plain function run
  on the writer's own thread. Writes that arrive together are *group-committed*: one thread hop
  and one COMMIT for the whole batch, each op in its own SAVEPOINT so that one op's failure
  rolls back only that op. Under load this turns N transactions of five hops each into one.
- ``transaction()``, for the rest (admin actions): an async context with the connection.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .clock import iso, utc_now
from .migrations import MIGRATIONS

log = logging.getLogger(__name__)

Params = Iterable[Any] | dict[str, Any]
T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], Any]
CHECKPOINT_EVERY_S = 1.0
"""How often the WAL is folded into the database, off the write path."""
MAX_BATCH = 256
"""Writes committed together at most; a bound on how long one COMMIT holds the others."""


class Store:
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._pending: list[tuple[WriteOp, asyncio.Future[Any]]] = []
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self.path.parent and str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        try:
            await self._writer.execute("PRAGMA journal_mode = WAL")
            await self._migrate()
            # Checkpoints (copying the WAL into the database, with an fsync) run on a
            # connection and thread of their own, never inside a commit: done by SQLite's
            # auto-checkpoint, every thousandth commit waited several milliseconds (bench/).
            await self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            self._reader = await self._connect()
            self._checkpointer = await self._connect()
            self._checkpoints = asyncio.create_task(self._checkpoint_now_and_then())
        except BaseException:
            await self.close()  # no connection thread left behind by a failed start
            raise

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a read never opens a
        # transaction that pins an old WAL snapshot.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA synchronous = NORMAL")
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
        for conn in (self._checkpointer, self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._checkpointer = self._reader = self._writer = None

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise RuntimeError("store is not open")
        return self._writer

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return self._reader

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; committed on success, rolled back on any exception."""
        async with self._write_lock:
            conn = self.writer
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op(connection)`` in a write transaction, group-committed with the writes that
        arrive meanwhile. Returns what ``op`` returns, or raises what it raised (its own
        changes, and only those, rolled back)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

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
                                             else RuntimeError("store closed"))
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

    async def fetchone(self, sql: str, params: Params = ()) -> aiosqlite.Row | None:
        # execute_fetchall is one hop to the connection's thread; a cursor would take three.
        rows = await self.reader.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: Params = ()) -> list[aiosqlite.Row]:
        return list(await self.reader.execute_fetchall(sql, params))

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
            raise RuntimeError(
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
                for statement in _statements(sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO _migrations (id, name, applied_utc) VALUES (?, ?, ?)",
                    (number, name, iso(utc_now())),
                )
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")


def _run_batch(conn: sqlite3.Connection, ops: list[WriteOp]) -> list[tuple[bool, Any]]:
    """On the writer's thread: every op in its own savepoint, one COMMIT for all."""
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


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
