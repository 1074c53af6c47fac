"""What a request's upstream calls add to its one access line.

An HTTP request is logged in one line (web/access_log.py), which tells its calls to upstream
accounts too (``upstream chat account=A model=M status=200 stream=False duration_ms=812``)
rather than one line each: a log record costs about 40,000 instructions, a tenth of what the
gateway adds to a forwarded request (issue 14). Calls made outside a request (the Discord bot,
titles asked after the reply was sent) log their own line, as they always did.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar


class _Notes:
    """One request's notes; ``closed`` once its access line is written (a call still running
    then, in a task the request started, logs its own line)."""

    __slots__ = ("closed", "items")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.closed = False


_CURRENT: ContextVar[_Notes | None] = ContextVar("request_notes", default=None)


def begin() -> None:
    """Notes for the request this task serves (aiohttp runs each request in a task of its
    own, which its access line is written from)."""
    _CURRENT.set(_Notes())


def add(text: str) -> bool:
    """Put ``text`` on the current request's access line; False outside a request (or after
    its line was written): the caller logs it itself."""
    notes = _CURRENT.get()
    if notes is None or notes.closed:
        return False
    notes.items.append(text)
    return True


def end() -> list[str]:
    """The current request's notes, closed: what its access line adds."""
    notes = _CURRENT.get()
    if notes is None:
        return []
    notes.closed = True
    _CURRENT.set(None)
    return notes.items


def spill(log: logging.Logger) -> None:
    """The current request's notes, each on a line of its own: it gets no access line."""
    for text in end():
        log.info("%s", text)
