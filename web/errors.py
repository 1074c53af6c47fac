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

from core.errors import GatewayError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    400: "bad_request",
}


def error_response(status: int, message: str, code: str,
                   retry_after: float | None = None) -> web.Response:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return web.json_response({"status": "error", "message": message, "code": code},
                             status=status, headers=headers)


def gateway_error_response(err: GatewayError) -> web.Response:
    return error_response(err.status, err.message, err.code, err.retry_after)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as err:
        return gateway_error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"no endpoint at {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: "the request body is too large",
        }.get(exc.status, exc.reason)
        response = error_response(exc.status, message, _HTTP_CODES.get(exc.status, "http_error"))
        if "Allow" in exc.headers:  # a 405 must say which methods are allowed (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        ref = secrets.token_hex(4)
        log.exception("unhandled error on %s %s (ref %s)", request.method, request.path, ref)
        return error_response(500, f"internal error; quote reference {ref} to an admin",
                              "internal_error")
