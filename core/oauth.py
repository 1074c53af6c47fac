"""Access-token retrieval: the OAuth2 resource-owner password grant (RFC 6749 §4.3).

The original project swapped a ChatGPT email and password for an access token. Here the same
exchange is the standard grant against the organisation's identity provider; the token it returns
is what a member then passes as ``access_token``. Neither password nor token is ever logged.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import aiohttp
from pydantic import SecretStr

from .config import AccessTokenSettings
from .errors import BadRequest, NotConfigured, Unauthorized, UpstreamError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AccessToken:
    access_token: str
    token_type: str
    expires_in: int | None
    refresh_token: str | None
    scope: str | None

    def public(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "scope": self.scope,
        }


class PasswordGrant:
    def __init__(self, settings: AccessTokenSettings, client_secret: SecretStr | None,
                 session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self._client_secret = client_secret
        self._session = session

    @property
    def configured(self) -> bool:
        return bool(self.settings.token_url)

    async def exchange(self, email: str, password: str) -> AccessToken:
        if not self.configured:
            raise NotConfigured(
                "access-token retrieval is not configured on this gateway ([access_token] "
                "token_url is empty)", code="access_token_not_configured",
            )
        if not email or not password:
            raise BadRequest("email and password are both required", code="missing_credentials")
        form = {"grant_type": "password", "username": email, "password": password}
        if self.settings.scope:
            form["scope"] = self.settings.scope
        headers = {"Accept": "application/json"}
        if self.settings.client_id:
            # RFC 6749 §2.3.1: HTTP Basic with the client credentials is the form every server
            # must accept; each part form-urlencoded first. (Built here: aiohttp.BasicAuth is
            # deprecated and skips that encoding.)
            secret = self._client_secret.get_secret_value() if self._client_secret else ""
            pair = f"{quote_plus(self.settings.client_id)}:{quote_plus(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        try:
            async with self._session.post(
                self.settings.token_url, data=form, headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("token endpoint unreachable: %s", type(exc).__name__)
            raise UpstreamError("the identity provider cannot be reached",
                                code="identity_provider_unreachable") from None
        log.info("token endpoint answered status=%s", status)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamError("the identity provider gave an answer that is not JSON",
                                code="identity_provider_error")
        if (status == 400 and data.get("error") == "invalid_grant") or status == 401:
            raise Unauthorized("the identity provider refused this email and password",
                               code="invalid_grant")
        if status >= 400 or "access_token" not in data:
            error = data.get("error_description") or data.get("error") or f"HTTP {status}"
            raise UpstreamError(f"the identity provider refused the request: {error}",
                                code="identity_provider_error")
        expires = data.get("expires_in")
        return AccessToken(
            access_token=str(data["access_token"]),
            token_type=str(data.get("token_type", "Bearer")),
            expires_in=int(expires) if isinstance(expires, int | float | str)
            and str(expires).isdigit() else None,
            refresh_token=data.get("refresh_token"),
            scope=data.get("scope"),
        )
