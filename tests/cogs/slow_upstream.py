"""An OpenAI-compatible upstream that streams its reply slowly, piece by piece, as a model
generates: what the throttled edits are for. (``tests.fakes.upstream`` streams at once.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


class SlowUpstream:
    def __init__(self, pieces: list[str], gap_s: float, *, title: str = "Slow title") -> None:
        self.pieces = pieces
        self.gap_s = gap_s
        self.title = title
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.bodies: list[dict[str, Any]] = []
        """The streamed (non-title) requests received."""

    async def __aenter__(self) -> SlowUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):  # the title request
            return web.json_response({
                "id": "t", "object": "chat.completion", "created": 0, "model": "slow",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.title}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            })
        self.bodies.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in self.pieces:
            await self._event(response, {"choices": [{"index": 0, "delta": {"content": piece},
                                                      "finish_reason": None}]})
            await asyncio.sleep(self.gap_s)  # the model thinking
        await self._event(response, {"choices": [{"index": 0, "delta": {},
                                                  "finish_reason": "stop"}]})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    async def _event(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
        chunk |= {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": "slow"}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
