"""Discord unreachable, or refusing the bot: ``run_discord`` keeps trying with a growing delay
(one log line an attempt, naming the next delay) and connects once Discord is back; a refused
token ends the tries at once. Cancelled, it leaves no bot connected."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from core.config import DiscordSettings, Settings
from core.gateway import Gateway
from discord_bot import run_discord
from tests.fakediscord import FakeDiscord

RETRY = "cannot reach Discord (attempt"


class Records(logging.Handler):
    """The bot's log lines, as they come (logged on the test's own loop)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._logged = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if record.levelno >= logging.ERROR:
            self.errors.append(record.getMessage())
        self._logged.set()

    def of(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    async def wait_for(self, text: str, count: int, timeout: float = 10.0) -> list[str]:
        async with asyncio.timeout(timeout):
            while True:
                if len(found := self.of(text)) >= count:
                    return found
                self._logged.clear()
                await self._logged.wait()


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("discord_bot")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def pointed_at(settings: Settings, fake: FakeDiscord) -> Settings:
    discord = DiscordSettings(guild_ids=[fake.GUILD_ID], api_base=fake.api_base,
                              gateway_url=fake.gateway_url)
    return settings.model_copy(update={"discord": discord})


async def test_the_bot_retries_until_discord_is_back_and_leaves_nothing_when_cancelled(
        gateway: Gateway, settings: Settings, fake_discord: FakeDiscord,
        records: Records) -> None:
    fake = fake_discord
    port = fake.port
    await fake.stop()  # Discord is down: its address refuses connections
    task = asyncio.create_task(run_discord(
        gateway, pointed_at(settings, fake), "fake-token", first_delay_s=0.05, max_delay_s=0.2,
        guild_ready_timeout=0.01))
    try:
        first, second, third = (await records.wait_for(RETRY, 3))[:3]
        assert "attempt 1: ClientConnectorError" in first
        assert first.endswith("next attempt in 0.05 s")
        assert second.endswith("next attempt in 0.1 s") and third.endswith("in 0.2 s")

        await fake.start(port)  # Discord is back
        await fake.wait_for(lambda: fake.identifies and fake.synced and fake.connected, 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Cancelled: the bot closed its gateway connection, and tries no more.
    await fake.wait_for(lambda: not fake.connected, 5)
    assert not records.errors


async def test_a_refused_token_ends_the_tries_with_a_clear_error(
        gateway: Gateway, settings: Settings, fake_discord: FakeDiscord,
        records: Records) -> None:
    fake_discord.token = "the-real-token"
    await asyncio.wait_for(run_discord(gateway, pointed_at(settings, fake_discord), "not-it",
                                       first_delay_s=0.05), 30)
    (refused,) = records.of("Discord refused the bot's token")
    assert "Improper token" in refused and "$DISCORD_TOKEN" in refused
    assert "Reset Token" in refused
    assert not records.of(RETRY)
    assert not fake_discord.identifies
