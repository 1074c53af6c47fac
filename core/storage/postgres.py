"""The PostgreSQL backend: any number of gateway processes on one database.

What must hold across processes lives here, in PostgreSQL's own mechanisms:

- per-key locks (the turns of one conversation) are advisory locks, each held on a connection of
  a pool of its own: a holder keeps it for the length of an upstream call, and must never starve
  the data pool that stores the turn it is waiting to write;
- changes (a key rotated, an account cooling) are announced with NOTIFY inside the transaction
  that makes them, and heard by every process on one listening connection; when that connection
  drops, every listener is told to reload (payload ``*``) once it is back, and caches are not
  trusted meanwhile;
- leadership (the one process that runs the Discord bot) is an advisory lock on a connection of
  its own, which PostgreSQL frees when the holder dies.

The SQL is the repositories' own, with ``?`` placeholders rewritten to ``$n`` once per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from ..locks import KeyedLocks
from .database import (
    ChangeListener,
    Dialect,
    IntegrityError,
    Row,
    Statement,
    StorageError,
    StorageUnavailable,
)
from .migrations_postgresql import MIGRATIONS

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x6761_7465_0001
"""Advisory lock key taken while migrating, so processes starting together migrate once."""
RECONNECT_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)
LEADER_POLL_S = 2.0
"""How often a follower tries the leadership lock."""
LEADER_CHECK_S = 1.0
"""How often the leader checks that its lock connection is alive."""
LEADER_GRACE_S = 3.0
"""A new leader waits this long before starting, so that a leader which lost its connection
(and so the lock) has noticed and stopped: two bots are never connected at once."""
KEEPALIVE = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
             "tcp_keepalives_count": "3"}
"""A leader whose machine vanished without closing its connection loses the lock in ~11 s."""

_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError,
                      asyncpg.InterfaceError, asyncio.TimeoutError)


def _dollars(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (our SQL has no ``?`` in literals)."""
    parts = sql.split("?")
    out = [parts[0]]
    for number, part in enumerate(parts[1:], start=1):
        out.append(f"${number}{part}")
    return "".join(out)


dollar_params = functools.lru_cache(maxsize=1024)(_dollars)
"""``_dollars``, remembered: the texts of single statements are few."""


_MODIFYING = ("INSERT ", "UPDATE ", "DELETE ")
MAX_PARTS = 200
MAX_PARAMETERS = 5000
"""A write beyond these goes as a transaction: PostgreSQL's protocol takes at most 32,767
parameters a statement, and a turn with thousands of tiny attachments would pass that."""


def _composable(sql: str) -> bool:
    """A plain INSERT, UPDATE or DELETE (no RETURNING, no WITH of its own, one statement): a
    part one data-modifying WITH can hold."""
    return sql.startswith(_MODIFYING) and "RETURNING" not in sql and ";" not in sql


def _guard_composable(texts: Sequence[str]) -> bool:
    """A guarded write one statement can hold: its guard an UPDATE or a DELETE, then plain
    inserts only (a DELETE or a SELECT after it would not see what the guard did)."""
    first, *rest = texts
    return first.startswith(("UPDATE ", "DELETE ")) and all(
        sql.startswith("INSERT ") and "SELECT" not in sql for sql in rest)


def _as_one(statements: Sequence[Statement], *, guarded: bool = False
            ) -> tuple[str, list[Any]] | None:
    """The statements as one, in PostgreSQL's ``$n`` form (see ``_compose``), and its
    parameters in order; None when they cannot go as one. The answers for small writes (a
    turn's, a follow-up's: a few kinds, made on every request) are remembered: composing a
    turn's cost 28 µs, and the same text object each time spares asyncpg hashing a new 1 KB
    string to find its prepared statement."""
    if not 0 < len(statements) <= MAX_PARTS:
        return None
    params = [value for _, part in statements for value in part]
    if len(params) > MAX_PARAMETERS:
        return None
    texts = tuple(sql for sql, _ in statements)
    if len(texts) <= _REMEMBERED_PARTS and sum(map(len, texts)) <= _REMEMBERED_CHARS:
        text = _remembered(texts, guarded)
    else:  # each count of attachments or titles makes another text: big ones are not kept
        text = _one_text(texts, guarded)
    return None if text is None else (text, params)


def _one_text(texts: tuple[str, ...], guarded: bool) -> str | None:
    if not all(_composable(sql) for sql in texts) or (
            guarded and not _guard_composable(texts)):
        return None
    return _dollars(_compose(texts, guarded))


_REMEMBERED_PARTS, _REMEMBERED_CHARS = 8, 4096
_remembered = functools.lru_cache(maxsize=128)(_one_text)


def _compose(texts: Sequence[str], guarded: bool) -> str:
    """``a; b; c`` as ``WITH w0 AS (a), w1 AS (b) c``. ``guarded``: ``WITH w0 AS (a RETURNING
    1), w1 AS (b), w2 AS (c) SELECT 1 / count``, the count of rows ``a`` changed: zero fails
    the whole statement before the others end."""
    if guarded:
        first, *rest = texts
        parts = [f"{first} RETURNING 1", *rest]
        with_ = ", ".join(f"w{n} AS ({sql})" for n, sql in enumerate(parts))
        return f"WITH {with_} SELECT 1 / (SELECT count(*) FROM w0)"
    *before, last = texts
    if not before:
        return last
    with_ = ", ".join(f"w{n} AS ({sql})" for n, sql in enumerate(before))
    return f"WITH {with_} {last}"


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a string (collisions only serialise two keys)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big",
                          signed=True)


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class PostgresDatabase:
    dialect: Dialect = "postgresql"
    shared = True

    def __init__(self, url: str, *, password: str | None = None, pool_size: int = 20,
                 connect_timeout_s: float = 10.0) -> None:
        self.url = url.replace("postgres://", "postgresql://", 1)
        self._password = password
        self._pool_size = pool_size
        self._timeout = connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._lock_pool: asyncpg.Pool | None = None
        self._local_locks = KeyedLocks()
        self._delivering = KeyedLocks()
        self._listeners: dict[str, list[ChangeListener]] = {}
        self._listening: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self.changes_reliable = False
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"PostgreSQL database {safe_url(self.url)}"

    async def _connect(self, **extra: Any) -> asyncpg.Connection:
        return await asyncpg.connect(self.url, password=self._password, timeout=self._timeout,
                                     **extra)

    async def open(self) -> None:
        where = safe_url(self.url)
        try:
            migrator = await self._connect()
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise StorageUnavailable(f"cannot connect to {where}: {_reason(exc)}") from None
        try:
            await self._migrate(migrator)
        finally:
            await migrator.close()
        try:
            self._pool = await asyncpg.create_pool(
                self.url, password=self._password, min_size=1, max_size=self._pool_size,
                timeout=self._timeout, reset=_keep_session)
            self._lock_pool = await asyncpg.create_pool(
                self.url, password=self._password, min_size=0, max_size=self._pool_size,
                timeout=self._timeout, reset=_unlock_all)
            self._listening = await self._connect_listener()
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            await self.close()
            raise StorageUnavailable(f"cannot connect to {where}: {_reason(exc)}") from None
        self.changes_reliable = True
        self._listen_task = asyncio.create_task(self._keep_listening(), name="pg listener")

    async def __aenter__(self) -> PostgresDatabase:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.changes_reliable = False
        for task in list(self._tasks):
            task.cancel()
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
            self._listen_task = None
        if self._listening is not None:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await self._listening.close(timeout=2)
            self._listening = None
        for pool in (self._lock_pool, self._pool):
            if pool is not None:
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    await asyncio.wait_for(pool.close(), 5)
        self._pool = self._lock_pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageUnavailable("the database is not open")
        return self._pool

    # ----------------------------------------------------------------- reads and writes

    async def fetchone(self, sql: str, params: Sequence[Any] = (), *,
                       quick: bool = False) -> Row | None:
        try:
            row: Row | None = await self.pool.fetchrow(dollar_params(sql), *params)
        except _CONNECTION_ERRORS as exc:
            raise StorageUnavailable(f"the database did not answer: {_reason(exc)}") from None
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = (), *,
                       quick: bool = False) -> list[Row]:
        try:
            rows: list[Row] = await self.pool.fetch(dollar_params(sql), *params)
        except _CONNECTION_ERRORS as exc:
            raise StorageUnavailable(f"the database did not answer: {_reason(exc)}") from None
        return rows

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Transaction]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield _Transaction(conn)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from None
        except _CONNECTION_ERRORS as exc:
            raise StorageUnavailable(f"the database did not answer: {_reason(exc)}") from None

    async def write(self, statements: Sequence[Statement], *, guarded: bool = False,
                    quick: bool = False) -> bool:
        one = _as_one(statements, guarded=guarded)
        if one is not None:
            # One round trip, not one a statement plus BEGIN and COMMIT (7 for a turn): the
            # statements as the parts of one statement, which PostgreSQL runs as a whole or
            # not at all. Its parts all see the database as it was before it (foreign keys
            # are checked at its end), which a write's statements need not: none reads what
            # another wrote. A guarded one fails with a division by zero when its first part
            # changed nothing, which undoes the others.
            text, values = one
            try:
                await self.pool.execute(text, *values)
            except asyncpg.DivisionByZeroError:
                return False
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise IntegrityError(str(exc)) from None
            except _CONNECTION_ERRORS as exc:
                raise StorageUnavailable(f"the database did not answer: {_reason(exc)}") \
                    from None
            return True
        async with self.transaction() as tx:
            for number, (sql, params) in enumerate(statements):
                if await tx.execute(sql, params) == 0 and guarded and number == 0:
                    return False
        return True

    # ----------------------------------------------------------------- across processes

    @contextlib.asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        # Waiters of one process queue in memory, so each process holds at most one lock
        # connection per key; the advisory lock orders the processes.
        async with self._local_locks[key]:
            if self._lock_pool is None:
                raise StorageUnavailable("the database is not open")
            try:
                async with self._lock_pool.acquire() as conn:
                    await conn.execute("SELECT pg_advisory_lock($1)", lock_key(key))
                    # Released with the connection: the pool's reset (_unlock_all) runs
                    # pg_advisory_unlock_all(), also after a cancelled wait.
                    yield
            except _CONNECTION_ERRORS as exc:
                raise StorageUnavailable(f"the database did not answer: {_reason(exc)}") \
                    from None

    def commit_on_the_loop_when(self, quiet: Callable[[], bool]) -> None:
        """Nothing to do: asyncpg's writes never leave the event loop's thread."""

    def subscribe(self, channel: str, listener: ChangeListener) -> None:
        first = channel not in self._listeners
        self._listeners.setdefault(channel, []).append(listener)
        if first and self._listening is not None and not self._listening.is_closed():
            # Subscribed after the listener connected (tests, late parts): listen now too.
            self._spawn(self._listen_to(self._listening, channel))

    async def _listen_to(self, conn: asyncpg.Connection, channel: str) -> None:
        with contextlib.suppress(*_CONNECTION_ERRORS):
            await conn.add_listener(channel, self._heard)

    def _heard(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._spawn(self._deliver(channel, payload))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` beside the caller, kept (and cancelled on close) until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, channel: str, payload: str) -> None:
        # One change at a time per channel, in the order heard: a listener that reads the
        # state it was told of (the account pool does) must not apply an older read after a
        # newer one, which would leave this process on a stale state until the next change.
        async with self._delivering[channel]:
            await self._deliver_now(channel, payload)

    async def _deliver_now(self, channel: str, payload: str) -> None:
        for listener in self._listeners.get(channel, ()):
            try:
                outcome = listener(payload)
                if outcome is not None:
                    await outcome
            except Exception:
                log.exception("a listener of %s failed on %r", channel, payload)

    async def _connect_listener(self) -> asyncpg.Connection:
        conn = await self._connect()
        try:
            for channel in list(self._listeners):
                await conn.add_listener(channel, self._heard)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _keep_listening(self) -> None:
        """Watch the listening connection; when it is lost, reconnect, then tell every
        listener to reload (payload ``*``): announcements made meanwhile were missed."""
        while True:
            conn = self._listening
            if conn is not None:
                await _until_lost(conn)
                self.changes_reliable = False
                self._listening = None
                conn.terminate()
                log.warning("lost the connection that hears changes from other processes; "
                            "caches are off until it is back")
            attempt = 0
            while self._listening is None:
                try:
                    self._listening = await self._connect_listener()
                except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                    # Refusals too: a server starting up or shutting down says so in words.
                    delay = RECONNECT_DELAYS_S[min(attempt, len(RECONNECT_DELAYS_S) - 1)]
                    attempt += 1
                    log.warning("cannot listen for changes on %s (%s); retrying in %.1f s",
                                safe_url(self.url), _reason(exc), delay)
                    await asyncio.sleep(delay)
            self.changes_reliable = True
            log.info("listening for changes from other processes again")
            for channel in list(self._listeners):
                await self._deliver(channel, "*")

    def leadership(self, name: str) -> _AdvisoryLeadership:
        return _AdvisoryLeadership(self, lock_key(f"leader:{name}"))

    # ----------------------------------------------------------------- migrations

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations ("
                " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, applied_utc TEXT NOT NULL)")
            applied = {row[0] for row in await conn.fetch("SELECT name FROM _migrations")}
            unknown = applied - {name for name, _ in MIGRATIONS}
            if unknown:
                raise StorageError(
                    f"{safe_url(self.url)} has migrations this code does not know: "
                    f"{sorted(unknown)}; it was written by a newer version")
            for number, (name, sql) in enumerate(MIGRATIONS, start=1):
                if name in applied:
                    continue
                log.info("applying migration %s", name)
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO _migrations (id, name, applied_utc) VALUES ($1, $2,"
                        " to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))",
                        number, name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The data pool's reset: none. asyncpg's own, after every query a pool runs, is a round
    trip of its own (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): half
    of the round trips of a stored turn. The data pool's connections are never given session
    state to undo: its statements run alone or in transactions asyncpg closes (an open one
    is still rolled back on release), and the locks, the listening and the migrations each
    have connections of their own."""


async def _unlock_all(conn: asyncpg.Connection) -> None:
    """The lock pool's reset: the advisory lock its holder took, and nothing else to undo."""
    await conn.execute("SELECT pg_advisory_unlock_all()")


class _Transaction:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _rowcount(await self._conn.execute(dollar_params(sql), *params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self._conn.fetchrow(dollar_params(sql), *params)
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = await self._conn.fetch(dollar_params(sql), *params)
        return rows

    async def notify(self, channel: str, payload: str = "") -> None:
        # Delivered to every listening session (this process's too) when the transaction
        # commits; never if it rolls back.
        await self._conn.execute("SELECT pg_notify($1, $2)", channel, payload)


class _AdvisoryLeadership:
    """Leads while it holds an advisory lock on a connection of its own."""

    def __init__(self, db: PostgresDatabase, key: int) -> None:
        self._db = db
        self._key = key
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> None:
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._db._connect(server_settings=KEEPALIVE)
                if await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key):
                    await asyncio.sleep(LEADER_GRACE_S)
                    return
            except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("leadership: the database did not answer (%s)", _reason(exc))
                await self._drop()
            await asyncio.sleep(LEADER_POLL_S)

    async def lost(self) -> None:
        while True:
            await asyncio.sleep(LEADER_CHECK_S)
            conn = self._conn
            try:
                if conn is None or conn.is_closed():
                    break
                await conn.fetchval("SELECT 1", timeout=LEADER_CHECK_S * 2)
            except (*_CONNECTION_ERRORS, asyncpg.PostgresError):
                break
        await self._drop()

    async def release(self) -> None:
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing the session frees its advisory locks.
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await conn.close(timeout=2)
            if not conn.is_closed():
                conn.terminate()


async def _until_lost(conn: asyncpg.Connection) -> None:
    """Return when ``conn`` is closed, or stops answering (a silent death ends here within
    seconds too)."""
    closed = asyncio.Event()
    conn.add_termination_listener(lambda _conn: closed.set())
    while not closed.is_set():
        try:
            await asyncio.wait_for(closed.wait(), 5)
        except TimeoutError:
            try:
                await conn.fetchval("SELECT 1", timeout=5)
            except _CONNECTION_ERRORS:
                return


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return "the password was refused (set [storage] password_env or the URL's password)"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"{text} (create it with createdb)"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return text
