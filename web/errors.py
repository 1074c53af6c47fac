"""Errors at the HTTP edge: one JSON shape, the right status, never a stack trace.

    {"status": "error", "message": "...", "code": "..."}

A ``GatewayError`` carries its own status and message. aiohttp's own HTTP errors (unknown path,
wrong method, body too large) get the same shape. Anything else is a bug: logged with its
traceback under a short reference that the caller sees, so a report can be matched to the log.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from core.errors import GatewayError

from .inputs import check_query_and_path

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Render = Callable[[int, str, str, "str | None", "float | None"], web.Response]
"""Builds an error response from status, message, code, offending parameter, retry-after."""
Page = Callable[[web.Request, web.HTTPException], Awaitable["web.StreamResponse | None"]]
"""Answers an unknown address its own way (the web UI's page for a browser), or None."""

ERROR_CODE = web.RequestKey("error_code", str)
"""The code of the error a request was answered with, for the metrics (web/metrics.py)."""

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    400: "bad_request",
}


def retry_after_headers(retry_after: float | None) -> dict[str, str]:
    if retry_after is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(retry_after)))}


def error_response(status: int, message: str, code: str,
                   retry_after: float | None = None) -> web.Response:
    return web.json_response({"status": "error", "message": message, "code": code},
                             status=status, headers=retry_after_headers(retry_after))


def client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def failure_response(request: web.Request, exc: Exception, render: Render,
                           page: Page | None = None) -> web.StreamResponse:
    """The answer to a request that failed with ``exc``, in the shape ``render`` draws: the
    API's own, or OpenAI's envelope on /v1. One mechanism, so both get every fix (the 405's
    Allow header). ``page``, when given, may answer an unknown address (a browser's) in its
    own way. An ``HTTPException`` below 400 (a redirect) is raised again."""

    def answer(status: int, message: str, code: str, param: str | None = None,
               retry_after: float | None = None) -> web.Response:
        request[ERROR_CODE] = code
        return render(status, message, code, param, retry_after)

    if isinstance(exc, GatewayError):
        return answer(exc.status, exc.message, exc.code, getattr(exc, "param", None),
                      exc.retry_after)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        if page is not None and request.match_info.http_exception is not None:
            shown = await page(request, exc)
            if shown is not None:
                return shown
        message = {
            404: f"no endpoint at {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: "the request body is too large",
        }.get(exc.status, exc.reason)
        response = answer(exc.status, message, _HTTP_CODES.get(exc.status, "http_error"))
        if "Allow" in exc.headers:  # a 405 must say which methods are allowed (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    if isinstance(exc, ConnectionError) and client_gone(request):
        # The caller hung up mid-request (mid-body, say): no one to answer, no bug.
        log.debug("the client left during %s %s", request.method, request.path)
        return answer(400, "the connection was closed", "client_gone")
    ref = secrets.token_hex(4)
    log.error("unhandled error on %s %s (ref %s)", request.method, request.path, ref,
              exc_info=exc)
    return answer(500, f"internal error; quote reference {ref} to an admin", "internal_error")


def error_middleware_for(render: Render, page: Page | None = None,
                         prefixed: tuple[str, Render] | None = None) -> Middleware:
    """A middleware answering every failure with ``failure_response``. ``prefixed``: a path
    prefix whose addresses (/v1) answer in another shape, without ``page``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            check_query_and_path(request)
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure gets its answer there
            if prefixed is not None and under(request.path, prefixed[0]):
                return await failure_response(request, exc, prefixed[1])
            return await failure_response(request, exc, render, page)

    return middleware


def under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or an address below it."""
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def api_error(status: int, message: str, code: str, _param: str | None,
              retry_after: float | None) -> web.Response:
    return error_response(status, message, code, retry_after)

