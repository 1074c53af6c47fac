"""Many rows at once into a SQLite gateway database, for tools (the benchmark's seeding).

The schema is the gateway's own: the file is opened once by ``SqliteDatabase`` (which applies the
migrations, as a start would), then filled through one plain connection in big ``executemany``
transactions, with durability traded for speed while it loads. Rows are tuples in the column
order below.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .sqlite import SqliteDatabase

PRINCIPAL_COLUMNS = ("role", "name", "client_id", "external_id", "plus", "key_hash",
                     "key_prefix", "created_utc")
CONVERSATION_COLUMNS = ("id", "owner_id", "title", "mode", "account", "model", "client_id",
                        "external_ref", "turn_count", "created_utc", "updated_utc")
TURN_COLUMNS = ("id", "conversation_id", "parent_id", "position", "prompt", "reply", "model",
                "upstream_id", "prompt_utc", "reply_utc", "duration_ms", "input_tokens",
                "output_tokens")
USAGE_COLUMNS = ("principal_id", "client_id", "conversation_id", "account", "model",
                 "endpoint", "outcome", "created_utc", "duration_ms", "input_tokens",
                 "output_tokens")
Rows = Sequence[tuple[Any, ...]]


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return (f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})")


class SqliteBulkLoader:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        asyncio.run(_migrate(self.path))
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.execute("PRAGMA cache_size = -524288")  # 512 MiB while loading only
        self._conn.execute("PRAGMA temp_store = MEMORY")

    def add_principal(self, row: tuple[Any, ...]) -> int:
        """One principal; its id."""
        cursor = self._conn.execute(_insert("principals", PRINCIPAL_COLUMNS), row)
        return int(cursor.lastrowid or 0)

    def add_principals(self, rows: Rows) -> list[int]:
        """Principals in one transaction; their ids, in order."""
        self._conn.execute("BEGIN IMMEDIATE")
        ids = [self.add_principal(row) for row in rows]
        self._conn.execute("COMMIT")
        return ids

    def add_conversations(self, conversations: Rows, turns: Rows, usage: Rows = ()) -> None:
        """Conversations with their turns (and usage rows), in one transaction."""
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany(_insert("conversations", CONVERSATION_COLUMNS), conversations)
        self._conn.executemany(_insert("turns", TURN_COLUMNS), turns)
        if usage:
            self._conn.executemany(_insert("usage", USAGE_COLUMNS), usage)
        self._conn.execute("COMMIT")

    def counts(self) -> dict[str, int]:
        return {table: int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in ("principals", "conversations", "turns", "usage")}

    def close(self) -> None:
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()


async def _migrate(path: Path) -> None:
    async with SqliteDatabase(path):
        pass
