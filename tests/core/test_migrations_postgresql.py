"""The PostgreSQL schema: a blank database is migrated to exactly the expected tables, columns,
indexes and constraints, with the same migration names as SQLite's; reopening changes nothing; a
database from a newer version is refused; a server that cannot be reached stops the start with
a message saying so."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from core.storage.database import StorageError, StorageUnavailable
from core.storage.migrations_postgresql import MIGRATIONS
from core.storage.migrations_sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from core.storage.postgres import PostgresDatabase
from tests.conftest import ENVIRON, drop_pg_database, new_pg_database
from tests.core.conftest import closed_port
from tests.pg import PgCluster

pytestmark = pytest.mark.sqlite_only  # not parametrised: these tests choose PostgreSQL
ROOT = Path(__file__).resolve().parents[2]

# (name, type, nullable) per column, in order.
EXPECTED_COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "_migrations": [("id", "integer", "NO"), ("name", "text", "NO"),
                    ("applied_utc", "text", "NO")],
    "principals": [
        ("id", "bigint", "NO"), ("role", "text", "NO"), ("name", "text", "NO"),
        ("client_id", "bigint", "YES"), ("external_id", "text", "YES"),
        ("plus", "boolean", "NO"), ("key_hash", "bytea", "NO"), ("key_prefix", "text", "NO"),
        ("own_key_enc", "bytea", "YES"), ("created_utc", "text", "NO"),
        ("disabled_utc", "text", "YES"), ("last_used_utc", "text", "YES"),
        ("limits_json", "text", "YES"),
    ],
    "conversations": [
        ("id", "text", "NO"), ("owner_id", "bigint", "NO"), ("title", "text", "NO"),
        ("mode", "text", "NO"), ("account", "text", "YES"), ("model", "text", "NO"),
        ("client_id", "bigint", "YES"), ("external_ref", "text", "YES"),
        ("turn_count", "integer", "NO"), ("created_utc", "text", "NO"),
        ("updated_utc", "text", "NO"), ("seq", "bigint", "NO"),
    ],
    "turns": [
        ("id", "text", "NO"), ("conversation_id", "text", "NO"), ("parent_id", "text", "YES"),
        ("position", "integer", "NO"), ("prompt", "text", "NO"), ("reply", "text", "NO"),
        ("model", "text", "NO"), ("upstream_id", "text", "YES"), ("prompt_utc", "text", "NO"),
        ("reply_utc", "text", "NO"), ("duration_ms", "integer", "NO"),
        ("input_tokens", "integer", "YES"), ("output_tokens", "integer", "YES"),
        ("exchange_json", "text", "YES"),
        ("stopped", "boolean", "NO"),
        ("context_digest", "bytea", "YES"),
    ],
    "attachments": [
        ("sha256", "text", "NO"), ("mime_type", "text", "NO"), ("size_bytes", "integer", "NO"),
        ("data", "bytea", "NO"), ("created_utc", "text", "NO"),
    ],
    "turn_attachments": [("turn_id", "text", "NO"), ("sha256", "text", "NO")],
    "usage": [
        ("id", "bigint", "NO"), ("principal_id", "bigint", "YES"), ("client_id", "bigint", "YES"),
        ("conversation_id", "text", "YES"), ("account", "text", "YES"), ("model", "text", "YES"),
        ("endpoint", "text", "NO"), ("outcome", "text", "NO"), ("created_utc", "text", "NO"),
        ("duration_ms", "integer", "NO"), ("input_tokens", "integer", "YES"),
        ("output_tokens", "integer", "YES"), ("cost", "double precision", "YES"),
        ("estimated", "boolean", "NO"), ("purpose", "text", "NO"), ("own_key", "boolean", "NO"),
    ],
    "web_sessions": [
        ("id_hash", "bytea", "NO"), ("principal_id", "bigint", "NO"), ("key_hash", "bytea", "NO"),
        ("csrf_token", "text", "NO"), ("flash_json", "text", "YES"),
        ("created_utc", "text", "NO"), ("expires_utc", "text", "NO"),
    ],
    "account_state": [
        ("name", "text", "NO"), ("cooling_until", "double precision", "NO"),
        ("cooling_reason", "text", "YES"), ("out_reason", "text", "YES"),
        ("updated_utc", "text", "NO"), ("version", "bigint", "NO"),
    ],
    "rate_windows": [("principal_id", "bigint", "NO"), ("hits", "ARRAY", "NO")],
    "spend": [
        ("scope_id", "bigint", "NO"), ("period", "text", "NO"), ("requests", "bigint", "NO"),
        ("tokens", "bigint", "NO"), ("cost", "double precision", "NO"),
    ],
    "budget_alerts": [
        ("scope_id", "bigint", "NO"), ("budget", "text", "NO"), ("period", "text", "NO"),
        ("threshold", "integer", "NO"), ("used", "double precision", "NO"),
        ("budget_limit", "double precision", "NO"), ("created_utc", "text", "NO"),
        ("delivered_utc", "text", "YES"),
    ],
    "budget_holds": [
        ("id", "text", "NO"), ("scope_id", "bigint", "NO"), ("period", "text", "NO"),
        ("tokens", "bigint", "NO"), ("cost", "double precision", "NO"),
        ("expires", "double precision", "NO"),
    ],
    "personas": [
        ("client_id", "bigint", "NO"), ("channel_ref", "text", "NO"), ("label", "text", "NO"),
        ("system_prompt", "text", "NO"), ("updated_utc", "text", "NO"),
    ],
}
EXPECTED_INDEXES = {
    "principals_client", "principals_admin_external", "conversations_owner_updated",
    "conversations_updated", "usage_principal", "web_sessions_principal", "web_sessions_expires",
    "usage_created", "usage_client", "budget_holds_scope",
    "turn_attachments_sha256", "turns_context_digest",
}
# (table, columns) of each UNIQUE constraint or primary key.
EXPECTED_UNIQUE = {
    ("_migrations", ("id",)), ("_migrations", ("name",)),
    ("principals", ("id",)), ("principals", ("key_hash",)),
    ("principals", ("client_id", "external_id")),
    ("conversations", ("id",)), ("conversations", ("seq",)),
    ("conversations", ("client_id", "external_ref")),
    ("turns", ("id",)), ("turns", ("conversation_id", "position")),
    ("usage", ("id",)), ("web_sessions", ("id_hash",)), ("account_state", ("name",)),
    ("rate_windows", ("principal_id",)),
    ("spend", ("scope_id", "period")),
    ("budget_alerts", ("scope_id", "budget", "period", "threshold")),
    ("budget_holds", ("id", "scope_id", "period")),
    ("attachments", ("sha256",)), ("turn_attachments", ("turn_id", "sha256")),
    ("personas", ("client_id", "channel_ref")),
}
EXPECTED_FOREIGN_KEYS = {
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


@pytest.fixture
async def blank(pg_cluster: PgCluster) -> AsyncIterator[str]:
    url = await new_pg_database(pg_cluster, migrated=False)
    yield url
    await drop_pg_database(pg_cluster, url)


async def test_blank_database_gets_exactly_the_schema(blank: str) -> None:
    async with PostgresDatabase(blank):
        pass
    conn = await asyncpg.connect(blank)
    try:
        tables = {r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert tables == set(EXPECTED_COLUMNS)
        for table, columns in EXPECTED_COLUMNS.items():
            found = [(r[0], r[1], r[2]) for r in await conn.fetch(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                table)]
            assert found == columns, table
        named = {r[0] for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint)")}
        assert named == EXPECTED_INDEXES
        unique = {(r[0], tuple(r[1])) for r in await conn.fetch(
            "SELECT c.conrelid::regclass::text, array_agg(a.attname ORDER BY k.n)"
            " FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY AS k(attnum, n),"
            " pg_attribute a WHERE c.contype IN ('u', 'p') AND a.attrelid = c.conrelid"
            " AND a.attnum = k.attnum AND c.connamespace = 'public'::regnamespace"
            " GROUP BY c.oid, c.conrelid")}
        assert unique == EXPECTED_UNIQUE
        fks = {(r[0], r[1], r[2], r[3]) for r in await conn.fetch(
            "SELECT tc.table_name, kcu.column_name, ccu.table_name, rc.delete_rule"
            " FROM information_schema.table_constraints tc"
            " JOIN information_schema.key_column_usage kcu USING (constraint_name)"
            " JOIN information_schema.constraint_column_usage ccu USING (constraint_name)"
            " JOIN information_schema.referential_constraints rc USING (constraint_name)"
            " WHERE tc.constraint_type = 'FOREIGN KEY'")}
        assert fks == EXPECTED_FOREIGN_KEYS
        assert await conn.fetchval("SELECT relpersistence FROM pg_class"
                                   " WHERE relname = 'rate_windows'") == b"u"  # unlogged
        recorded = await conn.fetch("SELECT id, name, applied_utc FROM _migrations ORDER BY id")
        assert [(r[0], r[1]) for r in recorded] == [
            (n, name) for n, (name, _) in enumerate(MIGRATIONS, start=1)]
        assert all(r[2].endswith("Z") and len(r[2]) == 24 for r in recorded)
    finally:
        await conn.close()
    # The same migrations, by name and order, as SQLite's: copy-db relies on it.
    assert [name for name, _ in MIGRATIONS] == [name for name, _ in SQLITE_MIGRATIONS]


async def test_reopening_changes_nothing_and_processes_migrate_once(blank: str) -> None:
    # Three processes starting together on a blank database: one migrates, none fails.
    databases = [PostgresDatabase(blank) for _ in range(3)]
    await asyncio.gather(*(db.open() for db in databases))
    await asyncio.gather(*(db.close() for db in databases))
    conn = await asyncpg.connect(blank)
    try:
        assert await conn.fetchval("SELECT count(*) FROM _migrations") == len(MIGRATIONS)
        await conn.execute("INSERT INTO _migrations VALUES (99, '0099_from_the_future', 'x')")
    finally:
        await conn.close()
    with pytest.raises(StorageError, match="0099_from_the_future"):
        await PostgresDatabase(blank).open()


async def test_an_unreachable_server_stops_the_start_with_a_message(tmp_path: Path) -> None:
    port = closed_port()
    url = f"postgresql://gateway:s3cret-pw@127.0.0.1:{port}/gateway"
    with pytest.raises(StorageUnavailable) as caught:
        await PostgresDatabase(url, connect_timeout_s=2).open()
    assert f"cannot connect to postgresql://gateway@127.0.0.1:{port}/gateway" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)

    config = tmp_path / "gateway.toml"
    config.write_text(f'[storage]\nurl = "{url}"\nconnect_timeout_s = 2\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD")} | ENVIRON
    process = await asyncio.create_subprocess_exec(
        sys.executable, "bot.py", "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    text = err.decode()
    assert "error: cannot connect to postgresql://gateway@127.0.0.1" in text
    assert "Traceback" not in text and "s3cret-pw" not in text


async def test_a_wrong_database_name_says_what_to_do(pg_cluster: PgCluster) -> None:
    with pytest.raises(StorageUnavailable, match="create it with createdb"):
        await PostgresDatabase(pg_cluster.url("no_such_db")).open()
