"""The bot end to end: the fake Discord, the real Gateway on a SQLite file in the test's folder,
the fake upstreams, and the bot from ``create_bot``, the factory ``bot.py`` uses.

A test fails on any error the bot logged or swallowed: every ERROR record (discord.py logs the
exceptions of listeners, views, modals and autocomplete; the bot logs its unexpected ones with a
reference) is collected and asserted empty at teardown.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import discord
import pytest

from cogs.utils.text import open_fence
from core.config import Settings
from core.gateway import Gateway, build_gateway
from discord_bot import GatewayBot, create_bot, handler_tasks, point_discord_at
from tests.conftest import ENVIRON, account
from tests.fakediscord import EPHEMERAL, FakeDiscord, Interaction
from tests.fakes.upstream import FakeUpstream

EDIT_INTERVAL = 0.05
"""The bot's edit interval in these tests (1 s in production)."""

ANN = 100000000000000001        # a member
BOB = 100000000000000002        # another member
PAT = 100000000000000003        # a member with the plus role
ADMIN = 100000000000000004      # an admin by id, with no role at all
MOD = 100000000000000005        # an admin by role
EVE = 100000000000000006        # without the member role: refused

MEMBER_ROLE = 200000000000000001
PLUS_ROLE = 200000000000000002
ADMIN_ROLE = 200000000000000003

GENERAL = FakeDiscord.GENERAL_ID
ADMIN_CHANNEL = FakeDiscord.ADMIN_CHANNEL_ID

DISCORD_CONFIG: dict[str, Any] = {
    "guild_ids": [FakeDiscord.GUILD_ID],
    "admin_channel_id": ADMIN_CHANNEL,
    "admin_user_ids": [ADMIN],
    "admin_role_ids": [ADMIN_ROLE],
    "allowed_role_ids": [MEMBER_ROLE],
    "plus_role_ids": [PLUS_ROLE],
}


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def report(self) -> str:
        return "\n".join(f"{r.name}: {r.getMessage()}\n{self.format(r)}" for r in self.records)


class Harness:
    """One bot against one fake Discord, over one gateway; restartable."""

    def __init__(self, fake: FakeDiscord, gateway: Gateway, settings: Settings,
                 upstreams: dict[str, FakeUpstream]) -> None:
        self.fake = fake
        self.gateway = gateway
        self.settings = settings
        self.upstreams = upstreams
        self._bot: GatewayBot | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def bot(self) -> GatewayBot:
        assert self._bot is not None, "the bot is not running"
        return self._bot

    async def start(self) -> None:
        point_discord_at(self.fake.api_base, self.fake.gateway_url)
        bot = create_bot(self.gateway, self.settings, guild_ready_timeout=0.01,
                         edit_interval=EDIT_INTERVAL)
        self._bot = bot
        self._task = asyncio.create_task(bot.start("fake-token"), name="test: bot")
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait({self._task, ready}, timeout=10,
                           return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            if self._task.done():
                self._task.result()  # raises what stopped the bot
            raise AssertionError("the bot did not become ready")

    async def stop(self) -> None:
        if self._bot is None or self._task is None:
            return
        await self.settle()
        await self._bot.close()
        await self._task
        self._bot = self._task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def settle(self) -> None:
        """Wait until the bot has read every event sent so far and finished handling them."""
        for _ in range(100):
            await self.fake.barrier()
            busy = handler_tasks()
            if not busy:
                return
            await asyncio.wait(busy, timeout=10)
        raise AssertionError("the bot kept handling events")

    # -------------------------------------------------------------- reading the fake

    def answer(self, interaction: Interaction) -> str:
        """What the member sees as the answer to an interaction: its (last edited) original
        response, then its follow-ups."""
        ids = ([interaction.original_id] if interaction.original_id else [])
        ids += interaction.followup_ids
        return "\n".join(self.fake.messages[i]["content"] for i in ids)

    def is_ephemeral(self, interaction: Interaction) -> bool:
        assert interaction.original_id is not None
        return bool(self.fake.messages[interaction.original_id]["flags"] & 64)

    def thread_text(self, thread_id: int | str) -> list[str]:
        """What everyone sees in a thread (ephemeral answers left out)."""
        return [m["content"] for m in self.fake.channel_messages(thread_id)
                if not m["flags"] & EPHEMERAL]

    def bot_messages(self, channel_id: int | str) -> list[dict[str, Any]]:
        return [m for m in self.fake.channel_messages(channel_id)
                if m["author"]["id"] == str(FakeDiscord.BOT_ID) and not m["flags"] & EPHEMERAL]

    async def chat(self, prompt: str, *, user: int = ANN, channel: int = GENERAL,
                   **options: Any) -> Interaction:
        """``/chat`` and wait until the bot has finished with it."""
        interaction = await self.fake.slash("chat", user=user, channel=channel, prompt=prompt,
                                            **options)
        await self.settle()
        return interaction


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    for user_id, name, roles in (
        (ANN, "ann", (MEMBER_ROLE,)), (BOB, "bob", (MEMBER_ROLE,)),
        (PAT, "pat", (MEMBER_ROLE, PLUS_ROLE)), (ADMIN, "root", ()),
        (MOD, "mod", (MEMBER_ROLE, ADMIN_ROLE)), (EVE, "eve", ()),
    ):
        fake.add_member(user_id, name, roles)
    for role_id, name in ((MEMBER_ROLE, "member"), (PLUS_ROLE, "plus"),
                          (ADMIN_ROLE, "admin")):
        fake.add_role(role_id, name)
    base, gateway_url = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
        discord.http.Route.BASE = base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway_url


@pytest.fixture
def errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


MakeHarness = Callable[..., Any]


@pytest.fixture
def make_harness(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
                 upstream_b: FakeUpstream, upstream_plus: FakeUpstream,
                 fake_discord: FakeDiscord, errors: ErrorLog) -> MakeHarness:
    """``async with make_harness(**discord_overrides) as h``: a running bot over settings
    of the test's choosing; fails the test on any error logged meanwhile."""

    @asynccontextmanager
    async def build(chat: dict[str, Any] | None = None,
                    accounts: list[dict[str, Any]] | None = None,
                    limits: dict[str, Any] | None = None,
                    **overrides: Any) -> AsyncIterator[Harness]:
        if accounts is None:
            accounts = [account("A", upstream_a, "KEY_A"),
                        account("P", upstream_plus, "KEY_P", tier="plus")]
        settings = make_settings(accounts, discord=DISCORD_CONFIG | overrides,
                                 chat=chat or {}, limits=limits or {})
        upstreams = {"A": upstream_a, "B": upstream_b, "P": upstream_plus}
        async with build_gateway(settings, environ=ENVIRON) as gateway:
            harness = Harness(fake_discord, gateway, settings, upstreams)
            await harness.start()
            try:
                yield harness
            finally:
                await harness.stop()
        assert not errors.records, "the bot logged errors:\n" + errors.report()
        check_writes(fake_discord)

    return build


@pytest.fixture
async def h(make_harness: MakeHarness) -> AsyncIterator[Harness]:
    async with make_harness() as harness:
        yield harness


WRITES = re.compile(r"^/(channels/\d+/messages(/\d+)?|webhooks/\d+/[^/]+(/messages/.+)?"
                    r"|interactions/\d+/[^/]+/callback)$")


def check_writes(fake: FakeDiscord) -> None:
    """What every test checks on every message the bot wrote: at most 2,000 characters, no
    code block left open, no mention that could ping."""
    for call in fake.calls:
        if call.method not in ("POST", "PATCH") or not WRITES.match(call.path):
            continue
        body = call.json or {}
        if "type" in body:  # an interaction callback
            body = body.get("data") or {}
        content = body.get("content")
        if content is None:
            continue
        assert len(content) <= 2000, (call.path, len(content))
        assert open_fence(content) is None, (call.path, content[-200:])
        assert body.get("allowed_mentions", {}).get("parse") == [], (call.path, body)
