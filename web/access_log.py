"""The access log, with key, token and password parameters masked out of every URL."""

from __future__ import annotations

import logging
import re
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from core import request_notes

from .params import SECRET_PARAMS


def redact_url(url: URL) -> str:
    if not url.query:
        return url.path
    query = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in url.query.items()]
    return str(url.with_query(query))


_SECRET_IN_TEXT = re.compile(
    r"(?i)\b(" + "|".join(sorted(SECRET_PARAMS, key=len, reverse=True)) + r")=[^&\s'\"]*"
)
_TOKEN_AFTER_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)[^\s'\",;]+")
"""An Authorization value, up to the next space or quote. In a raw header line logged as a
bytes repr, an invalid byte shows as ``\\xff`` and CR LF as ``\\r\\n``: all masked with it."""
_KEY_SHAPES = re.compile(r"\b(gw_|sk-)[A-Za-z0-9_-]{8,}")
"""A gateway key (core/keys.py) or an OpenAI-style key, wherever it shows up."""


def redact_text(text: str) -> str:
    """Keys and tokens masked anywhere in free text: ``user=KEY`` and the like, any
    ``Bearer TOKEN``, and anything shaped like a key."""
    # Each pattern runs only where it can match: a case-blind search costs ~30,000
    # instructions a line (issue 14), on two lines a request, most of which hold no secret
    # parameter, no scheme and no key. The substring tests hold for ASCII only: with (?i),
    # 'ſ' matches 's' and 'K' (Kelvin) 'k', so other text goes through every pattern.
    if not text.isascii():
        return _redact_all(text)
    lowered = text.lower()
    for name in _SECRET_NAMES_EQ:  # a loop, not any() over a generator: half the time
        if name in lowered:
            text = _SECRET_IN_TEXT.sub(r"\1=***", text)
            break
    if "bearer" in lowered or "basic" in lowered:
        text = _TOKEN_AFTER_SCHEME.sub(r"\1\2***", text)
    if "gw_" in text or "sk-" in text:
        text = _KEY_SHAPES.sub(r"\1***", text)
    return text


_SECRET_NAMES_EQ = tuple(f"{name}=" for name in SECRET_PARAMS)


def _redact_all(text: str) -> str:
    text = _SECRET_IN_TEXT.sub(r"\1=***", text)
    text = _TOKEN_AFTER_SCHEME.sub(r"\1\2***", text)
    return _KEY_SHAPES.sub(r"\1***", text)


class SecretFilter(logging.Filter):
    """Masks keys and tokens in every record it sees. bot.py installs it on the handler that
    writes the log, so it covers every logger: aiohttp's server logger, for one, logs a request
    it cannot parse with the raw bytes of its request line or headers."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), None
        if record.exc_info:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


class RedactingAccessLogger(AbstractAccessLogger):
    """One line a request, with what its upstream calls noted (core/request_notes.py)."""

    @property
    def enabled(self) -> bool:
        """aiohttp asks once a connection, and calls ``log`` only when this is true; the
        notes of a request are opened only then too (web/server.track_requests)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse,
            seconds: float) -> None:
        notes = request_notes.end()
        # Only when ``enabled``: the logger lets INFO through.
        self.logger.handle(_AccessRecord(
            self.logger.name, '%s "%s %s" %s %.1fms%s',
            (request.remote, request.method, redact_url(request.rel_url), response.status,
             seconds * 1000, "".join(" " + note for note in notes))))


class _AccessRecord(logging.LogRecord):
    """The access line's INFO record, made directly: ``Logger.info`` looks for its caller and
    ``LogRecord.__init__`` splits a file name and looks up the level's name, 4 of the 5
    microseconds the line cost the event loop (issue 14). The attributes are those of a
    record logged with the source file unknown, as bot.py has it (``logging._srcfile``)."""

    def __init__(self, name: str, msg: str, args: tuple[object, ...]) -> None:
        now = time.time()
        self.name, self.msg, self.args = name, msg, args
        self.levelname, self.levelno = "INFO", logging.INFO
        self.pathname = self.filename = self.module = "(unknown file)"
        self.lineno, self.funcName = 0, "(unknown function)"
        self.exc_info = self.exc_text = self.stack_info = None
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0
        self.relativeCreated = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
        self.thread = self.threadName = self.processName = self.process = None
        self.taskName = None  # Python 3.12 added it
