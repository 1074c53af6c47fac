"""Several ``python bot.py`` processes with one configuration and one Discord token on one
PostgreSQL database: exactly one runs the bot; when it dies, another takes over within about ten
seconds; two bots are never connected at once, and the others serve HTTP all along."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import drop_pg_database, new_pg_database
from tests.fakediscord import FakeDiscord
from tests.fakes.upstream import FakeUpstream
from tests.pg import PgCluster

from .conftest import ANN
from .test_process import TOKEN, bot_process, free_port, read, wait_healthy, write_config

LEADS = "this process now runs the Discord bot"


@pytest.fixture
async def database(pg_cluster: PgCluster) -> AsyncIterator[str]:
    url = await new_pg_database(pg_cluster)
    yield url
    await drop_pg_database(pg_cluster, url)


def _on_postgres(config: Path, url: str) -> Path:
    text = re.sub(r'\[storage\]\npath = "[^"]*"', f'[storage]\nurl = "{url}"', read(config))
    config.write_text(text, encoding="utf-8")
    return config


async def test_one_bot_among_three_processes_and_a_takeover_when_it_dies(
    tmp_path: Path, fake_discord: FakeDiscord, upstream_a: FakeUpstream, database: str,
) -> None:
    fake = fake_discord
    fake.token = TOKEN
    ports = [free_port() for _ in range(3)]
    folders = [tmp_path / f"p{n}" for n in range(3)]
    for folder in folders:
        folder.mkdir()
    configs = [_on_postgres(write_config(folder, fake, upstream_a, port), database)
               for folder, port in zip(folders, ports, strict=True)]
    async with (bot_process(configs[0], folders[0], TOKEN) as (first, err0),
                bot_process(configs[1], folders[1], TOKEN) as (second, err1),
                bot_process(configs[2], folders[2], TOKEN) as (third, err2)):
        processes = [(first, err0), (second, err1), (third, err2)]
        for port, (process, stderr) in zip(ports, processes, strict=True):
            await wait_healthy(port, process, stderr)
        await fake.wait_for(lambda: fake.identifies == 1 and fake.connected, timeout=30)

        # Exactly one process leads; the others wait, serving HTTP only.
        leaders = [n for n, (_, stderr) in enumerate(processes) if LEADS in read(stderr)]
        assert len(leaders) == 1, [read(e)[-2000:] for _, e in processes]
        leader, leader_err = processes[leaders[0]]
        upstream_a.enqueue("answered by the leader")
        interaction = await fake.slash("chat", user=ANN, prompt="who answers?")
        await fake.wait_for(lambda: [m for m in fake.channel_messages(interaction.original_id or 0)
                                     if m["content"] == "answered by the leader"], timeout=10)

        # The leader dies without a word; another takes over within about ten seconds.
        died = time.monotonic()
        os.kill(leader.pid, signal.SIGKILL)
        await asyncio.wait_for(leader.wait(), 10)
        await fake.wait_for(lambda: fake.identifies == 2 and fake.connected, timeout=15)
        took_over_in = time.monotonic() - died
        assert took_over_in < 10, took_over_in
        survivors = [(p, e) for p, e in processes if p is not leader]
        assert sum(LEADS in read(e) for _, e in survivors) == 1
        assert fake.most_sockets_open == 1  # never two bots at once

        # The new leader answers Discord; every survivor still serves HTTP.
        upstream_a.enqueue("answered after the takeover")
        interaction = await fake.slash("chat", user=ANN, prompt="and now?")
        await fake.wait_for(lambda: [m for m in fake.channel_messages(interaction.original_id or 0)
                                     if m["content"] == "answered after the takeover"],
                            timeout=10)
        for port, (process, stderr) in zip(ports, processes, strict=True):
            if process is not leader:
                await wait_healthy(port, process, stderr)
        assert "Traceback" not in read(leader_err)
