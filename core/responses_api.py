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

from . import responses_shapes
from .wire import (
    Completion,
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


# Passed to a Responses caller's own request: everything but what the gateway decides.
_OURS = frozenset({"model", "previous_response_id", "stream", "store"})


def request_body(target: Target, messages: list[Message], stream: bool,
                 options: dict[str, Any], previous_response_id: str | None,
                 caller_request: dict[str, Any] | None = None) -> bytes:
    """A Responses request: the /v1/responses caller's own (``caller_request``) as given, or
    one made from Chat Completions messages and options (tools, response_format and content
    parts in the Responses shape)."""
    if caller_request is not None:
        body = {k: v for k, v in caller_request.items() if k not in _OURS}
        # Stored upstream unless the caller said not to (then it cannot be continued either).
        body.update(model=target.model, store=caller_request.get("store", True) is not False)
        if options.get("max_tokens") and "max_output_tokens" not in body:
            body["max_output_tokens"] = options["max_tokens"]  # the account's default
    else:
        body = {_OPTION_NAMES[k]: v for k, v in options.items() if k in _OPTION_NAMES}
        body.update(responses_shapes.chat_options_to_responses(options))
        body.update(model=target.model, input=responses_shapes.chat_messages_to_input(messages),
                    store=True)
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
    refusals: list[str] = []
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
            elif part.get("type") == "refusal":
                refusals.append(text_of(part, "refusal") or "")
    usage = object_of(response, "usage")
    extras: dict[str, Any] = {}
    if calls := responses_shapes.tool_calls_of_output(response["output"]):
        extras["tool_calls"] = calls
    if refusals:
        extras["refusal"] = "".join(refusals)
    finish = "stop" if status == "completed" else status
    if calls and status == "completed":
        finish = "tool_calls"
    return Completion(
        text="".join(texts),
        model=text_of(response, "model") or target.model,
        upstream_id=text_of(response, "id"),
        input_tokens=count_of(usage, "input_tokens"),
        output_tokens=count_of(usage, "output_tokens"),
        finish_reason=finish,
        message=extras or None,
        response=response,
    )


def read_json(raw: bytes, target: Target) -> Completion:
    try:
        data = json.loads(raw)
    except ValueError:
        raise UpstreamFailure("garbage", "the upstream answered something that is not JSON") \
            from None
    return completion_from(data, target)


async def read_stream(batches: AsyncIterator[list[str]], target: Target,
                      on_delta: OnDelta, meter: ReplyMeter,
                      on_raw: OnRaw | None = None) -> Completion:
    """Consume the typed events of a streamed response until ``response.completed``; the text
    deltas of one network read are passed on as one (and the events as given to ``on_raw``)."""
    async for batch in batches:
        texts: list[str] = []
        events: list[dict[str, Any]] = []
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
            events.append(event)
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
        if on_raw is not None and events:
            await on_raw(events)
        if texts:
            await on_delta("".join(texts))
        if completed is not None:
            return completed
    raise UpstreamFailure("server", "the upstream stream ended before the response completed")
