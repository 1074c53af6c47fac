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


def error_middleware_for(render: Render, page: Page | None = None) -> Middleware:
    """A middleware giving every failure the shape ``render`` draws: the API's own, or
    OpenAI's envelope on /v1. One mechanism, so both get every fix (the 405's Allow header).
    ``page``, when given, may answer an unknown address (a browser's) in its own way."""

    def answer(request: web.Request, status: int, message: str, code: str,
               param: str | None, retry_after: float | None) -> web.Response:
        request[ERROR_CODE] = code
        return render(status, message, code, param, retry_after)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.app is request.match_info.apps[-1]:
                # The innermost app's middleware checks, so /v1 answers in its own shape.
                check_query_and_path(request)
            return await handler(request)
        except GatewayError as err:
            return answer(request, err.status, err.message, err.code,
                          getattr(err, "param", None), err.retry_after)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if page is not None and request.match_info.http_exception is not None:
                shown = await page(request, exc)
                if shown is not None:
                    return shown
            message = {
                404: f"no endpoint at {request.path}",
                405: f"{request.method} is not allowed on {request.path}",
                413: "the request body is too large",
            }.get(exc.status, exc.reason)
            response = answer(request, exc.status, message,
                              _HTTP_CODES.get(exc.status, "http_error"), None, None)
            if "Allow" in exc.headers:  # a 405 must say which methods are allowed (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception as exc:
            if isinstance(exc, ConnectionError) and client_gone(request):
                # The caller hung up mid-request (mid-body, say): no one to answer, no bug.
                log.debug("the client left during %s %s", request.method, request.path)
                return answer(request, 400, "the connection was closed", "client_gone", None, None)
            ref = secrets.token_hex(4)
            log.exception("unhandled error on %s %s (ref %s)", request.method, request.path, ref)
            return answer(request, 500, f"internal error; quote reference {ref} to an admin",
                          "internal_error", None, None)

    return middleware


def api_error(status: int, message: str, code: str, _param: str | None,
              retry_after: float | None) -> web.Response:
    return error_response(status, message, code, retry_after)

