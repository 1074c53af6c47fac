"""``copy-db``: move a SQLite database into an empty PostgreSQL database, every row as it is.

Principals keep their ids and key hashes (so every issued key keeps working), conversations their
ids, accounts and thread references (so follow-ups continue on their accounts), turns and usage
rows their numbers. The copy runs in one PostgreSQL transaction: a failure leaves the target as
empty as it was. Rows stream through in chunks (PostgreSQL's COPY), so a million turns take
memory for one chunk only; progress is reported as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .database import StorageError
from .postgres import PostgresDatabase
from .sqlite import SqliteDatabase

CHUNK = 20_000
# In the order foreign keys need. Columns as both schemas name them; ``seq`` is SQLite's rowid.
TABLES: list[tuple[str, list[str]]] = [
    ("principals", ["id", "role", "name", "client_id", "external_id", "plus", "key_hash",
                    "key_prefix", "own_key_enc", "created_utc", "disabled_utc", "last_used_utc",
                    "limits_json"]),
    ("conversations", ["id", "owner_id", "title", "mode", "account", "model", "client_id",
                       "external_ref", "turn_count", "created_utc", "updated_utc", "seq"]),
    ("turns", ["id", "conversation_id", "parent_id", "position", "prompt", "reply", "model",
               "upstream_id", "prompt_utc", "reply_utc", "duration_ms", "input_tokens",
               "output_tokens", "exchange_json", "stopped",
               "context_digest"]),
    ("attachments", ["sha256", "mime_type", "size_bytes", "data", "created_utc"]),
    ("turn_attachments", ["turn_id", "sha256"]),
    ("usage", ["id", "principal_id", "client_id", "conversation_id", "account", "model",
               "endpoint", "outcome", "created_utc", "duration_ms", "input_tokens",
               "output_tokens", "cost", "estimated", "purpose", "own_key"]),
    ("spend", ["scope_id", "period", "requests", "tokens", "cost"]),
    ("budget_alerts", ["scope_id", "budget", "period", "threshold", "used", "budget_limit",
                       "created_utc", "delivered_utc"]),
    ("web_sessions", ["id_hash", "principal_id", "key_hash", "csrf_token", "flash_json",
                      "created_utc", "expires_utc"]),
    ("account_state", ["name", "cooling_until", "cooling_reason", "out_reason", "updated_utc",
                       "version"]),
    ("personas", ["client_id", "channel_ref", "label", "system_prompt", "updated_utc"]),
]
BOOLEAN = {("principals", "plus"), ("turns", "stopped"), ("usage", "estimated"),
           ("usage", "own_key")}
IDENTITIES = [("principals", "id"), ("conversations", "seq"), ("usage", "id")]

Progress = Callable[[str], None]


def _select(table: str, columns: list[str]) -> str:
    picked = ", ".join("rowid" if c == "seq" else c for c in columns)
    order = "rowid" if table != "web_sessions" else "created_utc"
    return f"SELECT {picked} FROM {table} ORDER BY {order}"


def _chunks(conn: sqlite3.Connection, table: str,
            columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
    booleans = [i for i, c in enumerate(columns) if (table, c) in BOOLEAN]
    cursor = conn.execute(_select(table, columns))
    while rows := cursor.fetchmany(CHUNK):
        if booleans:
            rows = [tuple(bool(v) if i in booleans else v for i, v in enumerate(row))
                    for row in rows]
        yield rows


async def copy_sqlite_to_postgres(source: str | Path, target_url: str, *,
                                  password: str | None = None,
                                  progress: Progress = print) -> dict[str, int]:
    """Copy ``source`` (a SQLite file) into the empty PostgreSQL database at ``target_url``;
    the number of rows copied per table. Raises ``StorageError`` when the target holds data."""
    source = Path(source)
    if not source.exists():
        raise StorageError(f"no SQLite database at {source}")
    # Opening it brings an older database up to this version's schema, as a start would.
    async with SqliteDatabase(source):
        pass
    async with PostgresDatabase(target_url, password=password) as target:
        copied = await _copy(source, target, progress)
    return copied


async def _copy(source: Path, target: PostgresDatabase, progress: Progress) -> dict[str, int]:
    reader = sqlite3.connect(source, check_same_thread=False)
    copied: dict[str, int] = {}
    try:
        # One read transaction: a consistent snapshot even if the gateway still writes.
        reader.execute("BEGIN")
        totals = {table: reader.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table, _ in TABLES}
        async with target.pool.acquire() as conn, conn.transaction():
            for table, _ in TABLES:
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                    raise StorageError(
                        f"{target!r} is not empty (table {table} has rows): copy-db only "
                        "fills a new database, so that nothing there is mixed or lost")
            for table, columns in TABLES:
                total, done = totals[table], 0
                rows_of = _chunks(reader, table, columns)
                while rows := await asyncio.to_thread(next, rows_of, None):
                    await conn.copy_records_to_table(table, records=rows, columns=columns)
                    done += len(rows)
                    if total > CHUNK:
                        progress(f"  {table}: {done:,} / {total:,} ({100 * done // total}%)")
                copied[table] = done
                progress(f"{table}: {done:,} rows")
            for table, column in IDENTITIES:
                # New rows continue after the copied ids.
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                    f" coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)")
    finally:
        with contextlib.suppress(sqlite3.Error):
            reader.execute("ROLLBACK")
        reader.close()
    return copied
