"""Signing in and out, the member's keys (their gateway key and their own upstream key), and
access-token retrieval."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.errors import BadRequest, GatewayError, RateLimited, Unauthorized

from ..errors import retry_after_headers
from ..guard import authenticate, exchange_access_token
from ..inputs import read_form
from ..keys import GATEWAY
from . import csrf
from .pages import current, flash, page, render, see_other, signed_in
from .sessions import clear_cookie, set_cookie
from .state import SESSIONS

MAX_KEY_CHARS = 4096
LOGIN_MESSAGES = {
    "missing_key": "Paste your key to sign in.",
    "invalid_key": "That key is not valid. Check that you copied all of it.",
}


def safe_next(value: object) -> str:
    """Where to go after signing in: a path on this site only, never another site."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return "/chat"
    if not value.isprintable() or any(c.isspace() for c in value):
        return "/chat"  # browsers drop tabs and newlines: "/\t/evil.example" is "//evil…"
    if value.startswith(("//", "/\\")) or "\\" in value or value.startswith(("/login",
                                                                           "/logout")):
        return "/chat"
    return value


async def _form(request: web.Request) -> dict[str, str]:
    return {name: value for name, value in (await read_form(request)).items()
            if isinstance(value, str)}


@page(login=False)
async def home(request: web.Request) -> web.StreamResponse:
    raise see_other("/chat" if current(request) else "/login")


@page(login=False, csrf_kind="login")
async def login_form(request: web.Request) -> web.StreamResponse:
    if current(request) is not None:
        raise see_other(safe_next(request.query.get("next")))
    return await _login_page(request, next_path=safe_next(request.query.get("next")))


async def _login_page(request: web.Request, *, next_path: str, error: str | None = None,
                      status: int = 200) -> web.Response:
    token = csrf.login_token(request)
    response = await render(request, "login.html", {
        "login_token": token, "next": next_path, "error": error,
        "signed_out": "bye" in request.query, "section": "login",
    }, status=status)
    csrf.set_login_cookie(request, response, token)
    return response


@page(login=False, csrf_kind="login")
async def login(request: web.Request) -> web.StreamResponse:
    """The key comes in the POST body only: it never appears in a URL, a log or a page."""
    form = await _form(request)
    key = form.get("key", "").strip()[:MAX_KEY_CHARS]
    next_path = safe_next(form.get("next"))
    try:
        principal = await authenticate(request, key)
    except (Unauthorized, BadRequest, RateLimited) as err:
        message = LOGIN_MESSAGES.get(err.code, err.message)
        response = await _login_page(request, next_path=next_path, error=message,
                                     status=err.status)
        response.headers.update(retry_after_headers(err.retry_after))
        return response
    session_id = await request.app[SESSIONS].create(principal, key)
    response = see_other(next_path)
    set_cookie(request, response, session_id)
    response.del_cookie(csrf.LOGIN_COOKIE, path="/login")
    raise response


@page()
async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[SESSIONS].end(signed_in(request).id_hash)
    response = see_other("/login?bye=1")
    clear_cookie(request, response)
    raise response


# --------------------------------------------------------------------------------- keys


@page()
async def keys_page(request: web.Request) -> web.StreamResponse:
    return await _keys_page(request)


async def _keys_page(request: web.Request, **extra: Any) -> web.Response:
    principal = signed_in(request).principal
    context: dict[str, Any] = {"section": "keys", "me": principal, "revealed": None}
    context.update(extra)
    return await render(request, "keys.html", context)


@page()
async def own_key_update(request: web.Request) -> web.StreamResponse:
    principal = signed_in(request).principal
    form = await _form(request)
    gateway = request.app[GATEWAY]
    if form.get("action") == "clear":
        await gateway.set_own_key(principal, None)
        await flash(request, "ok", "Your own key is cleared: new conversations use the "
                                   "organisation's accounts again.")
    else:
        value = form.get("own_key", "").strip()
        if not value:
            raise BadRequest("Paste the key you want to use.", code="missing_own_key")
        if len(value) > MAX_KEY_CHARS:
            raise BadRequest(f"A key can have at most {MAX_KEY_CHARS} characters.",
                             code="own_key_too_long")
        await gateway.set_own_key(principal, value)
        await flash(request, "ok", "Saved, encrypted. Your new conversations now use your own "
                                   "key.")
    raise see_other("/own-key")


@page()
async def rotate_own_key(request: web.Request) -> web.StreamResponse:
    session = signed_in(request)
    principal, key = await request.app[GATEWAY].rotate_key(session.principal)
    # This browser stays signed in; sessions opened elsewhere with the old key end.
    await request.app[SESSIONS].rebind(session.id_hash, key)
    return await _keys_page(request, me=principal,
                            revealed={"name": principal.name, "key": key})


# --------------------------------------------------------------------------------- access token


@page()
async def access_token_page(request: web.Request) -> web.StreamResponse:
    return await _access_token_page(request)


async def _access_token_page(request: web.Request, *, status: int = 200,
                             **extra: Any) -> web.Response:
    context: dict[str, Any] = {
        "section": "access-token", "configured": request.app[GATEWAY].password_grant.configured,
        "token": None, "error": None, "email": "",
    }
    context.update(extra)
    return await render(request, "access_token.html", context, status=status)


@page()
async def access_token_exchange(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    email = form.get("email", "").strip()[:320]
    try:
        token = await exchange_access_token(request, email, form.get("password", "")[:1024])
    except GatewayError as err:
        response = await _access_token_page(request, status=err.status, error=err.message,
                                            email=email)
        response.headers.update(retry_after_headers(err.retry_after))
        return response
    return await _access_token_page(request, token=token, email=email)
