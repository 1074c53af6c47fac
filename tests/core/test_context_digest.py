"""The fingerprint a /v1 turn stores is the one its continuation's messages give, whatever the
client rewrites that does not change the conversation."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core import context_digest

SYSTEM = {"role": "system", "content": "Be brief."}
ASK = {"role": "user", "content": "Weather in Paris?"}
CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"C"}'}}]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
REPLY = {"role": "assistant", "content": "Sunny."}


def _continues(messages: list[dict[str, Any]]) -> bytes | None:
    return context_digest.of([*messages, {"role": "user", "content": "next"}]).continues


def test_a_turns_fingerprint_is_what_its_continuation_sends() -> None:
    long = {"role": "user", "content": "a long question " * 400}  # hashed in pieces
    for history in ([ASK], [SYSTEM, ASK], [SYSTEM, ASK, CALL, RESULT], [long, REPLY, long]):
        stored = context_digest.of(history).after(REPLY)
        assert len(stored) == 16
        assert _continues([*history, REPLY]) == stored
    assert context_digest.of([SYSTEM, ASK]).continues is None  # nothing to continue
    # In pieces or whole, the same SHA-256.
    framed = b"".join(json.dumps([m["role"], m["content"]], separators=(",", ":")).encode()
                      + b"," for m in (long, REPLY))
    assert context_digest.of([long]).after(REPLY) == hashlib.sha256(framed).digest()[:16]


def test_what_clients_rewrite_does_not_change_it() -> None:
    stored = context_digest.of([ASK]).after(CALL)
    rewritten = {**CALL, "content": "", "refusal": None, "tool_calls": [
        {**CALL["tool_calls"][0], "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}}]}
    assert _continues([ASK, rewritten]) == stored
    as_parts = {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}
    assert _continues([as_parts, CALL]) == stored


def test_what_changes_the_conversation_changes_it() -> None:
    stored = context_digest.of([SYSTEM, ASK]).after(REPLY)
    assert _continues([ASK, REPLY]) != stored  # the system prompt dropped
    assert _continues([SYSTEM, ASK, {**REPLY, "content": "Rainy."}]) != stored
    assert _continues([SYSTEM, {**ASK, "role": "developer"}, REPLY]) != stored
    # Messages are framed: moving text from one message to the next is another context.
    split = [SYSTEM, {**ASK, "content": "Weather in"}, {"role": "user", "content": " Paris?"}]
    assert _continues([*split, REPLY]) != stored
    other_call = {**CALL, "tool_calls": [{**CALL["tool_calls"][0], "id": "call_2"}]}
    assert context_digest.of([ASK]).after(other_call) != context_digest.of([ASK]).after(CALL)


def test_arguments_that_are_not_json_or_too_deep_are_kept_as_text() -> None:
    for arguments in ("not json {", "[" * 1_000 + "]" * 1_000, "[" * 100_000 + "]" * 100_000):
        call = {**CALL, "tool_calls": [{**CALL["tool_calls"][0], "function": {
            "name": "get_weather", "arguments": arguments}}]}
        stored = context_digest.of([ASK]).after(call)
        assert _continues([ASK, call]) == stored
