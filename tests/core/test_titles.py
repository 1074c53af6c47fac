"""Titles: asked of the same account at the same time as the reply, cleaned; when that fails or
lags past title_timeout_s, cut from the prompt. Never an error string."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from core.chat import ChatRequest
from core.config import Settings
from core.gateway import Gateway
from core.models import Principal
from core.titles import TITLE_MAX_CHARS, clean_title, fallback_title
from tests.conftest import account
from tests.core.conftest import Listener, OpenGateway, ask, new_user
from tests.fakes.upstream import Delay, FakeUpstream, Garbage, Hang, Status

LONG_PROMPT = ("Explain how the quicksort algorithm partitions an array around a pivot, "
               "and why its worst case is quadratic")


async def test_title_is_asked_of_the_same_account_while_the_reply_is_pending(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    upstream_a.enqueue(Delay(0.2, "the answer"))
    upstream_a.enqueue_title('Title: "Quantum Physics Basics."')
    task = asyncio.create_task(ask(gw, user, "What is quantum physics?"))
    await upstream_a.wait_for_requests(2)
    assert not task.done()  # both requests are out before the reply came back
    result = await task

    titles = upstream_a.chat_requests(titles=True)
    assert len(titles) == 1
    assert titles[0].api_key == "sk-account-a"
    assert titles[0].model == "model-a"
    assert titles[0].messages[-1]["content"] == "What is quantum physics?"
    assert upstream_b.requests == []
    assert result.conversation.title == "Quantum Physics Basics"
    assert (await gw.conversations.get(result.conversation.id)).title == (  # type: ignore[union-attr]
        "Quantum Physics Basics")


@pytest.mark.parametrize(
    "failure", [Status(500), Status(429), Garbage(), Garbage.no_choices(), "   \n  ", '""'],
    ids=["500", "429", "garbage", "no-choices", "blank", "empty-quotes"],
)
async def test_a_failed_title_is_cut_from_the_prompt(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, failure: object
) -> None:
    upstream_a.enqueue_title(failure)  # type: ignore[arg-type]
    result = await ask(gw, user, LONG_PROMPT)
    title = result.conversation.title
    assert title == fallback_title(LONG_PROMPT)
    assert title.endswith("…") and len(title) <= TITLE_MAX_CHARS
    assert LONG_PROMPT.startswith(title[:-1])
    assert not any(word in title.lower() for word in ("error", "500", "429", "html"))
    # The reply itself was unaffected, and the account was not cooled for a title.
    assert result.turn.reply == "reply 1 from A"
    assert gw.pool.get("A").health() == "healthy"  # type: ignore[union-attr]


async def test_a_title_that_hangs_past_title_timeout_is_cut_from_the_prompt(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway, upstream_a: FakeUpstream
) -> None:
    gw = await open_gateway(make_settings([account("A", upstream_a, "KEY_A")],
                                          chat={"title_timeout_s": 0.1}))
    user = await new_user(gw)
    upstream_a.enqueue_title(Hang())
    listener = Listener()
    # The account's own timeout is 120 s: the reply must not wait for it.
    result = await asyncio.wait_for(
        gw.chat(user, ChatRequest(prompt="What is love?"), listener), timeout=5)
    assert result.conversation.title == "What is love?"
    assert result.turn.reply == "reply 1 from A"
    # A streaming front learns the title it will see stored.
    assert listener.of("title") == ["What is love?"]


async def test_a_slow_title_within_title_timeout_is_used(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    upstream_a.enqueue_title(Delay(0.1, "Slow But Sure"))
    result = await ask(gw, user, "hello")
    assert result.conversation.title == "Slow But Sure"


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ("Quantum Physics Basics", "Quantum Physics Basics"),
        ('"Quantum Physics Basics"', "Quantum Physics Basics"),
        ("Title: Quantum Physics Basics.", "Quantum Physics Basics"),
        ("conversation title - Quantum Physics", "Quantum Physics"),
        ("**Title:** Quantum Physics Basics", "Quantum Physics Basics"),
        ("# Quantum Physics Basics", "Quantum Physics Basics"),
        ("\n\n  Quantum   Physics\tBasics  \nSecond line", "Quantum Physics Basics"),
        ("'Sorting, explained'", "Sorting, explained"),
    ],
)
def test_clean_title(raw: str, title: str) -> None:
    assert clean_title(raw) == title


def test_clean_title_of_nothing_is_none() -> None:
    for raw in ("", "   ", '""', "**", "Title:"):
        assert clean_title(raw) is None


def test_long_titles_are_cut_at_a_word() -> None:
    cut = clean_title("word " * 40)
    assert cut is not None and cut.endswith("…") and len(cut) <= TITLE_MAX_CHARS
    assert not cut[:-1].endswith(" ")
    assert fallback_title("   ") == "New conversation"
    assert fallback_title("short  prompt\n") == "short prompt"
