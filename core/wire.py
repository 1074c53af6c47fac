"""Shapes shared by the upstream protocols (Chat Completions and Responses): the call target,
the completed answer, the classified failure, server-sent event parsing, and the typed reading
of an answer's fields.

An upstream's JSON is read field by field through ``text_of``, ``count_of``, ``object_of`` and
``list_of``: a field of the wrong type (usage as a list, content as a number) is the upstream's
failure, ``garbage``, like a body that is not JSON at all. It cools the account and sends a new
conversation to the next one; nothing of the wrong type reaches the caller or the database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .upstream_http import Response, UpstreamSession

FailureKind = Literal[
    "rate_limited", "server", "timeout", "proxy", "connect", "auth", "misconfigured", "rejected",
    "garbage", "reply_too_large",
]
TAKES_OUT_KINDS: frozenset[str] = frozenset({"auth", "misconfigured"})
"""Failures only an admin can fix: the account is taken out until restored."""
COOLING_KINDS: frozenset[str] = frozenset(
    {"rate_limited", "server", "timeout", "proxy", "connect", "garbage"}
)
"""Failures that cool the account. Not ``reply_too_large``: the account answered, and the
gateway's size limit is a policy another account would meet just the same."""

DEFAULT_MAX_REPLY_BYTES = 1 << 20
RAW_BYTES_PER_REPLY_BYTE = 4
"""A non-streamed answer's body may be this many times the reply limit (plus an envelope):
JSON escapes a character in up to six bytes, but text of real words stays well within four."""
RAW_ENVELOPE_BYTES = 1 << 16

Message = dict[str, Any]
MAX_TOKEN_COUNT = 1 << 31
"""A token count at or past this is no real count (and would not fit the database's column)."""


def content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content
                       if isinstance(part, dict) and part.get("type", "text") == "text")
    return ""


OnDelta = Callable[[str], Awaitable[None]]
OnRaw = Callable[[Sequence[dict[str, Any] | str]], Awaitable[bool]]
"""Receives the parsed objects (``chat.completion.chunk``s, or Responses events) of one network
read as the upstream sent them, in order; True when something of them reached the caller. A
chunk that is a text delta of the first choice and nothing else may come as its text alone
(a ``str``: core/chat_stream.py reads most of a stream's chunks that way, unparsed)."""


class UpstreamFailure(Exception):
    """Why a call failed. Internal: the fronts get a ``GatewayError`` built from it."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    @property
    def cools_down(self) -> bool:
        return self.kind in COOLING_KINDS

    @property
    def takes_out(self) -> bool:
        return self.kind in TAKES_OUT_KINDS

    @property
    def is_the_accounts_fault(self) -> bool:
        """True when another account may well succeed where this one failed."""
        return self.cools_down or self.takes_out


def malformed(what: str) -> UpstreamFailure:
    return UpstreamFailure("garbage", f"the upstream's answer is malformed: {what}")


def object_of(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data[key]`` as an object; absent or null gives ``{}``."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed(f"{key!r} is not an object")
    return value


def list_of(data: dict[str, Any], key: str) -> list[Any]:
    """``data[key]`` as a list; absent or null gives ``[]``."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise malformed(f"{key!r} is not a list")
    return value


def text_of(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise malformed(f"{key!r} is not text")
    return value


def count_of(data: dict[str, Any], key: str) -> int | None:
    """A token count: a whole number (some servers send 12.0), never negative or absurd."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_TOKEN_COUNT:
        raise malformed(f"{key!r} is not a token count")
    return value


def too_large(limit: int) -> UpstreamFailure:
    return UpstreamFailure("reply_too_large",
                           f"the reply exceeds the gateway's limit of {limit} bytes")


class ReplyMeter:
    """Counts a reply's UTF-8 bytes as it arrives, so a reply over the limit is refused while
    it is read rather than once it is whole (in memory, or in the database)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0

    def add(self, text: str) -> None:
        # ASCII text (a flag CPython keeps) is as many bytes as characters: no encoding.
        self.size += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if self.size > self.limit:
            raise too_large(self.limit)


@dataclass(slots=True)
class Completion:
    text: str
    model: str
    upstream_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    usage_estimated: bool = False
    """The upstream reported no usage: the token counts are the gateway's estimates."""
    message: dict[str, Any] | None = None
    """The first choice's assistant message beyond its text, in Chat Completions' shape
    (``tool_calls``, ``refusal``, ``function_call``), as the upstream gave it or as its
    streamed deltas add up; None when it had nothing but text."""
    choices: list[dict[str, Any]] | None = None
    """A Chat Completions upstream's ``choices``, as given (several with ``n``), for a /v1
    caller that must get them unchanged."""
    response: dict[str, Any] | None = None
    """A Responses upstream's final ``response`` object, as given."""


@dataclass(slots=True)
class Target:
    """Where one call goes: an account of the pool, or a member's own credential."""

    name: str
    base_url: str
    model: str
    session: UpstreamSession
    api_key: str | None
    timeout_s: float
    api: Literal["chat", "responses", "completions"] = "chat"
    max_tokens: int | None = None
    """Reply length asked for when the caller sets none."""
    extra_headers: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.extra_headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


MAX_EVENT_BYTES = 1 << 20
"""An SSE event larger than this is not a chat stream: refused as garbage, not buffered."""


def sse_batches(resp: Response) -> AsyncIterator[list[str]]:
    """The ``data:`` payloads of a server-sent event stream, a list for each network read.

    Batching by read rather than yielding event by event lets a caller pass on, in one piece,
    every delta that arrived together: one write to its own client instead of one per token
    (the bench showed per-chunk writes costing most of a stream's time in the gateway)."""
    return _SSEBatches(resp)


class _SSEBatches:
    """``sse_batches``: an iterator object rather than an async generator, which its readers
    leave unfinished at ``[DONE]`` and the loop would then close with a task of its own."""

    __slots__ = ("_buffer", "_resp")

    def __init__(self, resp: Response) -> None:
        self._resp: Response | None = resp
        self._buffer = b""

    def __aiter__(self) -> _SSEBatches:
        return self

    async def __anext__(self) -> list[str]:
        resp = self._resp
        while resp is not None:
            block = await resp.next_block()
            if block is None:
                self._resp = resp = None
                break
            buffer = self._buffer + block
            if buffer.find(13) >= 0:  # a CR: lines end in CR LF
                # On the buffer, not the read: a CR LF may be cut between two reads (a CR
                # left at the buffer's end stays there until its LF comes).
                buffer = buffer.replace(b"\r\n", b"\n")
            end = buffer.rfind(b"\n\n")
            if end < 0:
                if len(buffer) > MAX_EVENT_BYTES:
                    raise ValueError("an SSE event exceeds the size limit")
                self._buffer = buffer
                continue
            complete, self._buffer = buffer[:end], buffer[end + 2:]
            if len(self._buffer) > MAX_EVENT_BYTES:
                raise ValueError("an SSE event exceeds the size limit")
            batch = None
            if complete.startswith(b"data: "):
                # Nearly every chat stream: each event one ``data:`` line. The read is decoded
                # once and cut where the next such event begins (an 8-character separator is
                # searched for several times faster than a blank line); a data line with a
                # line break of its own (one memchr over them all) sends the read the general
                # way. Nothing here is done once an event: that cost most of this function.
                lines = complete.decode("utf-8")[6:].split("\n\ndata: ")
                if "\n" not in "".join(lines):
                    batch = lines
            if batch is None:
                batch = [data for event in complete.split(b"\n\n")
                         if (data := _event_data(event)) is not None]
            if batch:
                return batch
        rest, self._buffer = self._buffer, b""
        if rest.strip() and (data := _event_data(rest)) is not None:
            return [data]
        raise StopAsyncIteration


def _event_data(event: bytes) -> str | None:
    if event.startswith(b"data: ") and event.find(10) < 0:
        # Nearly every event of a chat stream is one data line: no need to split it.
        return event[6:].decode("utf-8")
    lines = [line[5:].removeprefix(" ") for line in event.decode("utf-8").split("\n")
             if line.startswith("data:")]
    return "\n".join(lines) if lines else None
