"""Fixtures of the HTTP API suite: the ``Api`` over the shared app, two clients made by the
admin through the API, and an app over settings of a test's own choosing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.config import Settings
from core.gateway import Gateway, build_gateway
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import FakeUpstream
from web.app import create_app

from .support import Api, MakeApi, People


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


@pytest.fixture
async def people(api: Api, admin_key: str) -> People:
    """An admin, and two clients created by it through the API."""
    client_key, client = await api.add_user(admin_key, "bot-one", role="client")
    other_key, other = await api.add_user(admin_key, "bot-two", role="client")
    assert client["role"] == other["role"] == "client"
    return People(admin_key, client_key, client["id"], other_key, other["id"])


ACCOUNT_ENVS = (("A", "KEY_A", "free"), ("B", "KEY_B", "free"), ("P", "KEY_P", "plus"))


@pytest.fixture
async def custom_api(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream, upstream_b: FakeUpstream,
    upstream_plus: FakeUpstream, aiohttp_client: Any,
) -> AsyncIterator[MakeApi]:
    """The app over settings of the test's choosing: ``await custom_api(chat={...})`` gives an
    ``Api`` and its ``Gateway``. ``account_extra`` is merged into every account and ``environ``
    into the environment the gateway reads secrets from. Do not mix with
    the ``api``/``client`` fixtures in one test: they would share the database file."""
    fakes = {"A": upstream_a, "B": upstream_b, "P": upstream_plus}
    async with AsyncExitStack() as stack:

        async def build(account_extra: Mapping[str, Any] | None = None,
                        environ: Mapping[str, str] | None = None,
                        **tables: Any) -> tuple[Api, Gateway]:
            accounts = [account(name, fakes[name], env, tier=tier, **(account_extra or {}))
                        for name, env, tier in ACCOUNT_ENVS]
            gateway = await stack.enter_async_context(
                build_gateway(make_settings(accounts, **tables),
                              environ={**ENVIRON, **(environ or {})}))
            return Api(await aiohttp_client(create_app(gateway))), gateway

        yield build


