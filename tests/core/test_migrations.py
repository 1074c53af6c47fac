"""The schema: a blank database is migrated to exactly the expected tables, columns and indexes;
reopening changes nothing; WAL and foreign keys are on for every connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.storage.database import IntegrityError, StorageError
from core.storage.migrations_sqlite import MIGRATIONS
from core.storage.sqlite import SqliteDatabase as Store

# (name, declared type, NOT NULL, primary key) per column, in order.
EXPECTED_COLUMNS: dict[str, list[tuple[str, str, int, int]]] = {
    "_migrations": [
        ("id", "INTEGER", 0, 1),
        ("name", "TEXT", 1, 0),
        ("applied_utc", "TEXT", 1, 0),
    ],
    "principals": [
        ("id", "INTEGER", 0, 1),
        ("role", "TEXT", 1, 0),
        ("name", "TEXT", 1, 0),
        ("client_id", "INTEGER", 0, 0),
        ("external_id", "TEXT", 0, 0),
        ("plus", "INTEGER", 1, 0),
        ("key_hash", "BLOB", 1, 0),
        ("key_prefix", "TEXT", 1, 0),
        ("own_key_enc", "BLOB", 0, 0),
        ("created_utc", "TEXT", 1, 0),
        ("disabled_utc", "TEXT", 0, 0),
        ("last_used_utc", "TEXT", 0, 0),
        ("limits_json", "TEXT", 0, 0),
    ],
    "conversations": [
        ("id", "TEXT", 0, 1),
        ("owner_id", "INTEGER", 1, 0),
        ("title", "TEXT", 1, 0),
        ("mode", "TEXT", 1, 0),
        ("account", "TEXT", 0, 0),
        ("model", "TEXT", 1, 0),
        ("client_id", "INTEGER", 0, 0),
        ("external_ref", "TEXT", 0, 0),
        ("turn_count", "INTEGER", 1, 0),
        ("created_utc", "TEXT", 1, 0),
        ("updated_utc", "TEXT", 1, 0),
    ],
    "turns": [
        ("id", "TEXT", 0, 1),
        ("conversation_id", "TEXT", 1, 0),
        ("parent_id", "TEXT", 0, 0),
        ("position", "INTEGER", 1, 0),
        ("prompt", "TEXT", 1, 0),
        ("reply", "TEXT", 1, 0),
        ("model", "TEXT", 1, 0),
        ("upstream_id", "TEXT", 0, 0),
        ("prompt_utc", "TEXT", 1, 0),
        ("reply_utc", "TEXT", 1, 0),
        ("duration_ms", "INTEGER", 1, 0),
        ("input_tokens", "INTEGER", 0, 0),
        ("output_tokens", "INTEGER", 0, 0),
        ("exchange_json", "TEXT", 0, 0),
        ("stopped", "INTEGER", 1, 0),
        ("context_digest", "BLOB", 0, 0),
    ],
    "attachments": [
        ("sha256", "TEXT", 0, 1),
        ("mime_type", "TEXT", 1, 0),
        ("size_bytes", "INTEGER", 1, 0),
        ("data", "BLOB", 1, 0),
        ("created_utc", "TEXT", 1, 0),
    ],
    "turn_attachments": [
        ("turn_id", "TEXT", 1, 1),
        ("sha256", "TEXT", 1, 2),
    ],
    "usage": [
        ("id", "INTEGER", 0, 1),
        ("principal_id", "INTEGER", 0, 0),
        ("client_id", "INTEGER", 0, 0),
        ("conversation_id", "TEXT", 0, 0),
        ("account", "TEXT", 0, 0),
        ("model", "TEXT", 0, 0),
        ("endpoint", "TEXT", 1, 0),
        ("outcome", "TEXT", 1, 0),
        ("created_utc", "TEXT", 1, 0),
        ("duration_ms", "INTEGER", 1, 0),
        ("input_tokens", "INTEGER", 0, 0),
        ("output_tokens", "INTEGER", 0, 0),
        ("cost", "REAL", 0, 0),
        ("estimated", "INTEGER", 1, 0),
        ("purpose", "TEXT", 1, 0),
        ("own_key", "INTEGER", 1, 0),
    ],
    "web_sessions": [
        ("id_hash", "BLOB", 0, 1),
        ("principal_id", "INTEGER", 1, 0),
        ("key_hash", "BLOB", 1, 0),
        ("csrf_token", "TEXT", 1, 0),
        ("flash_json", "TEXT", 0, 0),
        ("created_utc", "TEXT", 1, 0),
        ("expires_utc", "TEXT", 1, 0),
    ],
    "account_state": [
        ("name", "TEXT", 0, 1),
        ("cooling_until", "REAL", 1, 0),
        ("cooling_reason", "TEXT", 0, 0),
        ("out_reason", "TEXT", 0, 0),
        ("updated_utc", "TEXT", 1, 0),
        ("version", "INTEGER", 1, 0),
    ],
    "spend": [
        ("scope_id", "INTEGER", 1, 1),
        ("period", "TEXT", 1, 2),
        ("requests", "INTEGER", 1, 0),
        ("tokens", "INTEGER", 1, 0),
        ("cost", "REAL", 1, 0),
    ],
    "budget_alerts": [
        ("scope_id", "INTEGER", 1, 1),
        ("budget", "TEXT", 1, 2),
        ("period", "TEXT", 1, 3),
        ("threshold", "INTEGER", 1, 4),
        ("used", "REAL", 1, 0),
        ("budget_limit", "REAL", 1, 0),
        ("created_utc", "TEXT", 1, 0),
        ("delivered_utc", "TEXT", 0, 0),
    ],
    "personas": [
        ("client_id", "INTEGER", 1, 1),
        ("channel_ref", "TEXT", 1, 2),
        ("label", "TEXT", 1, 0),
        ("system_prompt", "TEXT", 1, 0),
        ("updated_utc", "TEXT", 1, 0),
    ],
}

# Named indexes: (table, unique, columns).
EXPECTED_INDEXES = {
    "principals_client": ("principals", 0, ["client_id"]),
    "principals_admin_external": ("principals", 1, ["external_id"]),
    "conversations_owner_updated": ("conversations", 0, ["owner_id", "updated_utc"]),
    "conversations_updated": ("conversations", 0, ["updated_utc"]),
    "usage_principal": ("usage", 0, ["principal_id", "created_utc"]),
    "usage_created": ("usage", 0, ["created_utc"]),
    "usage_client": ("usage", 0, ["client_id", "created_utc"]),
    "web_sessions_principal": ("web_sessions", 0, ["principal_id"]),
    "web_sessions_expires": ("web_sessions", 0, ["expires_utc"]),
    "turn_attachments_sha256": ("turn_attachments", 0, ["sha256"]),
    "turns_context_digest": ("turns", 0, ["context_digest"]),
}
# Indexes SQLite makes for UNIQUE constraints: (table, columns).
EXPECTED_UNIQUE_CONSTRAINTS = {
    ("_migrations", ("name",)),
    ("principals", ("key_hash",)),
    ("principals", ("client_id", "external_id")),
    ("conversations", ("client_id", "external_ref")),
    ("turns", ("conversation_id", "position")),
}


def _schema(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


async def test_blank_database_gets_exactly_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "gateway.db"  # the folder does not exist yet
    async with Store(path):
        pass
    with _schema(path) as db:
        tables = {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        assert tables == set(EXPECTED_COLUMNS)
        for table, columns in EXPECTED_COLUMNS.items():
            info = [(r[1], r[2], r[3], r[5]) for r in db.execute(f"PRAGMA table_info({table})")]
            assert info == columns, table

        named = {r[0]: r[1] for r in db.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
        assert set(named) == set(EXPECTED_INDEXES)
        for name, (table, unique, columns) in EXPECTED_INDEXES.items():
            assert named[name] == table
            listed = {r[1]: r[2] for r in db.execute(f"PRAGMA index_list({table})")}
            assert listed[name] == unique, name
            assert [r[2] for r in db.execute(f"PRAGMA index_info({name})")] == columns

        constraints = set()
        for table in EXPECTED_COLUMNS:
            for row in db.execute(f"PRAGMA index_list({table})"):
                if row[3] == "u":  # made for a UNIQUE constraint
                    cols = tuple(r[2] for r in db.execute(f"PRAGMA index_info({row[1]})"))
                    constraints.add((table, cols))
        assert constraints == EXPECTED_UNIQUE_CONSTRAINTS

        fks = {(table, r[3], r[2], r[6]) for table in EXPECTED_COLUMNS
               for r in db.execute(f"PRAGMA foreign_key_list({table})")}
        assert fks == {
            ("principals", "client_id", "principals", "CASCADE"),
            ("conversations", "owner_id", "principals", "CASCADE"),
            ("conversations", "client_id", "principals", "CASCADE"),
            ("turns", "conversation_id", "conversations", "CASCADE"),
            ("usage", "principal_id", "principals", "SET NULL"),
            ("web_sessions", "principal_id", "principals", "CASCADE"),
            ("spend", "scope_id", "principals", "CASCADE"),
            ("budget_alerts", "scope_id", "principals", "CASCADE"),
            ("turn_attachments", "turn_id", "turns", "CASCADE"),
            ("turn_attachments", "sha256", "attachments", "NO ACTION"),
            ("personas", "client_id", "principals", "CASCADE"),
        }

        recorded = db.execute(
            "SELECT id, name, applied_utc FROM _migrations ORDER BY id").fetchall()
        assert [(r[0], r[1]) for r in recorded] == [
            (n, name) for n, (name, _) in enumerate(MIGRATIONS, start=1)]
        assert all(r[2].endswith("Z") for r in recorded)


async def test_reopening_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    async with Store(path) as store:
        async with store.transaction() as tx:
            await tx.execute(
                "INSERT INTO principals (role, name, key_hash, key_prefix, created_utc)"
                " VALUES ('admin', 'root', x'00', 'gw_x', '2026-01-01T00:00:00.000Z')")
        first = [tuple(r) for r in await store.fetchall("SELECT * FROM _migrations")]
    async with Store(path) as store:
        again = [tuple(r) for r in await store.fetchall("SELECT * FROM _migrations")]
        names = [r[0] for r in await store.fetchall("SELECT name FROM principals")]
    assert again == first  # nothing re-applied, nothing re-recorded
    assert names == ["root"]  # and the data survived


async def test_wal_and_foreign_keys_are_on_for_both_connections(tmp_path: Path) -> None:
    async with Store(tmp_path / "gateway.db", busy_timeout_ms=1234) as store:
        for conn in (store.reader, store.writer):
            async with conn.execute("PRAGMA journal_mode") as cur:
                assert (await cur.fetchone())[0] == "wal"
            async with conn.execute("PRAGMA foreign_keys") as cur:
                assert (await cur.fetchone())[0] == 1
            async with conn.execute("PRAGMA busy_timeout") as cur:
                assert (await cur.fetchone())[0] == 1234
        # Foreign keys are enforced, not just declared: a turn needs its conversation.
        with pytest.raises(IntegrityError):
            async with store.transaction() as tx:
                await tx.execute(
                    "INSERT INTO turns (id, conversation_id, position, prompt, reply, model,"
                    " prompt_utc, reply_utc, duration_ms) VALUES"
                    " ('t', 'missing', 0, 'p', 'r', 'm', 'x', 'x', 0)")
        assert await store.fetchall("SELECT * FROM turns") == []


async def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    async with Store(path) as store, store.transaction() as tx:
        await tx.execute("INSERT INTO _migrations (id, name, applied_utc)"
                         " VALUES (99, '0099_from_the_future', 'x')")
    store = Store(path)
    try:
        with pytest.raises(StorageError, match="0099_from_the_future"):
            await store.open()
    finally:
        await store.close()
