"""A reply streamed into messages: text arrives in pieces, the messages follow it, edited at
most once per interval, a new message started past the length limit with code blocks closed and
re-opened (``text.split_message``).

The messages are written through a ``Sink`` (post a message, edit one), so this logic needs no
Discord objects: a thread, an ephemeral interaction response and the unit tests each bring
their own sink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from .text import MESSAGE_LIMIT, split_message
from .throttle import EDIT_INTERVAL_S, Throttle

H = TypeVar("H")

EMPTY_REPLY = "*(the model sent an empty reply)*"


class Sink(Protocol[H]):
    async def post(self, content: str) -> H:
        """Send a new message; the handle is what ``edit`` takes."""
        ...

    async def edit(self, handle: H, content: str) -> None: ...


class ReplyStream(Generic[H]):
    """Feed it text with ``feed``; ``close`` writes the last state and waits for the writes.

    Writes happen in a background task: the first as soon as there is text, the next ones at
    least ``interval`` seconds after the previous one finished. A write brings every message up
    to date at once (edits the ones that changed, posts the new ones)."""

    def __init__(
        self,
        sink: Sink[H],
        *,
        interval: float = EDIT_INTERVAL_S,
        limit: int = MESSAGE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.sink = sink
        self.limit = limit
        self._throttle = Throttle(interval, clock)
        self._sleep = sleep
        self._text = ""
        self._sent: list[str] = []
        """The content of each message as last written."""
        self._handles: list[H] = []
        self._dirty = asyncio.Event()
        self._closing = False
        self._refresh: Callable[[H], bool] | None = None
        self._task: asyncio.Task[None] | None = None

    def feed(self, piece: str) -> None:
        if not piece:
            return
        self._text += piece
        self._wake()

    async def close(self, final: str | None = None, *,
                    refresh: Callable[[H], bool] | None = None) -> None:
        """Write the final state (``final`` replaces the streamed text when given) and wait
        until every write is done. Raises what a write raised. ``refresh(handle)``: messages
        to write again in that last write even if their text is unchanged (their buttons
        change), so that no extra write goes past the interval."""
        if final is not None:
            self._text = final if final.strip() else EMPTY_REPLY
        self._refresh = refresh
        self._closing = True
        self._wake()
        if self._task is not None:
            await self._task

    def abort(self) -> None:
        """Stop writing without a last write (the caller is going away)."""
        if self._task is not None:
            self._task.cancel()

    def _wake(self) -> None:
        self._dirty.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gwbot: reply stream")

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            delay = self._throttle.delay()
            if delay > 0:
                await self._sleep(delay)
            self._dirty.clear()
            await self._write()
            if self._closing and not self._dirty.is_set():
                return

    async def _write(self) -> None:
        chunks = split_message(self._text, self.limit)
        wrote = False
        refresh, self._refresh = self._refresh, None
        for index, chunk in enumerate(chunks):
            if index < len(self._sent):
                if self._sent[index] != chunk or (
                        refresh is not None and refresh(self._handles[index])):
                    await self.sink.edit(self._handles[index], chunk)
                    self._sent[index] = chunk
                    wrote = True
            else:
                self._handles.append(await self.sink.post(chunk))
                self._sent.append(chunk)
                wrote = True
        if wrote:
            self._throttle.mark()
