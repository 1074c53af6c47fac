"""Budgets in Discord end to end: /usage, /admin usage, /admin limit, the refusal of a member
whose budget is spent, and the alerts in the admin channel. The upstream reports the usage of
every call; the budgets come from ``[limits.free]`` or from /admin limit."""

from __future__ import annotations

import gc
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from cogs.utils.usage_text import bar
from core.turn import ChatRequest
from tests.conftest import account
from tests.fakediscord import EPHEMERAL
from tests.fakes.upstream import FakeUpstream, Reply

from .conftest import (
    ADMIN,
    ADMIN_CHANNEL,
    ANN,
    BOB,
    EVE,
    GENERAL,
    PAT,
    Harness,
    MakeHarness,
)


def used(prompt: int, completion: int, text: str = "answer") -> Reply:
    return Reply(text, usage={"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion})


FREE_TITLE = used(0, 0, "A title")
"""A title the upstream reports as free, so a conversation costs only its reply."""


async def ask(h: Harness, prompt: str, reply: Reply, *, user: int = ANN,
              channel: int = GENERAL) -> Any:
    h.upstreams["A"].enqueue(reply)
    if channel == GENERAL:
        h.upstreams["A"].enqueue_title(FREE_TITLE)
    return await h.chat(prompt, user=user, channel=channel)


async def slash(h: Harness, name: str, sub: str | None = None, *, user: int = ANN,
                channel: int = GENERAL, **options: Any) -> str:
    interaction = await h.fake.slash(name, sub, user=user, channel=channel, **options)
    await h.settle()
    assert interaction.callbacks[0]["data"]["flags"] == EPHEMERAL
    return h.answer(interaction)


def admin_channel(h: Harness) -> list[str]:
    return [m["content"] for m in h.bot_messages(ADMIN_CHANNEL)]


def timestamps(text: str) -> set[int]:
    return {int(t) for t in re.findall(r"<t:(\d+):R>", text)}


def tomorrow_utc() -> int:
    now = datetime.now(UTC)
    return int(datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp()) + 86400


DAILY_100 = {"free": {"tokens_per_day": 100}}


async def test_usage_without_a_budget_says_nothing_limits_the_member(h: Harness) -> None:
    await ask(h, "hello", used(12, 7))
    text = await slash(h, "usage")
    lines = text.splitlines()
    assert lines[0] == "**Your usage**"
    assert lines[1].startswith("Today (") and lines[1].endswith(
        "): 19 tokens · 1 request · 0.00 USD")
    assert lines[2].startswith("This month (") and "19 tokens · 1 request" in lines[2]
    assert lines[-1].startswith("No budget limits your use")
    assert "█" not in text


async def test_usage_is_refused_to_a_member_without_an_allowed_role(h: Harness) -> None:
    refused = await h.fake.slash("usage", user=EVE)
    assert refused.callbacks[0]["type"] == 4 and refused.callbacks[0]["data"]["flags"] == EPHEMERAL
    assert h.answer(refused).startswith("Sorry, this bot is open to members with one of")
    assert await h.bot.known_member(EVE) is None


async def test_a_daily_budget_is_shown_alerted_once_each_and_refused_when_spent(
        make_harness: MakeHarness) -> None:
    async with make_harness(limits=DAILY_100) as h:
        first = await ask(h, "one", used(50, 35))
        thread = first.original_id
        assert thread is not None and h.thread_text(thread) == ["answer"]

        text = await slash(h, "usage")
        assert ("Tokens per day: `████████░░` 85% · 15 tokens left of 100 tokens · resets "
                f"<t:{tomorrow_utc()}:R>") in text.splitlines()
        assert admin_channel(h) == [
            f"⚠️ <@{ANN}> (ann) has used 80% of their tokens per day budget for "
            f"{datetime.now(UTC):%Y-%m-%d}: 85 tokens of 100 tokens "
            f"(resets <t:{tomorrow_utc()}:R>)."]

        # A new bot (a restart) neither posts that alert again nor posts the next one twice.
        await h.restart()
        h.upstreams["A"].enqueue(used(20, 10))
        await h.fake.user_says(thread, "two", user=ANN)
        await h.settle()
        assert h.thread_text(thread)[-1] == "answer"
        alerts = admin_channel(h)
        assert len(alerts) == 2
        assert alerts[1] == (
            f"🛑 <@{ANN}> (ann) has used all of their tokens per day budget for "
            f"{datetime.now(UTC):%Y-%m-%d}: 115 tokens of 100 tokens (requests are refused "
            f"until it resets <t:{tomorrow_utc()}:R>).")

        # Spent: a plain message, /chat in the thread and a new /chat are all answered.
        calls = len(h.upstreams["A"].requests)
        await h.fake.user_says(thread, "three", user=ANN)
        await h.settle()
        refusal = h.thread_text(thread)[-1]
        assert refusal.startswith("⚠️ Your tokens_per_day budget of 100 tokens is spent "
                                  "(115 tokens used today); it resets at ")
        assert refusal.endswith("\nNothing was sent to the model. `/usage` shows your "
                                "budgets and when each resets.")
        in_thread = await h.chat("four", channel=thread)
        assert h.thread_text(thread)[-1] == refusal
        assert h.answer(in_thread) == "**Ann** asked:\nfour"
        new = await h.chat("five")
        assert h.answer(new) == refusal
        assert len(h.fake.threads()) == 1  # the refused /chat opened nothing
        assert len(h.upstreams["A"].requests) == calls  # nor reached the upstream

        spent = await slash(h, "usage")
        assert "Tokens per day: `██████████` 115% · 0 tokens left of 100 tokens" in spent
        assert spent.endswith("A spent budget refuses new requests until it resets.")

        # Others are still served, and the refusals alerted nobody again.
        other = await ask(h, "bob's", used(5, 5), user=BOB)
        assert other.original_id is not None
        assert h.thread_text(other.original_id) == ["answer"]
        assert len(admin_channel(h)) == 2
        assert all(m["allowed_mentions"] == {"parse": []} for m in
                   (c.json for c in h.fake.calls
                    if c.path == f"/channels/{ADMIN_CHANNEL}/messages"))


def month_end_utc() -> int:
    now = datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


async def test_the_bots_shared_budget_is_shown_alerted_and_stops_every_member(
        h: Harness) -> None:
    admin = await h.gateway.authenticate(await h.gateway.create_admin("org admin"))
    await h.gateway.update_user(admin, str(h.bot.client_principal.id),
                                limits={"tokens_per_month": 200})
    await ask(h, "ann's", used(60, 40))
    await ask(h, "bob's", used(50, 20), user=BOB)
    month = f"{datetime.now(UTC):%Y-%m}"
    assert admin_channel(h) == [
        "⚠️ The bot's members together have used 80% of the bot's shared tokens per month "
        f"budget for {month}: 170 tokens of 200 tokens (resets <t:{month_end_utc()}:R>)."]

    mine = await slash(h, "usage")
    assert mine.splitlines()[-2:] == [
        "**The server's shared budget** (all members together)",
        "Tokens per month: `████████░░` 85% · 30 tokens left of 200 tokens · resets "
        f"<t:{month_end_utc()}:R>"]
    report = await slash(h, "admin", "usage", user=ADMIN, channel=ADMIN_CHANNEL)
    assert report.splitlines()[1:] == [
        "Total: 170 tokens · 2 requests · 0.00 USD",
        "**Top 2** (by tokens)",
        f"1. <@{ANN}> (ann) · 100 tokens · 1 request · 0.00 USD",
        f"2. <@{BOB}> (bob) · 70 tokens · 1 request · 0.00 USD",
        "**The bot's shared budget** (all members together)",
        "Tokens per month: `████████░░` 85% · 30 tokens left of 200 tokens · resets "
        f"<t:{month_end_utc()}:R>"]

    await ask(h, "bob again", used(20, 20), user=BOB)
    assert admin_channel(h)[1:] == [
        "🛑 The bot's members together have used all of the bot's shared tokens per month "
        f"budget for {month}: 210 tokens of 200 tokens (requests are refused until it resets "
        f"<t:{month_end_utc()}:R>)."]
    refused = await h.chat("ann is stopped too")
    assert h.answer(refused).startswith(
        "⚠️ The server's shared (all members together) tokens_per_month budget of 200 tokens "
        "is spent (210 tokens used this month); it resets at ")


async def test_alerts_recorded_while_no_bot_ran_are_posted_at_start(h: Harness) -> None:
    client = h.bot.client_principal
    await h.stop()
    # Another process (the HTTP API) serves the member meanwhile; the core records the alert.
    await h.gateway.acting_as(client, str(ANN), username="ann")
    ann = await h.gateway.update_user(client, str(ANN), limits={"tokens_per_day": 100})
    h.upstreams["A"].enqueue(used(50, 40))
    await h.gateway.chat(ann, ChatRequest(prompt="over the API", generate_title=False))
    assert admin_channel(h) == []
    await h.start()
    await h.settle()
    assert admin_channel(h) == [
        f"⚠️ <@{ANN}> (ann) has used 80% of their tokens per day budget for "
        f"{datetime.now(UTC):%Y-%m-%d}: 90 tokens of 100 tokens "
        f"(resets <t:{tomorrow_utc()}:R>)."]


async def test_alerts_about_other_clients_users_stay_out_of_the_admin_channel(
        make_harness: MakeHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "cogs.budget_alerts")
    async with make_harness(limits=DAILY_100) as h:
        admin = await h.gateway.authenticate(await h.gateway.create_admin("org admin"))
        web, _ = await h.gateway.add_user(admin, userid="web", username="web", role="client")
        stranger = await h.gateway.acting_as(web, "s1", username="stranger")
        h.upstreams["A"].enqueue(used(50, 50))
        await h.gateway.chat(stranger, ChatRequest(prompt="elsewhere", generate_title=False))
        await h.settle()
        # The bot heard of the stranger's two alerts (80% and 100%) and left them where they
        # were, for the other client's own front.
        assert admin_channel(h) == []
        assert not [r for r in caplog.records if "not posted" in r.getMessage()]
        await ask(h, "ann's", used(50, 50))
        alerts = admin_channel(h)
        assert len(alerts) == 2 and all(a.count(f"<@{ANN}> (ann)") == 1 for a in alerts)
        assert "stranger" not in "".join(alerts)
        kept = await h.gateway.budgets.take_alerts(web.id)
        assert [(a.scope_id, a.threshold) for a in kept] == [(stranger.id, 80),
                                                             (stranger.id, 100)]


async def limit(h: Harness, member: int, kind: str, value: str) -> str:
    return await slash(h, "admin", "limit", user=ADMIN, channel=ADMIN_CHANNEL, member=member,
                       kind=kind, value=value)


async def test_admin_limit_sets_lifts_and_restores_a_members_budget(
        make_harness: MakeHarness) -> None:
    async with make_harness(limits=DAILY_100) as h:
        await ask(h, "ann's", used(30, 20))
        assert await limit(h, ANN, "tokens_per_day", "50000") == (
            f"<@{ANN}>'s tokens per day budget is now 50,000 tokens, set for them (the free "
            "tier's default is 100 tokens).\nThey have used 50 tokens today.")
        assert "50,000 tokens" in await slash(h, "usage")

        assert await limit(h, ANN, "tokens_per_day", "None") == (
            f"<@{ANN}> now has no tokens per day budget (the free tier's default, 100 tokens, "
            "no longer applies to them).\nThey have used 50 tokens today.")
        assert "No budget limits your use" in await slash(h, "usage")

        assert await limit(h, ANN, "tokens_per_day", "default") == (
            f"<@{ANN}>'s tokens per day budget follows the free tier's default: 100 tokens."
            "\nThey have used 50 tokens today.")

        assert await limit(h, ANN, "cost_per_month", " 2.5 ") == (
            f"<@{ANN}>'s cost per month budget is now 2.50 USD, set for them (the free tier "
            "has none).\nThey have used 0.00 USD this month.")
        assert await limit(h, ANN, "cost_per_month", "none") == (
            f"<@{ANN}> now has no cost per month budget.\nThey have used 0.00 USD this month.")
        assert await limit(h, ANN, "cost_per_month", "default") == (
            f"<@{ANN}> follows the free tier again, which has no cost per month budget."
            "\nThey have used 0.00 USD this month.")
        await limit(h, ANN, "cost_per_month", "2.5")
        budgets = (await slash(h, "usage")).splitlines()
        assert [line.split(":")[0] for line in budgets if "resets" in line] == [
            "Tokens per day", "Cost per month"]


async def test_admin_limit_answers_a_bad_value_and_changes_nothing(h: Harness) -> None:
    for kind, value, shown in (("tokens_per_day", "lots", "'lots'"),
                               ("tokens_per_month", "1.5", "'1.5'"),
                               ("cost_per_month", "-3", "'-3'")):
        answer = await limit(h, ANN, kind, value)
        assert answer.startswith(f"⚠️ {kind} must be a ")
        assert answer.endswith(f"number of at least 0, 'none' or 'default'; got {shown}")
    assert "No budget limits your use" in await slash(h, "usage")


async def test_a_zero_budget_refuses_at_once_and_says_so(h: Harness) -> None:
    await limit(h, BOB, "tokens_per_day", "0")  # set before Bob ever used the bot
    refused = await h.chat("hello", user=BOB)
    assert h.answer(refused).startswith(
        "⚠️ Your tokens_per_day budget of 0 tokens is spent (0 tokens used today)")
    assert h.fake.threads() == [] and h.upstreams["A"].requests == []
    assert "`██████████` 100% · 0 tokens left of 0 tokens" in await slash(h, "usage", user=BOB)


async def test_admin_usage_ranks_members_and_adds_up_the_month(
        make_harness: MakeHarness, upstream_a: FakeUpstream) -> None:
    priced = account("A", upstream_a, "KEY_A", price_input_per_mtok=1000,
                     price_output_per_mtok=2000)
    async with make_harness(accounts=[priced]) as h:
        empty = await slash(h, "admin", "usage", user=ADMIN, channel=ADMIN_CHANNEL)
        assert empty.splitlines()[1:] == ["Total: 0 tokens · 0 requests · 0.00 USD",
                                          "No member has used the bot this month."]
        thread = (await ask(h, "ann's", used(50, 35))).original_id
        assert thread is not None
        await ask(h, "again", used(100, 50), channel=thread)
        await ask(h, "bob's", used(10, 5), user=BOB)
        await ask(h, "pat's", used(1, 1), user=PAT)

        report = await slash(h, "admin", "usage", user=ADMIN, channel=ADMIN_CHANNEL)
        first, *rest = report.splitlines()
        assert first.startswith("**Usage this month** · ") and first.endswith(" · 3 members")
        # ann: 0.05 + 0.07 + 0.10 + 0.10; bob: 0.01 + 0.01; pat: 0.001 + 0.002
        assert rest == [
            "Total: 252 tokens · 4 requests · 0.34 USD",
            "**Top 3** (by tokens)",
            f"1. <@{ANN}> (ann) · 235 tokens · 2 requests · 0.32 USD",
            f"2. <@{BOB}> (bob) · 15 tokens · 1 request · 0.02 USD",
            f"3. <@{PAT}> (pat) · 2 tokens · 1 request · 0.0030 USD",
        ]
        mine = (await slash(h, "usage")).splitlines()
        assert mine[1].endswith("): 235 tokens · 2 requests · 0.32 USD")


def test_the_bar_fills_a_cell_per_tenth_used_up() -> None:
    assert bar(0) == "`░░░░░░░░░░` 0%"
    assert bar(52.9) == "`█████░░░░░` 52%"
    assert bar(99.9) == "`█████████░` 99%"  # full only once spent
    assert bar(100) == "`██████████` 100%"
    assert bar(230) == "`██████████` 230%"


async def test_a_bot_made_anew_after_an_outage_leaves_the_old_one_free(h: Harness) -> None:
    """The core keeps alert listeners for good: the closed bots' must not keep them alive."""
    await h.restart()
    await h.restart()
    gc.collect()
    assert sum(type(o).__name__ == "BudgetAlerts" for o in gc.get_objects()) == 1
