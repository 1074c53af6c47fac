"""Faults that are the account's, not the caller's: a 404 means the account's base_url or model
is wrong, so the account is taken out and the new conversation moves on."""

from __future__ import annotations

from core.chat import ChatRequest
from core.errors import Conflict
from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream, Status


async def test_a_404_takes_the_account_out_and_the_next_one_answers(
    gateway: Gateway, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    ann, _ = await gateway.principals.create("user", "ann")
    upstream_a.enqueue(Status(404))
    result = await gateway.chat(ann, ChatRequest(prompt="hello"))
    assert result.conversation.account == "B"
    account = gateway.pool.get("A")
    assert account is not None and account.health() == "out"
    assert "base_url and model" in (account.out_reason or "")


async def test_a_taken_external_ref_is_refused_before_any_upstream_call(
    gateway: Gateway, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    bot = await gateway.ensure_client("discord")
    member = await gateway.acting_as(bot, "42", username="ann")
    await gateway.chat(member, ChatRequest(prompt="first", external_ref="thread-1"))
    sent = len(upstream_a.requests) + len(upstream_b.requests)
    try:
        await gateway.chat(member, ChatRequest(prompt="second", external_ref="thread-1"))
    except Conflict as err:
        assert err.code == "external_ref_taken"
    else:
        raise AssertionError("a second conversation took the same thread reference")
    assert len(upstream_a.requests) + len(upstream_b.requests) == sent
