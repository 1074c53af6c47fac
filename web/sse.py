"""A chat turn written as server-sent events, shared by the API's ``stream=true`` and the web UI.

The stream opens with the first piece of text, so any failure before it (unknown conversation,
no plus, every account down) still answers with its own status and error body. A caller that
goes away does not stop the turn: it is completed and stored all the same, so nothing is lost
because a browser tab closed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Mapping
from typing import Any

from aiohttp import web

from core import fastjson
from core.chat import ChatResult, StartInfo
from core.errors import GatewayError

log = logging.getLogger(__name__)


class CoalescedStream(web.StreamResponse):
    """A stream whose headers wait for its first bytes, to go out in one socket write with
    them (aiohttp sends a stream's headers on their own otherwise; its ``web.Response`` waits
    the same way)."""

    _send_headers_immediately = False


class EventStream:
    """A ``ChatListener`` that writes ``start``, ``delta``..., ``title`` events; the handler
    ends the stream with ``done`` (or ``run`` with ``error``).

    Events ready together leave in one socket write: ``start`` (and an early ``title``) wait
    for the first ``delta``, and the last event carries the end of the stream with it."""

    def __init__(self, request: web.Request, headers: Mapping[str, str] | None = None) -> None:
        self.request = request
        self.pending = bytearray()
        self.response = CoalescedStream(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no", **(headers or {}),
        })
        self.gone = False
        self.start: dict[str, Any] = {}
        self.pending_title: str | None = None

    async def send(self, event: str, data: dict[str, Any], *, hold: bool = False) -> None:
        """Write one event, with any held before it; ``hold``: keep it for the next write.
        ``done`` and ``error`` end the stream."""
        if self.gone:
            return
        self.pending += b"event: " + event.encode() + b"\ndata: " + fastjson.dumps(data) + b"\n\n"
        if hold:
            return
        data_out, self.pending = bytes(self.pending), bytearray()
        try:
            if event in ("done", "error"):
                await self.response.write_eof(data_out)
            else:
                await self.response.write(data_out)
        except (ConnectionError, RuntimeError):
            self.gone = True

    async def started(self, info: StartInfo) -> None:
        # Kept until the stream opens: a retry on another account replaces it.
        self.start = {
            "conversation_id": info.conversation_id, "message_id": info.message_id,
            "parent_id": info.parent_id, "model": info.model, "account": info.account,
            "is_new_conversation": info.is_new,
        }

    async def open(self) -> None:
        if not self.response.prepared:
            await self.response.prepare(self.request)
            await self.send("start", self.start, hold=True)
            if self.pending_title is not None:
                await self.send("title", {"title": self.pending_title}, hold=True)

    async def delta(self, text: str) -> None:
        await self.open()
        await self.on_text(text)

    async def on_text(self, text: str) -> None:
        await self.send("delta", {"text": text})

    async def title(self, title: str) -> None:
        if self.response.prepared:
            await self.send("title", {"title": title})
        else:
            self.pending_title = title

    async def run(self, turn: Awaitable[ChatResult]) -> ChatResult | None:
        """The turn's result, or None once an ``error`` event has ended an open stream. Before
        the stream opens, errors propagate, so the error middleware gives them their status."""
        try:
            result = await turn
        except GatewayError as err:
            if not self.response.prepared:
                raise
            await self.send("error", {"status": "error", "message": err.message,
                                      "code": err.code})
            return None
        except Exception:
            if not self.response.prepared:
                raise
            ref = secrets.token_hex(4)
            log.exception("unhandled error in a streamed chat (ref %s)", ref)
            await self.send("error", {"status": "error", "code": "internal_error",
                                      "message": f"internal error; quote reference {ref} "
                                                 "to an admin"})
            return None
        await self.open()  # an empty reply still opens the stream
        return result
