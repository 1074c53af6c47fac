"""Shared fixtures: real fake upstreams on 127.0.0.1, a real SQLite file, the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.config import Settings, settings_from_dict
from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream
from web.app import create_app

ENVIRON = {"KEY_A": "sk-account-a", "KEY_B": "sk-account-b", "KEY_P": "sk-account-plus",
           "GATEWAY_SECRET_KEY": "Xk0ZJ9b7oQ3w3m2S2sGx1nYv6Jk8Qp8tTb6dM0c3Zq4="}


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
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from a dict, with the database in this test's own folder."""

    def build(accounts: list[dict[str, Any]], **tables: Any) -> Settings:
        data: dict[str, Any] = {"storage": {"path": str(tmp_path / "gateway.db")},
                                "accounts": accounts}
        chat = {"cooldown_s": 30.0, "title_timeout_s": 2.0}
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
    async with Gateway(settings, environ=ENVIRON) as gw:
        yield gw


@pytest.fixture
async def client(gateway: Gateway, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(gateway))


@pytest.fixture
async def admin_key(gateway: Gateway) -> str:
    return await gateway.create_admin("root")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
