"""Key checks and access-token exchanges as every front of the web app makes them: through
the throttles of ``throttle.py``, so no front can skip them.

- ``authenticate(request, key)``: an address with too many failed key checks is refused (429)
  before its key is even looked at; a failed check counts against it, a valid key never does.
- ``exchange_access_token(request, email, password)``: each exchange counts against the caller's
  address and the e-mail, a refused password three times.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from core.config import Settings
from core.errors import BadRequest, Unauthorized
from core.models import Principal
from core.oauth import AccessToken

from .keys import GATEWAY
from .throttle import Throttle, client_address, parse_networks

REFUSED_TOKEN_WEIGHT = 3.0
"""A refused password costs this many attempts: guessing is what the throttle is for."""
MAX_KEY_CHARS = 4096


class Guard:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        self.trusted_proxies = parse_networks(settings.server.trusted_proxies)
        self.key_failures = Throttle(settings.limits.key_failures_per_minute, 60, clock=clock)
        per_minute = settings.access_token.attempts_per_minute
        self.token_by_address = Throttle(per_minute, 60, clock=clock)
        self.token_by_email = Throttle(per_minute, 60, clock=clock)

    def address(self, request: web.BaseRequest) -> str:
        return client_address(request, self.trusted_proxies)


GUARD = web.AppKey("guard", Guard)


def check_key_text(key: str) -> str:
    """A key is printable ASCII: anything else (bytes a header cannot carry, a lone surrogate)
    is a malformed request, not a wrong key, and must not reach the hash."""
    key = key.strip()
    if len(key) > MAX_KEY_CHARS or not (key.isascii() and key.isprintable()):
        raise BadRequest("the API key is malformed: a key is printable ASCII",
                         code="malformed_key")
    return key


async def authenticate(request: web.Request, key: str | None) -> Principal:
    gateway = request.app[GATEWAY]
    if not key:
        return await gateway.authenticate(key)  # a missing key is no guess: not counted
    guard = request.app[GUARD]
    address = guard.address(request)
    guard.key_failures.check([address], "too many failed key checks from your address")
    try:
        return await gateway.authenticate(check_key_text(key))
    except (Unauthorized, BadRequest):
        guard.key_failures.add(address)
        raise


async def exchange_access_token(request: web.Request, email: str,
                                password: str) -> AccessToken:
    gateway = request.app[GATEWAY]
    if not (gateway.access_token_configured and email and password):
        # Refused without asking the identity provider (not configured, nothing to send).
        return await gateway.access_token(email, password)
    guard = request.app[GUARD]
    address, who = guard.address(request), email.strip().lower()
    guard.token_by_address.check([address], "too many access-token attempts from your address")
    guard.token_by_email.check([who], "too many access-token attempts for this e-mail")
    guard.token_by_address.add(address)
    guard.token_by_email.add(who)
    try:
        return await gateway.access_token(email, password)
    except Unauthorized:
        guard.token_by_address.add(address, REFUSED_TOKEN_WEIGHT - 1)
        guard.token_by_email.add(who, REFUSED_TOKEN_WEIGHT - 1)
        raise
