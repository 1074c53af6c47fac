"""A fast OpenAI-compatible upstream for the benchmark, in its own process.

    python -m bench.stub_upstream --port 0 [--delay-ms 0] [--chunks 16] [--chunk-delay-ms 0]

``POST /v1/chat/completions`` answers as OpenAI does: one JSON ``chat.completion`` object, or,
with ``"stream": true``, ``chat.completion.chunk`` server-sent events (a role chunk, the content
chunks, a finish chunk, the usage chunk when ``stream_options.include_usage`` is set, then
``data: [DONE]``). A request whose first message is a system message mentioning "title" (the
gateway's title request) gets a short title. ``GET /v1/models`` lists one model.

It prints ``READY <port>`` on stdout once it listens, and stops on SIGTERM/SIGINT.
It uses aiohttp's low-level server (no router, no middleware, no access log) to stay cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import time
from typing import Any

from aiohttp import web

WORDS = (
    "The", "gateway", "forwards", "this", "reply", "from", "a", "stub", "upstream", "so", "the",
    "benchmark", "measures", "the", "cost", "of", "one", "hop", "and", "nothing", "else",
)
TITLE = "Benchmark conversation"
_ids = itertools.count(1)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class Stub:
    def __init__(self, *, delay_s: float, chunks: int, chunk_delay_s: float) -> None:
        self.delay_s = delay_s
        self.chunk_delay_s = chunk_delay_s
        self.chunks = max(1, chunks)
        # The reply cut into ``chunks`` pieces (words), each a streamed delta.
        words = list(itertools.islice(itertools.cycle(WORDS), self.chunks))
        self.pieces = [(" " if i else "") + w for i, w in enumerate(words)]
        self.reply = "".join(self.pieces)
        self.requests = 0
        self.titles = 0

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path.rstrip("/")
        if request.method == "GET" and path.endswith("/models"):
            return _json({"object": "list", "data": [
                {"id": "bench-model", "object": "model", "created": 0, "owned_by": "bench"}]})
        if request.method != "POST" or not path.endswith("/chat/completions"):
            return _error(404, f"no route {request.method} {request.path}", "not_found")
        try:
            body = json.loads(await request.read())
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be a JSON object with a messages list",
                          "invalid_request_error")
        self.requests += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        first = messages[0] if isinstance(messages[0], dict) else {}
        is_title = (first.get("role") == "system"
                    and "title" in str(first.get("content", "")).lower())
        if is_title:
            self.titles += 1
            # A batch (numbered first messages, core/title_batch.py) gets a numbered title
            # each, as a model gives them; a single title request, one title.
            asked = str(messages[-1].get("content", "")) if isinstance(messages[-1], dict) \
                else ""
            numbered = sum(1 for line in asked.splitlines() if line[:1].isdigit())
            pieces = ["\n".join(f"{n}. {TITLE}" for n in range(1, numbered + 1))
                      if len(messages) == 2 and numbered > 1 else TITLE]
        else:
            pieces = self.pieces
        text = "".join(pieces)
        prompt_tokens = sum(_tokens(str(m.get("content", ""))) + 4 for m in messages
                            if isinstance(m, dict))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                 "total_tokens": prompt_tokens + len(pieces)}
        model = str(body.get("model") or "bench-model")
        ident = f"chatcmpl-stub{next(_ids):012d}"
        created = int(time.time())
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return await self._stream(request, ident, created, model, pieces, usage,
                                      include_usage)
        return _json({
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None, "finish_reason": "stop",
            }],
            "usage": {**usage, "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}},
            "system_fingerprint": "fp_stub",
        })

    async def _stream(self, request: web.BaseRequest, ident: str, created: int, model: str,
                      pieces: list[str], usage: dict[str, int],
                      include_usage: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
        await response.prepare(request)
        head = {"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_stub"}

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            data: dict[str, Any] = {**head, "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                data["usage"] = None
            return b"data: " + _dumps(data) + b"\n\n"

        await response.write(chunk({"role": "assistant", "content": "", "refusal": None}, None))
        for piece in pieces:
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            await response.write(chunk({"content": piece}, None))
        await response.write(chunk({}, "stop"))
        if include_usage:
            await response.write(b"data: " + _dumps({**head, "choices": [], "usage": usage})
                                 + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str, kind: str) -> web.Response:
    return _json({"error": {"message": message, "type": kind, "param": None, "code": None}},
                 status)


async def serve(host: str, port: int, stub: Stub) -> None:
    server = web.Server(stub.handle)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, host, port, backlog=1024)
    bound = listener.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        listener.close()
        await server.shutdown(1.0)
        await listener.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="fixed delay before every answer")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks of a reply")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0,
                        help="delay between streamed chunks")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the stub listens on the loopback interface only")
    stub = Stub(delay_s=args.delay_ms / 1000, chunks=args.chunks,
                chunk_delay_s=args.chunk_delay_ms / 1000)
    asyncio.run(serve(args.host, args.port, stub))


if __name__ == "__main__":
    main()
