"""/api/admin/accounts (health, cool-downs, counts; enable/disable), /api/access-token (the OAuth2
password grant, or a clear 501 when not configured) and /healthz."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.upstream import FakeUpstream, Status

from .support import VIAS, Api, MakeApi, People, Via, user_key


@pytest.mark.parametrize("via", VIAS)
async def test_accounts_health_and_counts(api: Api, people: People, upstream_a: FakeUpstream,
                                          upstream_b: FakeUpstream, via: Via) -> None:
    ann = await user_key(api, people)
    first = await api.chat(ann, "one")
    second = await api.chat(ann, "two")
    await api.chat(ann, "three", conversation_id=first["conversation_id"])
    upstream_a.enqueue(Status(503, headers={"Retry-After": "30"}))
    await api.chat(ann, "four")  # A fails and cools; B answers

    body = await api.ok("/api/admin/accounts", key=people.admin, via=via)
    accounts = {a["name"]: a for a in body["accounts"]}
    assert list(accounts) == ["A", "B", "P"]
    a, b, p = accounts["A"], accounts["B"], accounts["P"]
    assert (a["tier"], b["tier"], p["tier"]) == ("free", "free", "plus")
    assert a["model"] == "model-a" and a["base_url"] == upstream_a.base_url
    assert a["health"] == "cooling" and a["cooldown_reason"] == "server"
    assert 25 < a["cooldown_s"] <= 30
    assert b["health"] == p["health"] == "healthy" and b["cooldown_s"] == 0
    assert (a["requests"], a["failures"]) == (3, 1)
    assert (b["requests"], b["failures"]) == (2, 0)
    assert p["requests"] == 0
    assert a["output_tokens"] > 0 and a["in_flight"] == 0
    assert "sk-account" not in str(body)
    stats = body["stats"]
    # The usage log counts callers' requests: a failover that ended well is no failure.
    assert stats["conversations"] == 3 and stats["turns"] == 4
    assert stats["requests"] == 4 and stats["failures"] == 0
    upstream_b.enqueue(Status(500))
    await api.error("/api/chat", {"prompt": "five", "conversation_id": second["conversation_id"]},
                    key=ann, status=502, code="upstream_server")
    stats = (await api.ok("/api/admin/accounts", key=people.admin, via=via))["stats"]
    assert stats["requests"] == 5 and stats["failures"] == 1


@pytest.mark.parametrize("via", VIAS)
async def test_enable_and_disable(api: Api, people: People, via: Via) -> None:
    ann = await user_key(api, people)
    body = await api.ok("/api/admin/accounts", {"action": "disable", "name": "B"},
                        key=people.admin, via=via)
    accounts = {a["name"]: a for a in body["accounts"]}
    assert accounts["B"]["health"] == "out" and accounts["B"]["out_reason"]
    assert [(await api.chat(ann, f"q{i}"))["account"] for i in range(3)] == ["A", "A", "A"]
    health = await api.ok("/healthz", via=via)
    assert health["accounts"] == {"healthy": 2, "cooling": 0, "out": 1}
    body = await api.ok("/api/admin/accounts", {"action": "enable", "name": "B"},
                        key=people.admin, via=via)
    assert {a["name"]: a["health"] for a in body["accounts"]}["B"] == "healthy"
    assert {(await api.chat(ann, f"r{i}"))["account"] for i in range(2)} == {"A", "B"}


async def test_accounts_bad_input(api: Api, people: People) -> None:
    await api.error("/api/admin/accounts", {"action": "disable", "name": "Z"},
                    key=people.admin, status=404, code="account_not_found")
    await api.error("/api/admin/accounts", {"action": "disable"}, key=people.admin,
                    status=400, code="missing_name")
    await api.error("/api/admin/accounts", {"action": "explode", "name": "A"},
                    key=people.admin, status=400, code="invalid_parameter")


async def test_accounts_is_admin_only(api: Api, people: People) -> None:
    ann = await user_key(api, people)
    for key in (people.client, ann):
        for via in VIAS:
            await api.error("/api/admin/accounts", key=key, via=via, status=403,
                            code="admin_only")
        await api.error("/api/admin/accounts", {"action": "disable", "name": "A"}, key=key,
                        status=403, code="admin_only")
    body = await api.ok("/api/admin/accounts", key=people.admin)
    assert all(a["health"] == "healthy" for a in body["accounts"])


@pytest.mark.parametrize("via", VIAS)
async def test_healthz(api: Api, via: Via) -> None:
    result = await api.call("/healthz", via=via)
    assert result.status == 200
    assert result.body == {"status": "ok", "database": "ok",
                           "accounts": {"healthy": 3, "cooling": 0, "out": 0}}


# ----------------------------------------------------------------------------- access token


@pytest.mark.parametrize("via", VIAS)
async def test_access_token_not_configured_is_501(api: Api, via: Via) -> None:
    await api.error("/api/access-token", {"email": "a@b.c", "password": "pw"}, via=via,
                    status=501, code="access_token_not_configured")
    await api.error("/api/access-token", via=via, status=501)


class TokenServer:
    """An identity provider's token endpoint (RFC 6749 §4.3) that knows one user."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        auth = request.headers.get("Authorization", "")
        self.seen.append({"form": form, "auth": auth})
        if form.get("grant_type") != "password":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if (form.get("username"), form.get("password")) != ("ann@example.org", "hunter2"):
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": "at-123456", "token_type": "Bearer",
                                  "expires_in": 3600, "scope": "chat"})


@pytest.fixture
async def token_api(custom_api: MakeApi, aiohttp_server: Any) -> tuple[Api, TokenServer]:
    idp = TokenServer()
    app = web.Application()
    app.router.add_post("/token", idp.token)
    server = await aiohttp_server(app)
    api, _ = await custom_api(
        access_token={"token_url": str(server.make_url("/token")), "client_id": "gateway",
                      "client_secret_env": "IDP_SECRET", "scope": "chat"},
        environ={"IDP_SECRET": "s3cret"},
    )
    return api, idp


@pytest.mark.parametrize("via", VIAS)
async def test_access_token_password_grant(token_api: tuple[Api, TokenServer], via: Via) -> None:
    api, idp = token_api
    body = await api.ok("/api/access-token", {"email": "ann@example.org",
                                              "password": "hunter2"}, via=via)
    assert body["access_token"] == "at-123456"
    assert body["expires_in"] == 3600 and body["token_type"] == "Bearer"
    [seen] = idp.seen
    assert seen["form"] == {"grant_type": "password", "username": "ann@example.org",
                            "password": "hunter2", "scope": "chat"}
    assert seen["auth"] == "Basic " + base64.b64encode(b"gateway:s3cret").decode()


async def test_access_token_bad_input(token_api: tuple[Api, TokenServer]) -> None:
    api, idp = token_api
    for params in ({}, {"email": "ann@example.org"}, {"password": "hunter2"},
                   {"email": "", "password": "x"}):
        for via in VIAS:
            await api.error("/api/access-token", params, via=via, status=400,
                            code="missing_credentials")
    assert idp.seen == []
    await api.error("/api/access-token", {"email": "ann@example.org", "password": "wrong"},
                    status=401, code="invalid_grant")


async def test_access_token_provider_down_is_502(custom_api: MakeApi,
                                                 unused_tcp_port: int) -> None:
    api, _ = await custom_api(access_token={"token_url": f"http://127.0.0.1:{unused_tcp_port}/t"})
    await api.error("/api/access-token", {"email": "a@b.c", "password": "pw"}, status=502,
                    code="identity_provider_unreachable")
