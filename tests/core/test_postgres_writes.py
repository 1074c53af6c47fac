"""A PostgreSQL write of several plain statements goes as one statement (one round trip): it
must still land whole or not at all, with foreign keys between its parts, and a write the
single statement cannot hold must still work as a transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.storage.database import IntegrityError
from core.storage.postgres import PostgresDatabase, _remembered, dollar_params
from tests.conftest import drop_pg_database, new_pg_database
from tests.pg import PgCluster

SCHEMA = [
    ("CREATE TABLE parent (id INTEGER PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0)", ()),
    ("CREATE TABLE child (id INTEGER PRIMARY KEY,"
     " parent_id INTEGER NOT NULL REFERENCES parent(id), note TEXT)", ()),
]


@pytest.fixture
async def db(pg_cluster: PgCluster) -> AsyncIterator[PostgresDatabase]:
    url = await new_pg_database(pg_cluster)
    try:
        async with PostgresDatabase(url) as database:
            for statement in SCHEMA:
                await database.write([statement])
            yield database
    finally:
        await drop_pg_database(pg_cluster, url)


async def rows(db: PostgresDatabase, table: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await db.fetchall(f"SELECT * FROM {table} ORDER BY id")]


async def test_a_parent_and_its_children_land_in_one_write(db: PostgresDatabase) -> None:
    remembered = dollar_params.cache_info().currsize
    assert await db.write([
        ("INSERT INTO parent (id) VALUES (?)", (1,)),
        ("INSERT INTO child (id, parent_id, note) VALUES (?, ?, ?), (?, ?, ?)",
         (10, 1, "a", 11, 1, "b")),
        ("UPDATE parent SET n = n + ? WHERE id = ?", (5, 99)),  # no row: fine, unguarded
        ("INSERT INTO parent (id, n) VALUES (?, ?) ON CONFLICT (id) DO UPDATE"
         " SET n = parent.n + excluded.n", (2, 3)),
    ])
    # Each count of attachments or titles makes another text: a write's is not kept among
    # the single statements' texts.
    assert dollar_params.cache_info().currsize == remembered
    assert await rows(db, "parent") == [(1, 0), (2, 3)]
    assert await rows(db, "child") == [(10, 1, "a"), (11, 1, "b")]


async def test_small_writes_texts_are_remembered_and_big_ones_are_not(
        db: PostgresDatabase) -> None:
    """A turn's write (a few statements) goes as the same text each time; a write of many
    parts (a turn with many attachments, a batch of titles) is composed and forgotten, so
    memory does not grow with the counts seen."""
    small = [("INSERT INTO parent (id) VALUES (?)", (1,)),
             ("INSERT INTO child (id, parent_id) VALUES (?, ?)", (10, 1))]
    assert await db.write(small)
    before = _remembered.cache_info()
    small_again = [("INSERT INTO parent (id) VALUES (?)", (2,)),
                   ("INSERT INTO child (id, parent_id) VALUES (?, ?)", (20, 2))]
    assert await db.write(small_again)
    after = _remembered.cache_info()
    assert (after.hits, after.misses, after.currsize) == (before.hits + 1, before.misses,
                                                          before.currsize)
    big = [("INSERT INTO parent (id) VALUES (?)", (3,))] + [
        ("INSERT INTO child (id, parent_id) VALUES (?, ?)", (100 + n, 3)) for n in range(12)]
    assert await db.write(big)
    assert _remembered.cache_info() == after  # neither looked up nor kept
    assert [r[0] for r in await rows(db, "child")] == [10, 20, *range(100, 112)]


async def test_a_failing_part_keeps_none_of_the_write(db: PostgresDatabase) -> None:
    for failing in (
        [("INSERT INTO parent (id) VALUES (?)", (1,)),
         ("INSERT INTO child (id, parent_id) VALUES (?, ?)", (10, 2))],  # no parent 2
        [("INSERT INTO parent (id) VALUES (?)", (1,)),
         ("INSERT INTO parent (id) VALUES (?)", (1,))],  # the same key twice
    ):
        with pytest.raises(IntegrityError):
            await db.write(failing)
        assert await rows(db, "parent") == [] and await rows(db, "child") == []


async def test_writes_one_statement_cannot_hold_still_run_as_a_transaction(
        db: PostgresDatabase) -> None:
    await db.write([("INSERT INTO parent (id) VALUES (?)", (1,)),
                    ("insert into parent (id) values (?) returning id", (2,))])
    assert await rows(db, "parent") == [(1, 0), (2, 0)]
    # Guarded, with a part that must see the guard's change (a DELETE after it): nothing after
    # a first statement that changed nothing, and all of it otherwise.
    for key, landed in ((3, False), (1, True)):
        assert await db.write([("UPDATE parent SET n = 1 WHERE id = ?", (key,)),
                               ("DELETE FROM parent WHERE id = ?", (2,)),
                               ("INSERT INTO parent (id) VALUES (?)", (4,))],
                              guarded=True) is landed
    assert await rows(db, "parent") == [(1, 1), (4, 0)]


async def test_a_guarded_write_lands_whole_or_not_at_all(db: PostgresDatabase) -> None:
    """As a follow-up's turn: its conversation updated, then rows that refer to it."""
    await db.write([("INSERT INTO parent (id) VALUES (?)", (1,))])
    assert await db.write([
        ("UPDATE parent SET n = n + 1 WHERE id = ?", (1,)),
        ("INSERT INTO child (id, parent_id, note) VALUES (?, ?, ?)", (10, 1, "a")),
    ], guarded=True)
    # Its parent gone meanwhile: False, and nothing of it stays.
    assert not await db.write([
        ("UPDATE parent SET n = n + 1 WHERE id = ?", (2,)),
        ("INSERT INTO child (id, parent_id, note) VALUES (?, ?, ?)", (11, 1, "b")),
    ], guarded=True)
    # A later part failing keeps none of it either, the guard's change included.
    with pytest.raises(IntegrityError):
        await db.write([
            ("UPDATE parent SET n = n + 1 WHERE id = ?", (1,)),
            ("INSERT INTO child (id, parent_id, note) VALUES (?, ?, ?)", (10, 1, "again")),
        ], guarded=True)
    assert await rows(db, "parent") == [(1, 1)]
    assert await rows(db, "child") == [(10, 1, "a")]


async def test_a_write_past_one_statements_parameters_still_lands(db: PostgresDatabase) -> None:
    """PostgreSQL takes at most 32,767 parameters a statement: a write whose parts hold more
    together (a turn with thousands of tiny attachments) goes as a transaction."""
    await db.write([("INSERT INTO parent (id) VALUES (?)", (1,))])
    rows_each = 6000

    def insert(first: int) -> tuple[str, tuple[object, ...]]:
        values = ", ".join(["(?, ?)"] * rows_each)
        params = [v for n in range(first, first + rows_each) for v in (n, 1)]
        return f"INSERT INTO child (id, parent_id) VALUES {values}", tuple(params)

    assert await db.write([insert(0), insert(rows_each), insert(2 * rows_each)])
    count = await db.fetchone("SELECT count(*) FROM child")
    assert count is not None and count[0] == 3 * rows_each
