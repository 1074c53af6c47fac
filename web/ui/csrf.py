"""CSRF protection for the web UI: every state-changing request carries a token that another
site cannot know.

- Signed in: the session's own random token (synchronizer token), sent as the ``csrf_token``
  form field or the ``X-CSRF-Token`` header.
- Signing in (no session yet): a double-submit token, set in a short-lived HttpOnly,
  SameSite=Strict cookie and repeated in the form, so no other site can sign a browser in.

A missing or wrong token is a 403, checked before the handler runs.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from core.errors import Forbidden

from ..inputs import read_form
from .sessions import is_https

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
LOGIN_COOKIE = "gw_login_csrf"
LOGIN_COOKIE_AGE_S = 3600

REFUSED = ("This form has expired or did not come from this site. Reload the page and try "
           "again.")


async def submitted(request: web.Request) -> str:
    """The token the request carries: the header, else the form field."""
    header = request.headers.get(HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await read_form(request)).get(FIELD)
        return value if isinstance(value, str) else ""
    return ""


def matches(given: str, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(
        given.encode("utf-8"), (expected or "").encode("utf-8"))


async def check(request: web.Request, expected: str | None) -> None:
    if not matches(await submitted(request), expected):
        raise Forbidden(REFUSED, code="csrf_failed")


def login_token(request: web.Request) -> str:
    """The sign-in form's token: the one the browser already holds, else a new one."""
    current = request.cookies.get(LOGIN_COOKIE, "")
    return current if 20 <= len(current) <= 100 else secrets.token_urlsafe(32)


def set_login_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(LOGIN_COOKIE, token, max_age=LOGIN_COOKIE_AGE_S, path="/login",
                        httponly=True, samesite="Strict", secure=is_https(request))


async def check_login(request: web.Request) -> None:
    await check(request, request.cookies.get(LOGIN_COOKIE))
