"""Group commit: concurrent writes share one transaction, yet each lands or fails on its own."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from core.storage.database import IntegrityError
from core.storage.sqlite import SqliteDatabase as Store


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
    async with Store(path) as store:
        await store.write([("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", ())])
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
