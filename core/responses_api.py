"""The OpenAI Responses API (``POST /responses``) as an upstream protocol.

Here the upstream keeps the conversation: a follow-up sends only the new input and the id of the
previous response (``previous_response_id``), which only the account that produced it can
resolve. That is why follow-ups are pinned to their account, and why a conversation whose
account is gone must fail plainly rather than move: another account would answer without the
history.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from .wire import (
    Completion,
    Message,
    OnDelta,
    ReplyMeter,
    Target,
    UpstreamFailure,
    count_of,
    list_of,
    malformed,
    object_of,
    text_of,
)

# Chat Completions options that have a Responses equivalent; the rest are not sent.
_OPTION_NAMES = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "user": "user",
    "metadata": "metadata",
}


def request_body(target: Target, messages: list[Message], stream: bool,
                 options: dict[str, Any], previous_response_id: str | None) -> bytes:
    body: dict[str, Any] = {
        _OPTION_NAMES[k]: v for k, v in options.items() if k in _OPTION_NAMES
    }
    body.update(model=target.model, input=messages, store=True)
    if previous_response_id:
        body["previous_response_id"] = previous_response_id
    if stream:
        body["stream"] = True
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def completion_from(response: Any, target: Target) -> Completion:
    """A finished ``response`` object made into a Completion, or a garbage failure."""
    if not isinstance(response, dict) or not isinstance(response.get("output"), list):
        raise UpstreamFailure("garbage", "the upstream answered something that is not a "
                              "response object")
    status = text_of(response, "status")
    if status == "failed":
        error = object_of(response, "error")
        raise UpstreamFailure("server", str(error.get("message") or "the response failed"))
    texts: list[str] = []
    for item in response["output"]:
        if not isinstance(item, dict):
            raise malformed("an output item is not an object")
        if item.get("type") != "message":
            continue  # reasoning, tool calls: not part of the reply's text
        for part in list_of(item, "content"):
            if not isinstance(part, dict):
                raise malformed("a content part is not an object")
            if part.get("type") == "output_text":
                texts.append(text_of(part, "text") or "")
    usage = object_of(response, "usage")
    return Completion(
        text="".join(texts),
        model=text_of(response, "model") or target.model,
        upstream_id=text_of(response, "id"),
        input_tokens=count_of(usage, "input_tokens"),
        output_tokens=count_of(usage, "output_tokens"),
        finish_reason="stop" if status == "completed" else status,
    )


def read_json(raw: bytes, target: Target) -> Completion:
    try:
        data = json.loads(raw)
    except ValueError:
        raise UpstreamFailure("garbage", "the upstream answered something that is not JSON") \
            from None
    return completion_from(data, target)


async def read_stream(batches: AsyncIterator[list[str]], target: Target,
                      on_delta: OnDelta, meter: ReplyMeter) -> Completion:
    """Consume the typed events of a streamed response until ``response.completed``; the text
    deltas of one network read are passed on as one."""
    async for batch in batches:
        texts: list[str] = []
        completed = None
        for raw in batch:
            if raw == "[DONE]":
                break
            try:
                event = json.loads(raw)
            except ValueError:
                raise UpstreamFailure("garbage", "the upstream streamed something that is not "
                                      "JSON") from None
            if not isinstance(event, dict):
                raise malformed("a streamed event is not an object")
            kind = event.get("type")
            if kind == "response.output_text.delta":
                delta = text_of(event, "delta")
                if delta:
                    meter.add(delta)
                    texts.append(delta)
            elif kind == "response.completed":
                completed = completion_from(event.get("response"), target)
                break
            elif kind in ("response.failed", "error"):
                detail = event.get("message") or object_of(object_of(event, "response"),
                                                           "error").get("message")
                raise UpstreamFailure("server", f"the upstream failed mid-stream: {detail}")
        if texts:
            await on_delta("".join(texts))
        if completed is not None:
            return completed
    raise UpstreamFailure("server", "the upstream stream ended before the response completed")
