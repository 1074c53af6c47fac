"""Start-up: the command schema synced in setup_hook (snapshot), where it is synced, a
restart that keeps the thread map, and the harness catching what the bot swallows."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import discord

from tests.fakediscord import FakeDiscord

from .conftest import ANN, ErrorLog, Harness

SNAPSHOT = Path(__file__).with_name("commands.json")


def test_rest_base_accepts_a_base_with_or_without_the_api_path() -> None:
    from discord_bot import rest_base

    assert rest_base("http://127.0.0.1:9/api/v10") == "http://127.0.0.1:9/api/v10"
    assert rest_base("http://127.0.0.1:9/api/v9/") == "http://127.0.0.1:9/api/v9"
    assert rest_base("http://127.0.0.1:9/api") == "http://127.0.0.1:9/api/v10"
    assert rest_base("http://127.0.0.1:9") == "http://127.0.0.1:9/api/v10"


async def test_the_synced_command_schema_matches_the_snapshot(h: Harness) -> None:
    """Set UPDATE_SNAPSHOTS=1 to rewrite tests/cogs/commands.json after a deliberate change."""
    ((scope, body),) = h.fake.synced
    assert scope == str(FakeDiscord.GUILD_ID)  # synced to the configured guild, at start
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    assert body == json.loads(SNAPSHOT.read_text())
    # Every command and option explains itself, within Discord's 100 characters.
    def described(items: list[dict[str, Any]]) -> None:
        for item in items:
            assert 0 < len(item["description"]) <= 100, item["name"]
            described(item.get("options", []))

    described(body)


async def test_without_guild_ids_commands_are_synced_globally(make_harness: Any) -> None:
    async with make_harness(guild_ids=[]) as h:
        ((scope, body),) = h.fake.synced
        assert scope == "global"
        assert {c["name"] for c in body} == {"chat", "conversations", "recall", "forget",
                                             "apikey", "ownkey", "usage", "admin"}
        assert all(c["contexts"] == [0] for c in body)  # server channels only


async def test_commands_are_not_synced_again_when_ready_comes_again(h: Harness) -> None:
    assert len(h.fake.synced) == 1
    readied = asyncio.Event()

    async def on_ready() -> None:
        readied.set()

    h.bot.add_listener(on_ready, "on_ready")
    await h.fake.send_ready()  # a new session, as after a reconnect: on_ready runs again
    await asyncio.wait_for(readied.wait(), 5)
    await h.settle()
    assert len(h.fake.synced) == 1


async def test_a_restart_keeps_the_thread_map(h: Harness) -> None:
    upstream = h.upstreams["A"]
    upstream.enqueue("before the restart", "after the restart")
    thread_id = (await h.chat("Remember this")).original_id
    assert thread_id is not None

    await h.restart()  # a new bot, the same database
    await h.fake.user_says(thread_id, "Still there?", user=ANN)
    await h.settle()

    assert h.thread_text(thread_id)[-1] == "after the restart"
    history = upstream.chat_requests(titles=False)[-1].messages
    assert [m["content"] for m in history] == ["Remember this", "before the restart",
                                              "Still there?"]


async def test_the_harness_fails_on_errors_the_bot_swallows(h: Harness, errors: ErrorLog) -> None:
    async def broken(message: discord.Message) -> None:
        raise RuntimeError("a bug in a listener")

    h.bot.add_listener(broken, "on_message")
    await h.fake.user_says(FakeDiscord.GENERAL_ID, "trigger", user=ANN)
    await h.settle()
    h.bot.remove_listener(broken, "on_message")
    assert any("a bug in a listener" in errors.format(r) for r in errors.records)
    errors.records.clear()  # seen; the teardown would fail the test otherwise


async def test_an_unexpected_error_is_answered_with_a_reference(
        h: Harness, errors: ErrorLog) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database caught fire")

    h.bot.gateway.list_conversations = broken  # type: ignore[method-assign]
    interaction = await h.fake.slash("conversations", user=ANN)
    await h.settle()
    assert h.answer(interaction).startswith("Sorry, something went wrong on my side "
                                            "(reference `")
    (record,) = errors.records
    assert "unexpected error in conversations" in record.getMessage()
    errors.records.clear()
