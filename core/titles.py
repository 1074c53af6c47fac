"""Short conversation titles: asked of the model, or cut from the prompt when that fails."""

from __future__ import annotations

import re

from .upstream import Message

TITLE_MAX_CHARS = 60
TITLE_MAX_TOKENS = 24
TITLE_INSTRUCTION = (
    "You write titles. Reply with a short title (at most six words) for a conversation that "
    "starts with the user's message below. Reply with the title only: no quotes, no preamble."
)
_PREAMBLE = re.compile(r"^(title|conversation title)\s*[*_]*\s*[:\-]\s*[*_]*\s*", re.IGNORECASE)
_DECORATION = " \t\"'`*#_."


def title_messages(prompt: str) -> list[Message]:
    return [
        {"role": "system", "content": TITLE_INSTRUCTION},
        {"role": "user", "content": prompt[:2000]},
    ]


def clean_title(raw: str) -> str | None:
    """The model's answer made into a title, or None when nothing usable is left."""
    for line in raw.strip().splitlines():
        # Markdown first ("**Title:** X"), then the preamble, then what the preamble wrapped.
        line = _PREAMBLE.sub("", line.strip().strip(_DECORATION))
        line = line.strip(_DECORATION).strip()
        if line:
            return _cut(line)
    return None


def fallback_title(prompt: str) -> str:
    """A title cut from the prompt, at a word boundary."""
    text = " ".join(prompt.split())
    return _cut(text) if text else "New conversation"


def _cut(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= TITLE_MAX_CHARS:
        return text
    cut = text[: TITLE_MAX_CHARS - 1]
    if " " in cut[TITLE_MAX_CHARS // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-") + "…"
