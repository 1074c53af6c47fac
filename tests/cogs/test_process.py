"""``python bot.py`` with a Discord token: the bot runs beside the HTTP API in one process,
against the fake Discord named by ``api_base`` and ``gateway_url``, and stops cleanly on
SIGTERM, after the answers being written. Discord unreachable or refusing the token never takes
the HTTP API down: the bot retries, or (refused token) says why and stays off."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.conftest import ENVIRON
from tests.fakediscord import FakeDiscord
from tests.fakes.upstream import FakeUpstream

from .conftest import ADMIN, ANN, MEMBER_ROLE
from .slow_upstream import SlowUpstream

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a-fake-bot-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, fake: FakeDiscord, upstream: FakeUpstream | SlowUpstream,
                 port: int) -> Path:
    model = upstream.model if isinstance(upstream, FakeUpstream) else "slow"
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}

[storage]
path = "{tmp_path / 'data' / 'gateway.db'}"

[[accounts]]
name = "A"
base_url = "{upstream.base_url}"
api_key_env = "KEY_A"
model = "{model}"
proxy = ""

[discord]
token_env = "TEST_BOT_TOKEN"
guild_ids = ["{fake.GUILD_ID}"]
admin_channel_id = {fake.ADMIN_CHANNEL_ID}
admin_user_ids = [{ADMIN}]
allowed_role_ids = [{MEMBER_ROLE}]
api_base = "http://127.0.0.1:{fake.port}"
gateway_url = "{fake.gateway_url}"
""", encoding="utf-8")
    return config


@asynccontextmanager
async def bot_process(config: Path, tmp_path: Path, token: str) -> AsyncIterator[
        tuple[asyncio.subprocess.Process, Path]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD")}
    env |= ENVIRON | {"TEST_BOT_TOKEN": token}
    stderr = tmp_path / "bot.err"
    with stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "bot.py", "--config", str(config), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=err)
    try:
        yield process, stderr
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 15)


async def test_bot_py_serves_discord_and_http_on_one_core(
        tmp_path: Path, fake_discord: FakeDiscord, upstream_a: FakeUpstream) -> None:
    fake = fake_discord
    fake.token = TOKEN
    port = free_port()
    config = write_config(tmp_path, fake, upstream_a, port)
    async with bot_process(config, tmp_path, TOKEN) as (process, stderr):
        await fake.wait_for(lambda: fake.synced and fake.identifies, timeout=30)
        ((scope, _),) = fake.synced
        assert scope == str(fake.GUILD_ID)

        upstream_a.enqueue("hello from the process")
        interaction = await fake.slash("chat", user=ANN, prompt="Hi there")
        thread = await fake.wait_for(
            lambda: [m for m in fake.channel_messages(interaction.original_id or 0)
                     if m["content"] == "hello from the process"], timeout=10)
        assert thread

        # An image and a text file in a message in the thread reach the model as parts.
        picture = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10
        files = [fake.upload("shot.png", picture, "image/png"),
                 fake.upload("notes.txt", b"step one", "text/plain")]
        upstream_a.enqueue("I see a picture")
        await fake.user_says(interaction.original_id or 0, "What is this?", user=ANN,
                             files=files)
        await fake.wait_for(lambda: [m for m in fake.channel_messages(interaction.original_id
                                                                      or 0)
                                     if m["content"] == "I see a picture"], timeout=10)
        text, image = upstream_a.chat_requests(titles=False)[-1].messages[-1]["content"]
        assert text["text"] == "What is this?\n\nFile: notes.txt\n```\nstep one\n```"
        assert image["image_url"]["url"] == \
            "data:image/png;base64," + base64.b64encode(picture).decode()

        refused = await fake.slash("admin", "stats", user=ANN)
        assert refused.callbacks[0]["data"]["content"] == "Only the bot's admins may use /admin."

        # The HTTP API runs in the same process, on the same database.
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200

        process.terminate()
        assert await asyncio.wait_for(process.wait(), 15) == 0
        log = stderr.read_text()
        assert "shutting down" in log and "Traceback" not in log
        assert TOKEN not in log
        # The bot uses no voice: discord.py's "voice will NOT be supported" is noise.
        assert "PyNaCl" not in log and "voice will NOT be supported" not in log


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


async def wait_healthy(port: int, process: asyncio.subprocess.Process, stderr: Path) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        while True:
            assert process.returncode is None, read(stderr)
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def wait_log(stderr: Path, pattern: str, count: int = 1) -> list[str]:
    """The log lines matching ``pattern`` once there are ``count`` of them (the child's log
    is a file: polled)."""
    async with asyncio.timeout(30):
        while True:
            if len(found := re.findall(pattern, read(stderr))) >= count:
                return found
            await asyncio.sleep(0.05)


async def test_a_refused_token_leaves_the_http_api_up_and_says_why(
        tmp_path: Path, fake_discord: FakeDiscord, upstream_a: FakeUpstream) -> None:
    fake_discord.token = TOKEN
    port = free_port()
    config = write_config(tmp_path, fake_discord, upstream_a, port)
    async with bot_process(config, tmp_path, "not-the-token") as (process, stderr):
        await wait_log(stderr, r"ERROR discord_bot: Discord refused the bot's token")
        await wait_healthy(port, process, stderr)
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 15) == 0
    log = stderr.read_text()
    assert "Improper token" in log and "$TEST_BOT_TOKEN" in log
    assert "cannot reach Discord" not in log and "Traceback" not in log


async def test_discord_unreachable_at_start_leaves_the_http_api_up_and_retries(
        tmp_path: Path, fake_discord: FakeDiscord, upstream_a: FakeUpstream) -> None:
    await fake_discord.stop()  # its port now refuses connections, as Discord down would
    port = free_port()
    config = write_config(tmp_path, fake_discord, upstream_a, port)
    async with bot_process(config, tmp_path, TOKEN) as (process, stderr):
        await wait_healthy(port, process, stderr)
        lines = await wait_log(stderr, r"cannot reach Discord \(attempt \d+: [^\n]*", 2)
        assert lines[0].startswith("cannot reach Discord (attempt 1: ClientConnectorError")
        assert lines[0].endswith("next attempt in 2 s") and lines[1].endswith("in 4 s")
        await wait_healthy(port, process, stderr)  # still serving between attempts
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 15) == 0
    log = stderr.read_text()
    assert "shutting down" in log and "Traceback" not in log


async def test_sigterm_lets_the_answer_being_written_finish(
        tmp_path: Path, fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    pieces = [f"piece{i} " for i in range(25)]
    async with SlowUpstream(pieces, gap_s=0.06) as slow:
        config = write_config(tmp_path, fake, slow, free_port())
        async with bot_process(config, tmp_path, TOKEN) as (process, stderr):
            await fake.wait_for(lambda: fake.synced and fake.identifies, timeout=30)
            interaction = await fake.slash("chat", user=ANN, prompt="Take your time")
            # The answer has started in its thread: stop the process now.
            await fake.wait_for(lambda: fake.channel_messages(interaction.original_id or 0))
            process.terminate()
            assert await asyncio.wait_for(process.wait(), 20) == 0
            (message,) = fake.channel_messages(interaction.original_id or 0)
            assert message["content"] == "".join(pieces)
            log = stderr.read_text()
            assert re.search(r"waiting for \d+ handler\(s\) to finish", log)
            assert "Traceback" not in log

