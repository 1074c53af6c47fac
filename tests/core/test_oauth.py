"""Access-token retrieval: the OAuth2 password grant (RFC 6749 §4.3) against a token endpoint,
here a small aiohttp server on 127.0.0.1 started by the test."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from core.config import Settings
from core.errors import BadRequest, NotConfigured, Unauthorized, UpstreamError
from tests.conftest import ENVIRON
from tests.core.conftest import OpenGateway, closed_port

SECRET = "client-secret-9f8e7d"
PASSWORD = "correct horse battery staple"


class TokenServer:
    """Answers like an identity provider; records what it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], str | None, str | None]] = []
        self.answer: tuple[int, Any] = (200, {"access_token": "at-123", "token_type": "Bearer",
                                              "expires_in": 3600, "scope": "llm"})
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.received.append((form, request.headers.get("Authorization"),
                              request.content_type))
        status, body = self.answer
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/oauth/token"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def idp() -> AsyncIterator[TokenServer]:
    server = TokenServer()
    await server.start()
    yield server
    await server.stop()


def _oauth_settings(make_settings: Callable[..., Settings], url: str, **extra: Any) -> Settings:
    return make_settings([], access_token={
        "token_url": url, "client_id": "gateway", "client_secret_env": "OAUTH_SECRET",
        "scope": "openid llm", **extra})


ENV = {**ENVIRON, "OAUTH_SECRET": SECRET}


async def test_password_grant_returns_the_token_and_its_expiry(
    idp: TokenServer, make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await open_gateway(_oauth_settings(make_settings, idp.url), environ=ENV)
    with caplog.at_level(logging.DEBUG):
        token = await gw.access_token("ann@example.org", PASSWORD)
    assert token.public() == {"access_token": "at-123", "token_type": "Bearer",
                              "expires_in": 3600, "refresh_token": None, "scope": "llm"}

    [(form, authorization, content_type)] = idp.received
    assert content_type == "application/x-www-form-urlencoded"
    assert form == {"grant_type": "password", "username": "ann@example.org",
                    "password": PASSWORD, "scope": "openid llm"}
    assert authorization is not None and authorization.startswith("Basic ")
    assert base64.b64decode(authorization[6:]).decode() == f"gateway:{SECRET}"
    # Neither password, secret nor token reaches the log.
    for secret in (PASSWORD, SECRET, "at-123"):
        assert secret not in caplog.text


async def test_without_client_id_no_client_auth_and_no_scope(
    idp: TokenServer, make_settings: Callable[..., Settings], open_gateway: OpenGateway,
) -> None:
    settings = make_settings([], access_token={"token_url": idp.url})
    gw = await open_gateway(settings, environ=ENV)
    await gw.access_token("ann@example.org", PASSWORD)
    [(form, authorization, _)] = idp.received
    assert authorization is None
    assert form == {"grant_type": "password", "username": "ann@example.org",
                    "password": PASSWORD}


@pytest.mark.parametrize(
    "answer",
    [(400, {"error": "invalid_grant", "error_description": "Invalid user credentials"}),
     (401, {"error": "invalid_client"})],
    ids=["invalid_grant", "401"],
)
async def test_refused_credentials_are_unauthorized(
    idp: TokenServer, make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    answer: tuple[int, Any],
) -> None:
    gw = await open_gateway(_oauth_settings(make_settings, idp.url), environ=ENV)
    idp.answer = answer
    with pytest.raises(Unauthorized) as caught:
        await gw.access_token("ann@example.org", "wrong")
    assert caught.value.status == 401


@pytest.mark.parametrize(
    "answer",
    [(500, {"error": "server_error"}), (200, "<html>login page</html>"), (200, {"no": "token"}),
     (400, {"error": "unsupported_grant_type"})],
    ids=["500", "html", "no-token", "unsupported-grant"],
)
async def test_a_broken_identity_provider_is_an_upstream_error(
    idp: TokenServer, make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    answer: tuple[int, Any],
) -> None:
    gw = await open_gateway(_oauth_settings(make_settings, idp.url), environ=ENV)
    idp.answer = answer
    with pytest.raises(UpstreamError) as caught:
        await gw.access_token("ann@example.org", PASSWORD)
    assert caught.value.status == 502


async def test_an_unreachable_identity_provider_is_an_upstream_error(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/oauth/token"
    gw = await open_gateway(_oauth_settings(make_settings, url), environ=ENV)
    with pytest.raises(UpstreamError) as caught:
        await gw.access_token("ann@example.org", PASSWORD)
    assert caught.value.code == "identity_provider_unreachable"


async def test_missing_email_or_password_is_a_bad_request(
    idp: TokenServer, make_settings: Callable[..., Settings], open_gateway: OpenGateway,
) -> None:
    gw = await open_gateway(_oauth_settings(make_settings, idp.url), environ=ENV)
    for email, password in (("", PASSWORD), ("ann@example.org", "")):
        with pytest.raises(BadRequest):
            await gw.access_token(email, password)
    assert idp.received == []


async def test_not_configured_is_501(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway,
) -> None:
    gw = await open_gateway(make_settings([]))
    with pytest.raises(NotConfigured) as caught:
        await gw.access_token("ann@example.org", PASSWORD)
    assert caught.value.status == 501


async def test_client_credentials_are_form_encoded_inside_basic_auth(
    idp: TokenServer, make_settings: Callable[..., Settings], open_gateway: OpenGateway,
) -> None:
    settings = _oauth_settings(make_settings, idp.url, client_id="org:gateway")
    gw = await open_gateway(settings, environ={**ENV, "OAUTH_SECRET": "s3cr3t+/ x"})
    await gw.access_token("ann@example.org", PASSWORD)
    [(_, authorization, _)] = idp.received
    assert authorization is not None
    assert base64.b64decode(authorization[6:]).decode() == "org%3Agateway:s3cr3t%2B%2F+x"
