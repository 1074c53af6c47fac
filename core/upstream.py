"""Calls to an OpenAI-compatible Chat Completions endpoint, streaming and not.

Every failure is raised as ``UpstreamFailure`` with a ``kind`` that tells the account pool what
to do with the account: cool it down (rate limit, 5xx, time-out, proxy or connection failure),
take it out (the upstream rejected its key), or nothing (the request itself was refused).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from email.utils import parsedate_to_datetime
from typing import Any

from . import chat_stream, completions_api, fastjson, request_notes, responses_api
from .clock import utc_now
from .upstream_http import BrokenResponse, ProxyFailure, Response, Timeouts, UpstreamSession
from .wire import (
    COOLING_KINDS,
    DEFAULT_MAX_REPLY_BYTES,
    RAW_BYTES_PER_REPLY_BYTE,
    RAW_ENVELOPE_BYTES,
    Completion,
    FailureKind,
    Message,
    OnDelta,
    OnRaw,
    ReplyMeter,
    Target,
    UpstreamFailure,
    count_of,
    list_of,
    malformed,
    object_of,
    sse_batches,
    text_of,
    too_large,
)

__all__ = [
    "COOLING_KINDS", "Completion", "FailureKind", "Message", "OnDelta", "OnRaw", "Target",
    "UpstreamFailure", "complete", "make_session", "parse_retry_after", "post_json",
    "sse_batches",
]

log = logging.getLogger(__name__)

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, OSError)
"""Proxy failures among them: ``ProxyFailure`` is an OSError."""


def make_session(proxy_url: str, *, limit: int = 100) -> UpstreamSession:
    """One long-lived session per account (or proxy), with its connection pool: no cookies,
    no state of one caller's call that another's could see."""
    return UpstreamSession(proxy_url, limit=limit)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header, given as seconds or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utc_now()).total_seconds())
    except (TypeError, ValueError):
        return None


ERROR_BODY_BYTES = 1 << 16
"""An error body is read this far for its message; past it, the status says enough."""


async def read_capped(resp: Response, limit: int) -> bytes:
    """The body, read piece by piece and refused (``reply_too_large``) once past ``limit``
    bytes: a huge answer is never buffered whole."""
    if resp.content_length is not None and resp.content_length > limit:
        raise too_large(limit)
    if resp.content_length is not None:
        # Its size is known and within the limit: one read, not a chunk iterator (~1 % of a
        # /v1 request, issue 14); the parser stops at the Content-Length it checked.
        whole = await resp.read()
        if len(whole) > limit:
            raise too_large(limit)
        return whole
    body = bytearray()
    async for block in resp.iter_any():
        body += block
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


async def _error_detail(resp: Response) -> str:
    """The upstream's own error message when it gave one in OpenAI's shape."""
    try:
        body = await read_capped(resp, ERROR_BODY_BYTES)
        data = json.loads(body)
        message = data.get("error", {}).get("message") if isinstance(data, dict) else None
        if isinstance(message, str) and message:
            return message[:500]
    except Exception:  # noqa: BLE001 - any body is acceptable here; we only want its message
        pass
    return resp.reason or f"HTTP {resp.status}"


async def _raise_for_status(resp: Response) -> None:
    if resp.status < 400:
        return
    detail = await _error_detail(resp)
    status = resp.status
    if status == 429:
        raise UpstreamFailure(
            "rate_limited", detail, status=status,
            retry_after=parse_retry_after(resp.headers.get("retry-after")),
        )
    if status in (401, 403):
        raise UpstreamFailure("auth", detail, status=status)
    if status == 404:
        # The account's base_url or model is wrong: no request of any caller can succeed there.
        raise UpstreamFailure("misconfigured", detail, status=status)
    if status >= 500 or status == 408:
        raise UpstreamFailure(
            "server", detail, status=status,
            retry_after=parse_retry_after(resp.headers.get("retry-after")),
        )
    raise UpstreamFailure("rejected", detail, status=status)


def _transport_failure(exc: BaseException) -> UpstreamFailure:
    if isinstance(exc, ProxyFailure):
        return UpstreamFailure("proxy", f"proxy failure: {exc}")
    if isinstance(exc, TimeoutError):
        return UpstreamFailure("timeout", "the upstream did not answer in time")
    if isinstance(exc, BrokenResponse):
        return UpstreamFailure("server", "the upstream broke the connection mid-answer")
    return UpstreamFailure("connect", f"cannot reach the upstream: {type(exc).__name__}")


def _body(target: Target, messages: list[Message], stream: bool, options: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {**options, "model": target.model, "messages": messages}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return fastjson.dumps(body)


async def complete(
    target: Target,
    messages: list[Message],
    *,
    options: dict[str, Any] | None = None,
    on_delta: OnDelta | None = None,
    purpose: str = "chat",
    previous_response_id: str | None = None,
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    on_raw: OnRaw | None = None,
    responses_request: dict[str, Any] | None = None,
) -> Completion:
    """One chat completion. With ``on_delta`` the upstream streams and each text piece is passed
    on as it arrives; without it, one JSON answer is awaited. Accounts with ``api="responses"``
    speak the Responses API instead, continuing ``previous_response_id`` when given; those
    with ``api="completions"`` the plain Completions API, the messages written as a transcript
    (``purpose="title"`` asks for a title's transcript). A reply longer than
    ``max_reply_bytes`` fails as ``reply_too_large`` while it is being read. ``on_raw``
    hears the streamed objects as the upstream sent them (a /v1 front passing on tool-call
    deltas); ``responses_request``: a /v1/responses caller's own request, sent as given to a
    Responses account."""
    started = time.perf_counter()
    stream = on_delta is not None
    responses = target.api == "responses"
    options = options or {}
    if target.max_tokens and not {"max_tokens", "max_completion_tokens"} & options.keys():
        options = {**options, "max_tokens": target.max_tokens}
    completions = target.api == "completions"
    if responses:
        url = f"{target.base_url}/responses"
        body = responses_api.request_body(target, messages, stream, options or {},
                                          previous_response_id, responses_request)
    elif completions:
        url = f"{target.base_url}/completions"
        body = completions_api.request_body(target, messages, stream, options, purpose)
    else:
        url = f"{target.base_url}/chat/completions"
        body = _body(target, messages, stream, options or {})
    timeout = _timeout(target.timeout_s, stream)
    status: int | str = "-"
    try:
        async with target.session.post(
            url, data=body, headers=target.headers(), timeout=timeout,
        ) as resp:
            status = resp.status
            await _raise_for_status(resp)
            meter = ReplyMeter(max_reply_bytes)
            if on_delta is not None and responses:
                result = await responses_api.read_stream(sse_batches(resp), target, on_delta,
                                                         meter, on_raw)
            elif on_delta is not None and completions:
                result = await completions_api.read_stream(sse_batches(resp), target, on_delta,
                                                           meter)
            elif on_delta is not None:
                result = await chat_stream.read_stream(resp, target, on_delta, meter,
                                                       on_raw)
            else:
                raw = await read_capped(
                    resp, max_reply_bytes * RAW_BYTES_PER_REPLY_BYTE + RAW_ENVELOPE_BYTES)
                if responses:
                    result = responses_api.read_json(raw, target)
                elif completions:
                    result = completions_api.read_json(raw, target)
                else:
                    result = _read_json(raw, resp.status, target)
                meter.add(result.text)
    except UpstreamFailure as failure:
        status = failure.status or failure.kind
        raise
    except ValueError:
        # An SSE event past its size limit, or an answer that is not HTTP (MalformedResponse).
        status = "garbage"
        raise UpstreamFailure("garbage", "the upstream sent an oversized or broken line") from None
    except TRANSPORT_ERRORS as exc:
        transport_failure = _transport_failure(exc)
        status = transport_failure.kind
        raise transport_failure from None
    finally:
        _log_call(purpose, target, status, stream, started)
    return result


def _log_call(purpose: str, target: Target, status: int | str, stream: bool,
              started: float) -> None:
    """One INFO line a call, on the request's access line when there is one
    (core/request_notes.py); title calls, which follow every new conversation's reply, at
    DEBUG unless they fail (a quarter of the log volume, for little information)."""
    level = logging.DEBUG if purpose == "title" and status == 200 else logging.INFO
    if not log.isEnabledFor(level):
        return
    line = (f"upstream {purpose} account={target.name} model={target.model} status={status} "
            f"stream={stream} duration_ms={int((time.perf_counter() - started) * 1000)}")
    if level == logging.DEBUG or not request_notes.add(line):
        log.log(level, "%s", line)


@functools.lru_cache(maxsize=64)
def _timeout(timeout_s: float, stream: bool) -> Timeouts:
    """A call's timeouts: the whole call, or for a stream, each wait for its next bytes."""
    if stream:
        return Timeouts(connect=min(timeout_s, 30), read=timeout_s)
    return Timeouts(total=timeout_s)


async def post_json(target: Target, path: str, body: dict[str, Any], *,
                    purpose: str, max_bytes: int) -> dict[str, Any]:
    """One JSON request to ``{base_url}{path}`` and its JSON object answer (embeddings),
    failing as ``complete`` does."""
    started = time.perf_counter()
    status: int | str = "-"
    try:
        async with target.session.post(
            f"{target.base_url}{path}",
            data=json.dumps(body, ensure_ascii=False).encode(),
            headers=target.headers(), timeout=_timeout(target.timeout_s, False),
        ) as resp:
            status = resp.status
            await _raise_for_status(resp)
            raw = await read_capped(resp, max_bytes)
    except UpstreamFailure as failure:
        status = failure.status or failure.kind
        raise
    except ValueError:
        status = "garbage"
        raise UpstreamFailure("garbage", "the upstream's answer is not HTTP") from None
    except TRANSPORT_ERRORS as exc:
        transport_failure = _transport_failure(exc)
        status = transport_failure.kind
        raise transport_failure from None
    finally:
        _log_call(purpose, target, status, False, started)
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamFailure("garbage", f"the upstream's {purpose} answer is not a JSON object",
                              status=resp.status)
    return data


def _read_json(raw: bytes, status: int, target: Target) -> Completion:
    try:
        data = fastjson.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamFailure("garbage", "the upstream answered something that is not a chat "
                              "completion", status=status)
    choices = list_of(data, "choices")
    if not choices or not isinstance(choices[0], dict):
        raise malformed("no choice in 'choices'")
    choice = choices[0]
    if not isinstance(choice.get("message"), dict):
        raise malformed("the choice has no 'message' object")
    usage = object_of(data, "usage")
    return Completion(
        text=text_of(choice["message"], "content") or "",
        model=text_of(data, "model") or target.model,
        upstream_id=text_of(data, "id"),
        input_tokens=count_of(usage, "prompt_tokens"),
        output_tokens=count_of(usage, "completion_tokens"),
        finish_reason=text_of(choice, "finish_reason"),
        message=message_extras(choice["message"]),
        choices=choices,
    )


_EXTRAS = ("tool_calls", "refusal", "function_call", "audio")
"""Parts of an assistant message besides its text, kept and stored as given."""


def message_extras(message: dict[str, Any]) -> dict[str, Any] | None:
    extras = {k: message[k] for k in _EXTRAS if message.get(k)}
    if "tool_calls" in extras and not isinstance(extras["tool_calls"], list):
        raise malformed("'tool_calls' is not a list")
    return extras or None
