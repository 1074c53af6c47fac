"""The access log, with key, token and password parameters masked out of every URL."""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from .params import SECRET_PARAMS


def redact_url(url: URL) -> str:
    if not url.query:
        return url.path
    query = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in url.query.items()]
    return str(url.with_query(query))


_SECRET_IN_TEXT = re.compile(
    r"(?i)\b(" + "|".join(sorted(SECRET_PARAMS, key=len, reverse=True)) + r")=[^&\s'\"]*"
)


def redact_text(text: str) -> str:
    """``user=KEY`` and the like masked anywhere in free text (a raw request line)."""
    return _SECRET_IN_TEXT.sub(r"\1=***", text)


class SecretFilter(logging.Filter):
    """Masks secret parameters in records of aiohttp's server logger, which logs a request it
    cannot parse (a request line over the size limit, say) with the raw bytes of that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), None
        if record.exc_info:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1fms', request.remote, request.method, redact_url(request.rel_url),
            response.status, time * 1000,
        )
