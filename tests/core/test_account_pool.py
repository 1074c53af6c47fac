"""The account pool as users meet it: round robin by tier for new conversations, cool-downs that
honour Retry-After, retry on the next account, auth failures that take an account out (never the
user's 401), and a clear 503 with retry_after when nothing can answer."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.config import Settings
from core.errors import BadRequest, Forbidden, NotFound, Unavailable
from core.gateway import Gateway
from core.models import Principal
from tests.conftest import account
from tests.core.conftest import FakeClock, OpenGateway, ask, closed_port, new_user
from tests.fakes.upstream import FakeUpstream, Garbage, Hang, Status, StreamBreak

KEYS = {"A": "sk-account-a", "B": "sk-account-b", "P": "sk-account-plus"}


def replies(fake: FakeUpstream) -> list[tuple[str | None, str]]:
    """(api key, last user message) of each non-title chat request the fake received."""
    return [(r.api_key, r.messages[-1]["content"]) for r in fake.chat_requests(titles=False)]


async def test_round_robin_over_healthy_accounts_of_the_tier(
    gw: Gateway, admin: Principal, plus_user: Principal, user: Principal,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream, upstream_plus: FakeUpstream,
) -> None:
    used = [(await ask(gw, user, f"free {n}")).conversation.account for n in range(4)]
    assert used == ["A", "B", "A", "B"]
    assert replies(upstream_a) == [(KEYS["A"], "free 0"), (KEYS["A"], "free 2")]
    assert replies(upstream_b) == [(KEYS["B"], "free 1"), (KEYS["B"], "free 3")]

    plus = [(await ask(gw, plus_user, f"p{n}", plus="true")).conversation.account
            for n in range(2)]
    assert plus == ["P", "P"]
    assert replies(upstream_plus) == [(KEYS["P"], "p0"), (KEYS["P"], "p1")]

    anyone = [(await ask(gw, plus_user, f"any {n}", plus="any")).conversation.account
              for n in range(3)]
    assert sorted(anyone) == ["A", "B", "P"]


async def test_plus_is_refused_to_a_user_without_it(
    gw: Gateway, user: Principal, upstream_plus: FakeUpstream
) -> None:
    with pytest.raises(Forbidden) as caught:
        await ask(gw, user, "hi", plus="true")
    assert caught.value.status == 403 and caught.value.code == "plus_not_allowed"
    # "any" for a user without plus stays on the free tier.
    used = {(await ask(gw, user, f"any {n}", plus="any")).conversation.account
            for n in range(3)}
    assert used == {"A", "B"}
    assert upstream_plus.requests == []


async def test_429_cools_the_account_for_retry_after_and_the_next_answers(
    gw: Gateway, user: Principal, clock: FakeClock,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    upstream_a.enqueue(Status(429, headers={"Retry-After": "120"}))
    result = await ask(gw, user, "hello")
    assert result.conversation.account == "B"
    assert result.turn.reply == "reply 1 from B"
    assert replies(upstream_a) == [(KEYS["A"], "hello")]
    assert replies(upstream_b) == [(KEYS["B"], "hello")]
    a = gw.pool.get("A")
    assert a is not None
    assert a.health() == "cooling" and a.cooldown_left() == 120
    snap = {s["name"]: s for s in gw.accounts(await _admin(gw))}["A"]
    assert (snap["health"], snap["cooldown_s"], snap["cooldown_reason"]) == (
        "cooling", 120, "rate_limited")

    # While A cools, every new conversation goes to B.
    clock.advance(119)
    assert (await ask(gw, user, "still cooling")).conversation.account == "B"
    assert len(replies(upstream_a)) == 1
    clock.advance(1)
    assert a.health() == "healthy"
    accounts = {(await ask(gw, user, f"after {n}")).conversation.account for n in range(2)}
    assert accounts == {"A", "B"}


async def _admin(gw: Gateway) -> Principal:
    return await gw.authenticate(await gw.create_admin(f"admin{id(gw)}"))


@pytest.mark.parametrize(
    "failure",
    [Status(500), Status(503), Status(502, body="<html>bad gateway</html>"), Garbage(),
     StreamBreak(after_chunks=0)],
    ids=["500", "503", "502-html", "garbage", "break-before-text"],
)
async def test_5xx_and_garbage_cool_down_and_the_next_account_answers(
    gw: Gateway, user: Principal, clock: FakeClock, failure: object,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    upstream_a.enqueue(failure)  # type: ignore[arg-type]
    result = await ask(gw, user, "hello")
    assert (result.conversation.account, result.turn.reply) == ("B", "reply 1 from B")
    assert replies(upstream_a) == [(KEYS["A"], "hello")]
    assert replies(upstream_b) == [(KEYS["B"], "hello")]
    a = gw.pool.get("A")
    assert a is not None and a.health() == "cooling"
    assert a.cooldown_left() == 30  # [chat] cooldown_s, no Retry-After given
    clock.advance(30)
    assert a.health() == "healthy"


async def test_a_timeout_cools_down_and_the_next_account_answers(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    gw = await open_gateway(make_settings([
        account("A", upstream_a, "KEY_A", timeout_s=0.2),
        account("B", upstream_b, "KEY_B"),
    ]))
    user = await new_user(gw)
    upstream_a.enqueue(Hang())
    result = await ask(gw, user, "hello")
    assert (result.conversation.account, result.turn.reply) == ("B", "reply 1 from B")
    a = gw.pool.get("A")
    assert a is not None and a.health() == "cooling" and a.cooling_reason == "timeout"


async def test_connection_refused_cools_down_and_the_next_account_answers(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    upstream_b: FakeUpstream,
) -> None:
    gw = await open_gateway(make_settings([
        {"name": "A", "base_url": f"http://127.0.0.1:{closed_port()}/v1", "api_key_env": "KEY_A",
         "model": "m", "proxy": ""},
        account("B", upstream_b, "KEY_B"),
    ]))
    user = await new_user(gw)
    result = await ask(gw, user, "hello")
    assert (result.conversation.account, result.turn.reply) == ("B", "reply 1 from B")
    a = gw.pool.get("A")
    assert a is not None and a.health() == "cooling" and a.cooling_reason == "connect"


@pytest.mark.parametrize("code", [401, 403])
async def test_auth_failure_takes_the_account_out_until_enabled(
    gw: Gateway, admin: Principal, user: Principal, clock: FakeClock, code: int,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    upstream_a.enqueue(Status(code))
    result = await ask(gw, user, "hello")  # the user never sees the account's 401
    assert result.conversation.account == "B"
    a = gw.pool.get("A")
    assert a is not None and a.health() == "out"
    assert str(code) in (a.out_reason or "")
    clock.advance(10_000)  # time does not bring it back
    assert a.health() == "out"
    assert {(await ask(gw, user, f"q{n}")).conversation.account for n in range(3)} == {"B"}
    assert len(replies(upstream_a)) == 1

    snap = await gw.set_account_enabled(admin, "A", True)
    assert snap["health"] == "healthy"
    assert {(await ask(gw, user, f"r{n}")).conversation.account for n in range(2)} == {"A", "B"}


async def test_an_auth_failure_everywhere_is_503_never_401(
    gw: Gateway, plus_user: Principal, upstream_plus: FakeUpstream
) -> None:
    upstream_plus.enqueue(Status(401))
    with pytest.raises(Unavailable) as caught:
        await ask(gw, plus_user, "hello", plus="true")
    assert caught.value.status == 503
    assert "key refused" in caught.value.message


async def test_all_accounts_down_is_503_with_retry_after(
    gw: Gateway, user: Principal, clock: FakeClock,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    upstream_a.enqueue(Status(429, headers={"Retry-After": "50"}))
    upstream_b.enqueue(Status(500))
    with pytest.raises(Unavailable) as caught:
        await ask(gw, user, "hello")
    err = caught.value
    assert (err.status, err.code) == (503, "no_healthy_account")
    assert err.retry_after == 30  # B (cooldown_s = 30) is back before A (Retry-After 50)
    assert "server error" in err.message
    # Nothing half-done was stored; the failure is in the usage log.
    assert (await gw.list_conversations(user))[1] == 0
    rows = await gw.storage.db.fetchall("SELECT principal_id, outcome FROM usage"
                                        " WHERE purpose = 'reply'")
    assert [tuple(r) for r in rows] == [(user.id, "unavailable")]

    # While both cool, no request goes upstream at all.
    clock.advance(10)
    with pytest.raises(Unavailable) as caught:
        await ask(gw, user, "again")
    assert caught.value.retry_after == 20
    assert len(upstream_a.chat_requests()) + len(upstream_b.chat_requests()) == 4  # 2 + titles
    clock.advance(20)
    assert (await ask(gw, user, "back")).conversation.account == "B"


async def test_a_request_the_upstream_refuses_is_not_retried(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    upstream_a.enqueue(Status(400, message="max_tokens is too large"))
    with pytest.raises(BadRequest) as caught:
        await ask(gw, user, "hello")
    assert caught.value.status == 400 and "max_tokens is too large" in caught.value.message
    assert upstream_b.requests == []
    assert gw.pool.get("A").health() == "healthy"  # type: ignore[union-attr]


async def test_retry_after_is_capped_by_max_cooldown(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    clock: FakeClock, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    gw = await open_gateway(make_settings(
        [account("A", upstream_a, "KEY_A"), account("B", upstream_b, "KEY_B")],
        chat={"max_cooldown_s": 600}))
    user = await new_user(gw)
    upstream_a.enqueue(Status(429, headers={"Retry-After": "86400"}))
    await ask(gw, user, "hello")
    a = gw.pool.get("A")
    assert a is not None and a.cooldown_left() == 600
    clock.advance(600)
    assert a.health() == "healthy"


async def test_an_admin_can_take_an_account_out_and_back(
    gw: Gateway, admin: Principal, user: Principal,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    snap = await gw.set_account_enabled(admin, "A", False)
    assert snap["health"] == "out"
    assert {(await ask(gw, user, f"q{n}")).conversation.account for n in range(2)} == {"B"}
    await gw.set_account_enabled(admin, "A", True)
    assert {(await ask(gw, user, f"r{n}")).conversation.account for n in range(2)} == {"A", "B"}
    with pytest.raises(Forbidden):
        await gw.set_account_enabled(user, "A", False)
    with pytest.raises(NotFound):
        await gw.set_account_enabled(admin, "nope", False)


async def test_a_state_read_before_a_later_change_never_undoes_it(
    gw: Gateway, admin: Principal,
) -> None:
    """Announcements are re-read: a read that started before the next change (an admin's
    enable right after a disable) and finished after it must not put the old state back."""
    account = gw.pool.get("A")
    assert account is not None
    await gw.set_account_enabled(admin, "A", False)
    slow_read = await gw.storage.accounts.get("A")  # what a slow re-read would hold
    assert slow_read.out_reason == "taken out by an admin"
    await gw.set_account_enabled(admin, "A", True)
    account.apply(slow_read)  # ... and finishes now
    assert account.health() == "healthy"
    assert (await gw.storage.accounts.get("A")).version > slow_read.version
