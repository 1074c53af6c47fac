"""Shapes shared by the upstream protocols (Chat Completions and Responses): the call target,
the completed answer, the classified failure, and server-sent event parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

FailureKind = Literal[
    "rate_limited", "server", "timeout", "proxy", "connect", "auth", "misconfigured", "rejected",
    "garbage",
]
TAKES_OUT_KINDS: frozenset[str] = frozenset({"auth", "misconfigured"})
"""Failures only an admin can fix: the account is taken out until restored."""
COOLING_KINDS: frozenset[str] = frozenset(
    {"rate_limited", "server", "timeout", "proxy", "connect", "garbage"}
)

Message = dict[str, Any]


def content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content
                       if isinstance(part, dict) and part.get("type", "text") == "text")
    return ""
OnDelta = Callable[[str], Awaitable[None]]


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


@dataclass(slots=True)
class Completion:
    text: str
    model: str
    upstream_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None


@dataclass(slots=True)
class Target:
    """Where one call goes: an account of the pool, or a member's own credential."""

    name: str
    base_url: str
    model: str
    session: aiohttp.ClientSession
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


async def sse_batches(resp: aiohttp.ClientResponse) -> AsyncIterator[list[str]]:
    """The ``data:`` payloads of a server-sent event stream, a list for each network read.

    Batching by read rather than yielding event by event lets a caller pass on, in one piece,
    every delta that arrived together: one write to its own client instead of one per token
    (the bench showed per-chunk writes costing most of a stream's time in the gateway)."""
    buffer = b""
    async for block in resp.content.iter_any():
        buffer += block.replace(b"\r\n", b"\n")
        *events, buffer = buffer.split(b"\n\n")
        if len(buffer) > MAX_EVENT_BYTES:
            raise ValueError("an SSE event exceeds the size limit")
        batch = [data for event in events if (data := _event_data(event)) is not None]
        if batch:
            yield batch
    if buffer.strip() and (data := _event_data(buffer)) is not None:
        yield [data]


def _event_data(event: bytes) -> str | None:
    lines = [line[5:].removeprefix(" ") for line in event.decode("utf-8").split("\n")
             if line.startswith("data:")]
    return "\n".join(lines) if lines else None
