"""The wording of lists, transcripts, accounts and statistics."""

from __future__ import annotations

import dataclasses
import json

from cogs.utils.format import (
    accounts_text,
    conversation_line,
    conversations_page,
    escape,
    page_count,
    stats_text,
    title_choices,
    transcript_pages,
    user_line,
)
from cogs.utils.text import MESSAGE_LIMIT, open_fence
from core.models import Conversation, Turn

BOT = 7


def conversation(n: int, *, ref: str | None = "555", client: int | None = BOT,
                 title: str = "Primes") -> Conversation:
    return Conversation(id=f"c{n}", owner_id=1, title=title, mode="pool", account="A",
                        model="m", client_id=client, external_ref=ref, turn_count=n,
                        created_utc="2026-01-02T03:04:05.000Z",
                        updated_utc="2026-01-02T03:04:05.000Z")


def turn(n: int, prompt: str, reply: str) -> Turn:
    return Turn(id=f"t{n}", conversation_id="c1", parent_id=None, position=n, prompt=prompt,
                reply=reply, model="model-a", upstream_id=None,
                prompt_utc="2026-01-02T03:04:05.000Z", reply_utc="2026-01-02T03:04:06.000Z",
                duration_ms=5, input_tokens=3, output_tokens=4)


def test_conversation_lines_link_threads() -> None:
    line = conversation_line(conversation(2), BOT)
    assert "<#555>" in line and "2 turns" in line and "<t:1767323045:R>" in line
    other = conversation_line(conversation(1, ref=None, client=None), BOT)
    assert "no thread" in other and "`c1`" in other and "1 turn " in other + " "
    # A reference made by another client is not one of our threads.
    assert "<#555>" not in conversation_line(conversation(1, client=99), BOT)


def test_conversation_pages() -> None:
    assert "No conversations yet" in conversations_page("Yours", [], 0, 0, BOT)
    page = conversations_page("Yours", [conversation(1)], 23, 1, BOT)
    assert page.startswith("**Yours** · 23 · page 2/3")
    assert page_count(0) == 1 and page_count(10) == 1 and page_count(11) == 2


def test_titles_are_escaped() -> None:
    assert escape("**bold** _x_ `y`") == r"\*\*bold\*\* \_x\_ \`y\`"


def test_transcript_pages_fit_and_close_fences() -> None:
    turns = [turn(i, f"question {i} ```py\nunclosed", "answer " * 300) for i in range(10)]
    pages = transcript_pages(conversation(10), turns)
    assert len(pages) > 3
    for number, page in enumerate(pages, 1):
        assert len(page) <= MESSAGE_LIMIT
        assert open_fence(page) is None
        assert page.startswith(f"**Primes** · page {number}/{len(pages)}")


def test_title_choices() -> None:
    items = [conversation(1, title="Python decorators"), conversation(2, title="Rust lifetimes"),
             conversation(3, title="python typing")]
    assert [v for _, v in title_choices(items, "PYTHON")] == ["c1", "c3"]
    assert [v for _, v in title_choices(items, "")] == ["c1", "c2", "c3"]
    assert title_choices(items, "c2") == [("Rust lifetimes · 2026-01-02", "c2")]
    many = [conversation(i, title="x" * 300) for i in range(40)]
    choices = title_choices(many, "")
    assert len(choices) == 25 and all(len(name) <= 100 for name, _ in choices)


def test_users_accounts_and_stats() -> None:
    user = {"userid": "42", "name": "ann", "plus": True, "conversations": 2, "requests": 5,
            "tokens": 1234, "last_used": None, "has_own_key": True, "disabled": None}
    assert user_line(user) == ("• <@42> · ann · plus · own key · 2 conversations · 5 requests"
                               " · 1,234 tokens · last used never")
    snapshot = {"name": "A", "tier": "free", "model": "m", "health": "cooling",
                "cooldown_s": 12.4, "cooldown_reason": "rate limited", "out_reason": None,
                "in_flight": 1, "max_concurrency": 8, "requests": 3, "failures": 1,
                "input_tokens": 10, "output_tokens": 5, "last_error": "429 from upstream"}
    text = accounts_text([snapshot])
    assert "🟡 **A** · free · `m` · cooling down 12 s (rate limited) · 1/8 in flight" in text
    assert "last error: 429 from upstream" in text
    stats = {"requests": 9, "failures": 1, "input_tokens": 100, "output_tokens": 50,
             "conversations": 3, "turns": 7}
    summary = stats_text(stats, 2, [snapshot])
    assert "Members: 2 · Conversations: 3 · Turns: 7" in summary
    assert "Requests: 9 (1 failed) · Tokens: 100 in, 50 out" in summary
    assert "Accounts: 0 healthy, 1 cooling, 0 out" in summary


def test_transcripts_show_attachments_tool_calls_and_results() -> None:
    exchange = {
        "api": "chat",
        "messages": [{"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                     {"role": "user", "content": [
                         {"type": "image_url", "image_url": {"url": "attachment:ab12"}}]}],
        "reply": {"role": "assistant", "content": None, "finish_reason": "tool_calls",
                  "tool_calls": [{"id": "call_2", "type": "function", "function": {
                      "name": "get_time", "arguments": '{"tz": "UTC"}'}}]},
        "attachments": [{"sha256": "ab12" * 16, "mime_type": "image/png", "bytes": 2048}],
    }
    stored = dataclasses.replace(turn(0, "look", ""), exchange_json=json.dumps(exchange))
    page = transcript_pages(conversation(1), [stored])[0]
    assert "📎 image/png · 2,048 bytes · `ab12ab12ab12`" in page
    assert "↩️ tool result `call_1`: sunny" in page
    assert '🔧 `get_time({"tz": "UTC"})`' in page
