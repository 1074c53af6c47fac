"""Web UI sessions: the cookie that carries one. The sessions themselves live in the core
(``core.web_sessions``), in the storage, so every gateway process serves them."""

from __future__ import annotations

from aiohttp import web

from core.web_sessions import COOKIE, MAX_AGE, Flash, Session, WebSessions

__all__ = ["COOKIE", "Flash", "Session", "WebSessions", "clear_cookie", "is_https", "set_cookie"]


def set_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    response.set_cookie(
        COOKIE, session_id, max_age=int(MAX_AGE.total_seconds()), path="/", httponly=True,
        samesite="Lax", secure=is_https(request),
    )


def clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Lax",
                        secure=is_https(request))


def is_https(request: web.Request) -> bool:
    """Behind a TLS-terminating proxy the cookie is still marked Secure."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
