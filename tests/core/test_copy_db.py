"""Moving and keeping data: ``bot.py copy-db`` moves a SQLite database into PostgreSQL, where the
old keys keep working and conversations continue on their accounts; a non-empty target is
refused; ``bot.py backup`` copies a live SQLite database consistently."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings, settings_from_dict
from core.gateway import build_gateway
from core.storage.copy import copy_sqlite_to_postgres
from core.storage.database import StorageError
from tests.conftest import ENVIRON, account, drop_pg_database, new_pg_database
from tests.core.conftest import ask
from tests.fakes.upstream import FakeUpstream
from tests.pg import PgCluster

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.sqlite_only  # each test chooses its own storage


def _settings(storage: dict[str, Any], a: FakeUpstream, b: FakeUpstream) -> Settings:
    return settings_from_dict({
        "storage": storage, "chat": {"title_timeout_s": 2.0},
        "accounts": [account("A", a, "KEY_A"), account("B", b, "KEY_B")]})


def _config(tmp_path: Path, db: Path) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[storage]\npath = "{db}"\n', encoding="utf-8")
    return config


async def _bot(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD")} | ENVIRON
    process = await asyncio.create_subprocess_exec(
        sys.executable, "bot.py", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_copy_db_moves_everything_and_keys_and_conversations_go_on(
    tmp_path: Path, pg_cluster: PgCluster, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    db = tmp_path / "gateway.db"
    async with build_gateway(_settings({"path": str(db)}, upstream_a, upstream_b),
                             environ=ENVIRON) as gw:
        admin_key = await gw.create_admin("root")
        admin = await gw.authenticate(admin_key)
        bot, bot_key = await gw.add_user(admin, userid=None, username="bot", role="client")
        ann, ann_key = await gw.add_user(bot, userid="discord-1", username="Ann")
        on_a = await ask(gw, ann, "first on one account")
        on_b = await ask(gw, ann, "second, on the next account")
        await ask(gw, ann, "and a follow-up", on_a.conversation.id)
        await gw.set_conversation_ref(bot, on_b.conversation.id, "thread-42")
        await gw.set_own_key(ann, "sk-anns-own")
        await gw.update_user(bot, "discord-1", limits={"tokens_per_month": 10_000_000})
        used = await gw.usage(ann)
        accounts = {on_a.conversation.account, on_b.conversation.account}
    assert accounts == {"A", "B"}

    url = await new_pg_database(pg_cluster, migrated=False)
    try:
        code, out, err = await _bot("--config", str(_config(tmp_path, db)), "copy-db",
                                    "--to", url)
        assert code == 0, err
        assert "principals: 3 rows" in out and "turns: 3 rows" in out
        assert "conversations: 2 rows" in out and "done:" in out

        async with build_gateway(_settings({"url": url}, upstream_a, upstream_b),
                                 environ=ENVIRON) as gw:
            # The old keys work; ids, roles and ownership came along.
            ann_again = await gw.authenticate(ann_key)
            assert (ann_again.id, ann_again.external_id) == (ann.id, "discord-1")
            bot_again = await gw.authenticate(bot_key)
            assert (await gw.authenticate(admin_key)).id == admin.id
            # Conversations: turns as they were, references, the own key still opens.
            conversation, turns = await gw.recall(ann_again, on_a.conversation.id)
            assert [t.prompt for t in turns] == ["first on one account", "and a follow-up"]
            assert conversation.title == on_a.conversation.title
            found = await gw.conversation_by_ref(bot_again, "thread-42")
            assert found is not None and found.id == on_b.conversation.id
            assert await gw.own_key(ann_again) == "sk-anns-own"
            # Budgets and the month's use so far came along: costs, totals, limits.
            assert ann_again.public()["limits"] == {"tokens_per_month": 10_000_000}
            again = await gw.usage(ann_again)
            assert (again["tokens_this_month"], again["requests_this_month"]) == (
                used["tokens_this_month"], used["requests_this_month"]) != (0, 0)
            purposes = await gw.storage.db.fetchall(
                "SELECT DISTINCT purpose FROM usage ORDER BY purpose")
            assert [r[0] for r in purposes] == ["reply", "title"]
            # A follow-up continues on the account that started its conversation.
            before_b = len(upstream_b.chat_requests(titles=False))
            more = await ask(gw, ann_again, "still there?", on_b.conversation.id)
            assert more.turn.position == 1 and more.conversation.account == "B"
            assert len(upstream_b.chat_requests(titles=False)) == before_b + 1
            # New rows continue after the copied ids.
            _, new_key = await gw.add_user(admin, userid="after", username="After")
            assert (await gw.authenticate(new_key)).id > ann.id

        # Copying again into the same (now non-empty) database is refused, naming why.
        code, out, err = await _bot("--config", str(_config(tmp_path, db)), "copy-db",
                                    "--to", url)
        assert code == 2 and "not empty" in err and "Traceback" not in err
    finally:
        await drop_pg_database(pg_cluster, url)


async def test_copy_streams_a_large_database_with_progress(
    tmp_path: Path, pg_cluster: PgCluster, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    db = tmp_path / "gateway.db"
    async with build_gateway(_settings({"path": str(db)}, upstream_a, upstream_b),
                             environ=ENVIRON) as gw:
        admin = await gw.authenticate(await gw.create_admin("root"))
        first = await ask(gw, admin, "the start")
    # 45,000 more turns, written straight into the file (the gateway would take minutes).
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO turns (id, conversation_id, parent_id, position, prompt, reply, model,"
            " prompt_utc, reply_utc, duration_ms) VALUES (?, ?, NULL, ?, 'p', 'r', 'm', 'x',"
            " 'x', 1)", [(f"t{n}", first.conversation.id, n) for n in range(1, 45_001)])
    lines: list[str] = []
    url = await new_pg_database(pg_cluster, migrated=False)
    try:
        copied = await copy_sqlite_to_postgres(db, url, progress=lines.append)
        assert copied["turns"] == 45_001
        assert [line for line in lines if line.startswith("  turns:")][-1] == \
            "  turns: 45,001 / 45,001 (100%)"
        assert len([line for line in lines if line.startswith("  turns:")]) == 3
        with pytest.raises(StorageError, match="not empty"):
            await copy_sqlite_to_postgres(db, url)
    finally:
        await drop_pg_database(pg_cluster, url)


async def test_backup_of_a_live_database(tmp_path: Path, upstream_a: FakeUpstream,
                                         upstream_b: FakeUpstream) -> None:
    db = tmp_path / "gateway.db"
    copy = tmp_path / "backups" / "copy.db"
    copy.parent.mkdir()
    async with build_gateway(_settings({"path": str(db)}, upstream_a, upstream_b),
                             environ=ENVIRON) as gw:
        admin = await gw.authenticate(await gw.create_admin("root"))
        for n in range(5):
            await ask(gw, admin, f"prompt {n}")
        # The gateway is running, with recent writes still in its WAL.
        code, out, err = await _bot("--config", str(_config(tmp_path, db)), "backup", str(copy))
        assert code == 0, err
        assert f"to {copy}" in out
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT count(*) FROM turns").fetchone()[0] == 5
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not copy.with_name("copy.db.partial").exists()


async def test_backup_on_postgresql_points_at_pg_dump(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[storage]\nurl = "postgresql://gw:pw@db.internal:5432/gateway"\n',
                      encoding="utf-8")
    code, out, err = await _bot("--config", str(config), "backup", "gw.dump")
    assert code == 2 and out == ""
    assert "pg_dump -Fc -f gw.dump 'postgresql://gw@db.internal:5432/gateway'" in err
    assert "pw@" not in err and "Traceback" not in err


async def test_copy_db_knows_every_table_and_column(tmp_path: Path) -> None:
    """A migration that adds a table or a column must teach copy-db about it too: a copy that
    skipped one would lose data (budgets' totals were nearly lost so)."""
    from core.storage.copy import TABLES
    from core.storage.sqlite import SqliteDatabase

    async with SqliteDatabase(tmp_path / "schema.db") as db:
        tables = [r[0] for r in await db.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite_%' AND name <> '_migrations'")]
        schema = {t: [r[1] for r in await db.fetchall(f"PRAGMA table_info({t})")]
                  for t in tables}
    copied = dict(TABLES)
    assert set(copied) == set(schema)
    for table, columns in schema.items():
        assert set(copied[table]) - {"seq"} == set(columns), table
