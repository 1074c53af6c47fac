"""Budgets in Discord end to end: /usage, /admin usage, /admin limit, the refusal of a member
whose budget is spent, and the alerts in the admin channel. The upstream reports the usage of
every call; the budgets come from ``[limits.free]`` or from /admin limit."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from tests.conftest import account
from tests.fakediscord import EPHEMERAL
from tests.fakes.upstream import Reply

from .conftest import ADMIN, ADMIN_CHANNEL, ANN, BOB, GENERAL, Harness, MakeHarness


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
