"""A /v1 history recognised without ``X-Conversation-Id`` whose conversation cannot go on as a
follow-up naming it would be refused (its account cooling down, the plus tier the member no
longer has, a capability its account lacks) is answered as a new conversation on an account
that can, holding the whole history, where the named follow-up gets the error. What the
member sees: a 200, another conversation id, which account answered, and the new
conversation in ``/api/recall``. Driven by the official ``openai`` SDK; both storage
engines. (The account taken out of service: tests/web/test_v1_contexts.py.)"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import pytest

from core.config import Settings
from core.gateway import Gateway, build_gateway
from tests.conftest import ENVIRON, account, bearer
from tests.fakes.upstream import FakeUpstream, Status

from .support import serving
from .test_v1_contexts import QUESTION, _ask

HEADER = "X-Conversation-Id"
TOOL = {"type": "function", "function": {"name": "get_weather",
                                         "parameters": {"type": "object"}}}
PNG = b"\x89PNG fake image"
IMAGE = "data:image/png;base64," + base64.b64encode(PNG).decode()


@asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[tuple[Gateway, str]]:
    """The gateway over ``settings``, served on a free port: (gateway, root URL)."""
    async with build_gateway(settings, environ=ENVIRON) as gateway, \
            serving(gateway) as root:
        yield gateway, root


def _client(root: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0)


async def _call(root: str, method: str, path: str, key: str,
                params: dict[str, Any]) -> dict[str, Any]:
    """One call of the gateway's own API, as a member makes it: the JSON of its 200."""
    url, headers = f"{root}{path}", bearer(key)
    async with aiohttp.ClientSession() as http, (
            http.get(url, params=params, headers=headers) if method == "GET"
            else http.post(url, json=params, headers=headers)) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert isinstance(body, dict)
        return body


async def _recalled(root: str, key: str, conversation_id: str) -> dict[str, Any]:
    """The conversation as its member reads it back from ``/api/recall``."""
    return await _call(root, "GET", "/api/recall", key, {"conversation_id": conversation_id})


def _followed(reply: str, question: str) -> list[dict[str, Any]]:
    """The first exchange as the session holds it, and its next question."""
    return [QUESTION, {"role": "assistant", "content": reply},
            {"role": "user", "content": question}]


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    assert isinstance(exc.body, dict)
    return exc.body


async def _started_without(gateway: Gateway, sdk: openai.AsyncOpenAI,
                           name: str) -> tuple[str, Any]:
    """The first exchange, asked while account ``name`` is out of service (so that it starts
    on the other one), then ``name`` back in service: (conversation id, reply)."""
    account_out = gateway.pool.get(name)
    assert account_out is not None
    await gateway.pool.set_enabled(account_out, False)
    started = await _ask(sdk, [QUESTION])
    await gateway.pool.set_enabled(account_out, True)
    return started


async def _holds_all(root: str, key: str, moved: str, account_name: str,
                     stored: list[dict[str, Any]], first: str) -> dict[str, Any]:
    """The new conversation holds the whole history (as stored), on the account that
    answered; the old one is as the first call left it. The new one, as recalled."""
    recalled = await _recalled(root, key, moved)
    assert recalled["conversation"]["account"] == account_name
    assert [m["exchange"]["messages"] for m in recalled["messages"]] == [stored]
    assert [m["prompt"] for m in (await _recalled(root, key, first))["messages"]] \
        == ["Name a colour."]
    return recalled


async def test_a_history_whose_account_cools_down_goes_on_elsewhere_as_a_new_conversation(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
    upstream_b: FakeUpstream,
) -> None:
    settings = make_settings([account("A", upstream_a, "KEY_A"),
                              account("B", upstream_b, "KEY_B", model="model-a")])
    async with _running(settings) as (gateway, root):
        _, key = await gateway.principals.create("user", "ann")
        async with _client(root, key) as sdk:
            first, reply = await _ask(sdk, [QUESTION])
            pinned, other = ((upstream_a, upstream_b) if reply.content.endswith("from A")
                             else (upstream_b, upstream_a))
            history = _followed(reply.content, "Another?")
            # A follow-up naming the conversation meets its account's rate limit: the
            # account cools down for the upstream's Retry-After, and nothing is stored.
            pinned.enqueue(Status(429, headers={"Retry-After": "120"}))
            with pytest.raises(openai.InternalServerError) as limited:
                await sdk.chat.completions.create(model="model-a", messages=history,  # type: ignore[arg-type]
                                                  extra_headers={HEADER: first})
            assert limited.value.status_code == 503
            assert _error(limited.value)["code"] == "upstream_rate_limited"

            # The agent's history (no header) goes on at once on the healthy account, as a
            # conversation of its own; the cooling account is not asked.
            moved, reply = await _ask(sdk, history)
            assert moved != first
            assert reply.content == f"reply 1 from {other.name}"
            assert len(pinned.chat_requests()) == 2
            assert other.chat_requests()[-1].messages == history
            # Named, the conversation is refused while its account cools: never moved.
            with pytest.raises(openai.InternalServerError) as cooling:
                await sdk.chat.completions.create(model="model-a", messages=history,  # type: ignore[arg-type]
                                                  extra_headers={HEADER: first})
            assert cooling.value.status_code == 503
            assert _error(cooling.value)["code"] == "account_cooling"
            assert int(cooling.value.response.headers["retry-after"]) > 0
            assert len(pinned.chat_requests()) == 2

            recalled = await _holds_all(root, key, moved, other.name, history, first)
            assert [m["reply"] for m in recalled["messages"]] == [reply.content]
            # The session goes on in the new conversation.
            history += [{"role": "assistant", "content": reply.content},
                        {"role": "user", "content": "And one more?"}]
            assert (await _ask(sdk, history))[0] == moved


async def test_a_history_on_the_plus_tier_its_member_lost_starts_anew_on_a_free_account(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
    upstream_plus: FakeUpstream,
) -> None:
    # One model on both tiers: the free account A and the plus account P.
    settings = make_settings([account("A", upstream_a, "KEY_A"),
                              account("P", upstream_plus, "KEY_P", tier="plus",
                                      model="model-a")])
    async with _running(settings) as (gateway, root):
        admin = await gateway.create_admin("root")
        added = await _call(root, "POST", "/api/client/add-user", admin,
                            {"username": "ann", "userid": "4242", "plus": True})
        key = added["api_key"]
        async with _client(root, key) as sdk:
            # A out of service while the conversation starts: it starts on the plus account.
            first, reply = await _started_without(gateway, sdk, "A")
            assert reply.content == "reply 1 from P"
            history = _followed(reply.content, "Another?")
            # Ann no longer has plus.
            updated = await _call(root, "POST", "/api/client/update-user", admin,
                                  {"userid": "4242", "plus": False})
            assert updated["user"]["plus"] is False

            moved, reply = await _ask(sdk, history)
            assert moved != first
            assert reply.content == "reply 1 from A"
            assert upstream_a.chat_requests()[-1].messages == history
            assert len(upstream_plus.chat_requests()) == 1
            # Named, the conversation is refused: its tier is no longer hers.
            with pytest.raises(openai.PermissionDeniedError) as refused:
                await sdk.chat.completions.create(model="model-a", messages=history,  # type: ignore[arg-type]
                                                  extra_headers={HEADER: first})
            assert _error(refused.value)["code"] == "plus_not_allowed"
            assert len(upstream_plus.chat_requests()) == 1

            await _holds_all(root, key, moved, "A", history, first)


def _stored_image(message: dict[str, Any]) -> dict[str, Any]:
    """A message as its turn stores it: the inline image named by the hash of its bytes."""
    ref = f"attachment:{hashlib.sha256(PNG).hexdigest()}"
    return {**message, "content": [
        {**part, "image_url": {"url": ref}} if part.get("type") == "image_url" else part
        for part in message["content"]]}


@pytest.mark.parametrize("capability", ["tools", "vision"])
async def test_a_history_needing_what_its_account_cannot_do_starts_anew_on_one_that_can(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
    upstream_b: FakeUpstream, capability: str,
) -> None:
    # A cannot do the capability; B, serving the same model, can.
    lacking: dict[str, Any] = {capability: False}
    settings = make_settings([account("A", upstream_a, "KEY_A", **lacking),
                              account("B", upstream_b, "KEY_B", model="model-a")])
    async with _running(settings) as (gateway, root):
        _, key = await gateway.principals.create("user", "ann")
        async with _client(root, key) as sdk:
            # B out of service while the conversation starts (plain text): it starts on A.
            first, reply = await _started_without(gateway, sdk, "B")
            assert reply.content == "reply 1 from A"
            history = _followed(reply.content, "Another?")
            options: dict[str, Any] = {}
            stored = list(history)
            if capability == "tools":
                options["tools"] = [TOOL]
                param = "tools"
            else:
                history[-1] = {"role": "user", "content": [
                    {"type": "text", "text": "Another, like this one?"},
                    {"type": "image_url", "image_url": {"url": IMAGE}}]}
                stored = [*history[:-1], _stored_image(history[-1])]
                param = "messages[2].content[1]"

            moved, reply = await _ask(sdk, history, **options)
            assert moved != first
            assert reply.content == "reply 1 from B"
            sent = upstream_b.chat_requests()[-1]
            assert sent.messages == history
            assert (sent.body or {}).get("tools") == options.get("tools")
            assert len(upstream_a.chat_requests()) == 1
            # Named, the conversation is refused: its account cannot do it.
            with pytest.raises(openai.BadRequestError) as refused:
                await sdk.chat.completions.create(model="model-a", messages=history,  # type: ignore[arg-type]
                                                  extra_headers={HEADER: first}, **options)
            error = _error(refused.value)
            assert (error["code"], error["param"]) == ("unsupported_parameter", param)
            assert "account 'A'" in error["message"]
            assert len(upstream_a.chat_requests()) == 1

            await _holds_all(root, key, moved, "B", stored, first)
