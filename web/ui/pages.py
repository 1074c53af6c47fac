"""The web UI's frame: who may open a page, the CSRF check before any change, templates, and the
safety headers on every answer.

Each UI handler is declared with ``@page(...)``; ``guarded`` wraps it by that declaration when
its route is registered (``setup`` registers every UI route so), so no handler can forget a
check:

- it loads the session from the cookie (``current(request)``);
- a page that needs a sign-in sends a browser to ``/login?next=…`` (or a 401 to ``fetch``);
- a page kept for some roles answers 403 to the others;
- any method but GET/HEAD must carry the CSRF token (``csrf.py``), else 403;
- a ``GatewayError`` becomes a readable page with its status (JSON for ``fetch`` endpoints);
- every answer gets a Content-Security-Policy with no inline script, and friends.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import web

from core.errors import Forbidden, GatewayError, Unauthorized
from core.models import Principal, Role

from ..errors import client_gone
from ..inputs import upload_limit
from ..keys import SETTINGS
from . import csrf
from .sessions import COOKIE, Flash, Session
from .state import SESSION, SESSIONS, TEMPLATES

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",  # blob: the member's own images, shown before they are sent
    "font-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])
"""Scripts, styles and everything else only from this server, never inline: even HTML that got
past the sanitiser could neither run script nor load anything from elsewhere."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_RULES_ATTR = "__ui_page__"

STATUS_TITLES = {
    400: "That request was not understood",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed this way",
    409: "Conflict",
    413: "Too large",
    429: "Slow down",
    500: "Something went wrong",
    501: "Not available here",
    502: "The model's server failed",
    503: "Not available right now",
}


@dataclass(frozen=True, slots=True)
class Rules:
    login: bool
    roles: tuple[Role, ...] | None
    csrf: Literal["session", "login"]
    json_errors: bool
    refusal: str
    uploads: bool = False


def page(*, login: bool = True, roles: tuple[Role, ...] | None = None,
         csrf_kind: Literal["session", "login"] = "session", json_errors: bool = False,
         refusal: str = "Your key does not open this page.",
         uploads: bool = False) -> Callable[[Handler], Handler]:
    """Declare a UI handler and what it needs (see the module docstring). ``uploads``: its
    form may carry images and files, up to ``[chat] max_attachment_bytes`` beyond the body
    limit."""

    def mark(handler: Handler) -> Handler:
        setattr(handler, _RULES_ATTR,
                Rules(login, roles, csrf_kind, json_errors, refusal, uploads))
        return handler

    return mark


def rules_of(handler: object) -> Rules | None:
    rules = getattr(handler, _RULES_ATTR, None)
    return rules if isinstance(rules, Rules) else None


def current(request: web.Request) -> Session | None:
    return request.get(SESSION)


def signed_in(request: web.Request) -> Session:
    """The session of a page declared with ``login=True``."""
    session = current(request)
    if session is None:
        raise Unauthorized("Please sign in.", code="signed_out")
    return session


def secure(response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def login_url(request: web.Request) -> str:
    target = request.path_qs if request.method == "GET" else "/chat"
    return "/login" if target in ("/", "/chat") else f"/login?next={quote(target, safe='')}"


async def flash(request: web.Request, kind: Literal["ok", "error"], text: str) -> None:
    """A notice for the next page this browser shows."""
    session = current(request)
    if session is not None:
        await request.app[SESSIONS].set_flash(session.id_hash, Flash(kind, text))


async def render(request: web.Request, template: str, context: Mapping[str, Any] | None = None,
                 *, status: int = 200) -> web.Response:
    session = current(request)
    principal: Principal | None = session.principal if session else None
    if session is not None and session.flash is not None:
        await request.app[SESSIONS].set_flash(session.id_hash, None)
    base: dict[str, Any] = {
        "principal": principal,
        "csrf_token": session.csrf_token if session else "",
        "flash": session.flash if session else None,
        "can_manage": principal is not None and principal.role in ("admin", "client"),
        "is_admin": principal is not None and principal.is_admin,
        "section": "",
    }
    base.update(context or {})
    response = request.app[TEMPLATES].page(template, base, status=status)
    # Pages show keys, conversations and tokens: never kept by a shared cache or the back button
    # of the next person at a shared computer.
    response.headers["Cache-Control"] = "no-store"
    return response


async def error_page(request: web.Request, status: int, message: str, *,
                     code: str = "error", json_errors: bool = False,
                     retry_after: float | None = None) -> web.Response:
    if json_errors:
        response = web.json_response({"status": "error", "message": message, "code": code},
                                     status=status)
    else:
        response = await render(request, "error.html", {
            "status": status, "title": STATUS_TITLES.get(status, "Error"), "message": message,
        }, status=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(retry_after)))
    return response


def guarded(handler: Handler) -> Handler:
    """``handler`` behind its ``@page`` rules; ``setup`` registers every UI route this way, so
    the checks cost nothing to the API's routes (no middleware of the whole app)."""
    rules = rules_of(handler)
    if rules is None:
        raise TypeError(f"{handler.__qualname__} is a UI route without @page(...)")
    checked = rules

    async def serve(request: web.Request) -> web.StreamResponse:
        return await _serve_page(request, handler, checked)

    setattr(serve, _RULES_ATTR, rules)
    serve.__qualname__ = handler.__qualname__
    return serve


class SecureStatic(web.StaticResource):
    """The UI's static files, with the safety headers every UI answer carries."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await super()._handle(request)
        secure(response)
        return response


async def unmatched_page(request: web.Request, exc: web.HTTPException) -> web.StreamResponse | None:
    """An unknown address (or method) typed into a browser gets a page, not the API's JSON;
    None for other callers. The app's error middleware asks (web/app.py)."""
    if not wants_html(request) or exc.status not in (404, 405):
        return None
    await _load(request)
    message = ("There is no page at this address." if exc.status == 404
               else f"{request.method} is not allowed here.")
    response = await error_page(request, exc.status, message)
    secure(response)
    return response


async def _serve_page(request: web.Request, handler: Handler,
                      rules: Rules) -> web.StreamResponse:
    if not rules.uploads:
        return await _checked_page(request, handler, rules)
    # Read by no one yet (the CSRF check reads the form too): the larger bound is the clone's.
    # aiohttp closes a form's temporary files only for the request it made, so the clone's
    # are closed here, as aiohttp's own _finish does.
    clone = request.clone(client_max_size=upload_limit(request.app[SETTINGS]))
    try:
        return await _checked_page(clone, handler, rules)
    finally:
        clone._finish()


async def _checked_page(request: web.Request, handler: Handler,
                        rules: Rules) -> web.StreamResponse:
    session = await _load(request)
    try:
        if rules.login and session is None:
            if rules.json_errors:
                raise Unauthorized("Your session has ended. Sign in again; your text is kept "
                                   "in the box.", code="signed_out")
            raise see_other(login_url(request))
        if rules.roles is not None and (session is None
                                        or session.principal.role not in rules.roles):
            raise Forbidden(rules.refusal, code="not_allowed")
        if request.method not in ("GET", "HEAD"):
            if rules.csrf == "login":
                await csrf.check_login(request)
            else:
                await csrf.check(request, session.csrf_token if session else None)
        response = await handler(request)
    except GatewayError as err:
        response = await error_page(request, err.status, err.message, code=err.code,
                                    json_errors=rules.json_errors, retry_after=err.retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            secure(exc)
            raise
        reason, code = exc.reason or "error", "error"
        if exc.status == 413:
            code = "body_too_large"
            reason = (f"This request is larger than the {request.client_max_size:,} bytes "
                      "allowed ([server] max_body_bytes).")
            if rules.uploads:
                reason = (f"The message and its files are larger than the "
                          f"{request.client_max_size:,} bytes one message may carry "
                          "([server] max_body_bytes plus [chat] max_attachment_bytes); "
                          "nothing was sent.")
        response = await error_page(request, exc.status, reason, code=code,
                                    json_errors=rules.json_errors)
    except Exception as exc:
        if isinstance(exc, ConnectionError) and client_gone(request):
            log.debug("the client left during %s %s", request.method, request.path)
            return web.Response(status=400, text="the connection was closed")
        ref = secrets.token_hex(4)
        log.exception("unhandled error on %s %s (ref %s)", request.method, request.path, ref)
        response = await error_page(
            request, 500, f"Something broke on our side. Quote reference {ref} to an admin.",
            code="internal_error", json_errors=rules.json_errors)
    if not response.prepared:
        secure(response)
    return response


async def _load(request: web.Request) -> Session | None:
    session = await request.app[SESSIONS].load(request.cookies.get(COOKIE))
    if session is not None:
        request[SESSION] = session
    return session
