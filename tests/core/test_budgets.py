"""Budgets (issue 11): tier defaults, a user's own, a client's ceiling; the reset at the day and
month boundary on the gateway's clock; concurrent requests held to what is in flight; own keys
never counted; costs at the accounts' prices; the 80% and 100% alerts, once each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from core.budgets import QuotaExceeded
from core.config import Settings
from core.gateway import Gateway
from core.models import Principal
from tests.conftest import account
from tests.core.conftest import FakeClock, OpenGateway, ask
from tests.fakes.upstream import FakeUpstream, Hold, Reply

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def used(prompt: int, reply: int, text: str = "ok") -> Reply:
    return Reply(text, usage={"prompt_tokens": prompt, "completion_tokens": reply,
                              "total_tokens": prompt + reply})


async def quiet(gw: Gateway, who: Principal, prompt: str, conversation_id: str | None = None,
                **fields: Any) -> Any:
    """A turn without a model title (the title's own use is tested on its own)."""
    return await ask(gw, who, prompt, conversation_id, generate_title=False, **fields)


@pytest.fixture
def budget_gateway(make_settings: Callable[..., Settings], open_gateway: OpenGateway,
                   upstream_a: FakeUpstream, clock: FakeClock) -> Callable[..., Any]:
    clock.now = at("2026-12-01T10:00:00")

    async def build(*, free: dict[str, Any] | None = None, plus: dict[str, Any] | None = None,
                    billing: dict[str, Any] | None = None, **extra: Any) -> Gateway:
        return await open_gateway(make_settings(
            [account("A", upstream_a, "KEY_A", **extra)],
            limits={"free": free or {}, "plus": plus or {}}, billing=billing or {}))

    return build


async def test_tier_default_refuses_once_spent_and_resets_at_midnight(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream, clock: FakeClock,
) -> None:
    gw = await budget_gateway(free={"tokens_per_day": 100}, plus={"tokens_per_day": 1000})
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    pat, _ = await gw.add_user(admin, userid="pat", username="Pat", plus=True)
    upstream_a.enqueue(used(30, 40), used(30, 40), used(30, 40))
    first = await quiet(gw, ann, "one")
    await quiet(gw, ann, "two", first.conversation.id)  # 70 used < 100: admitted
    with pytest.raises(QuotaExceeded) as caught:
        await quiet(gw, ann, "three", first.conversation.id)
    refusal = caught.value
    assert (refusal.status, refusal.code, refusal.budget) == (429, "quota_exceeded",
                                                              "tokens_per_day")
    assert "your tokens_per_day budget of 100 tokens is spent (140 tokens used today)" \
        in refusal.message
    assert "resets at 2026-12-02 00:00 UTC" in refusal.message
    assert refusal.retry_after == pytest.approx(14 * 3600)
    assert len(upstream_a.chat_requests()) == 2  # refused before any upstream call
    # Another member, on another tier's default, is still served.
    await quiet(gw, pat, "pat asks")
    # The next day, Ann's budget is whole again.
    clock.now = at("2026-12-02T00:00:00")
    await quiet(gw, ann, "four", first.conversation.id)
    assert len(upstream_a.chat_requests()) == 4


async def test_month_budget_resets_on_the_first(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream, clock: FakeClock,
) -> None:
    gw = await budget_gateway(free={"tokens_per_month": 50})
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    clock.now = at("2026-12-31T23:59:00")
    upstream_a.enqueue(used(20, 40), used(1, 1))
    await quiet(gw, ann, "spend it")
    with pytest.raises(QuotaExceeded) as caught:
        await quiet(gw, ann, "once more")
    assert caught.value.budget == "tokens_per_month"
    assert caught.value.retry_after == pytest.approx(60)
    clock.advance(60)
    await quiet(gw, ann, "a new month")


async def test_days_follow_the_billing_timezone(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream, clock: FakeClock,
) -> None:
    gw = await budget_gateway(free={"tokens_per_day": 10}, billing={"timezone": "Asia/Tokyo"})
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    clock.now = at("2026-12-01T14:00:00")  # 23:00 in Tokyo
    upstream_a.enqueue(used(10, 10), used(1, 1))
    await quiet(gw, ann, "late")
    with pytest.raises(QuotaExceeded) as caught:
        await quiet(gw, ann, "later")
    assert caught.value.retry_after == pytest.approx(3600)  # Tokyo's midnight is 15:00 UTC
    clock.now = at("2026-12-01T15:00:00")
    await quiet(gw, ann, "a new day in Tokyo")


async def test_user_budgets_set_lifted_and_returned_to_the_default(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream,
) -> None:
    gw = await budget_gateway(free={"tokens_per_day": 10})
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    upstream_a.enqueue(*[used(10, 10) for _ in range(5)])
    await quiet(gw, ann, "one")
    with pytest.raises(QuotaExceeded):
        await quiet(gw, ann, "over the tier's 10")
    ann = await gw.update_user(admin, "ann", limits={"tokens_per_day": 1000})
    assert ann.public()["limits"] == {"tokens_per_day": 1000}
    await quiet(gw, ann, "under her own 1000")
    ann = await gw.update_user(admin, "ann", limits={"tokens_per_day": "none"})
    assert ann.public()["limits"] == {"tokens_per_day": "none"}
    await quiet(gw, ann, "no limit at all")
    ann = await gw.update_user(admin, "ann", limits={"tokens_per_day": "default"})
    assert ann.public()["limits"] == {}
    with pytest.raises(QuotaExceeded):
        await quiet(gw, ann, "back under the tier's 10")


async def test_a_client_sets_its_own_users_budgets_but_not_its_own(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream,
) -> None:
    gw = await budget_gateway()
    admin = await gw.authenticate(await gw.create_admin("root"))
    bot, _ = await gw.add_user(admin, userid=None, username="bot", role="client")
    member, _ = await gw.add_user(bot, userid="42", username="member")
    updated = await gw.update_user(bot, "42", limits={"cost_per_month": 0.5})
    assert updated.public()["limits"] == {"cost_per_month": 0.5}
    from core.errors import BadRequest, NotFound
    with pytest.raises(NotFound):  # a client does not manage itself
        await gw.update_user(bot, str(bot.id), limits={"tokens_per_day": 1})
    with pytest.raises(BadRequest) as caught:
        await gw.update_user(bot, "42", limits={"tokens_per_day": "lots"})
    assert caught.value.code == "bad_budget"
    with pytest.raises(BadRequest):
        await gw.update_user(bot, "42", limits={"tokens_per_day": -1})
    with pytest.raises(BadRequest):
        await gw.update_user(bot, "42", limits={"tokens_per_week": 5})
    assert (await gw.usable(member.id)) is not None


async def test_a_client_ceiling_stops_all_its_users_together(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream,
) -> None:
    gw = await budget_gateway(free={"tokens_per_month": 1000})
    admin = await gw.authenticate(await gw.create_admin("root"))
    bot, _ = await gw.add_user(admin, userid=None, username="community", role="client")
    one, _ = await gw.add_user(bot, userid="1", username="one")
    two, _ = await gw.add_user(bot, userid="2", username="two")
    await gw.update_user(admin, str(bot.id), limits={"tokens_per_month": 100})
    upstream_a.enqueue(used(30, 30), used(30, 30), used(1, 1))
    await quiet(gw, one, "first member")
    await quiet(gw, two, "second member")  # 60 < 100: admitted, 120 in all
    for member in (one, two):
        with pytest.raises(QuotaExceeded) as caught:
            await quiet(gw, member, "the community's month is spent")
        assert "the client 'community' (all its users together) tokens_per_month budget" \
            in caught.value.message
    # Other clients' users and the admin's own are not under this ceiling.
    await quiet(gw, admin, "the admin is served")
    summary = await gw.usage(admin, str(bot.id))
    assert summary["tokens_this_month"] == 120  # the client's row: all its users


async def test_concurrent_requests_overspend_by_no_more_than_what_they_hold(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream,
) -> None:
    gw = await budget_gateway(free={"tokens_per_day": 1000})
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    gate = asyncio.Event()
    upstream_a.enqueue(*[Hold(gate, used(5, 300)) for _ in range(10)])
    # Each holds its prompt's estimate and its max_tokens of 300 until it is answered.
    asks = [asyncio.create_task(quiet(gw, ann, f"question {n}", options={"max_tokens": 300}))
            for n in range(10)]
    refused: list[asyncio.Task[Any]] = []
    pending: set[asyncio.Task[Any]] = set(asks)
    while len(refused) < 6:
        done, pending = await asyncio.wait(pending, timeout=5,
                                           return_when=asyncio.FIRST_COMPLETED)
        assert done, "six requests should have been refused at once"
        refused += done
    await upstream_a.wait_in_flight(4)
    assert len(refused) == 6 and upstream_a.in_flight == 4
    # 0, ~302, ~604 and ~906 held (< 1000): four admitted, the rest refused.
    for task in refused:
        with pytest.raises(QuotaExceeded):
            task.result()
    gate.set()
    results = await asyncio.gather(*[t for t in asks if t not in refused])
    assert len(results) == 4
    summary = await gw.usage(ann)
    assert summary["tokens_today"] == 4 * 305  # at most the in-flight worst cases over 1000
    assert summary["remaining"]["tokens_per_day"] == 0
    with pytest.raises(QuotaExceeded):
        await quiet(gw, ann, "spent")


async def test_own_key_use_is_recorded_but_never_counted(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream,
) -> None:
    gw = await budget_gateway(free={"tokens_per_day": 10})
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    upstream_a.enqueue(used(100, 100), used(100, 100), used(5, 5))
    first = await quiet(gw, ann, "on my own key", access_token="sk-ann")
    await quiet(gw, ann, "again", first.conversation.id, access_token="sk-ann")
    rows = await gw.storage.db.fetchall(
        "SELECT own_key, cost, input_tokens FROM usage WHERE purpose = 'reply'")
    assert [(bool(r[0]), r[1], r[2]) for r in rows] == [(True, None, 100), (True, None, 100)]
    summary = await gw.usage(ann)
    assert (summary["tokens_today"], summary["remaining"]["tokens_per_day"]) == (0, 10)
    await quiet(gw, ann, "the organisation's account is still open to me")


async def test_costs_at_the_accounts_prices_and_a_cost_budget(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream,
) -> None:
    gw = await budget_gateway(free={"cost_per_month": 0.01},
                              price_input_per_mtok=2.0, price_output_per_mtok=8.0)
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    upstream_a.enqueue(used(1000, 500), used(1000, 500))
    await quiet(gw, ann, "a priced answer")
    row = await gw.storage.db.fetchone("SELECT cost, estimated FROM usage")
    assert row is not None
    assert row[0] == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)  # 0.006
    assert not row[1]
    summary = await gw.usage(ann)
    assert summary["cost_this_month"] == pytest.approx(0.006)
    assert summary["remaining"]["cost_per_month"] == pytest.approx(0.004)
    await quiet(gw, ann, "0.006 < 0.01: admitted")
    with pytest.raises(QuotaExceeded) as caught:
        await quiet(gw, ann, "0.012 spent")
    assert "cost_per_month budget of 0.01 USD is spent (0.01 USD used this month)" \
        in caught.value.message


async def test_titles_count_and_estimates_are_marked(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream,
) -> None:
    gw = await budget_gateway(free={"tokens_per_day": 10_000})
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    upstream_a.enqueue(Reply("an answer with no usage reported", usage={}))
    upstream_a.enqueue_title(used(20, 3, "A Title"))
    result = await ask(gw, ann, "what is this")
    assert result.conversation.title == "A Title"
    rows = await gw.storage.db.fetchall(
        "SELECT purpose, input_tokens, output_tokens, estimated FROM usage ORDER BY purpose")
    by_purpose = {r[0]: (r[1], r[2], bool(r[3])) for r in rows}
    assert by_purpose["title"] == (20, 3, False)
    reply_in, reply_out, estimated = by_purpose["reply"]
    assert estimated and reply_in > 0 and reply_out > 0
    summary = await gw.usage(ann)
    assert summary["tokens_today"] == 23 + reply_in + reply_out
    assert summary["requests_today"] == 1  # the title is use, not a request


async def test_alerts_at_80_and_100_percent_once_per_period(
    budget_gateway: Callable[..., Any], upstream_a: FakeUpstream, clock: FakeClock,
) -> None:
    gw = await budget_gateway(free={"tokens_per_day": 100})
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    heard: list[int] = []
    gw.budgets.on_alert(lambda: heard.append(1))
    upstream_a.enqueue(used(40, 0), used(45, 0), used(20, 0), used(40, 0), used(45, 0))
    await quiet(gw, ann, "40")
    assert await gw.budgets.take_alerts() == []
    await quiet(gw, ann, "85: past 80%")
    await quiet(gw, ann, "105: past 100%")
    alerts = await gw.budgets.take_alerts()
    assert [(a.scope_id, a.budget, a.threshold, a.used, a.limit) for a in alerts] == [
        (ann.id, "tokens_per_day", 80, 85, 100), (ann.id, "tokens_per_day", 100, 105, 100)]
    assert await gw.budgets.take_alerts() == []  # delivered once
    await asyncio.sleep(0)  # PostgreSQL's notifications arrive on the listening connection
    assert heard
    clock.now = at("2026-12-02T08:00:00")
    await quiet(gw, ann, "a new day: 40")
    await quiet(gw, ann, "85 again")
    assert [a.threshold for a in await gw.budgets.take_alerts()] == [80]


async def test_totals_survive_a_restart(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    upstream_a: FakeUpstream, clock: FakeClock,
) -> None:
    clock.now = at("2026-12-01T10:00:00")
    settings = make_settings([account("A", upstream_a, "KEY_A")],
                             limits={"free": {"tokens_per_day": 50}})
    gw = await open_gateway(settings)
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    upstream_a.enqueue(used(30, 30))
    await quiet(gw, ann, "spend it all")
    await gw.close()
    again = await open_gateway(settings)
    with pytest.raises(QuotaExceeded):
        await quiet(again, ann, "still spent after the restart")


@pytest.mark.postgresql_only
async def test_two_gateways_on_one_database_share_the_budgets(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    upstream_a: FakeUpstream, clock: FakeClock,
) -> None:
    """Two processes' worth of gateways: requests arriving at both at once are admitted
    together only while the holds of both leave room, and each sees the other's use."""
    clock.now = at("2026-12-01T10:00:00")
    settings = make_settings([account("A", upstream_a, "KEY_A")],
                             limits={"free": {"tokens_per_day": 1000}})
    one, two = await open_gateway(settings), await open_gateway(settings)
    admin = await one.authenticate(await one.create_admin("root"))
    ann, _ = await one.add_user(admin, userid="ann", username="Ann")
    gate = asyncio.Event()
    upstream_a.enqueue(*[Hold(gate, used(5, 300)) for _ in range(10)])
    asks = [asyncio.create_task(quiet(gw, ann, f"q{n}", options={"max_tokens": 300}))
            for n in range(5) for gw in (one, two)]
    refused: list[asyncio.Task[Any]] = []
    pending: set[asyncio.Task[Any]] = set(asks)
    while len(refused) < 6:
        done, pending = await asyncio.wait(pending, timeout=10,
                                           return_when=asyncio.FIRST_COMPLETED)
        assert done, "six requests should have been refused"
        refused += done
    assert all(isinstance(t.exception(), QuotaExceeded) for t in refused)
    await upstream_a.wait_in_flight(4)
    gate.set()
    await asyncio.gather(*pending)
    for gw in (one, two):
        assert (await gw.usage(ann))["tokens_today"] == 4 * 305
        with pytest.raises(QuotaExceeded):
            await quiet(gw, ann, "spent, whichever process is asked")
    alerts = await two.budgets.take_alerts()
    assert [a.threshold for a in alerts] == [80, 100]
    assert await one.budgets.take_alerts() == []
