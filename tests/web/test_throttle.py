"""Guessing is slowed at the edge: failed key checks per address (the API, /v1 and web sign-in)
and access-token exchanges per address and per e-mail. Valid keys are never slowed while
their address is under the limit, and another address is never slowed at all."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web

from tests.web.test_admin import TokenServer
from web.throttle import Throttle, bucket_of

from .support import Api, MakeApi

WRONG = "gw_" + "x" * 43
PROXY = {"server": {"trusted_proxies": ["127.0.0.0/8"]}}
"""The test client is 127.0.0.1: trusted as a proxy, its X-Forwarded-For names the caller."""


def at(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def member(api: Api, gateway: Any) -> str:
    _, key = await gateway.principals.create("user", "ann")
    return key


async def test_failed_key_checks_are_throttled_per_address(custom_api: MakeApi) -> None:
    api, gateway = await custom_api(limits={"key_failures_per_minute": 5}, **PROXY)
    valid = await member(api, gateway)
    # Under the limit a valid key is never slowed, and valid keys never count.
    for _ in range(20):
        await api.ok("/api/recall", key=valid, headers=at("203.0.113.7"))
    for _ in range(4):
        await api.error("/api/recall", key=WRONG, headers=at("203.0.113.7"), status=401)
        await api.ok("/api/recall", key=valid, headers=at("203.0.113.7"))
    await api.error("/api/recall", key=WRONG, headers=at("203.0.113.7"), status=401)
    # Over it, that address is refused before any key is checked, a valid one included.
    for key in (WRONG, valid):
        refused = await api.error("/api/recall", key=key, headers=at("203.0.113.7"),
                                  status=429, code="too_many_attempts")
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The original's key parameters count the same.
    await api.error("/api/chat", {"prompt": "hi"}, key=WRONG, key_as="user",
                    headers=at("203.0.113.7"), status=429)
    # Another address is untouched, and a missing key is no guess.
    await api.ok("/api/recall", key=valid, headers=at("198.51.100.9"))
    for _ in range(10):
        await api.error("/api/recall", headers=at("198.51.100.9"), status=401,
                        code="missing_key")
    await api.ok("/api/recall", key=valid, headers=at("198.51.100.9"))


async def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(
    custom_api: MakeApi,
) -> None:
    api, gateway = await custom_api(limits={"key_failures_per_minute": 3})
    valid = await member(api, gateway)
    for n in range(3):
        await api.error("/api/recall", key=WRONG, headers=at(f"192.0.2.{n}"), status=401)
    # A forged X-Forwarded-For changes nothing: the peer (127.0.0.1) is the caller.
    await api.error("/api/recall", key=valid, headers=at("192.0.2.99"), status=429)


async def test_v1_failures_are_throttled_in_openai_shape(custom_api: MakeApi) -> None:
    api, gateway = await custom_api(limits={"key_failures_per_minute": 2}, **PROXY)
    valid = await member(api, gateway)
    for _ in range(2):
        async with api.client.get("/v1/models", headers={"Authorization": f"Bearer {WRONG}",
                                                         **at("203.0.113.7")}) as resp:
            assert resp.status == 401
    async with api.client.get("/v1/models", headers={"Authorization": f"Bearer {valid}",
                                                     **at("203.0.113.7")}) as resp:
        assert resp.status == 429 and "Retry-After" in resp.headers
        assert (await resp.json())["error"]["type"] == "rate_limit_error"
    # One throttle: /api is refused too.
    await api.error("/api/recall", key=valid, headers=at("203.0.113.7"), status=429)
    async with api.client.get("/v1/models", headers={"Authorization": f"Bearer {valid}",
                                                     **at("198.51.100.9")}) as resp:
        assert resp.status == 200


async def sign_in(api: Api, key: str, address: str) -> tuple[int, dict[str, str]]:
    headers = {**at(address), "Accept": "text/html"}
    async with api.client.get("/login", headers=headers) as resp:
        token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert token is not None
    async with api.client.post("/login", data={"key": key, "csrf_token": token[1]},
                               headers=headers, allow_redirects=False) as resp:
        return resp.status, dict(resp.headers)


async def test_web_sign_in_is_throttled_per_address(custom_api: MakeApi) -> None:
    api, gateway = await custom_api(limits={"key_failures_per_minute": 4}, **PROXY)
    valid = await member(api, gateway)
    for _ in range(4):
        assert (await sign_in(api, WRONG, "203.0.113.7"))[0] == 401
    status, headers = await sign_in(api, valid, "203.0.113.7")
    assert status == 429 and int(headers["Retry-After"]) >= 1
    # API failures and sign-in failures share the one count.
    await api.error("/api/recall", key=valid, headers=at("203.0.113.7"), status=429)
    assert (await sign_in(api, valid, "198.51.100.9"))[0] == 303


@pytest.fixture
async def token_api(custom_api: MakeApi, aiohttp_server: Any) -> tuple[Api, TokenServer]:
    idp = TokenServer()
    app = web.Application()
    app.router.add_post("/token", idp.token)
    server = await aiohttp_server(app)
    api, _ = await custom_api(access_token={"token_url": str(server.make_url("/token")),
                                            "attempts_per_minute": 5}, **PROXY)
    return api, idp


async def test_password_guessing_is_throttled_by_address_and_email(
    token_api: tuple[Api, TokenServer],
) -> None:
    api, idp = token_api
    statuses = []
    for n in range(300):
        result = await api.call("/api/access-token", {"email": "ann@example.org",
                                                      "password": f"guess-{n}"},
                                headers=at("203.0.113.7"))
        statuses.append(result.status)
    # A refused password weighs three attempts: two guesses reach the identity provider.
    assert statuses[:2] == [401, 401] and set(statuses[2:]) == {429}, statuses[:5]
    assert len(idp.seen) == 2
    refused = await api.error("/api/access-token", {"email": "bob@example.org",
                                                    "password": "x"},
                              headers=at("203.0.113.7"), status=429, code="too_many_attempts")
    assert "address" in refused.body["message"]
    # The same e-mail from elsewhere is refused too; the right password elsewhere passes.
    await api.error("/api/access-token", {"email": "ANN@example.org", "password": "hunter2"},
                    headers=at("198.51.100.9"), status=429)
    assert len(idp.seen) == 2
    # Another e-mail from another address still reaches the identity provider.
    await api.error("/api/access-token", {"email": "cat@example.org", "password": "x"},
                    headers=at("198.51.100.9"), status=401, code="invalid_grant")
    assert len(idp.seen) == 3


async def test_access_token_can_require_a_key(custom_api: MakeApi,
                                              aiohttp_server: Any) -> None:
    idp = TokenServer()
    app = web.Application()
    app.router.add_post("/token", idp.token)
    server = await aiohttp_server(app)
    api, gateway = await custom_api(access_token={"token_url": str(server.make_url("/token")),
                                                  "require_key": True})
    credentials = {"email": "ann@example.org", "password": "hunter2"}
    await api.error("/api/access-token", credentials, status=401, code="missing_key")
    await api.error("/api/access-token", credentials, key=WRONG, status=401)
    assert idp.seen == []
    body = await api.ok("/api/access-token", credentials, key=await member(api, gateway))
    assert body["access_token"] == "at-123456"


def test_a_bucket_drains_at_its_rate() -> None:
    now = [0.0]
    throttle = Throttle(3, 60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("a") is None
        throttle.add("a")
    wait = throttle.retry_after("a")
    assert wait == pytest.approx(20.0)  # one attempt drains every 20 s
    assert throttle.retry_after("b") is None
    now[0] = 19.9
    assert throttle.retry_after("a") is not None
    now[0] = 20.0
    assert throttle.retry_after("a") is None
    assert Throttle(0, 60).retry_after("a") is None  # 0: off


def test_ipv6_callers_are_counted_by_their_64() -> None:
    assert bucket_of("2001:db8:1:2::1") == bucket_of("2001:db8:1:2:ffff::9")
    assert bucket_of("2001:db8:1:3::1") != bucket_of("2001:db8:1:2::1")
    assert bucket_of("::ffff:192.0.2.1") == "192.0.2.1"

