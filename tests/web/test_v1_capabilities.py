"""What accounts can do: /v1/embeddings on the accounts that serve the model (batch inputs,
usage recorded), requests needing a capability sent only where it is, a 400 naming the
parameter when no account has it, and /v1/models listing capabilities."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest

from core.config import Settings
from core.gateway import Gateway, build_gateway
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import EMBEDDING_SIZE, FakeUpstream, Status

from .support import serving

IMAGE = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake image").decode()
LOOK = [{"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": IMAGE}}]}]


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Gateway, openai.AsyncOpenAI]]:
    async with build_gateway(settings, environ=ENVIRON) as gateway:
        _, key = await gateway.principals.create("user", "ann")
        async with serving(gateway) as root, openai.AsyncOpenAI(
                base_url=f"{root}/v1", api_key=key, max_retries=0) as client:
            yield gateway, client


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    assert isinstance(exc.body, dict)
    return exc.body


async def test_embeddings_go_to_an_account_serving_the_model_and_usage_is_recorded(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    settings = make_settings([
        account("A", upstream_a, "KEY_A"),
        account("B", upstream_b, "KEY_B", embedding_models=["embed-small"]),
    ])
    async with running(settings) as (gateway, client):
        result = await client.embeddings.create(
            model="embed-small", input=["first text", "the second text"], dimensions=8)
        assert [d.index for d in result.data] == [0, 1]
        assert all(len(d.embedding) == EMBEDDING_SIZE for d in result.data)
        assert result.usage.prompt_tokens == 5
        sent = upstream_b.requests[-1]
        assert sent.path == "/v1/embeddings" and sent.api_key == "sk-account-b"
        assert sent.body == {"model": "embed-small", "input": ["first text", "the second text"],
                             "dimensions": 8, "encoding_format": "base64"}
        assert upstream_a.requests == []

        # Token input, and a single string, also pass.
        await client.embeddings.create(model="embed-small", input=[[1, 2, 3]])
        single = await client.embeddings.create(model="embed-small", input="one")
        assert len(single.data) == 1

        stats = await gateway.conversations.usage_stats()
        assert stats["requests"] == 3 and stats["input_tokens"] == 5 + 3 + 1
        rows = await gateway.storage.db.fetchall(
            "SELECT endpoint, account, model, outcome FROM usage ORDER BY id")
        assert [tuple(r) for r in rows] == [("embeddings", "B", "embed-small", "ok")] * 3

        with pytest.raises(openai.NotFoundError) as unknown:
            await client.embeddings.create(model="embed-huge", input="x")
        assert _error(unknown.value)["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError) as empty:
            await client.embeddings.create(model="embed-small", input=[])
        assert _error(empty.value)["param"] == "input"

        models = {m.id: m.model_dump() for m in (await client.models.list()).data}
        assert models["embed-small"]["capabilities"] == ["embeddings"]

        upstream_b.enqueue(Status(500))
        with pytest.raises(openai.APIStatusError) as failed:
            await client.embeddings.create(model="embed-small", input="x")
        assert failed.value.status_code == 503
        rows = await gateway.storage.db.fetchall(
            "SELECT outcome FROM usage WHERE endpoint = 'embeddings' ORDER BY id")
        assert rows[-1][0] == "upstream_server"


async def test_a_request_needing_a_capability_goes_only_where_it_is(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    settings = make_settings([
        account("A", upstream_a, "KEY_A", vision=False),
        account("B", upstream_b, "KEY_B", model="model-a"),
    ])
    async with running(settings) as (gateway, client):
        for _ in range(3):
            await client.chat.completions.create(model="model-a",
                                                 messages=LOOK)  # type: ignore[arg-type]
        assert len(upstream_b.chat_requests()) == 3 and upstream_a.chat_requests() == []

        # Text only: both accounts take turns.
        for _ in range(2):
            await client.chat.completions.create(
                model="model-a", messages=[{"role": "user", "content": "hi"}])
        assert len(upstream_a.chat_requests()) == 1

        models = {m.id: m.model_dump() for m in (await client.models.list()).data}
        assert models["model-a"]["capabilities"] == [
            "logprobs", "n", "structured_output", "tools", "vision"]

        # A conversation pinned to A cannot take an image: said, never dropped.
        conversation = None
        for _ in range(2):  # round robin: one of two new conversations lands on A
            raw = await client.chat.completions.with_raw_response.create(
                model="model-a", messages=[{"role": "user", "content": "hi"}])
            found = await gateway.conversations.get(raw.headers["x-conversation-id"])
            if found is not None and found.account == "A":
                conversation = found.id
        assert conversation is not None
        with pytest.raises(openai.BadRequestError) as pinned:
            await client.chat.completions.create(
                model="model-a", messages=LOOK,  # type: ignore[arg-type]
                extra_headers={"X-Conversation-Id": conversation})
        error = _error(pinned.value)
        assert error["param"] == "messages[0].content[1]"
        assert "'A'" in error["message"] and "vision" in error["message"]


async def test_no_account_with_the_capability_is_a_400_naming_the_parameter(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
) -> None:
    settings = make_settings([account("A", upstream_a, "KEY_A", tools=False,
                                      api="completions")])
    async with running(settings) as (_, client):
        with pytest.raises(openai.BadRequestError) as tools:
            await client.chat.completions.create(
                model="model-a", messages=[{"role": "user", "content": "hi"}],
                tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
        error = _error(tools.value)
        assert (error["param"], error["code"]) == ("tools", "unsupported_parameter")
        assert "tools" in error["message"] and "model-a" in error["message"]

        for kwargs, param in (
            ({"response_format": {"type": "json_object"}}, "response_format"),
            ({"logprobs": True}, "logprobs"),
            ({"n": 2}, "n"),
        ):
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(
                    model="model-a", messages=[{"role": "user", "content": "hi"}], **kwargs)
            assert _error(refused.value)["param"] == param
        with pytest.raises(openai.BadRequestError) as image:
            await client.chat.completions.create(model="model-a",
                                                 messages=LOOK)  # type: ignore[arg-type]
        assert _error(image.value)["param"] == "messages[0].content[1]"
    assert upstream_a.requests == []


async def test_embeddings_count_against_budgets_at_the_accounts_price(
    make_settings: Callable[..., Settings], upstream_b: FakeUpstream,
) -> None:
    settings = make_settings(
        [account("B", upstream_b, "KEY_B", embedding_models=["embed-small"],
                 price_input_per_mtok=0.02)],
        limits={"free": {"tokens_per_day": 4}})
    async with running(settings) as (gateway, client):
        await client.embeddings.create(model="embed-small", input=["first text", "the second"])
        with pytest.raises(openai.RateLimitError) as caught:
            await client.embeddings.create(model="embed-small", input="over the budget")
        assert _error(caught.value)["code"] == "insufficient_quota"
        assert len(upstream_b.requests) == 1  # refused before the upstream
        row = await gateway.storage.db.fetchone(
            "SELECT purpose, input_tokens, cost FROM usage WHERE outcome = 'ok'")
        assert row is not None
        assert (row[0], row[1]) == ("embedding", 4)
        assert row[2] == pytest.approx(4 * 0.02 / 1e6)
