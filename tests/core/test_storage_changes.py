"""Changes announced through PostgreSQL are heard by every process one at a time, in the order
they were made: a listener that reads the state it was told of (the account pool does) must
never apply an older read after a newer one."""

from __future__ import annotations

import asyncio

from core.storage.postgres import PostgresDatabase
from tests.conftest import drop_pg_database, new_pg_database
from tests.pg import PgCluster

CHANNEL = "gateway_test_changes"


async def test_changes_are_heard_one_at_a_time_in_order(pg_cluster: PgCluster) -> None:
    url = await new_pg_database(pg_cluster)
    heard: list[str] = []
    last = asyncio.Event()

    async def listener(payload: str) -> None:
        heard.append(f"start {payload}")
        if payload == "first":
            # A slow read of the state this change made (a busy pool, a descheduled server
            # process): the next change must wait for it, or the older state lands last.
            await asyncio.sleep(0.3)
        heard.append(f"end {payload}")
        if payload == "second":
            last.set()

    hearer = PostgresDatabase(url)
    hearer.subscribe(CHANNEL, listener)
    try:
        async with hearer, PostgresDatabase(url) as speaker:
            for payload in ("first", "second"):
                async with speaker.transaction() as tx:
                    await tx.notify(CHANNEL, payload)
            await asyncio.wait_for(last.wait(), 10)
    finally:
        await drop_pg_database(pg_cluster, url)
    assert heard == ["start first", "end first", "start second", "end second"]
