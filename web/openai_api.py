"""The OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``, so any OpenAI
SDK or tool works with a member's gateway key.

The caller owns the context, as with OpenAI: its ``messages`` are sent as given. Every exchange
is still stored as a turn of the caller (the organisation's record), under a conversation whose
id comes back in the ``X-Conversation-Id`` header; sending that header continues the
conversation on the account that started it. Every error uses OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from core import context_digest, exchange, fastjson
from core.capabilities import HANDLED, needs_of_chat
from core.chat import ChatRequest, ChatResult, StartInfo
from core.config import Settings
from core.errors import BadRequest, GatewayError, NotFound, TooLarge, Unauthorized
from core.gateway import Gateway
from core.models import PlusChoice, Principal
from core.wire import content_text

from .errors import Handler, failure_response, retry_after_headers
from .guard import authenticate
from .inputs import check_depth, check_text, parse_json, read_limited
from .keys import GATEWAY
from .sse import CoalescedStream

log = logging.getLogger(__name__)

CONVERSATION_HEADER = "X-Conversation-Id"
BODY_LIMIT = web.AppKey("body_limit", int)
# Every field but those the gateway acts on is passed on as given (those it does not know too:
# OpenAI-compatible servers have their own). What an account cannot do or carry is refused
# with the parameter named (core/capabilities.py), never dropped silently.
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})
"""Roles whose message with text content is valid as it is (a tool's needs its call's id)."""
_PLAIN_ROLE_NAMES = tuple(_PLAIN_ROLES)  # compared, not hashed: a role may be any JSON value

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    501: "not_implemented_error",
}

def openai_error(status: int, message: str, code: str | None, param: str | None = None,
                 retry_after: float | None = None) -> web.Response:
    kind = _ERROR_TYPES.get(status, "api_error")
    if code == "quota_exceeded":
        # What OpenAI answers when an account's quota is spent, which SDKs and agent
        # frameworks recognise (and do not retry the way they retry a rate limit).
        kind = code = "insufficient_quota"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=retry_after_headers(retry_after))


class _ParamError(BadRequest):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, code="invalid_value")
        self.param = param


PRINCIPAL = web.RequestKey("principal", Principal)


async def rate_limit_headers(request: web.Request) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the caller: its requests a minute and its tightest
    token budget, each as limit, remaining and reset (``6m0s``)."""
    principal = request.get(PRINCIPAL)
    if principal is None:
        return {}
    headers = {}
    for name, (limit, remaining, reset) in (
            await request.app[GATEWAY].rate_limits(principal)).items():
        headers[f"x-ratelimit-limit-{name}"] = str(int(limit))
        headers[f"x-ratelimit-remaining-{name}"] = str(int(remaining))
        headers[f"x-ratelimit-reset-{name}"] = _duration(reset)
    return headers


def _duration(seconds: float) -> str:
    """A time as OpenAI writes it in its headers: 20ms, 1s, 6m0s, 2h3m4s."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds + 0.999)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def endpoint(handler: Handler) -> Handler:
    """A /v1 handler as OpenAI answers: every failure in its envelope, whatever raised it,
    and the caller's rate-limit headers on every answer, failures included.

    A wrapper rather than the middlewares of a /v1 sub-application: aiohttp resolves a
    sub-application's routes and runs its middlewares through layers of its own, about
    85,000 instructions a request (issue 14), and ignores its body limit."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure gets its answer there
            response = await failure_response(request, exc, openai_error)
        if not response.prepared:  # a stream added them before it opened
            with contextlib.suppress(GatewayError):  # the answer matters more than its headers
                response.headers.update(await rate_limit_headers(request))
        return response

    return answer


async def _caller(request: web.Request) -> tuple[Gateway, Principal]:
    gateway = request.app[GATEWAY]
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("no API key: send 'Authorization: Bearer KEY' with your gateway key",
                           code="invalid_api_key")
    try:
        principal = await authenticate(request, key.strip())
    except Unauthorized as err:
        raise Unauthorized(err.message, code="invalid_api_key") from None
    request[PRINCIPAL] = principal
    return gateway, principal


def _tier_choice(principal: Principal) -> PlusChoice:
    return "any" if principal.plus or principal.is_admin else "false"


# --------------------------------------------------------------------------------- models


async def list_models(request: web.Request) -> web.Response:
    gateway, principal = await _caller(request)
    data = [_model_object(*entry) for entry in gateway.model_capabilities(principal)]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    gateway, principal = await _caller(request)
    wanted = request.match_info["model"]
    for entry in gateway.model_capabilities(principal):
        if entry[0] == wanted:
            return web.json_response(_model_object(*entry))
    raise _not_found_model(wanted)


def _model_object(model: str, owner: str, capabilities: list[str]) -> dict[str, Any]:
    # OpenAI's fields, and what the model can do here (a request needing more is refused).
    return {"id": model, "object": "model", "created": 0, "owned_by": owner,
            "capabilities": capabilities}


# --------------------------------------------------------------------------------- embeddings


async def embeddings(request: web.Request) -> web.Response:
    gateway, principal = await _caller(request)
    body = await read_body(request)
    return web.json_response(await gateway.embeddings(principal, body))


def _not_found_model(model: str) -> GatewayError:
    return NotFound(f"The model '{model}' does not exist or you do not have access to it.",
                    code="model_not_found")


# --------------------------------------------------------------------------------- completions


def parse_completion_request(body: Any, raw: bytes | None = None,
                             ) -> tuple[list[dict[str, Any]], dict[str, Any], str, bool]:
    """Validated messages, the options to pass on, the prompt to store (the last user
    message), and whether every message is plain text (see ``_all_plain_text``). Raises with the
    offending ``param`` named, as OpenAI does. ``body``: as ``parse_json(raw, depth_later=True)``
    read it, its depth checked here (a history of plain messages is three levels deep: then
    only the rest of the body is walked, where counting a long body's brackets cost as much
    as parsing it)."""
    messages = body.get("messages") if body.__class__ is dict else None
    plain = messages.__class__ is list and bool(messages) and _all_plain_text(messages)
    try:
        check_depth(body, "the request body", raw, flat="messages" if plain else None)
    except BadRequest as err:
        raise _ParamError(err.message, "body") from None
    if not isinstance(body, dict):
        raise _ParamError("the request body must be a JSON object", "body")
    if not isinstance(messages, list) or not messages:
        raise _ParamError("'messages' must be a non-empty array", "messages")
    if not plain:
        for index, message in enumerate(messages):
            if not (type(message) is dict and type(message.get("content")) is str
                    and type(message.get("role")) is str and message["role"] in _PLAIN_ROLES
                    and "tool_calls" not in message):
                _check_message(message, index)  # the common case above needs no more checks
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise _ParamError("'n' must be a whole number from 1 to 128", "n")
    for name in ("tools", "functions"):
        if name in body and not isinstance(body[name], list):
            raise _ParamError(f"'{name}' must be an array", name)
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise _ParamError("'model' must be a non-empty string", "model")
    for name in ("stream",):
        if name in body and not isinstance(body[name], bool):
            raise _ParamError(f"'{name}' must be a boolean", name)
    options = {k: v for k, v in body.items() if k not in HANDLED}
    if options.get("n") == 1:
        del options["n"]
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    prompt = content_text(last_user["content"])
    return messages, options, prompt, plain


def _all_plain_text(messages: list[Any]) -> bool:
    """Whether every message is only a plain role and text that is not a ``data:`` URL: the
    common case (a chat's history), which is valid as it is, needs no capability and carries
    nothing inline. One pass for the three questions: each asked of a 19-message history on
    its own (the checks here, ``needs_of_chat``, ``exchange.extract``) cost 42 us (issue 14)."""
    for message in messages:
        if (message.__class__ is not dict or len(message) != 2
                or (content := message.get("content")).__class__ is not str
                or message.get("role") not in _PLAIN_ROLE_NAMES
                or content.startswith("data:")):
            return False
    return True


def _check_message(message: Any, index: int) -> None:
    where = f"messages[{index}]"
    role = message.get("role") if isinstance(message, dict) else None
    if not isinstance(role, str) or role not in ROLES:  # a list is no role (and unhashable)
        raise _ParamError(
            f"{where} must be an object whose role is one of {', '.join(sorted(ROLES))}", where)
    content = message.get("content")
    calls = message.get("tool_calls")
    if calls is not None and (role != "assistant" or not isinstance(calls, list)):
        raise _ParamError(f"{where}.tool_calls must be an array, on an assistant message",
                          f"{where}.tool_calls")
    # An assistant message that only calls tools has no content (null), as OpenAI sends it.
    may_be_empty = role == "assistant" and (calls or message.get("function_call")
                                            or message.get("refusal"))
    if not isinstance(content, str | list) and not (content is None and may_be_empty):
        raise _ParamError(f"{where}.content must be a string or an array", f"{where}.content")
    if isinstance(content, list):
        for number, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _ParamError(f"{where}.content[{number}] must be an object with a 'type'",
                                  f"{where}.content[{number}]")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _ParamError(f"{where}.tool_call_id must name the tool call it answers",
                          f"{where}.tool_call_id")


def draft(messages: list[dict[str, Any]], settings: Settings, *,
          plain_text: bool = False) -> exchange.Draft:
    """These messages as a turn stores them, inline data by hash (``exchange.continued``
    keeps what a follow-up adds). Every inline attachment of the request counts to the
    limit, stored or not. ``plain_text``: the messages are known to carry nothing inline."""
    # Without inline data, ``stored`` is the caller's own list (nothing changes it later).
    stored, attachments = (messages, []) if plain_text else \
        exchange.extract(messages, settings.chat.max_attachment_bytes)
    return exchange.Draft("chat", stored, attachments)


async def read_body(request: web.Request) -> Any:
    return _parse(await _read_raw(request))


async def _read_raw(request: web.Request) -> bytes:
    limit = request.app[BODY_LIMIT]
    raw = await read_limited(request, limit)
    if raw is None:
        raise TooLarge(
            f"the request body is larger than this endpoint's limit of {limit} bytes "
            "([server] max_body_bytes, plus room for [chat] max_attachment_bytes of inline "
            "attachments)", code="body_too_large")
    return raw or b"null"


def _parse(raw: bytes, *, depth_later: bool = False) -> Any:
    try:
        return parse_json(raw, depth_later=depth_later)
    except BadRequest as err:
        raise _ParamError(err.message, "body") from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway, principal = await _caller(request)
    raw = await _read_raw(request)
    body = _parse(raw, depth_later=True)
    messages, options, prompt, plain_text = parse_completion_request(body, raw)
    model = body.get("model") or None
    stream = bool(body.get("stream"))
    stream_options = body.get("stream_options")
    include_usage = bool(isinstance(stream_options, dict)
                         and stream_options.get("include_usage"))
    conversation_id = check_text(CONVERSATION_HEADER,
                                 request.headers.get(CONVERSATION_HEADER, "")) or None
    whole = draft(messages, gateway.settings, plain_text=plain_text)
    chat_request = ChatRequest(
        prompt=prompt,
        conversation_id=conversation_id,
        plus=_tier_choice(principal),
        options=options,
        endpoint="v1",
        model=None if conversation_id else model,
        messages=messages,
        generate_title=gateway.settings.chat.v1_titles,
        needs=needs_of_chat(body, plain_text_messages=plain_text),
        exchange=whole if conversation_id is None else exchange.continued(whole),
        # Fingerprinted as stored (inline data by hash: the same bytes, the same reference),
        # whether the caller names its conversation or not: a session may do both.
        context=context_digest.of(whole.messages),
    )
    if stream:
        return await _stream(request, gateway, principal, chat_request, include_usage)
    result = await gateway.chat(principal, chat_request)
    return web.Response(body=fastjson.dumps(_completion(result)), content_type="application/json",
                        headers={CONVERSATION_HEADER: result.conversation.id})


def _completion_id(result: ChatResult) -> str:
    return "chatcmpl-" + result.turn.id.replace("-", "")


def _usage(result: ChatResult) -> dict[str, int]:
    prompt_tokens = result.turn.input_tokens or 0
    completion_tokens = result.turn.output_tokens or 0
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _completion(result: ChatResult) -> dict[str, Any]:
    completion = result.completion
    if completion is not None and completion.choices is not None:
        # A Chat Completions upstream's choices go back as it gave them: tool calls,
        # refusals, logprobs, every choice of n.
        choices = completion.choices
    else:
        message: dict[str, Any] = {"role": "assistant", "content": result.turn.reply,
                                   "refusal": None}
        if completion is not None and completion.message:
            message.update(completion.message)
            if message.get("tool_calls") and not result.turn.reply:
                message["content"] = None
        choices = [{"index": 0, "message": message, "logprobs": None,
                    "finish_reason": result.finish_reason}]
    return {
        "id": _completion_id(result),
        "object": "chat.completion",
        "created": int(result.prompt_time.timestamp()),
        "model": result.turn.model,
        "choices": choices,
        "usage": _usage(result),
        "system_fingerprint": None,
    }


class _ChunkWriter:
    """Writes a turn as OpenAI's ``chat.completion.chunk`` events. The response opens with the
    first piece of text, so any failure before it (no account, upstream down on every account)
    still answers with its own status and envelope."""

    def __init__(self, request: web.Request, include_usage: bool) -> None:
        self.request = request
        self.include_usage = include_usage
        self.pending = bytearray()
        self.response = CoalescedStream(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })
        self.chunk_id = ""
        self.conversation_id = ""
        self.model = ""
        self.created = int(time.time())
        self.gone = False
        self.passing_chunks = False
        """The upstream speaks Chat Completions: its chunks go on as given (tool-call deltas
        with their indexes, several choices) and its text deltas are not sent again."""
        self._text_frame: tuple[str, str, bytes, bytes] | None = None

    async def write(self, payload: dict[str, Any] | str, *, hold: bool = False,
                    last: bool = False) -> None:
        """One event, with any held before it in the same socket write (``hold``: keep it for
        the next); ``last`` ends the stream in that write too."""
        if self.gone:
            return
        data = payload.encode() if isinstance(payload, str) else fastjson.dumps(payload)
        event = b"data: " + data + b"\n\n"
        if hold:
            self.pending += event
            return
        await self.send([event], last=last)

    async def send(self, events: list[bytes], *, last: bool = False) -> None:
        """Events already written out, with any held before them, in one socket write;
        ``last`` ends the stream in that write too."""
        if self.gone:
            return
        if self.pending:
            out = bytes(self.pending) + b"".join(events)
            self.pending = bytearray()
        else:
            out = events[0] if len(events) == 1 else b"".join(events)
        try:
            await (self.response.write_eof(out) if last else self.response.write(out))
        except (ConnectionError, RuntimeError):
            # The caller left; the turn is still completed and stored.
            self.gone = True

    def text_event(self, text: str) -> bytes:
        """The event of a text chunk, as ``self.chunk({"content": text})`` would be written:
        the JSON around the text is written once a stream, not once a chunk."""
        frame = self._text_frame
        if frame is None or frame[0] is not self.chunk_id or frame[1] is not self.model:
            # The content is the chunk's last string: cut at the last place holder.
            head, _, tail = fastjson.dumps(self.chunk({"content": "\u0000"})).rpartition(
                b'"\\u0000"')
            frame = self._text_frame = (self.chunk_id, self.model, b"data: " + head,
                                        tail + b"\n\n")
        return frame[2] + fastjson.dumps(text) + frame[3]

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.chunk_id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    async def started(self, info: StartInfo) -> None:
        self.conversation_id = info.conversation_id
        self.chunk_id = "chatcmpl-" + info.message_id.replace("-", "")
        self.model = info.model

    async def open(self) -> None:
        if not self.response.prepared:
            self.response.headers[CONVERSATION_HEADER] = self.conversation_id
            with contextlib.suppress(GatewayError):
                self.response.headers.update(await rate_limit_headers(self.request))
            await self.response.prepare(self.request)
            await self.write(self.chunk({"role": "assistant", "content": "", "refusal": None}),
                             hold=True)

    async def delta(self, text: str) -> None:
        if self.passing_chunks:
            return
        await self.open()
        await self.send([self.text_event(text)])

    async def raw(self, objects: Sequence[dict[str, Any] | str]) -> bool:
        """Chunks of a Chat Completions upstream, passed on as they arrive. Plain text pieces
        of one read go on as one chunk, as they always did (a chunk each cost 30% more CPU a
        stream); a chunk with anything else (tool-call deltas with their indexes, refusals,
        logprobs, other choices, the finish) goes as given, in order. Chunks with nothing in
        them (the role alone) are not sent: ours opens the response, and only once something
        comes, so a failure before it still answers with its own status. A text chunk may come
        as its text alone (core/wire.OnRaw)."""
        events: list[bytes] = []
        text: list[str] = []
        chat_chunks = False
        for item in objects:
            if isinstance(item, str):
                text.append(item)
                chat_chunks = True
                continue
            choices = item.get("choices")
            if type(choices) is not list:
                continue  # another protocol's events (Responses): its text deltas serve
            chat_chunks = True
            for choice in choices:  # none: the usage chunk; ours comes at the end
                piece = _plain_text(choice)
                if piece is not None:
                    text.append(piece)
                    continue
                if joined := "".join(text):
                    events.append(self.text_event(joined))
                text = []
                if _carries(choice):
                    events.append(b"data: " + fastjson.dumps(self.chunk_with([choice]))
                                  + b"\n\n")
        if not chat_chunks:
            return False
        self.passing_chunks = True
        if joined := "".join(text):
            events.append(self.text_event(joined))
        if not events:
            return False
        await self.open()
        await self.send(events)
        return True

    def chunk_with(self, choices: list[Any]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.chunk_id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": None, "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    async def title(self, title: str) -> None:
        return None


_TEXT_DELTA_KEYS = frozenset({"content", "role", "refusal", "tool_calls"})


def _plain_text(choice: Any) -> str | None:
    """The text of a streamed choice that carries only text (or nothing) for the first
    choice; None for any other."""
    if not isinstance(choice, dict) or choice.get("index", 0) != 0 or \
            choice.get("finish_reason") or choice.get("logprobs"):
        return None
    delta = choice.get("delta")
    if type(delta) is dict and len(delta) == 1 and type(text := delta.get("content")) is str:
        return text  # nearly every chunk: its text alone
    if not isinstance(delta, dict) or not delta.keys() <= _TEXT_DELTA_KEYS:
        return None
    if delta.get("refusal") or delta.get("tool_calls"):
        return None
    content = delta.get("content")
    return content if isinstance(content, str) else "" if content is None else None


def _carries(choice: Any) -> bool:
    """A streamed choice with something for the caller (text, a tool call, an end)."""
    if not isinstance(choice, dict):
        return True
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = {}
    return bool(choice.get("finish_reason") or choice.get("logprobs") or any(
        delta.get(key) for key in ("content", "tool_calls", "refusal", "function_call",
                                   "audio")))


async def _stream(request: web.Request, gateway: Gateway, principal: Principal,
                  chat_request: ChatRequest, include_usage: bool) -> web.StreamResponse:
    writer = _ChunkWriter(request, include_usage)
    try:
        result = await gateway.chat(principal, chat_request, writer)
    except GatewayError as err:
        if not writer.response.prepared:
            raise
        # Mid-stream, OpenAI sends an error object as a data event.
        await writer.write({"error": {"message": err.message, "type": _ERROR_TYPES.get(
            err.status, "api_error"), "param": None, "code": err.code}}, last=True)
        return writer.response
    writer.model = result.turn.model
    await writer.open()  # an empty reply still gets its role chunk
    if not writer.passing_chunks:  # else the upstream's own finish chunk was among them
        extras = result.completion.message if result.completion is not None else None
        if extras and extras.get("tool_calls"):
            # An upstream of another protocol gave its calls whole: sent as one delta.
            await writer.write(writer.chunk({"tool_calls": [
                {"index": i, **call} for i, call in enumerate(extras["tool_calls"])]}),
                hold=True)
        await writer.write(writer.chunk({}, result.finish_reason), hold=True)
    if include_usage:
        await writer.write({
            "id": writer.chunk_id, "object": "chat.completion.chunk",
            "created": writer.created, "model": writer.model, "system_fingerprint": None,
            "choices": [], "usage": _usage(result),
        }, hold=True)
    await writer.write("[DONE]", last=True)
    return writer.response


def body_limit(settings: Settings) -> int:
    """/v1 bodies may carry inline attachments: the body limit, plus their base64 size."""
    return settings.server.max_body_bytes + (settings.chat.max_attachment_bytes * 4 + 2) // 3


def add_v1_routes(app: web.Application, settings: Settings) -> None:
    """The OpenAI-compatible routes under ``[paths] openai_prefix``, each an ``endpoint``.
    Addresses under the prefix that match none answer in OpenAI's envelope too (the app's
    error middleware, web/app.py)."""
    from .v1_responses import create_response, get_response  # they build on this module

    app[BODY_LIMIT] = body_limit(settings)
    prefix = settings.paths.openai_prefix
    router = app.router
    router.add_post(f"{prefix}/chat/completions", endpoint(chat_completions))
    router.add_post(f"{prefix}/embeddings", endpoint(embeddings))
    router.add_post(f"{prefix}/responses", endpoint(create_response))
    router.add_get(f"{prefix}/responses/{{id}}", endpoint(get_response))
    router.add_get(f"{prefix}/models", endpoint(list_models))
    router.add_get(f"{prefix}/models/{{model}}", endpoint(get_model))
