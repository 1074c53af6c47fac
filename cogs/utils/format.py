"""The text of the bot's answers: lists, transcripts, account health and statistics. Pure
functions of the core's records, so the wording is tested without Discord."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from core.exchange import summary
from core.models import Conversation, Turn

from .text import MESSAGE_LIMIT, open_fence, shorten, split_message

PAGE_SIZE = 10
"""Items per page of a list (conversations, users)."""
TITLE_CHARS = 80
_MARKDOWN = re.compile(r"([\\*_`~|>\[\]])")


def escape(text: str) -> str:
    """Text shown as typed: Markdown characters escaped (titles, names)."""
    return _MARKDOWN.sub(r"\\\1", text)


def page_count(total: int, size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(total / size))


def when(iso_utc: str | None, style: str = "R") -> str:
    """A Discord timestamp (shown in each reader's time zone), or "never"."""
    if not iso_utc:
        return "never"
    stamp = datetime.fromisoformat(iso_utc)
    return f"<t:{int(stamp.timestamp())}:{style}>"


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def thread_of(conversation: Conversation, client_id: int) -> int | None:
    """The thread a conversation lives in, when this bot opened it."""
    ref = conversation.external_ref
    if conversation.client_id == client_id and ref and ref.isdigit():
        return int(ref)
    return None


def conversation_line(conversation: Conversation, client_id: int, *,
                      show_id: bool = False) -> str:
    thread = thread_of(conversation, client_id)
    where = f"<#{thread}>" if thread else "no thread"
    parts = [f"**{escape(shorten(conversation.title, TITLE_CHARS))}**", where,
             plural(conversation.turn_count, "turn"), when(conversation.updated_utc)]
    if conversation.mode == "own_key":
        parts.insert(2, "own key")
    if show_id or not thread:
        parts.append(f"`{conversation.id}`")
    return "• " + " · ".join(parts)


def conversations_page(heading: str, conversations: Sequence[Conversation], total: int,
                       page: int, client_id: int, *, show_id: bool = False) -> str:
    if not total:
        return f"**{heading}**\nNo conversations yet. Start one with `/chat`."
    lines = [f"**{heading}** · {total:,} · page {page + 1}/{page_count(total)}"]
    lines += [conversation_line(c, client_id, show_id=show_id) for c in conversations]
    return "\n".join(lines)


def title_choices(conversations: Sequence[Conversation], typed: str,
                  limit: int = 25) -> list[tuple[str, str]]:
    """Autocomplete suggestions (name shown, conversation id) whose title contains what the
    member typed, newest first."""
    needle = typed.strip().casefold()
    choices = []
    for conversation in conversations:
        if needle and needle not in conversation.title.casefold() and needle != conversation.id:
            continue
        stamp = conversation.updated_utc[:10]
        choices.append((f"{shorten(conversation.title, 100 - len(stamp) - 3)} · {stamp}",
                        conversation.id))
        if len(choices) == limit:
            break
    return choices


def _closed(text: str) -> str:
    """Text with a code block it leaves open closed, so it cannot swallow what follows."""
    return text + "\n```" if open_fence(text) else text


def _sent(turn: Turn) -> str:
    """A /v1 turn's attachments and tool results, one short line each."""
    extras = summary(turn.exchange)
    if extras is None:
        return ""
    lines = [f"📎 {escape(str(a.get('mime_type', '?')).split(';')[0])} · "
             f"{plural(int(a.get('bytes') or 0), 'byte')} · `{str(a.get('sha256', ''))[:12]}`"
             for a in extras.attachments]
    lines += [f"↩️ tool result `{call_id.replace('`', chr(39))}`: {escape(shorten(text, 200))}"
              for call_id, text in extras.tool_results]
    return "".join(f"\n{line}" for line in lines)


def _called(turn: Turn) -> str:
    """The tools a /v1 turn's reply called."""
    extras = summary(turn.exchange)
    if extras is None:
        return ""
    # In a code span, unless a backtick in it would end the span early.
    return "".join(f"\n🔧 `{name}({shorten(arguments, 200)})`"
                   if "`" not in name + arguments else f"\n🔧 {escape(name)}(…)"
                   for name, arguments in extras.tool_calls)


def transcript_pages(conversation: Conversation, turns: Sequence[Turn],
                     limit: int = MESSAGE_LIMIT) -> list[str]:
    """A conversation's turns as pages of at most ``limit`` characters, each headed by the
    title and its page number."""
    body = "\n\n".join(
        f"**You** · {when(t.prompt_utc, 'f')}\n{_closed(t.prompt)}{_sent(t)}\n\n"
        f"**{escape(t.model)}** · {plural(t.output_tokens or 0, 'token')}\n{_closed(t.reply)}"
        f"{_called(t)}"
        for t in turns
    ) or "*(no turns)*"
    title = escape(shorten(conversation.title, TITLE_CHARS))
    header_room = len(title) + 40
    chunks = split_message(body, limit - header_room)
    return [f"**{title}** · page {i + 1}/{len(chunks)}\n{chunk}"
            for i, chunk in enumerate(chunks)]


def user_line(user: Mapping[str, Any]) -> str:
    parts = [f"<@{user['userid']}>" if str(user.get("userid") or "").isdigit()
             else f"`{user.get('userid')}`",
             escape(str(user["name"])),
             "plus" if user.get("plus") else "free",
             plural(int(user.get("conversations", 0)), "conversation"),
             plural(int(user.get("requests", 0)), "request"),
             plural(int(user.get("tokens", 0)), "token"),
             f"last used {when(user.get('last_used'))}"]
    if user.get("has_own_key"):
        parts.insert(3, "own key")
    if user.get("disabled"):
        parts.insert(2, "**disabled**")
    return "• " + " · ".join(parts)


def users_page(users: Sequence[Mapping[str, Any]], total: int, page: int,
               search: str = "") -> str:
    heading = f"**Members** matching “{escape(search)}”" if search else "**Members**"
    if not total:
        return f"{heading}\nNobody yet."
    lines = [f"{heading} · {total:,} · page {page + 1}/{page_count(total)}"]
    lines += [user_line(u) for u in users]
    return "\n".join(lines)


_HEALTH = {"healthy": "🟢", "cooling": "🟡", "out": "🔴"}


def account_line(account: Mapping[str, Any]) -> str:
    health = str(account["health"])
    parts = [f"{_HEALTH.get(health, '⚪')} **{escape(str(account['name']))}**",
             str(account["tier"]), f"`{account['model']}`"]
    if health == "cooling":
        reason = account.get("cooldown_reason") or "a failure"
        parts.append(f"cooling down {account['cooldown_s']:.0f} s ({reason})")
    elif health == "out":
        parts.append(f"out of service ({account.get('out_reason') or 'unknown reason'})")
    else:
        parts.append("healthy")
    parts += [f"{account['in_flight']}/{account['max_concurrency']} in flight",
              plural(int(account["requests"]), "request"),
              plural(int(account["failures"]), "failure"),
              plural(int(account["input_tokens"]) + int(account["output_tokens"]), "token")]
    text = " · ".join(parts)
    if account.get("last_error"):
        text += f"\n  last error: {escape(shorten(str(account['last_error']), 200))}"
    return text


def accounts_text(accounts: Sequence[Mapping[str, Any]]) -> str:
    if not accounts:
        return "**Accounts**\nNo upstream account is configured."
    return "**Accounts**\n" + "\n".join(account_line(a) for a in accounts)


def health_summary(accounts: Sequence[Mapping[str, Any]]) -> str:
    counts = {state: 0 for state in _HEALTH}
    for account in accounts:
        counts[str(account["health"])] = counts.get(str(account["health"]), 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def stats_text(stats: Mapping[str, Any], members: int,
               accounts: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join([
        "**Usage by this bot's members**",
        f"Members: {members:,} · Conversations: {stats['conversations']:,}"
        f" · Turns: {stats['turns']:,}",
        f"Requests: {stats['requests']:,} ({stats['failures']:,} failed)"
        f" · Tokens: {stats['input_tokens']:,} in, {stats['output_tokens']:,} out",
        f"Accounts: {health_summary(accounts)}",
    ])
