"""Fixtures for the core suite: a Gateway over a real SQLite file, driven by a fake clock, with
the real fake upstreams of ``tests/conftest.py`` (A and B free, P plus)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.chat import ChatRequest, ChatResult, StartInfo
from core.config import Settings
from core.gateway import Gateway, build_gateway
from core.models import Principal
from core.upstream import make_session
from core.upstream_http import UpstreamSession
from tests.conftest import ENVIRON


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Listener:
    """Records what a streamed turn tells its listener, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def started(self, info: StartInfo) -> None:
        self.events.append(("started", info))

    async def delta(self, text: str) -> None:
        self.events.append(("delta", text))

    async def title(self, title: str) -> None:
        self.events.append(("title", title))

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.events if k == kind]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


OpenGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def open_gateway(clock: FakeClock,
                       storage_table: dict[str, Any]) -> AsyncIterator[OpenGateway]:
    # storage_table: set up first, so its database outlives the gateways opened on it.
    """Open a Gateway on given settings (fake clock, test environ); closed at teardown."""
    opened: list[Gateway] = []

    async def open_(settings: Settings, *, environ: dict[str, str] | None = None) -> Gateway:
        gw = build_gateway(settings, environ=ENVIRON if environ is None else environ, clock=clock)
        await gw.open()
        opened.append(gw)
        return gw

    yield open_
    for gw in reversed(opened):
        await gw.close()


@pytest.fixture
async def gw(open_gateway: OpenGateway, settings: Settings) -> Gateway:
    """Gateway with two free accounts (A, B) and one plus account (P)."""
    return await open_gateway(settings)


@pytest.fixture
async def admin(gw: Gateway) -> Principal:
    return await gw.authenticate(await gw.create_admin("root"))


@pytest.fixture
async def user(gw: Gateway, admin: Principal) -> Principal:
    principal, _ = await gw.add_user(admin, userid="ann", username="Ann")
    return principal


@pytest.fixture
async def plus_user(gw: Gateway, admin: Principal) -> Principal:
    principal, _ = await gw.add_user(admin, userid="pat", username="Pat", plus=True)
    return principal


async def new_user(gw: Gateway, userid: str = "ann", *, plus: bool = False) -> Principal:
    """A user made by a fresh admin, for tests that open their own Gateway."""
    admin = await gw.authenticate(await gw.create_admin(f"root-{userid}"))
    principal, _ = await gw.add_user(admin, userid=userid, username=userid, plus=plus)
    return principal


async def ask(gw: Gateway, who: Principal, prompt: str, conversation_id: str | None = None,
              **fields: Any) -> ChatResult:
    return await gw.chat(who, ChatRequest(prompt=prompt, conversation_id=conversation_id,
                                          **fields))


async def db_bytes(gw: Gateway) -> bytes:
    """Every byte the gateway's storage keeps: SQLite's file, WAL and shared memory; on
    PostgreSQL, every value of every table (byte strings as they are)."""
    if gw.settings.storage.backend == "sqlite":
        path = Path(gw.settings.storage.sqlite_path)
        return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))
    conn = await asyncpg.connect(gw.settings.storage.url)  # also once the gateway is closed
    try:
        out = []
        for table in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
            for row in await conn.fetch(f"SELECT * FROM {table[0]}"):
                out += [v if isinstance(v, bytes) else str(v).encode() for v in row.values()]
    finally:
        await conn.close()
    return b"\n".join(out)


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def upstream_session() -> AsyncIterator[UpstreamSession]:
    """An upstream HTTP session without a proxy, closed after the test."""
    http = make_session("")
    yield http
    await http.close()
