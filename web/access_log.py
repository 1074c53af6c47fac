"""The access log, with key, token and password parameters masked out of every URL."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from .params import SECRET_PARAMS


def redact_url(url: URL) -> str:
    if not url.query:
        return url.path
    query = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in url.query.items()]
    return str(url.with_query(query))


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1fms', request.remote, request.method, redact_url(request.rel_url),
            response.status, time * 1000,
        )
