"""Shared fixtures: real fake upstreams on 127.0.0.1, real storage, the real app.

Storage: the core and HTTP suites (tests/core, tests/web) run every test that uses
``make_settings`` twice, on a SQLite file and on a PostgreSQL database of its own (a throwaway
cluster started once for the session, see tests/pg.py). A test about SQLite's own files carries
``@pytest.mark.sqlite_only``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.config import Settings, settings_from_dict
from core.gateway import Gateway, build_gateway
from core.storage.postgres import PostgresDatabase
from tests.fakes.upstream import FakeUpstream
from tests.pg import INSTALL_HINT, PgCluster, find_bindir
from web.app import create_app

ENVIRON = {"KEY_A": "sk-account-a", "KEY_B": "sk-account-b", "KEY_P": "sk-account-plus",
           "GATEWAY_SECRET_KEY": "Xk0ZJ9b7oQ3w3m2S2sGx1nYv6Jk8Qp8tTb6dM0c3Zq4="}


BOTH_BACKENDS = ("tests/core/", "tests/web/")
TEMPLATE = "gateway_template"
_databases = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: a test of SQLite's own files")
    config.addinivalue_line("markers", "postgresql_only: several gateways on one database")


if os.environ.get("GATEWAY_TEST_EVENT_LOOP") == "uvloop":
    # ``GATEWAY_TEST_EVENT_LOOP=uvloop pytest ...`` runs the tests' own loops on uvloop, the
    # gateway's default (bot.py's children use it whenever it is installed); unset, they run
    # on asyncio's, so both loops are tested. Defined only then: pytest-asyncio parametrises
    # every test by whatever this hook returns.
    def pytest_asyncio_loop_factories(
            config: pytest.Config, item: pytest.Item,
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    path = metafunc.definition.path.as_posix()
    backends = ["sqlite"]
    if metafunc.definition.get_closest_marker("postgresql_only") is not None:
        metafunc.parametrize("backend", ["postgresql"], indirect=True)
        return
    if any(part in path for part in BOTH_BACKENDS) and \
            metafunc.definition.get_closest_marker("sqlite_only") is None:
        backends.append("postgresql")
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL server for the whole run, with a migrated template database."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    cluster = PgCluster(bindir).start()
    try:
        # On a thread of its own: the session's first user may be inside a running loop.
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, _make_template(cluster)).result()
        yield cluster
    finally:
        cluster.stop()


async def _make_template(cluster: PgCluster) -> None:
    admin = await asyncpg.connect(cluster.url())
    try:
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    async with PostgresDatabase(cluster.url(TEMPLATE)):
        pass  # applies the migrations


async def new_pg_database(cluster: PgCluster, *, migrated: bool = True) -> str:
    """A database of its own for one test: a copy of the migrated template, or blank."""
    name = f"test_{next(_databases)}"
    admin = await asyncpg.connect(cluster.url())
    try:
        await admin.execute(
            f"CREATE DATABASE {name} TEMPLATE {TEMPLATE if migrated else 'template0'}")
    finally:
        await admin.close()
    return cluster.url(name)


async def drop_pg_database(cluster: PgCluster, url: str) -> None:
    admin = await asyncpg.connect(cluster.url())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def storage_table(backend: str, tmp_path: Path,
                        request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """The ``[storage]`` table of this test's settings, on the backend it runs on."""
    if backend == "sqlite":
        yield {"path": str(tmp_path / "gateway.db")}
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    url = await new_pg_database(cluster)
    yield {"url": url}
    await drop_pg_database(cluster, url)


@pytest.fixture
async def upstream_a() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("A", model="model-a") as fake:
        yield fake


@pytest.fixture
async def upstream_b() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("B", model="model-b") as fake:
        yield fake


@pytest.fixture
async def upstream_plus() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("P", model="model-plus") as fake:
        yield fake


def account(name: str, fake: FakeUpstream, key_env: str, *, tier: str = "free",
            **extra: Any) -> dict[str, Any]:
    return {"name": name, "base_url": fake.base_url, "api_key_env": key_env,
            "model": fake.model, "tier": tier, "proxy": "", **extra}


@pytest.fixture
def make_settings(storage_table: dict[str, Any]) -> Callable[..., Settings]:
    """Settings from a dict, with this test's own database (see ``storage_table``)."""

    def build(accounts: list[dict[str, Any]], **tables: Any) -> Settings:
        data: dict[str, Any] = {"storage": dict(storage_table), "accounts": accounts}
        # Titles asked beside the reply, as the tests of titles, enrichment and streams
        # expect; the batched titles of /api/chat (the default) are tested on their own
        # (tests/web/test_titles_batched.py).
        chat = {"cooldown_s": 30.0, "title_timeout_s": 2.0, "api_titles": "beside"}
        chat.update(tables.pop("chat", {}))
        data["chat"] = chat
        # Every test's callers share 127.0.0.1 and many fail on purpose: the throttles are off
        # unless a test turns them on (tests/web/test_throttle.py).
        data["limits"] = {"key_failures_per_minute": 0, **tables.pop("limits", {})}
        data["access_token"] = {"attempts_per_minute": 0, **tables.pop("access_token", {})}
        data.update(tables)
        return settings_from_dict(data)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
             upstream_b: FakeUpstream, upstream_plus: FakeUpstream) -> Settings:
    """Two free accounts (A, B) and one plus account (P)."""
    return make_settings([
        account("A", upstream_a, "KEY_A"),
        account("B", upstream_b, "KEY_B"),
        account("P", upstream_plus, "KEY_P", tier="plus"),
    ])


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with build_gateway(settings, environ=ENVIRON) as gw:
        yield gw


@pytest.fixture
async def client(gateway: Gateway, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(gateway))


@pytest.fixture
async def admin_key(gateway: Gateway) -> str:
    return await gateway.create_admin("root")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
