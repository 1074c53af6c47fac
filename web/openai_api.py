"""The OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``, so any OpenAI
SDK or tool works with a member's gateway key.

The caller owns the context, as with OpenAI: its ``messages`` are sent as given. Every exchange
is still stored as a turn of the caller (the organisation's record), under a conversation whose
id comes back in the ``X-Conversation-Id`` header; sending that header continues the
conversation on the account that started it. Every error uses OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from core import fastjson
from core.chat import ChatRequest, ChatResult, StartInfo
from core.errors import BadRequest, GatewayError, NotFound, TooLarge, Unauthorized
from core.gateway import Gateway
from core.models import PlusChoice, Principal
from core.wire import content_text

from .errors import error_middleware_for, retry_after_headers
from .guard import authenticate
from .inputs import check_text, parse_json
from .keys import GATEWAY
from .sse import CoalescedStream

log = logging.getLogger(__name__)

CONVERSATION_HEADER = "X-Conversation-Id"
# Fields passed upstream as given. Others are refused rather than dropped silently, so a caller
# never believes a setting took effect when it did not.
PASSED_FIELDS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "presence_penalty",
    "frequency_penalty", "seed", "user", "response_format", "logit_bias", "metadata",
    "reasoning_effort", "service_tier",
})
IGNORED_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "n", "store"})
UNSUPPORTED_FIELDS = frozenset({"tools", "tool_choice", "functions", "function_call",
                                "logprobs", "top_logprobs", "audio", "modalities",
                                "prediction", "parallel_tool_calls"})
ROLES = frozenset({"system", "developer", "user", "assistant"})

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
    body = {"error": {"message": message, "type": _ERROR_TYPES.get(status, "api_error"),
                      "param": param, "code": code}}
    return web.json_response(body, status=status, headers=retry_after_headers(retry_after))


class _ParamError(BadRequest):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, code="invalid_value")
        self.param = param


openai_errors = error_middleware_for(openai_error)
"""Every failure on /v1 in OpenAI's envelope, whatever raised it."""


async def _caller(request: web.Request) -> tuple[Gateway, Principal]:
    gateway = request.app[GATEWAY]
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("no API key: send 'Authorization: Bearer KEY' with your gateway key",
                           code="invalid_api_key")
    try:
        return gateway, await authenticate(request, key.strip())
    except Unauthorized as err:
        raise Unauthorized(err.message, code="invalid_api_key") from None


def _tier_choice(principal: Principal) -> PlusChoice:
    return "any" if principal.plus or principal.is_admin else "false"


# --------------------------------------------------------------------------------- models


async def list_models(request: web.Request) -> web.Response:
    gateway, principal = await _caller(request)
    data = [_model_object(model, owner) for model, owner in gateway.models(principal)]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    gateway, principal = await _caller(request)
    wanted = request.match_info["model"]
    for model, owner in gateway.models(principal):
        if model == wanted:
            return web.json_response(_model_object(model, owner))
    raise _not_found_model(wanted)


def _model_object(model: str, owner: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": owner}


def _not_found_model(model: str) -> GatewayError:
    return NotFound(f"The model '{model}' does not exist or you do not have access to it.",
                    code="model_not_found")


# --------------------------------------------------------------------------------- completions


def parse_completion_request(body: Any) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Validated messages, the options to pass on, and the prompt to store (the last user
    message). Raises with the offending ``param`` named, as OpenAI does."""
    if not isinstance(body, dict):
        raise _ParamError("the request body must be a JSON object", "body")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _ParamError("'messages' must be a non-empty array", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _ParamError(
                f"messages[{index}] must be an object whose role is one of "
                f"{', '.join(sorted(ROLES))}", f"messages[{index}]",
            )
        if not isinstance(message.get("content"), str | list):
            raise _ParamError(f"messages[{index}].content must be a string or an array",
                              f"messages[{index}].content")
    for name in body:
        if name in UNSUPPORTED_FIELDS:
            raise _ParamError(f"'{name}' is not supported by this gateway", name)
    if body.get("n", 1) != 1:
        raise _ParamError("only n=1 is supported", "n")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise _ParamError("'model' must be a non-empty string", "model")
    for name in ("stream",):
        if name in body and not isinstance(body[name], bool):
            raise _ParamError(f"'{name}' must be a boolean", name)
    options = {k: v for k, v in body.items() if k in PASSED_FIELDS}
    users = [m for m in messages if m.get("role") == "user"]
    prompt = content_text(users[-1]["content"]) if users else content_text(messages[-1]["content"])
    return messages, options, prompt


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway, principal = await _caller(request)
    try:
        body = parse_json(await request.read() or b"null")
    except BadRequest as err:
        raise _ParamError(err.message, "body") from None
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge("the request body is too large", code="body_too_large") from None
    messages, options, prompt = parse_completion_request(body)
    model = body.get("model") or None
    stream = bool(body.get("stream"))
    stream_options = body.get("stream_options")
    include_usage = bool(isinstance(stream_options, dict)
                         and stream_options.get("include_usage"))
    conversation_id = check_text(CONVERSATION_HEADER,
                                 request.headers.get(CONVERSATION_HEADER, "")) or None
    chat_request = ChatRequest(
        prompt=prompt,
        conversation_id=conversation_id,
        plus=_tier_choice(principal),
        options=options,
        endpoint="v1",
        model=None if conversation_id else model,
        messages=messages,
        generate_title=gateway.settings.chat.v1_titles,
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
    return {
        "id": _completion_id(result),
        "object": "chat.completion",
        "created": int(result.prompt_time.timestamp()),
        "model": result.turn.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": result.turn.reply, "refusal": None},
            "logprobs": None,
            "finish_reason": result.finish_reason,
        }],
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

    async def write(self, payload: dict[str, Any] | str, *, hold: bool = False,
                    last: bool = False) -> None:
        """One event, with any held before it in the same socket write (``hold``: keep it for
        the next); ``last`` ends the stream in that write too."""
        if self.gone:
            return
        data = payload.encode() if isinstance(payload, str) else fastjson.dumps(payload)
        self.pending += b"data: " + data + b"\n\n"
        if hold:
            return
        out, self.pending = bytes(self.pending), bytearray()
        try:
            await (self.response.write_eof(out) if last else self.response.write(out))
        except (ConnectionError, RuntimeError):
            # The caller left; the turn is still completed and stored.
            self.gone = True

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
            await self.response.prepare(self.request)
            await self.write(self.chunk({"role": "assistant", "content": "", "refusal": None}),
                             hold=True)

    async def delta(self, text: str) -> None:
        await self.open()
        await self.write(self.chunk({"content": text}))

    async def title(self, title: str) -> None:
        return None


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
    await writer.write(writer.chunk({}, result.finish_reason), hold=True)
    if include_usage:
        await writer.write({
            "id": writer.chunk_id, "object": "chat.completion.chunk",
            "created": writer.created, "model": writer.model, "system_fingerprint": None,
            "choices": [], "usage": _usage(result),
        }, hold=True)
    await writer.write("[DONE]", last=True)
    return writer.response


def create_v1_app(gateway: Gateway) -> web.Application:
    """The /v1 sub-application, with its own error envelope."""
    app = web.Application(middlewares=[openai_errors],
                          client_max_size=gateway.settings.server.max_body_bytes)
    app[GATEWAY] = gateway
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_get("/models", list_models)
    app.router.add_get("/models/{model}", get_model)
    return app
