"""In-process fake of an OpenAI-compatible Chat Completions server.

Tests point the gateway (or the official ``openai`` SDK) at ``FakeUpstream.base_url`` and script
what the upstream does next with ``enqueue()``: reply, stream, fail with an HTTP status, hang,
break a stream half-way, return garbage or answer late. Every request is recorded so tests can
assert on what the gateway actually forwarded.

The wire format mirrors OpenAI's closely enough that the real SDK parses it, so a test that
passes against the fake exercises the same parsing paths as production.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeAlias

from aiohttp import web

__all__ = [
    "Behaviour",
    "Delay",
    "FakeUpstream",
    "Flood",
    "Garbage",
    "Hang",
    "Headers",
    "Hold",
    "Pause",
    "RecordedRequest",
    "Reply",
    "Status",
    "StreamBreak",
    "ToolCalls",
]

CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
EMBEDDINGS_PATH = "/v1/embeddings"
EMBEDDING_SIZE = 8


# --------------------------------------------------------------------------------------------
# Behaviours: what the fake does with the next request.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Answer successfully with ``text`` (JSON or SSE, depending on the request's ``stream``).

    ``usage`` replaces the computed usage block verbatim; ``model`` overrides the echoed model.
    """

    text: str
    usage: Mapping[str, Any] | None = None
    model: str | None = None
    finish_reason: str = "stop"
    chunk_delay: float = 0.0
    """Seconds between streamed chunks, as a real model's tokens come: chunks sent at once
    arrive in one read, and the gateway passes them on as one delta."""


@dataclass(frozen=True)
class ToolCalls:
    """Answer by calling tools: ``calls`` are ``(name, arguments)`` pairs, the arguments a
    dict (sent as JSON text) or the text itself. Several calls are parallel tool calls.
    Streamed, as OpenAI does: each call opens with its index, id and name, and its arguments
    follow in pieces of ``piece`` characters, ``chunk_delay`` seconds apart. ``text`` comes
    before the calls when given. On the Responses API: ``function_call`` output items."""

    calls: tuple[tuple[str, Mapping[str, Any] | str], ...]
    text: str = ""
    piece: int = 8
    chunk_delay: float = 0.0
    gate: asyncio.Event | None = field(default=None, compare=False)
    """Streamed: after the first call's opening delta, wait until the test sets this, so a
    test can see that delta reach the caller while the rest is still to come."""

    def tool_calls(self, prefix: str = "call") -> list[dict[str, Any]]:
        return [{"id": f"{prefix}_{index}_{name}", "type": "function",
                 "function": {"name": name, "arguments": arguments if isinstance(arguments, str)
                              else json.dumps(arguments)}}
                for index, (name, arguments) in enumerate(self.calls)]


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error status and an OpenAI-style ``{"error": {...}}`` body.

    ``body`` may be a dict (sent as JSON) or a str (sent verbatim as text/plain, like a proxy's
    HTML error page); when omitted a realistic OpenAI error for ``code`` is generated, with
    ``message`` replacing its default message. ``headers`` lets tests send ``Retry-After``.
    """

    code: int
    body: Mapping[str, Any] | str | None = None
    headers: Mapping[str, str | int | float] | None = None
    message: str | None = None


@dataclass(frozen=True)
class Hang:
    """Never answer; the handler is released (and the connection dropped) by ``stop()``."""


@dataclass(frozen=True)
class StreamBreak:
    """Send the role chunk plus ``after_chunks`` content chunks, then drop the connection.

    No ``finish_reason`` chunk and no ``[DONE]`` are sent, as when an upstream dies mid-stream.
    For a non-stream request a truncated JSON body is sent instead. ``text`` defaults to the
    reply the fake would otherwise have given.
    """

    after_chunks: int = 2
    text: str | None = None


@dataclass(frozen=True)
class Garbage:
    """Answer 200 with a body that is not a valid chat completion.

    The default is non-JSON HTML; ``Garbage.no_choices()`` gives valid JSON lacking ``choices``.
    """

    body: str = "<html><body>definitely not json</body></html>"
    content_type: str = "text/html"

    @classmethod
    def no_choices(cls) -> Garbage:
        """JSON that parses but is missing ``choices``, to test schema validation."""
        return cls(
            body=json.dumps({"id": "chatcmpl-garbage", "object": "chat.completion"}),
            content_type="application/json",
        )

    @classmethod
    def json(cls, payload: Any) -> Garbage:
        """Well-formed JSON of any shape, e.g. a completion whose ``usage`` is a list."""
        return cls(body=json.dumps(payload), content_type="application/json")

    @classmethod
    def sse(cls, *payloads: Any) -> Garbage:
        """A well-formed event stream whose events carry ``payloads`` (JSON of any shape),
        ended by ``[DONE]``: for a streamed request whose chunks have the wrong shape."""
        events = "".join(f"data: {json.dumps(p)}\n\n" for p in payloads)
        return cls(body=events + "data: [DONE]\n\n", content_type="text/event-stream")


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` (cut short by ``stop()``), then perform ``then``."""

    seconds: float
    then: Behaviour | str | None = None


@dataclass(frozen=True)
class Flood:
    """Answer 200 with a body of ``total_bytes`` (chunked, no Content-Length), ``piece``
    repeated: a reply far larger than any gateway should take. ``FakeUpstream.flood_sent``
    says how much of it the client read before it hung up."""

    total_bytes: int
    piece: bytes = b'{"choices": [{"message": {"content": "' + b"x" * 65_536
    content_type: str = "application/json"


@dataclass(frozen=True, eq=False)
class Hold:
    """Wait until the test sets ``gate`` (or ``stop()``), then perform ``then``: the request
    stays in flight exactly as long as the test needs, with no timer involved."""

    gate: asyncio.Event
    then: Behaviour | str | None = None


@dataclass(frozen=True, eq=False)
class Pause:
    """Stream the first ``after_chunks`` chunks of ``text``, wait until the test sets ``gate``
    (or ``stop()``), then stream the rest, as a model that pauses mid-answer. A client that
    hung up meanwhile makes the rest fail to write: counted in ``FakeUpstream.hung_up``."""

    text: str
    gate: asyncio.Event
    after_chunks: int = 2


Behaviour: TypeAlias = (Reply | Status | Hang | StreamBreak | Garbage | Delay | Hold | Flood
                        | ToolCalls | Pause)
"""Anything ``enqueue()`` accepts (a plain ``str`` is shorthand for ``Reply(str)``)."""


# --------------------------------------------------------------------------------------------
# Recording.
# --------------------------------------------------------------------------------------------


class Headers(dict[str, str]):
    """Case-insensitive header dict (keys stored lower-case), so tests need not guess casing."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    headers: Headers
    api_key: str | None
    body: dict[str, Any] | None
    raw_body: bytes = b""
    query: dict[str, str] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` array (a Responses request's ``input`` list), or ``[]``."""
        body = self.body or {}
        messages = body.get("input") if self.path == RESPONSES_PATH else body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def stream(self) -> bool:
        return bool((self.body or {}).get("stream"))

    @property
    def include_usage(self) -> bool:
        """Whether ``stream_options.include_usage`` was requested."""
        options = (self.body or {}).get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    @property
    def model(self) -> str | None:
        model = (self.body or {}).get("model")
        return model if isinstance(model, str) else None

    @property
    def prompt(self) -> str:
        """A plain completion request's ``prompt`` (llama.cpp's /v1/completions), or ""."""
        prompt = (self.body or {}).get("prompt")
        return prompt if isinstance(prompt, str) else ""

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path in (CHAT_PATH, RESPONSES_PATH,
                                                       COMPLETIONS_PATH)

    @property
    def previous_response_id(self) -> str | None:
        return (self.body or {}).get("previous_response_id")

    @property
    def is_title(self) -> bool:
        """A chat request whose first message is a system prompt mentioning "title"."""
        if self.path == COMPLETIONS_PATH:  # a transcript whose first line asks for titles
            return "title" in self.prompt.partition("\n")[0].lower()
        if not self.is_chat or not self.messages:
            return False
        first = self.messages[0]
        if not isinstance(first, dict) or first.get("role") != "system":
            return False
        return "title" in message_text(first).lower()


def message_text(message: Mapping[str, Any]) -> str:
    """Text of a message whether ``content`` is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def behaviour_delay(behaviour: Reply | ToolCalls) -> float:
    return behaviour.chunk_delay


def embedding_of(item: Any) -> list[float]:
    """A deterministic stand-in vector for an input."""
    digest = uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(item)).bytes
    return [round(byte / 255, 4) for byte in digest[:EMBEDDING_SIZE]]


def count_words(text: str) -> int:
    """Deterministic stand-in for a tokenizer: whitespace-separated words."""
    return len(text.split())


def split_deltas(text: str) -> list[str]:
    """Split into word-sized pieces keeping whitespace, so ``"".join(pieces) == text``."""
    return re.findall(r"\s*\S+|\s+", text)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to access this resource.", "permission_error", None),
    404: ("The model does not exist.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def error_body(code: int, message: str | None = None) -> dict[str, Any]:
    """OpenAI-shaped error payload for an HTTP status."""
    fallback_type = "server_error" if code >= 500 else "invalid_request_error"
    default_message, err_type, err_code = _ERROR_DEFAULTS.get(
        code, (f"Upstream error {code}.", fallback_type, None)
    )
    return {
        "error": {
            "message": message if message is not None else default_message,
            "type": err_type,
            "param": None,
            "code": err_code,
        }
    }


# --------------------------------------------------------------------------------------------
# The server.
# --------------------------------------------------------------------------------------------


class FakeUpstream:
    """Scriptable OpenAI-compatible upstream on 127.0.0.1 with an ephemeral port.

    Non-title chat requests consume ``enqueue()``d behaviours first-in first-out; with the
    queue empty they get ``default_reply(messages)`` if set, else ``"reply {n} from {name}"``
    where ``n`` counts every non-title chat request received (1-based, including those answered
    from the queue) so the text identifies which request it answers. Title requests consume
    ``enqueue_title()`` behaviours, else answer ``default_title``.
    """

    def __init__(self, name: str = "fake", *, model: str = "fake-model") -> None:
        self.name = name
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.default_reply: Callable[[list[dict[str, Any]]], str | Behaviour] | None = None
        self.default_title: str = "Fake Title"
        self.shutdown_timeout: float = 0.5
        self._queue: deque[Behaviour | str] = deque()
        self._title_queue: deque[Behaviour | str] = deque()
        self._chat_count = 0
        self.stored_responses: dict[str, dict[str, Any]] = {}
        """Responses API: every response this fake produced, by id, as a real upstream keeps
        them; ``previous_response_id`` must name one of these."""
        self._recorded = asyncio.Condition()
        self._stopping = asyncio.Event()
        self.in_flight = 0
        """Chat requests being answered now (received, response not finished)."""
        self.max_in_flight = 0
        """The most chat requests ever answered at once: what a concurrency limit must bound."""
        self.flood_sent = 0
        """Bytes of ``Flood`` bodies written before the client stopped reading."""
        self.hung_up = 0
        """Streams the client closed before they were complete (``Pause``)."""
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind 127.0.0.1:0 and start serving."""
        if self._runner is not None:
            raise RuntimeError(f"FakeUpstream {self.name!r} already started")
        # Fresh primitives so a fake can be restarted under a different event loop.
        self._stopping = asyncio.Event()
        self._recorded = asyncio.Condition()
        app = web.Application(client_max_size=64 << 20)  # OpenAI takes 20 MB images
        app.router.add_post(CHAT_PATH, self._handle_chat)
        app.router.add_post(RESPONSES_PATH, self._handle_responses)
        app.router.add_post(COMPLETIONS_PATH, self._handle_completions)
        app.router.add_get(MODELS_PATH, self._handle_models)
        app.router.add_post(EMBEDDINGS_PATH, self._handle_embeddings)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=self.shutdown_timeout
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving; hanging/delayed handlers are released first so this returns promptly."""
        self._stopping.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"FakeUpstream {self.name!r} not started")
        return self._port

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL including ``/v1`` (what ``AsyncOpenAI(base_url=...)`` wants)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and inspection ------------------------------------------------------------

    def enqueue(self, *behaviours: Behaviour | str) -> None:
        """Queue behaviours for the next non-title chat requests (a str means ``Reply``)."""
        self._queue.extend(behaviours)

    def enqueue_title(self, *behaviours: Behaviour | str) -> None:
        """Queue behaviours for the next title requests (a str means ``Reply``)."""
        self._title_queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """Behaviours still queued (both queues), to assert a script was fully consumed."""
        return len(self._queue) + len(self._title_queue)

    def chat_requests(self, *, titles: bool | None = None) -> list[RecordedRequest]:
        """Chat requests; ``titles=False`` drops title requests, ``titles=True`` keeps only them."""
        return [r for r in self.requests if r.is_chat and (titles is None or r.is_title == titles)]

    def reset(self) -> None:
        """Forget recorded requests, queued behaviours and the reply counter."""
        self.requests.clear()
        self._queue.clear()
        self._title_queue.clear()
        self._chat_count = 0

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5) -> None:
        """Wait until ``condition`` holds, checked whenever a request arrives or ends."""
        try:
            async with asyncio.timeout(timeout):
                async with self._recorded:
                    await self._recorded.wait_for(condition)
        except TimeoutError:
            raise TimeoutError(
                f"FakeUpstream {self.name!r}: condition not met within {timeout}s "
                f"({len(self.requests)} requests, {self.in_flight} in flight)"
            ) from None

    async def wait_in_flight(self, n: int, timeout: float = 5) -> None:
        """Wait until exactly ``n`` chat requests are being answered at once."""
        await self.wait_until(lambda: self.in_flight == n, timeout)

    async def _count_in_flight(self, change: int) -> None:
        async with self._recorded:
            self.in_flight += change
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._recorded.notify_all()

    async def wait_for_requests(self, n: int, timeout: float = 5) -> None:
        """Wait until at least ``n`` requests (of any kind) have been received."""
        try:
            async with asyncio.timeout(timeout):
                async with self._recorded:
                    await self._recorded.wait_for(lambda: len(self.requests) >= n)
        except TimeoutError:
            raise TimeoutError(
                f"FakeUpstream {self.name!r}: expected {n} requests within {timeout}s, "
                f"got {len(self.requests)}"
            ) from None

    # -- handlers ----------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        body: dict[str, Any] | None = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            body = parsed if isinstance(parsed, dict) else None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=Headers(request.headers.items()),
            api_key=_bearer(request.headers.get("Authorization")),
            body=body,
            raw_body=raw,
            query=dict(request.query),
        )
        async with self._recorded:
            self.requests.append(recorded)
            self._recorded.notify_all()
        return recorded

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        body = error_body(404, f"Invalid URL ({request.method} {request.path})")
        body["error"]["code"] = None  # OpenAI's unknown-route error carries no code
        return _json_response(body, status=404)

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return _json_response(
            {
                "object": "list",
                "data": [
                    {"id": self.model, "object": "model", "created": 0, "owned_by": self.name}
                ],
            }
        )

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        await self._count_in_flight(+1)
        try:
            return await self._answer_chat(request)
        finally:
            await self._count_in_flight(-1)

    async def _answer_chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if recorded.body is None or not isinstance(recorded.body.get("messages"), list):
            return _json_response(
                error_body(400, "Request body must be a JSON object with a 'messages' array."),
                status=400,
            )
        behaviour: Behaviour | str
        if recorded.is_title:
            behaviour = self._title_queue.popleft() if self._title_queue else self.default_title
        else:
            self._chat_count += 1
            if self._queue:
                behaviour = self._queue.popleft()
            else:
                behaviour = self._default_behaviour(recorded)
        return await self._perform(request, recorded, behaviour)

    async def _handle_responses(self, request: web.Request) -> web.StreamResponse:
        await self._count_in_flight(+1)
        try:
            return await self._answer_responses(request)
        finally:
            await self._count_in_flight(-1)

    async def _answer_responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API: the upstream keeps the conversation, and a follow-up names the
        previous response, which only this server can resolve."""
        recorded = await self._record(request)
        body = recorded.body
        if body is None or not isinstance(body.get("input"), list | str):
            return _json_response(error_body(400, "Missing required parameter: 'input'."),
                                  status=400)
        previous = recorded.previous_response_id
        if previous is not None and previous not in self.stored_responses:
            error = error_body(400, f"Previous response with id '{previous}' not found.")
            error["error"].update(param="previous_response_id",
                                  code="previous_response_not_found")
            return _json_response(error, status=400)
        behaviour: Behaviour | str
        if recorded.is_title:
            behaviour = self._title_queue.popleft() if self._title_queue else self.default_title
        else:
            self._chat_count += 1
            behaviour = self._queue.popleft() if self._queue else self._default_behaviour(recorded)
        if isinstance(behaviour, str):
            behaviour = Reply(behaviour)
        if not isinstance(behaviour, Reply | ToolCalls):
            return await self._perform(request, recorded, behaviour)
        response = self._response_object(recorded, behaviour)
        if body.get("store", True):
            self.stored_responses[response["id"]] = response
        if not recorded.stream:
            return _json_response(response)
        resp = await self._start_stream(request)
        events: list[dict[str, Any]] = [{
            "type": "response.created",
            "response": {**response, "status": "in_progress", "output": [], "usage": None}}]
        for index, item in enumerate(response["output"]):
            if item["type"] == "function_call":
                events += [
                    {"type": "response.output_item.added", "output_index": index,
                     "item": {**item, "arguments": "", "status": "in_progress"}},
                    {"type": "response.function_call_arguments.delta", "item_id": item["id"],
                     "output_index": index, "delta": item["arguments"]},
                    {"type": "response.function_call_arguments.done", "item_id": item["id"],
                     "output_index": index, "arguments": item["arguments"]},
                ]
            else:
                part = item["content"][0]
                events += [
                    {"type": "response.output_item.added", "output_index": index,
                     "item": {**item, "status": "in_progress", "content": []}},
                    {"type": "response.content_part.added", "item_id": item["id"],
                     "output_index": index, "content_index": 0, "part": {**part, "text": ""}},
                    *({"type": "response.output_text.delta", "item_id": item["id"],
                       "output_index": index, "content_index": 0, "delta": piece}
                      for piece in split_deltas(part["text"])),
                    {"type": "response.output_text.done", "item_id": item["id"],
                     "output_index": index, "content_index": 0, "text": part["text"]},
                    {"type": "response.content_part.done", "item_id": item["id"],
                     "output_index": index, "content_index": 0, "part": part},
                ]
            events.append({"type": "response.output_item.done", "output_index": index,
                           "item": item})
        events.append({"type": "response.completed", "response": response})
        for sequence, event in enumerate(events, start=1):
            if event["type"] == "response.output_text.delta" and sequence > 1 and \
                    behaviour_delay(behaviour):
                await asyncio.sleep(behaviour_delay(behaviour))
            await _send_event(resp, event["type"], {**event, "sequence_number": sequence})
        await resp.write_eof()
        return resp

    async def _handle_completions(self, request: web.Request) -> web.StreamResponse:
        """The plain Completions API, as llama.cpp serves it: a ``prompt`` in, ``text`` out;
        streamed chunks carry no usage unless ``stream_options.include_usage`` asks."""
        recorded = await self._record(request)
        if recorded.body is None or not isinstance(recorded.body.get("prompt"), str):
            return _json_response(error_body(400, "'prompt' must be a string"), status=400)
        behaviour: Behaviour | str
        if recorded.is_title:
            behaviour = self._title_queue.popleft() if self._title_queue else self.default_title
        else:
            self._chat_count += 1
            behaviour = self._queue.popleft() if self._queue else self._default_behaviour(recorded)
        if isinstance(behaviour, str):
            behaviour = Reply(behaviour)
        if not isinstance(behaviour, Reply):
            return await self._perform(request, recorded, behaviour)
        base = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
                "created": int(time.time()), "model": self._model_for(recorded, behaviour)}
        if not recorded.stream:
            return _json_response({**base, "choices": [
                {"index": 0, "text": behaviour.text, "logprobs": None,
                 "finish_reason": behaviour.finish_reason}],
                "usage": self._usage(recorded, behaviour)})
        resp = await self._start_stream(request)
        for index, piece in enumerate(split_deltas(behaviour.text)):
            if index and behaviour.chunk_delay:
                await asyncio.sleep(behaviour.chunk_delay)
            await _send(resp, {**base, "choices": [
                {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]})
        await _send(resp, {**base, "choices": [
            {"index": 0, "text": "", "logprobs": None,
             "finish_reason": behaviour.finish_reason}]})
        if recorded.include_usage:
            await _send(resp, {**base, "choices": [],
                               "usage": self._usage(recorded, behaviour)})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def _response_object(self, recorded: RecordedRequest,
                         behaviour: Reply | ToolCalls) -> dict[str, Any]:
        reply = behaviour if isinstance(behaviour, Reply) else Reply(behaviour.text)
        usage = self._usage(recorded, reply)
        output: list[dict[str, Any]] = []
        if isinstance(behaviour, Reply) or behaviour.text:
            output.append({
                "type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            })
        if isinstance(behaviour, ToolCalls):
            output += [{"type": "function_call", "id": f"fc_{uuid.uuid4().hex}",
                        "call_id": call["id"], "name": call["function"]["name"],
                        "arguments": call["function"]["arguments"], "status": "completed"}
                       for call in behaviour.tool_calls()]
        return {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": self._model_for(recorded, reply),
            "previous_response_id": recorded.previous_response_id,
            "output": output,
            "usage": {"input_tokens": usage["prompt_tokens"],
                      "output_tokens": usage["completion_tokens"],
                      "total_tokens": usage["total_tokens"]},
        }

    def _tool_call_completion(self, recorded: RecordedRequest,
                              calls: ToolCalls) -> dict[str, Any]:
        completion = self._completion(recorded, Reply(calls.text, finish_reason="tool_calls"))
        message = completion["choices"][0]["message"]
        message["content"] = calls.text or None
        message["tool_calls"] = calls.tool_calls()
        return completion

    async def _stream_tool_calls(self, request: web.Request, recorded: RecordedRequest,
                                 calls: ToolCalls) -> web.StreamResponse:
        """Tool calls streamed as OpenAI streams them: each call's first delta has its index,
        id, type and name; its arguments follow in pieces that carry only the index."""
        chunk = _ChunkFactory(self._model_for(recorded), recorded.include_usage)
        resp = await self._start_stream(request)
        await _send(resp, chunk.delta({"role": "assistant", "content": None}))
        for piece in split_deltas(calls.text):
            await _send(resp, chunk.delta({"content": piece}))
        for index, call in enumerate(calls.tool_calls()):
            await asyncio.sleep(calls.chunk_delay)
            await _send(resp, chunk.delta({"tool_calls": [{
                "index": index, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}]}))
            if index == 0 and calls.gate is not None:
                await calls.gate.wait()
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), calls.piece):
                await asyncio.sleep(calls.chunk_delay)
                await _send(resp, chunk.delta({"tool_calls": [{
                    "index": index,
                    "function": {"arguments": arguments[start:start + calls.piece]}}]}))
        await _send(resp, chunk.delta({}, finish_reason="tool_calls"))
        if recorded.include_usage:
            await _send(resp, chunk.usage(self._usage(recorded, Reply(calls.text))))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        """Embeddings: one vector per input (a string, or a list of strings or of token
        lists), deterministic from the input, with usage counted in words."""
        recorded = await self._record(request)
        body = recorded.body or {}
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) or (
            isinstance(raw, list) and raw and isinstance(raw[0], int)) else raw
        if not isinstance(inputs, list) or not inputs:
            return _json_response(error_body(400, "'input' must be a string or an array"),
                                  status=400)
        if self._queue:
            behaviour = self._queue.popleft()
            if not isinstance(behaviour, str | Reply):
                return await self._perform(request, recorded, behaviour)
        tokens = sum(len(i) if isinstance(i, list) else count_words(str(i)) for i in inputs)
        return _json_response({
            "object": "list",
            "data": [{"object": "embedding", "index": index, "embedding": embedding_of(item)}
                     for index, item in enumerate(inputs)],
            "model": recorded.model or self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    def _default_behaviour(self, recorded: RecordedRequest) -> Behaviour | str:
        if self.default_reply is not None:
            return self.default_reply(recorded.messages)
        return self._default_text()

    def _default_text(self) -> str:
        return f"reply {self._chat_count} from {self.name}"

    async def _perform(
        self, request: web.Request, recorded: RecordedRequest, behaviour: Behaviour | str | None
    ) -> web.StreamResponse:
        if behaviour is None:
            behaviour = self.default_title if recorded.is_title else self._default_text()
        if isinstance(behaviour, str):
            behaviour = Reply(behaviour)
        if isinstance(behaviour, Reply):
            if recorded.stream:
                return await self._stream_reply(request, recorded, behaviour)
            return _json_response(self._completion(recorded, behaviour))
        if isinstance(behaviour, ToolCalls):
            if recorded.stream:
                return await self._stream_tool_calls(request, recorded, behaviour)
            return _json_response(self._tool_call_completion(recorded, behaviour))
        if isinstance(behaviour, Status):
            return _status_response(behaviour)
        if isinstance(behaviour, Hang):
            await self._stopping.wait()
            return _drop(request)
        if isinstance(behaviour, StreamBreak):
            return await self._stream_break(request, recorded, behaviour)
        if isinstance(behaviour, Garbage):
            return web.Response(
                status=200, text=behaviour.body, content_type=behaviour.content_type
            )
        if isinstance(behaviour, Flood):
            return await self._flood(request, behaviour)
        if isinstance(behaviour, Pause):
            return await self._pause(request, recorded, behaviour)
        if isinstance(behaviour, Hold):
            await self._until_open(behaviour.gate)
            if self._stopping.is_set():
                return _drop(request)
            return await self._perform(request, recorded, behaviour.then)
        if isinstance(behaviour, Delay):
            try:
                await asyncio.wait_for(self._stopping.wait(), behaviour.seconds)
            except TimeoutError:
                return await self._perform(request, recorded, behaviour.then)
            return _drop(request)
        raise TypeError(f"unknown FakeUpstream behaviour: {behaviour!r}")

    # -- response builders -------------------------------------------------------------------

    def _usage(self, recorded: RecordedRequest, reply: Reply) -> dict[str, Any]:
        if reply.usage is not None:
            return dict(reply.usage)
        prompt = sum(count_words(message_text(m)) for m in recorded.messages if isinstance(m, dict))
        prompt += count_words(recorded.prompt)
        completion = count_words(reply.text)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _model_for(self, recorded: RecordedRequest, reply: Reply | None = None) -> str:
        if reply is not None and reply.model is not None:
            return reply.model
        return recorded.model or self.model

    def _completion(self, recorded: RecordedRequest, reply: Reply) -> dict[str, Any]:
        return {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self._model_for(recorded, reply),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": self._usage(recorded, reply),
            "system_fingerprint": None,
        }

    async def _start_stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": uuid.uuid4().hex,
            },
        )
        await resp.prepare(request)
        return resp

    async def _stream_reply(
        self, request: web.Request, recorded: RecordedRequest, reply: Reply
    ) -> web.StreamResponse:
        chunk = _ChunkFactory(self._model_for(recorded, reply), recorded.include_usage)
        resp = await self._start_stream(request)
        await _send(resp, chunk.delta({"role": "assistant", "content": ""}))
        for index, piece in enumerate(split_deltas(reply.text)):
            if index and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            await _send(resp, chunk.delta({"content": piece}))
        await _send(resp, chunk.delta({}, finish_reason=reply.finish_reason))
        if recorded.include_usage:
            await _send(resp, chunk.usage(self._usage(recorded, reply)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _until_open(self, gate: asyncio.Event) -> None:
        """Wait until the test sets ``gate`` or the fake stops."""
        waits = [asyncio.ensure_future(gate.wait()),
                 asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _pause(self, request: web.Request, recorded: RecordedRequest,
                     pause: Pause) -> web.StreamResponse:
        chunk = _ChunkFactory(self._model_for(recorded), recorded.include_usage)
        resp = await self._start_stream(request)
        pieces = split_deltas(pause.text)
        await _send(resp, chunk.delta({"role": "assistant", "content": ""}))
        for piece in pieces[: pause.after_chunks]:
            await _send(resp, chunk.delta({"content": piece}))
        await self._until_open(pause.gate)
        if self._stopping.is_set():
            return _drop(request, resp)
        try:
            for piece in pieces[pause.after_chunks:]:
                await _send(resp, chunk.delta({"content": piece}))
            await _send(resp, chunk.delta({}, finish_reason="stop"))
            if recorded.include_usage:
                await _send(resp, chunk.usage(self._usage(recorded, Reply(pause.text))))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionError:
            self.hung_up += 1
        return resp

    async def _flood(self, request: web.Request, flood: Flood) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": flood.content_type})
        await resp.prepare(request)
        try:
            while self.flood_sent < flood.total_bytes and not self._stopping.is_set():
                await resp.write(flood.piece)
                self.flood_sent += len(flood.piece)
        except (ConnectionError, RuntimeError):
            return resp  # the client hung up: what a size limit should make it do
        await resp.write_eof()
        return resp

    async def _stream_break(
        self, request: web.Request, recorded: RecordedRequest, brk: StreamBreak
    ) -> web.StreamResponse:
        if brk.text is not None:
            text = brk.text
        else:
            text = self.default_title if recorded.is_title else self._default_text()
        if not recorded.stream:
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            full = json.dumps(self._completion(recorded, Reply(text))).encode()
            await resp.write(full[: len(full) // 2])
            return _drop(request, resp)
        chunk = _ChunkFactory(self._model_for(recorded), recorded.include_usage)
        resp = await self._start_stream(request)
        await _send(resp, chunk.delta({"role": "assistant", "content": ""}))
        for piece in split_deltas(text)[: brk.after_chunks]:
            await _send(resp, chunk.delta({"content": piece}))
        return _drop(request, resp)


class _ChunkFactory:
    """Builds ``chat.completion.chunk`` objects sharing one id/created/model, like OpenAI."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = _completion_id()
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def _base(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }
        return base

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk = self._base()
        chunk["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if self.include_usage:
            # OpenAI sends "usage": null on every chunk but the final usage chunk.
            chunk["usage"] = None
        return chunk

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        chunk = self._base()
        chunk["choices"] = []
        chunk["usage"] = usage
        return chunk


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


async def _send(resp: web.StreamResponse, payload: dict[str, Any]) -> None:
    await resp.write(f"data: {json.dumps(payload)}\n\n".encode())


async def _send_event(resp: web.StreamResponse, event: str, payload: dict[str, Any]) -> None:
    await resp.write(f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode())


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status, headers={"x-request-id": uuid.uuid4().hex})


def _status_response(status: Status) -> web.Response:
    headers = {k: str(v) for k, v in (status.headers or {}).items()}
    if isinstance(status.body, str):
        return web.Response(
            status=status.code, text=status.body, content_type="text/plain", headers=headers
        )
    body = dict(status.body) if status.body is not None else error_body(status.code, status.message)
    return web.json_response(body, status=status.code, headers=headers)


def _drop(request: web.Request, resp: web.StreamResponse | None = None) -> web.StreamResponse:
    """Close the TCP connection abruptly; aiohttp swallows the resulting write error quietly."""
    if request.transport is not None:
        request.transport.close()
    return resp if resp is not None else web.Response()
