"""End to end against a real llama.cpp server running the Gemma 3 270M model: the gateway must
not care that the model is small and its answers poor, only that the inference is real."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from core.config import settings_from_dict
from core.gateway import build_gateway
from core.local_model import LocalModelServer
from web.app import create_app

MAX_TOKENS = 12


@pytest.fixture
async def gateway_url(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    settings = settings_from_dict({
        "storage": {"path": str(tmp_path / "gateway.db")},
        "accounts": [],
        "local_model": {"enabled": "always", "max_tokens": MAX_TOKENS, "context_tokens": 1024},
    })
    async with LocalModelServer(settings.local_model) as local:
        settings = settings.model_copy(update={"accounts": [local.account()]})
        async with build_gateway(settings) as gateway:
            _, key = await gateway.principals.create("user", "ann")
            runner = web.AppRunner(create_app(gateway))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            try:
                yield f"http://127.0.0.1:{runner.addresses[0][1]}", key
            finally:
                await runner.cleanup()
    assert local._process is None  # stopped with the gateway


async def _sse(resp: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    events, name = [], ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


async def test_api_chat_against_a_real_model(gateway_url: tuple[str, str]) -> None:
    base, key = gateway_url
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.post(f"{base}/api/chat", json={"prompt": "The capital of France is"}) \
                as resp:
            first = await resp.json()
        assert resp.status == 200, first
        assert first["account"] == "local" and first["model"]
        assert 0 < first["usage"]["completion_tokens"] <= MAX_TOKENS
        assert first["conversation_title"].strip()
        assert "error" not in first["conversation_title"].lower()

        async with http.post(f"{base}/api/chat", json={
            "prompt": "And of Italy?", "conversation_id": first["conversation_id"]}) as resp:
            follow = await resp.json()
        assert resp.status == 200, follow
        assert follow["parent_id"] == first["message"]["id"]
        assert follow["last_message_prompt"] == "The capital of France is"
        # The stored history went upstream: the prompt is longer than the first one's.
        assert follow["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]

        # Greedy decoding, so this small model's answer (and so its deltas) is the same each run.
        async with http.post(f"{base}/api/chat", json={
                "prompt": "Write a short poem about the sea.", "stream": True,
                "temperature": 0}) as resp:
            assert resp.status == 200
            events = await _sse(resp)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done" and "delta" in names, events
    done = events[-1][1]
    assert "".join(data["text"] for name, data in events if name == "delta") == done["reply"]

    async with aiohttp.ClientSession(headers=auth) as http, http.get(
            f"{base}/api/recall", params={"conversation_id": first["conversation_id"]}) as resp:
        recalled = await resp.json()
    assert [m["prompt"] for m in recalled["messages"]] == ["The capital of France is",
                                                           "And of Italy?"]


async def test_openai_sdk_against_a_real_model(gateway_url: tuple[str, str]) -> None:
    base, key = gateway_url
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0) as sdk:
        models = [m.id for m in (await sdk.models.list()).data]
        assert models == ["gemma-3-270m"]
        raw = await sdk.chat.completions.with_raw_response.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8)
        completion = raw.parse()
        assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 8
        conversation_id = raw.headers["x-conversation-id"]

        pieces, usage = [], None
        stream = await sdk.chat.completions.create(
            model="gemma-3-270m", max_tokens=8, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Say hello."},
                      {"role": "assistant", "content": completion.choices[0].message.content},
                      {"role": "user", "content": "Again."}],
            extra_headers={"X-Conversation-Id": conversation_id})
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            else:
                usage = chunk.usage
        assert usage is not None and usage.completion_tokens > 0
        assert "".join(pieces)

        # As an agent framework goes on: the whole history with the model's own replies, no
        # header. The gateway knows the conversation it continues.
        third = await sdk.chat.completions.with_raw_response.create(
            model="gemma-3-270m", max_tokens=8,
            messages=[{"role": "user", "content": "Say hello."},
                      {"role": "assistant", "content": completion.choices[0].message.content},
                      {"role": "user", "content": "Again."},
                      {"role": "assistant", "content": "".join(pieces)},
                      {"role": "user", "content": "Once more."}])
        assert third.headers["x-conversation-id"] == conversation_id
        assert third.parse().choices[0].message.content


async def test_embeddings_and_what_the_local_model_cannot_do(
        gateway_url: tuple[str, str]) -> None:
    base, key = gateway_url
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0) as sdk:
        model = (await sdk.models.retrieve("gemma-3-270m")).model_dump()
        assert model["capabilities"] == ["embeddings"]  # text in, text out; and embeddings

        result = await sdk.embeddings.create(
            model="gemma-3-270m", input=["The cat sat on the mat.", "Stock markets fell."],
            encoding_format="float")
        first, second = (d.embedding for d in result.data)
        assert len(first) == len(second) > 100 and first != second
        assert result.usage.prompt_tokens > 0

        # A base model behind the plain Completions API can call no tool: said, not ignored.
        with pytest.raises(openai.BadRequestError) as tools:
            await sdk.chat.completions.create(
                model="gemma-3-270m", messages=[{"role": "user", "content": "Weather?"}],
                tools=[{"type": "function", "function": {"name": "weather",
                                                         "parameters": {"type": "object"}}}])
        assert isinstance(tools.value.body, dict) and tools.value.body["param"] == "tools"
