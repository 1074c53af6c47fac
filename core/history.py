"""The history sent upstream: the stored chain, trimmed to the account's context budget.

Token counts are estimated (about four characters a token, plus a per-message overhead):
an exact tokenizer would need the model's vocabulary, which a gateway for many models cannot
ship. The estimate errs on the large side, so trimming keeps the request within the window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .images import IMAGE_TOKENS, image_count
from .models import Turn
from .upstream import Message

CHARS_PER_TOKEN = 3.5
MESSAGE_OVERHEAD_TOKENS = 4
REPLY_RESERVE_FRACTION = 4
"""A quarter of the context is kept free for the reply unless the caller sets max_tokens."""


def estimate_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS


def prompt_budget(context_tokens: int, max_tokens: int | None) -> int:
    reserve = context_tokens // REPLY_RESERVE_FRACTION
    if max_tokens is not None:
        reserve = min(max_tokens, context_tokens // 2)
    return context_tokens - reserve


def build_messages(
    recent_first: Sequence[Turn],
    prompt: str,
    *,
    budget: int,
    system_prompt: str = "",
    contents: Mapping[str, list[dict[str, Any]]] | None = None,
    prompt_images: int = 0,
) -> list[Message] | None:
    """Messages for the upstream, oldest turn first, dropping the oldest turns that do not fit.
    None when the system prompt and the new prompt alone exceed the budget.

    ``contents``: the user message of the turns that carried images, as content parts (sent
    in place of their prompt); ``prompt_images``: the images coming with ``prompt``."""
    contents = contents or {}
    used = estimate_tokens(prompt) + prompt_images * IMAGE_TOKENS \
        + (estimate_tokens(system_prompt) if system_prompt else 0)
    if used > budget:
        return None
    kept: list[Turn] = []
    for turn in recent_first:
        cost = estimate_tokens(turn.prompt) + estimate_tokens(turn.reply)
        if turn.id in contents:
            cost += image_count(contents[turn.id]) * IMAGE_TOKENS
        if used + cost > budget:
            break
        used += cost
        kept.append(turn)
    messages: list[Message] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for turn in reversed(kept):
        messages.append({"role": "user", "content": contents.get(turn.id, turn.prompt)})
        messages.append({"role": "assistant", "content": turn.reply})
    messages.append({"role": "user", "content": prompt})
    return messages
