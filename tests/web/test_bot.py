"""``python bot.py`` as an operator runs it: ``create-admin`` prints only a key; the first start
on an empty database prints one admin key, once, and serves /healthz until SIGTERM; a config with
an unknown key stops the start with a message naming it."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from core.config import load_settings
from core.gateway import build_gateway

from .support import KEY_RE

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 20.0


def bot_env() -> dict[str, str]:
    """The test's environment, minus anything that would start Discord or name a secret key."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("DISCORD", "GATEWAY_SECRET"))}


def write_config(tmp_path: Path, port: int = 0, extra: str = "") -> Path:
    # One account that needs no key: usable, so no local model is started, and never called.
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n{extra}\n'
        f'[storage]\npath = "{tmp_path / "data" / "gw.db"}"\n\n'
        '[[accounts]]\nname = "local"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key_env = ""\nmodel = "m"\nproxy = ""\n',
        encoding="utf-8",
    )
    return config


async def run_bot(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "bot.py", *args, cwd=ROOT, env=bot_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def read(path: Path) -> str:
    """A small log file's text, read only to explain a failure or after the process ended."""
    return path.read_text(encoding="utf-8")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running_bot(config: Path, tmp_path: Path, name: str) -> AsyncIterator[
        tuple[str, Path]]:
    """Start the gateway, wait for /healthz to answer, yield its base URL and stdout file;
    on exit stop it with SIGTERM and check that it shut down cleanly."""
    settings = load_settings(config)
    base = f"http://127.0.0.1:{settings.server.port}"
    stdout, stderr = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "bot.py", "--config", str(config), cwd=ROOT, env=bot_env(),
            stdout=out, stderr=err,
        )
    try:
        await wait_healthy(base, process, stderr)
        yield base, stdout
    finally:
        if process.returncode is None:
            process.terminate()
        code = await asyncio.wait_for(process.wait(), 15)
    assert code == 0, read(stderr)
    assert "shutting down" in read(stderr)


async def wait_healthy(base: str, process: asyncio.subprocess.Process, stderr: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_DEADLINE_S
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.returncode is None, f"bot.py exited early:\n{read(stderr)}"
            try:
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200 and (await resp.json())["status"] == "ok":
                        return
            except aiohttp.ClientError:
                pass
            assert loop.time() < deadline, f"no /healthz within {START_DEADLINE_S}s:\n" + read(
                stderr)
            await asyncio.sleep(0.05)


async def test_create_admin_prints_only_a_key(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, out, err = await run_bot("--config", str(config), "create-admin", "ops")
    assert code == 0, err
    assert out.endswith("\n") and out.count("\n") == 1
    key = out.strip()
    assert KEY_RE.fullmatch(key), out
    assert key not in err
    # The key is an admin's, stored in the configured database.
    async with build_gateway(load_settings(config)) as gateway:
        admin = await gateway.authenticate(key)
        assert (admin.role, admin.name) == ("admin", "ops")
        # The database now has principals: a first start would print no key.
        assert await gateway.bootstrap_admin() is None


async def test_create_admin_refuses_a_second_admin_of_one_name(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, _, err = await run_bot("--config", str(config), "create-admin", "ops")
    assert code == 0, err
    code, out, err = await run_bot("--config", str(config), "create-admin", " ops ")
    assert code == 1 and out == ""
    assert err.strip() == "error: an admin named 'ops' already exists: choose another name"
    assert "Traceback" not in err
    async with build_gateway(load_settings(config)) as gateway:
        admins, total = await gateway.principals.list_page(role="admin")
        assert total == 1 and admins[0]["name"] == "ops"
        # Another name is still welcome.
        assert KEY_RE.fullmatch(await gateway.create_admin("ops2"))


async def test_first_start_prints_one_admin_key_once_and_serves(tmp_path: Path) -> None:
    config = write_config(tmp_path, port=free_port(), extra="max_body_bytes = 20000")
    async with running_bot(config, tmp_path, "first") as (base, stdout):
        keys = KEY_RE.findall(read(stdout))
        assert len(keys) == 1, read(stdout)
        key = keys[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as resp:
                body = await resp.json()
            assert body["status"] == "ok" and body["database"] == "ok"
            # The printed key is an admin's key, here in the original's admin= parameter.
            async with session.get(f"{base}/api/admin/accounts",
                                   params={"admin": key}) as resp:
                assert resp.status == 200, await resp.text()
                assert [a["name"] for a in (await resp.json())["accounts"]] == ["local"]
            async with session.get(f"{base}/api/nope") as resp:
                assert resp.status == 404
                assert (await resp.json())["status"] == "error"
            # A GET prompt longer than aiohttp's default 8 KiB request line reaches the gateway
            # (whose only account is unreachable here), and is answered in the JSON shape.
            async with session.get(f"{base}/api/chat",
                                   params={"admin": key, "prompt": "x" * 10_000}) as resp:
                assert resp.status == 503, await resp.text()
                assert (await resp.json())["status"] == "error"
            # A line past max_body_bytes is refused by aiohttp itself, which logs it: masked.
            async with session.get(f"{base}/api/recall",
                                   params={"admin": key, "pad": "p" * 30_000}) as resp:
                assert resp.status == 400
    err = read(tmp_path / "first.err")
    assert "Error handling request" in err and "admin=***" in err
    assert "/api/admin/accounts?admin=***" in err  # the access log, redacted
    assert key not in err
    assert len(KEY_RE.findall(read(stdout))) == 1

    async with running_bot(config, tmp_path, "second") as (_, stdout):
        pass
    assert KEY_RE.findall(read(stdout)) == []


async def test_unknown_config_key_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    typo = write_config(tmp_path / "a", extra="colour = \"blue\"\n")
    table = write_config(tmp_path / "b", extra="\n[nonsense]\nx = 1\n")
    (code, out, err), (code2, out2, err2) = await asyncio.gather(
        run_bot("--config", str(typo)),
        run_bot("--config", str(table), "create-admin", "x"),
    )
    assert code != 0 and out == ""
    assert "server.colour" in err and "unknown key" in err
    assert code2 != 0 and out2 == ""
    assert "nonsense" in err2 and "unknown key" in err2
    assert not (tmp_path / "a" / "data" / "gw.db").exists()
    assert not (tmp_path / "b" / "data" / "gw.db").exists()


async def test_a_secret_key_that_is_no_key_stops_the_start_in_one_line(tmp_path: Path) -> None:
    # From the environment, and from the key file beside the database.
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "data").mkdir(parents=True)
    (tmp_path / "b" / "data" / "credentials.key").write_text("not-a-key\n")
    runs = []
    for folder, env in ((tmp_path / "a", {"GATEWAY_SECRET_KEY": "s3cr\u00e9t-but-short"}),
                        (tmp_path / "b", {})):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "bot.py", "--config", str(write_config(folder)), cwd=ROOT,
            env={**bot_env(), **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        runs.append((process.returncode, err.decode()))
    (code, err), (code2, err2) = runs
    assert code == 2 and "Traceback" not in err
    assert "$GATEWAY_SECRET_KEY does not hold a key" in err and "generate one with" in err
    assert "s3cr" not in err and "short" not in err  # nothing of the value itself
    assert code2 == 2 and "Traceback" not in err2
    assert f"{tmp_path / 'b' / 'data' / 'credentials.key'} does not hold a key" in err2


async def test_invite_url_names_the_scopes_and_the_permissions_the_bot_uses(
        tmp_path: Path) -> None:
    from urllib.parse import parse_qs, urlsplit

    import discord

    config = write_config(tmp_path)
    code, out, err = await run_bot("--config", str(config), "invite-url",
                                   "--application-id", "123456789012345678")
    assert code == 0, err
    url = urlsplit(out.strip())
    assert (url.scheme, url.netloc, url.path) == ("https", "discord.com", "/oauth2/authorize")
    query = parse_qs(url.query)
    assert query["client_id"] == ["123456789012345678"]
    assert query["scope"] == ["bot applications.commands"]
    assert query["permissions"] == ["395137076224"]
    granted = {name for name, on in discord.Permissions(int(query["permissions"][0])) if on}
    # discord.py names View Channels by its older name, read_messages, when iterating.
    assert granted == {"read_messages", "send_messages", "read_message_history", "embed_links",
                       "create_public_threads", "create_private_threads",
                       "send_messages_in_threads", "manage_threads"}

    # From the setting; without either, a clear error naming both ways.
    config.write_text(read(config) + "\n[discord]\napplication_id = 42\n", encoding="utf-8")
    code, out, _ = await run_bot("--config", str(config), "invite-url")
    assert code == 0 and "client_id=42&" in out
    code, out, err = await run_bot("--config", str(write_config(tmp_path)), "invite-url")
    assert code == 2 and out == ""
    assert "[discord] application_id" in err and "--application-id" in err


async def test_the_event_loop_is_uvloop_by_default_and_asyncio_on_request(
        tmp_path: Path) -> None:
    """uvloop serves when installed (``auto``); ``asyncio`` keeps Python's own loop; both serve."""
    for name, choice, expected in (("auto", "", "uvloop"),
                                   ("plain", 'event_loop = "asyncio"', "asyncio")):
        folder = tmp_path / name
        folder.mkdir()
        config = write_config(folder, port=free_port(), extra=choice)
        async with running_bot(config, folder, "run") as (base, _), \
                aiohttp.ClientSession() as session, session.get(f"{base}/api/nope") as resp:
            assert resp.status == 404
        assert f"({expected} event loop)" in read(folder / "run.err")


async def test_event_loop_uvloop_without_uvloop_stops_the_start(tmp_path: Path) -> None:
    # A uvloop that cannot be imported, first on the path: as on a machine without it.
    (tmp_path / "uvloop").mkdir()
    (tmp_path / "uvloop" / "__init__.py").write_text("raise ImportError('no uvloop here')\n")
    config = write_config(tmp_path, extra='event_loop = "uvloop"')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "bot.py", "--config", str(config), cwd=ROOT,
        env={**bot_env(), "PYTHONPATH": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "event_loop" in err.decode() and "uvloop is not installed" in err.decode()
    assert "Traceback" not in err.decode()
