"""``POST /v1/responses``: the OpenAI Responses API for callers (the Agents SDK, newer tools).

A response without ``previous_response_id`` starts a conversation; one with it continues that
conversation on the account that produced it. Our response ids are ``resp_`` and the id of the
turn that holds the exchange, so the id leads back to its conversation (and only its owner may
continue it). Upstream, an ``api = "responses"`` account gets the caller's request as given,
chained to its own previous response id; an ``api = "chat"`` account gets the request
translated to Chat Completions, with the conversation so far rebuilt from the stored exchanges,
and its answer translated back into output items. Streamed, the caller gets the Responses
events: passed on from a Responses account, made from the deltas of a Chat Completions one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiohttp import web

from core import exchange
from core.capabilities import needs_of_input
from core.chat import ChatRequest, ChatResult, StartInfo
from core.errors import GatewayError
from core.gateway import Gateway
from core.models import Principal
from core.responses_shapes import (
    ShapeError,
    input_to_chat_messages,
    options_to_chat,
    output_items,
)
from core.wire import Completion, Message, content_text

from .openai_api import (
    CONVERSATION_HEADER,
    _caller,
    _ParamError,
    _tier_choice,
    read_body,
)

UNSUPPORTED = frozenset({"background", "conversation", "prompt"})
"""Responses features that need state the gateway does not keep for callers."""
TRANSLATED = frozenset({
    "model", "input", "instructions", "previous_response_id", "stream", "store", "tools",
    "tool_choice", "text", "max_output_tokens", "temperature", "top_p", "user", "metadata",
    "parallel_tool_calls", "reasoning"})
"""Fields a Chat Completions account can be given a counterpart of; any other with a value
needs a Responses account, so it is never dropped on the way."""


def response_id(turn_id: str) -> str:
    return "resp_" + turn_id.replace("-", "")


def _check(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _ParamError("the request body must be a JSON object", "body")
    if not isinstance(body.get("input"), str | list) or body.get("input") in ("", []):
        raise _ParamError("'input' must be a non-empty string or array of input items",
                          "input")
    for name in UNSUPPORTED:
        if body.get(name):
            raise _ParamError(f"'{name}' is not supported by this gateway", name)
    for name, kind in (("model", str), ("instructions", str), ("previous_response_id", str),
                       ("stream", bool), ("store", bool), ("tools", list)):
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise _ParamError(f"'{name}' must be a {kind.__name__}", name)
    return body


def _plan(body: dict[str, Any]) -> tuple[list[Message], dict[str, Any], dict[str, str]]:
    """The request as Chat Completions messages and options, and what it needs of an
    account. What only the Responses API can do (built-in tools, item types Chat Completions
    lacks) needs a Responses account: the items are then kept as given."""
    needs: dict[str, str] = {}
    items = body["input"] if isinstance(body["input"], list) else []
    needs.update(needs_of_input(items))
    if body.get("tools"):
        needs.setdefault("tools", "tools")
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict) and \
            text["format"].get("type") in ("json_schema", "json_object"):
        needs.setdefault("structured_output", "text.format")
    try:
        messages = input_to_chat_messages(body)
    except ShapeError as err:
        needs["responses_api"] = err.param
        messages = items if items else [{"role": "user", "content": body["input"]}]
    try:
        options = options_to_chat(body)
    except ShapeError as err:
        needs.setdefault("responses_api", err.param)
        options = {}
    for name, value in body.items():
        # Empty values and the defaults ask for nothing (the Agents SDK sends include=[]).
        if name not in TRANSLATED and value not in (None, [], {}, "") and \
                (name, value) != ("truncation", "disabled"):
            needs.setdefault("responses_api", name)
    return messages, options, needs


async def create_response(request: web.Request) -> web.StreamResponse:
    gateway, principal = await _caller(request)
    body = _check(await read_body(request))
    messages, options, needs = _plan(body)
    store = body.get("store", True) is not False
    previous_id = body.get("previous_response_id")
    conversation_id = turn_id = None
    if previous_id:
        conversation, turn = await gateway.response_turn(principal, previous_id)
        conversation_id, turn_id = conversation.id, turn.id
    stored, attachments = exchange.extract(messages, gateway.settings.chat.max_attachment_bytes,
                                           "input")
    users = [m for m in messages if m.get("role") == "user"]
    chat_request = ChatRequest(
        prompt=content_text(users[-1].get("content")) if users else "",
        conversation_id=conversation_id,
        plus=_tier_choice(principal),
        options=options,
        endpoint="v1",
        model=None if conversation_id else body.get("model"),
        messages=messages,
        generate_title=gateway.settings.chat.v1_titles,
        needs=needs,
        exchange=exchange.Draft("responses", stored, attachments, store),
        responses_request=body,
        continues_turn=turn_id,
    )
    if body.get("stream"):
        return await _stream(request, gateway, principal, chat_request, body)
    result = await gateway.chat(principal, chat_request)
    return web.json_response(response_object(result, body),
                             headers={CONVERSATION_HEADER: result.conversation.id})


def response_object(result: ChatResult, body: dict[str, Any]) -> dict[str, Any]:
    """The Responses object for a stored turn: a Responses account's own, with our id in
    place of its; or one made from a Chat Completions answer."""
    ours = response_id(result.turn.id)
    completion = result.completion
    if completion is not None and completion.response is not None:
        return {**completion.response, "id": ours,
                "previous_response_id": body.get("previous_response_id")}
    turn = result.turn
    incomplete = result.finish_reason == "length"
    input_tokens, output_tokens = turn.input_tokens or 0, turn.output_tokens or 0
    return {
        "id": ours, "object": "response", "created_at": int(result.prompt_time.timestamp()),
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "error": None, "model": turn.model,
        "output": output_items(completion, turn.id.replace("-", "")) if completion else [],
        "previous_response_id": body.get("previous_response_id"),
        "instructions": body.get("instructions"),
        "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice", "auto"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"), "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": body.get("metadata") or {}, "store": body.get("store", True),
        "truncation": "disabled", "user": body.get("user"),
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "total_tokens": input_tokens + output_tokens,
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }


class _EventWriter:
    """A turn as Responses events. From a Responses account they are passed on as given (our
    id in the response objects); otherwise they are made from the text deltas, the calls and
    the final object following once the answer is complete. The response opens with the first
    event that carries something, so a failure before it still has its own status."""

    def __init__(self, request: web.Request, body: dict[str, Any]) -> None:
        self.request = request
        self.body = body
        self.response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })
        self.id = ""
        self.item_id = ""
        self.conversation_id = ""
        self.model = ""
        self.created = int(time.time())
        self.sequence = 0
        self.native = False
        self.gone = False
        self.text: list[str] = []
        self._held: list[dict[str, Any]] = []

    async def started(self, info: StartInfo) -> None:
        self.id = response_id(info.message_id)
        self.item_id = info.message_id.replace("-", "")
        self.conversation_id = info.conversation_id
        self.model = info.model

    async def title(self, title: str) -> None:
        return None

    async def _send(self, events: list[dict[str, Any]]) -> None:
        if not self.response.prepared:
            self.response.headers[CONVERSATION_HEADER] = self.conversation_id
            await self.response.prepare(self.request)
        if self.gone or not events:
            return
        data = "".join(f"event: {e.get('type')}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n"
                       for e in events)
        try:
            await self.response.write(data.encode())
        except (ConnectionError, RuntimeError):
            self.gone = True  # the caller left; the turn is still completed and stored

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, **fields, "sequence_number": self.sequence}

    def _shell(self, status: str) -> dict[str, Any]:
        return {"id": self.id, "object": "response", "created_at": self.created,
                "status": status, "model": self.model, "output": [], "usage": None,
                "previous_response_id": self.body.get("previous_response_id"),
                "instructions": self.body.get("instructions"), "error": None,
                "incomplete_details": None, "tools": self.body.get("tools") or [],
                "tool_choice": self.body.get("tool_choice", "auto"),
                "parallel_tool_calls": self.body.get("parallel_tool_calls", True),
                "text": self.body.get("text") or {"format": {"type": "text"}},
                "metadata": self.body.get("metadata") or {}}

    async def raw(self, objects: Sequence[dict[str, Any] | str]) -> bool:
        events = [o for o in objects if isinstance(o, dict) and isinstance(o.get("type"), str)]
        if not events:
            return False  # Chat Completions chunks: the text deltas serve
        self.native = True
        out: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event.get("response"), dict):
                event = {**event, "response": {
                    **event["response"], "id": self.id,
                    "previous_response_id": self.body.get("previous_response_id")}}
            self._held.append(event)
            if event["type"] not in ("response.created", "response.in_progress"):
                out, self._held = out + self._held, []
        if not out:
            return False
        await self._send(out)
        return True

    async def delta(self, text: str) -> None:
        if self.native:
            return
        events = []
        if not self.response.prepared:
            events += self._opening()
        self.text.append(text)
        events.append(self._event("response.output_text.delta", item_id=f"msg_{self.item_id}",
                                  output_index=0, content_index=0, delta=text, logprobs=[]))
        await self._send(events)

    def _opening(self) -> list[dict[str, Any]]:
        message = {"type": "message", "id": f"msg_{self.item_id}", "status": "in_progress",
                   "role": "assistant", "content": []}
        return [
            self._event("response.created", response=self._shell("in_progress")),
            self._event("response.in_progress", response=self._shell("in_progress")),
            self._event("response.output_item.added", output_index=0, item=message),
            self._event("response.content_part.added", item_id=f"msg_{self.item_id}",
                        output_index=0, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []}),
        ]

    async def finish(self, result: ChatResult) -> None:
        """The events after the last delta: the items made whole, and the final object."""
        if self.native:
            await self._send(self._held)
            return
        final = response_object(result, self.body)
        events = [] if self.response.prepared else [
            self._event("response.created", response=self._shell("in_progress"))]
        streamed_message = bool(self.text)
        for index, item in enumerate(final["output"]):
            if item["type"] == "message":
                if not streamed_message:
                    events.append(self._event("response.output_item.added", output_index=index,
                                              item={**item, "content": []}))
                for number, part in enumerate(item["content"]):
                    if part.get("type") == "output_text":
                        if not streamed_message:
                            events.append(self._event(
                                "response.content_part.added", item_id=item["id"],
                                output_index=index, content_index=number,
                                part={**part, "text": ""}))
                        events.append(self._event(
                            "response.output_text.done", item_id=item["id"],
                            output_index=index, content_index=number, text=part["text"],
                            logprobs=[]))
                    events.append(self._event("response.content_part.done", item_id=item["id"],
                                              output_index=index, content_index=number,
                                              part=part))
            elif item["type"] == "function_call":
                events += [
                    self._event("response.output_item.added", output_index=index,
                                item={**item, "arguments": "", "status": "in_progress"}),
                    self._event("response.function_call_arguments.delta", item_id=item["id"],
                                output_index=index, delta=item["arguments"]),
                    self._event("response.function_call_arguments.done", item_id=item["id"],
                                output_index=index, arguments=item["arguments"]),
                ]
            events.append(self._event("response.output_item.done", output_index=index,
                                      item=item))
        events.append(self._event("response.completed", response=final))
        await self._send(events)


async def _stream(request: web.Request, gateway: Gateway, principal: Principal,
                  chat_request: ChatRequest, body: dict[str, Any]) -> web.StreamResponse:
    writer = _EventWriter(request, body)
    try:
        result = await gateway.chat(principal, chat_request, writer)
    except GatewayError as err:
        if not writer.response.prepared:
            raise
        await writer._send([writer._event("error", code=err.code, message=err.message,
                                          param=None)])
        return writer.response
    await writer.finish(result)
    return writer.response


async def get_response(request: web.Request) -> web.Response:
    """A stored response, rebuilt from its turn (the output items as the reply was stored)."""
    gateway, principal = await _caller(request)
    conversation, turn = await gateway.response_turn(principal, request.match_info["id"])
    stored = turn.exchange or {}
    reply = dict(stored.get("reply") or {})
    extras = {k: reply[k] for k in ("tool_calls", "refusal") if reply.get(k)}
    completion = Completion(text=turn.reply, model=turn.model, upstream_id=turn.upstream_id,
                            input_tokens=turn.input_tokens, output_tokens=turn.output_tokens,
                            finish_reason=reply.get("finish_reason"), message=extras or None)
    previous = response_id(turn.parent_id) if turn.parent_id else None
    result = ChatResult(conversation, turn, None, turn.parent_id is None,
                        datetime.fromisoformat(turn.prompt_utc.replace("Z", "+00:00")),
                        turn.duration_ms / 1000, completion.finish_reason or "stop",
                        completion)
    return web.json_response(response_object(result, {"previous_response_id": previous}),
                             headers={CONVERSATION_HEADER: conversation.id})
