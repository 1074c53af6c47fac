"""Group commit: concurrent writes share one transaction, yet each lands or fails on its own."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from core.chat import ChatRequest, StartInfo
from core.errors import TooLarge
from core.gateway import Gateway
from core.models import Principal
from core.storage.database import IntegrityError
from core.storage.sqlite import SqliteDatabase as Store
from tests.core.conftest import Listener


async def test_concurrent_writes_land_and_a_failing_one_fails_alone(tmp_path: Path) -> None:
    async with Store(tmp_path / "db.sqlite") as store:
        await store.write([("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", ())])

        def insert(k: int) -> list[tuple[str, tuple[object, ...]]]:
            return [("INSERT INTO t VALUES (?, ?)", (k, f"v{k}"))]

        writes = [insert(k) for k in range(50)]
        writes.append(insert(7))  # a duplicate key: this write, and only it, must fail
        results = await asyncio.gather(*(store.write(w) for w in writes),
                                       return_exceptions=True)

        assert results[:50] == [True] * 50
        assert isinstance(results[50], IntegrityError)
        rows = await store.fetchall("SELECT k, v FROM t ORDER BY k")
        assert [(r[0], r[1]) for r in rows] == [(k, f"v{k}") for k in range(50)]


async def test_a_failing_write_keeps_none_of_its_own_changes(tmp_path: Path) -> None:
    async with Store(tmp_path / "db.sqlite") as store:
        await store.write([("CREATE TABLE t (k INTEGER PRIMARY KEY)", ())])
        half_done = [("INSERT INTO t VALUES (1)", ()), ("INSERT INTO t VALUES (1)", ())]
        with pytest.raises(IntegrityError):
            await store.write(half_done)
        await store.write([("INSERT INTO t VALUES (2)", ())])
        assert [r[0] for r in await store.fetchall("SELECT k FROM t")] == [2]


async def test_writes_in_flight_land_before_the_store_closes(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    await store.open()
    await store.write([("CREATE TABLE t (k INTEGER)", ())])
    pending = [asyncio.ensure_future(store.write([("INSERT INTO t VALUES (?)", (k,))]))
               for k in range(20)]
    await asyncio.sleep(0)  # the writes are queued, not yet committed
    await store.close()
    await asyncio.gather(*pending)
    async with Store(tmp_path / "db.sqlite") as reopened:
        assert (await reopened.fetchone("SELECT count(*) FROM t"))[0] == 20  # type: ignore[index]


async def test_closing_folds_the_wal_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with Store(path) as store:
        await store.write([("CREATE TABLE t (v TEXT)", ())])
        for _ in range(20):
            await store.write([("INSERT INTO t VALUES (?)", ("x" * 4000,))])
        assert (tmp_path / "db.sqlite-wal").stat().st_size > 80_000  # commits go to the WAL
    wal = tmp_path / "db.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 20


async def test_writes_retried_after_a_failure_in_their_batch_land_once(tmp_path: Path) -> None:
    """A batch runs without savepoints; when one write fails it is rolled back and run again
    write by write: the others must land exactly once, the failing one not at all."""
    async with Store(tmp_path / "db.sqlite") as store:
        await store.write([("CREATE TABLE t (v INTEGER CHECK (v >= 0))", ())])
        values = [*range(30), -1, *range(30, 60)]
        results = await asyncio.gather(
            *(store.write([("INSERT INTO t VALUES (?)", (v,)),
                           ("INSERT INTO t VALUES (?)", (v + 1000,))]) for v in values),
            return_exceptions=True)
        assert [r is True for r in results] == [v >= 0 for v in values]
        assert isinstance(results[30], IntegrityError)
        rows = await store.fetchall("SELECT v FROM t ORDER BY v")
        assert [r[0] for r in rows] == [*range(60), *range(1000, 1060)]



async def test_a_quick_read_on_the_event_loop_sees_every_commit(tmp_path: Path) -> None:
    # Quick reads (a conversation by its id, its last turns) run on a connection of the event
    # loop's own: never on a snapshot older than the last write the caller saw land.
    async with Store(tmp_path / "db.sqlite") as store:
        await store.write([("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", ())])
        for k in range(5):
            await store.write([("INSERT INTO t VALUES (?, ?)", (k, f"v{k}"))])
            row = await store.fetchone("SELECT v FROM t WHERE k = ?", (k,), quick=True)
            assert row is not None and row["v"] == f"v{k}"
            await store.write([("UPDATE t SET v = 'changed' WHERE k = ?", (k,))])
            rows = await store.fetchall("SELECT v FROM t ORDER BY k DESC", quick=True)
            assert rows[0]["v"] == "changed"
        await store.write([("DELETE FROM t WHERE k = 4", ())])
        assert await store.fetchone("SELECT v FROM t WHERE k = 4", quick=True) is None


_RECOVERING = r"""
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
for offset in (120, 122):  # the WAL's write lock and recover lock: a recovery is running
    fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, offset, 1, 0))
os.pwrite(fd, b"\0" * 136, 0)  # and the WAL index's header is no longer valid
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


async def test_a_quick_read_during_a_recovery_waits_on_the_readers_thread(
        tmp_path: Path) -> None:
    # Another process recovering the WAL (after a crash) makes SQLite answer a reader
    # SQLITE_BUSY_RECOVERY: the quick read is not refused, and not waited for on the event
    # loop either; the reader's thread waits for the recovery and answers.
    path = tmp_path / "db.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:  # the schema exists at open, as
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")  # the migrations' does
    async with Store(path) as store:
        await store.write([("INSERT INTO t VALUES (1, 'one')", ())])
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _RECOVERING, f"{path}-shm", "0.5",
            stdout=asyncio.subprocess.PIPE)
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"held"
        read = asyncio.ensure_future(store.fetchone("SELECT v FROM t WHERE k = 1", quick=True))
        ticks = 0
        while not read.done():  # the event loop goes on turning while the read waits
            await asyncio.sleep(0.01)
            ticks += 1
        row = read.result()
        assert row is not None and row["v"] == "one"
        assert ticks >= 10  # it waited for the recovery (0.5 s), off the event loop
        await holder.wait()


# -- a quiet gateway's writes, committed on the event loop's thread --------------------------


@pytest.mark.parametrize("quiet", [True, False], ids=["on the loop", "on the writer's thread"])
async def test_a_write_lands_or_fails_alone_on_either_thread(tmp_path: Path, quiet: bool) -> None:
    async with Store(tmp_path / "db.sqlite") as store:
        store.commit_on_the_loop_when(lambda: quiet)
        await store.write([("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", ())])
        assert await store.write([("INSERT INTO t VALUES (1, 'one')", ())], quick=True) is True
        with pytest.raises(IntegrityError):  # its second statement fails: none of it stays
            await store.write([("INSERT INTO t VALUES (2, 'two')", ()),
                               ("INSERT INTO t VALUES (1, 'again')", ())], quick=True)
        # Guarded: the first statement changes nothing, so nothing more runs.
        assert await store.write([("UPDATE t SET v = 'x' WHERE k = 9", ()),
                                  ("INSERT INTO t VALUES (3, 'three')", ())],
                                 guarded=True, quick=True) is False
        assert [tuple(r) for r in await store.fetchall("SELECT k, v FROM t")] == [(1, "one")]
        await store.write([("CREATE TABLE c (k INTEGER REFERENCES t(k))", ())])
        with pytest.raises(IntegrityError):  # foreign keys are checked on both threads
            await store.write([("INSERT INTO c VALUES (9)", ())], quick=True)
        with sqlite3.connect(tmp_path / "db.sqlite") as other:  # committed, for everyone
            assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 1


async def test_a_quiet_write_commits_on_the_event_loops_thread(tmp_path: Path) -> None:
    async with Store(tmp_path / "db.sqlite") as store:
        threads: list[int] = []

        def op(conn: sqlite3.Connection) -> None:
            threads.append(threading.get_ident())

        await store._write_op(op, quick=True)  # not quiet (the default): the writer's thread
        store.commit_on_the_loop_when(lambda: True)
        await store._write_op(op, quick=True)
        await store._write_op(op)  # quiet, but not a quick write: the writer's thread
        assert threads[0] != threading.get_ident()
        assert threads[1] == threading.get_ident()
        assert threads[2] != threading.get_ident()


_WRITING = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO t VALUES (1, 'theirs')")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


async def test_a_quiet_write_waits_for_another_process_off_the_event_loop(
        tmp_path: Path) -> None:
    # Another process holds the write lock: the write is not refused, and not waited for on
    # the event loop either; the writer's thread waits its turn and commits.
    path = tmp_path / "db.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    async with Store(path) as store:
        store.commit_on_the_loop_when(lambda: True)
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITING, str(path), "0.5", stdout=asyncio.subprocess.PIPE)
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"held"
        write = asyncio.ensure_future(store.write([("INSERT INTO t VALUES (2, 'ours')", ())],
                                                  quick=True))
        ticks = 0
        while not write.done():  # the event loop goes on turning while the write waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert write.result() is True
        assert ticks >= 10  # it waited for the other process (0.5 s), off the event loop
        await holder.wait()
        rows = await store.fetchall("SELECT k, v FROM t ORDER BY k", quick=True)
        assert [tuple(r) for r in rows] == [(1, "theirs"), (2, "ours")]


class _Waiting(Listener):
    """Holds its prompt in flight once the answer has started, until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.answering, self.go = asyncio.Event(), asyncio.Event()

    async def started(self, info: StartInfo) -> None:
        await super().started(info)
        self.answering.set()
        await self.go.wait()


async def test_the_gateway_is_quiet_while_at_most_one_prompt_is_answered(
        gw: Gateway, user: Principal) -> None:
    """What lets a write commit on the event loop: one prompt in flight, not two."""
    first, second = _Waiting(), _Waiting()
    one = asyncio.ensure_future(gw.chat(user, ChatRequest(prompt="one"), listener=first))
    await first.answering.wait()
    assert gw.chat_service.quiet()
    two = asyncio.ensure_future(gw.chat(user, ChatRequest(prompt="two"), listener=second))
    await second.answering.wait()
    assert not gw.chat_service.quiet()
    first.go.set()
    await one
    assert gw.chat_service.quiet()
    second.go.set()
    await two
    with pytest.raises(TooLarge):  # refused before any answer: not counted as answering
        await gw.chat(user, ChatRequest(prompt="x" * (gw.settings.chat.max_prompt_chars + 1)))
    assert gw.chat_service.answering == 0
    for done in (one, two):
        _, turns = await gw.recall(user, done.result().conversation.id)
        assert [t.reply for t in turns] == [done.result().turn.reply]


@pytest.mark.parametrize("quiet", [True, False], ids=["on the loop", "on the writer's thread"])
async def test_none_and_bools_are_stored_as_null_and_integers(tmp_path: Path,
                                                              quiet: bool) -> None:
    # Both have adapters registered (cheaper binding): SQLite must store what it always did.
    async with Store(tmp_path / "db.sqlite") as store:
        store.commit_on_the_loop_when(lambda: quiet)
        await store.write([("CREATE TABLE t (a, b, c)", ())])
        await store.write([("INSERT INTO t VALUES (?, ?, ?)", (None, True, False))], quick=True)
        row = await store.fetchone("SELECT typeof(a), b, typeof(b), c, a IS NULL FROM t")
        assert row is not None and tuple(row) == ("null", 1, "integer", 0, 1)
