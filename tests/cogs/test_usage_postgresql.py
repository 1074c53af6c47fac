"""Budget alerts across processes: on PostgreSQL, a member's budget is passed on another
process (the HTTP API of a second gateway on the same database), and the process running the
bot hears of it (LISTEN/NOTIFY) and posts it in the admin channel, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from core.gateway import build_gateway
from core.turn import ChatRequest
from tests.conftest import ENVIRON, drop_pg_database, new_pg_database
from tests.pg import PgCluster

from .conftest import ANN, MakeHarness
from .test_usage import admin_channel, tomorrow_utc, used


@pytest.fixture
async def storage_table(pg_cluster: PgCluster) -> AsyncIterator[dict[str, Any]]:
    """This module's bots run on PostgreSQL (the other cog tests on SQLite)."""
    url = await new_pg_database(pg_cluster)
    yield {"url": url}
    await drop_pg_database(pg_cluster, url)


async def test_an_alert_recorded_by_another_process_is_posted_once(
        make_harness: MakeHarness) -> None:
    async with make_harness(limits={"free": {"tokens_per_day": 100}}) as h:
        async with build_gateway(h.settings, environ=ENVIRON) as other:
            client = await other.ensure_client(h.settings.discord.client_name)
            ann = await other.acting_as(client, str(ANN), username="ann")
            h.upstreams["A"].enqueue(used(50, 40), used(2, 3), used(5, 5))
            day = f"{datetime.now(UTC):%Y-%m-%d}"
            expected = [
                f"⚠️ <@{ANN}> (ann) has used 80% of their tokens per day budget for {day}: "
                f"90 tokens of 100 tokens (resets <t:{tomorrow_utc()}:R>).",
                f"🛑 <@{ANN}> (ann) has used all of their tokens per day budget for {day}: "
                "105 tokens of 100 tokens (requests are refused until it resets "
                f"<t:{tomorrow_utc()}:R>)."]
            await other.chat(ann, ChatRequest(prompt="80%", generate_title=False))
            assert await h.fake.wait_for(lambda: admin_channel(h) == expected[:1], timeout=10)
            # A use that crosses nothing posts nothing; the next alert comes right after.
            await other.chat(ann, ChatRequest(prompt="95%", generate_title=False))
            await other.chat(ann, ChatRequest(prompt="105%", generate_title=False))
            assert await h.fake.wait_for(lambda: len(admin_channel(h)) == 2, timeout=10)
            assert admin_channel(h) == expected
        await h.restart()
        assert admin_channel(h) == expected
