"""Three real ``python bot.py`` processes on one PostgreSQL database.

Each test asks ``start_gateways`` for a cluster: one migrated database of its own (copied from
the session cluster's template), one config file per process that differs only in the port,
the same environment for all (``GATEWAY_SECRET_KEY`` and the account keys), and the fake
upstreams of tests/fakes/upstream.py running in the test's own event loop. The processes'
standard error goes to files in ``tmp_path``; they are printed at teardown, which pytest shows
when a test fails. Every process is stopped with SIGTERM at teardown (killed if it will not
stop), so none outlives its test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ENVIRON, drop_pg_database, new_pg_database
from tests.fakes.upstream import FakeUpstream
from tests.pg import PgCluster, free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
"""Generous: three interpreters importing aiohttp and pydantic at once on two busy cores."""
STOP_TIMEOUT_S = 15.0
ADMIN_LINE = re.compile(r"First start: admin key \(shown once, keep it safe\): (gw_\S+)")


def account(name: str, fake: FakeUpstream, key_env: str, *, tier: str = "free") -> dict[str, str]:
    return {"name": name, "base_url": fake.base_url, "api_key_env": key_env,
            "model": fake.model, "tier": tier}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(port: int, url: str, accounts: list[dict[str, str]],
                  tables: Mapping[str, Mapping[str, Any]]) -> str:
    merged: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": port},
        "storage": {"url": url, "pool_size": 10},
        "chat": {"cooldown_s": 30, "title_timeout_s": 2},
        # Every caller here is 127.0.0.1 and many fail on purpose: the guessing throttle
        # (which each process counts on its own anyway) is off.
        "limits": {"key_failures_per_minute": 0},
        "local_model": {"enabled": "never"},
    }
    for name, table in tables.items():
        merged.setdefault(name, {}).update(table)
    lines: list[str] = []
    for name, table in merged.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        lines.append("")
    for acc in accounts:
        lines.append("[[accounts]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in acc.items()]
        lines.append('proxy = ""')
        lines.append("")
    return "\n".join(lines)


@dataclass
class Proc:
    """One ``bot.py`` process: its port, its config and its output files."""

    number: int
    port: int
    config: Path
    stdout: Path
    stderr: Path
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        assert not self.running
        self.starts += 1
        # Appended, so a restarted process's earlier output stays visible on failure.
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "bot.py", "--config", str(self.config), cwd=ROOT,
                env=self.env, stdout=out, stderr=err)

    async def wait_ready(self, http: aiohttp.ClientSession,
                         timeout: float = START_TIMEOUT_S) -> None:
        """Until ``/healthz`` answers 200; a process that exits meanwhile fails the test."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.returncode is not None:
                pytest.fail(f"gateway {self.number} exited with {self.process.returncode}:\n"
                            f"{self.stderr.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{self.url}/healthz",
                                    timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
        pytest.fail(f"gateway {self.number} did not answer /healthz within {timeout:.0f} s:\n"
                    f"{self.stderr.read_text(errors='replace')[-3000:]}")

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it will not stop in time; its exit status."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        return process.returncode

    async def kill(self) -> None:
        """``kill -9``: no shutdown of any kind."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    def log(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    text: str
    data: Any = None

    @property
    def body(self) -> dict[str, Any]:
        assert isinstance(self.data, dict), f"not a JSON object ({self.status}): {self.text!r}"
        return self.data


@dataclass
class Gateways:
    """The processes of one test, an HTTP session to drive them, and the admin's key."""

    procs: list[Proc]
    http: aiohttp.ClientSession
    admin: str = ""
    url: str = ""
    """The database they share."""
    users: dict[str, str] = field(default_factory=dict)
    extra: list[Proc] = field(default_factory=list)
    """Processes started beside the cluster (stopped at teardown too)."""

    def __getitem__(self, number: int) -> Proc:
        return self.procs[number]

    async def call(self, proc: Proc, path: str, params: Mapping[str, Any] | None = None, *,
                   key: str | None = None, timeout: float = 30) -> Reply:
        """One API call (POST, JSON body) to one process."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.http.post(f"{proc.url}{path}", json=dict(params or {}), headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            data = None
            if resp.content_type == "application/json":
                data = await resp.json()
            return Reply(resp.status, dict(resp.headers), text, data)

    async def ok(self, proc: Proc, path: str, params: Mapping[str, Any] | None = None, *,
                 key: str | None = None) -> dict[str, Any]:
        reply = await self.call(proc, path, params, key=key)
        assert reply.status == 200, f"{path} on gateway {proc.number}: {reply.status} " \
                                    f"{reply.text}"
        return reply.body

    async def add_user(self, userid: str, *, via: Proc | None = None) -> str:
        """A user made by the admin; its key."""
        body = await self.ok(via or self.procs[0], "/api/client/add-user",
                             {"userid": userid, "username": userid}, key=self.admin)
        key = str(body["api_key"])
        self.users[userid] = key
        return key

    def another(self, *, env: Mapping[str, str | None]) -> Proc:
        """One more process (not started) with the first one's config on a port of its own,
        and ``env`` changed (a None value unsets a variable)."""
        first = self.procs[0]
        number = len(self.procs) + len(self.extra)
        port = free_port()
        config = first.config.with_name(f"gateway{number}.toml")
        config.write_text(first.config.read_text(encoding="utf-8").replace(
            f"port = {first.port}\n", f"port = {port}\n", 1), encoding="utf-8")
        environ = changed(first.env, env)
        proc = Proc(number, port, config, first.stdout.with_name(f"gateway{number}.out"),
                    first.stderr.with_name(f"gateway{number}.err"), environ)
        self.extra.append(proc)
        return proc

    async def accounts(self, proc: Proc) -> dict[str, dict[str, Any]]:
        body = await self.ok(proc, "/api/admin/accounts", key=self.admin)
        return {item["name"]: item for item in body["accounts"]}


async def within(deadline_s: float, check: Callable[[], Awaitable[bool]], what: str, *,
                 started: float | None = None) -> float:
    """Call ``check`` until it is true; fail unless that happens within ``deadline_s`` of
    ``started`` (default: now). The seconds it took."""
    start = time.monotonic() if started is None else started
    while True:
        if await check():
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        if elapsed > deadline_s:
            pytest.fail(f"{what}: not within {deadline_s} s ({elapsed:.2f} s)")
        await asyncio.sleep(0.02)


def changed(environ: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    out = dict(environ)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


StartGateways = Callable[..., Awaitable[Gateways]]


@pytest.fixture
async def start_gateways(pg_cluster: PgCluster, tmp_path: Path) -> AsyncIterator[StartGateways]:
    """``await start_gateways(accounts, count=3, env=..., **tables)``: ``count`` gateways on
    one new database, running and answering, with the first start's admin key."""
    started: list[Gateways] = []
    urls: list[str] = []

    async def start(accounts: list[dict[str, str]], *, count: int = 3,
                    env: Mapping[str, str | None] | None = None,
                    **tables: Mapping[str, Any]) -> Gateways:
        url = await new_pg_database(pg_cluster)
        urls.append(url)
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("DISCORD", "KEY_", "GATEWAY_"))}
        environ = changed(environ | ENVIRON, env or {})
        procs = []
        for number in range(count):
            port = free_port()
            config = tmp_path / f"gateway{number}.toml"
            config.write_text(render_config(port, url, accounts, tables), encoding="utf-8")
            procs.append(Proc(number, port, config, tmp_path / f"gateway{number}.out",
                              tmp_path / f"gateway{number}.err", environ))
        gateways = Gateways(procs, aiohttp.ClientSession(), url=url)
        started.append(gateways)
        # Started together, as an operator's supervisor would: they race to migrate and to
        # create the first admin.
        for proc in procs:
            await proc.start()
        for proc in procs:
            await proc.wait_ready(gateways.http)
        printed = [m[1] for proc in procs
                   for m in ADMIN_LINE.finditer(proc.stdout.read_text(errors="replace"))]
        assert len(printed) == 1, f"the first start's admin key, printed {len(printed)} times"
        gateways.admin = printed[0]
        return gateways

    try:
        yield start
    finally:
        for gateways in started:
            procs = gateways.procs + gateways.extra
            # Our keep-alive connections closed first: a server waits for them on SIGTERM.
            await gateways.http.close()
            statuses = await asyncio.gather(*(proc.stop() for proc in procs))
            for proc, status in zip(procs, statuses, strict=True):
                print(f"----- gateway {proc.number} (port {proc.port}, exit {status}) stderr")
                print(proc.log()[-20000:])
        for url in urls:
            await drop_pg_database(pg_cluster, url)


@pytest.fixture
async def upstream_c() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("C", model="model-c") as fake:
        yield fake


@pytest.fixture
async def upstream_own() -> AsyncIterator[FakeUpstream]:
    """Where members' own keys are used (``[own_key] base_url``)."""
    async with FakeUpstream("own", model="own-model") as fake:
        yield fake
