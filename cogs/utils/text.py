"""Splitting a reply into Discord messages.

A message holds at most 2,000 characters. A long reply is cut at a line break when one is near
the limit, else at a space, else anywhere; a code block that a cut leaves open is closed at the
end of the message and re-opened, with its language, at the start of the next, so every message
renders on its own and no fence is ever left open.
"""

from __future__ import annotations

import re

MESSAGE_LIMIT = 2000
FENCE = "```"
_CLOSE = "\n" + FENCE
_LANGUAGE = re.compile(r"[\w+#.-]{1,20}")


def open_fence(text: str, fence: str | None = None) -> str | None:
    """The fence still open at the end of ``text`` (``"```py"``, or ``"```"``), or None, given
    the one open at its start. A fence is a line that starts with three backticks; a line that
    opens and closes a block (```` ```x``` ````) changes nothing."""
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped.startswith(FENCE):
            continue
        if fence is not None:
            fence = None
        elif FENCE not in stripped[len(FENCE):]:
            fence = _reopener(stripped)
    return fence


def _reopener(line: str) -> str:
    info = line[len(FENCE):].strip().split(" ", 1)[0]
    return FENCE + info if _LANGUAGE.fullmatch(info) else FENCE


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """``text`` as messages of at most ``limit`` characters, code fences balanced in each."""
    chunks: list[str] = []
    fence: str | None = None
    rest = text
    while rest.strip():
        head = f"{fence}\n" if fence else ""
        if len(head) + len(rest) + len(_CLOSE) <= limit or (
            len(head) + len(rest) <= limit and open_fence(rest, fence) is None
        ):
            chunks.append(head + rest + (_CLOSE if open_fence(rest, fence) else ""))
            break
        cut = _cut_point(rest, limit - len(head) - len(_CLOSE))
        piece, rest = rest[:cut], rest[cut:]
        if rest.startswith("\n"):
            rest = rest[1:]
        fence = open_fence(piece, fence)
        chunks.append(head + piece + (_CLOSE if fence else ""))
    return chunks


def _cut_point(text: str, budget: int) -> int:
    """Where to cut ``text`` so that ``text[:cut]`` has at most ``budget`` characters: the
    last line break, else the last space, unless that wastes over half the room."""
    newline = text.rfind("\n", 0, budget + 1)
    if newline >= budget // 2:
        return newline
    space = text.rfind(" ", 0, budget)
    if space >= budget // 2:
        return space + 1
    cut = budget
    # Never cut a run of backticks in two: the half left behind could read as a fence.
    while cut > budget // 2 and text[cut - 1] == "`" and text[cut] == "`":
        cut -= 1
    return cut


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, line breaks kept."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
