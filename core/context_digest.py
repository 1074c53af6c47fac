"""A /v1 caller's context, fingerprinted: how a history sent without ``X-Conversation-Id``
is known to continue a stored conversation.

Agent frameworks (LangChain, the Agents SDK, ``llm``) send their whole context with every call
and never the gateway's header. Each /v1 turn therefore stores the SHA-256 of the context it
ends: the request's messages and the reply, each in a canonical form. A later request whose
messages up to its last assistant message have that fingerprint continues the turn's
conversation: on the account that started it (prompt caches stay warm), stored as a follow-up
(only what it adds), with no second title.

The canonical form keeps what a client echoes faithfully and drops what it may rewrite: the
role; the text (``None`` and ``""`` alike, a list of text parts as its joined text, other parts
as given); tool calls by id, name and arguments (arguments as parsed JSON, since clients such
as LangChain parse them and write them again with other spacing); a tool result's call id.
Messages are hashed one after another, so the fingerprint of a prefix comes on the way.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from . import fastjson
from .records import frozen_record
from .upstream import Message


@frozen_record
class Context:
    """The fingerprints of one /v1 request's messages."""

    continues: str | None
    """The fingerprint of the messages up to the last assistant one (what an earlier turn of
    this caller would have stored), or None when there is no assistant message."""
    running: Any
    """The hash after every message, to be finished with the reply (``after``)."""

    def after(self, reply: Message) -> str:
        """The fingerprint a turn stores: this context followed by its reply."""
        hashed = self.running.copy()
        hashed.update(_canonical(reply))
        return str(hashed.hexdigest())


def of(messages: list[Message]) -> Context:
    last_assistant = -1
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            last_assistant = index
            break
    hashed = hashlib.sha256()
    continues = None
    for index, message in enumerate(messages):
        hashed.update(_canonical(message))
        if index == last_assistant:
            continues = hashed.hexdigest()
    return Context(continues, hashed)


def _canonical(message: Message) -> bytes:
    content = message.get("content")
    if content is None:
        content = ""
    elif isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = "".join(str(p.get("text", "")) for p in content)
    key: list[Any] = [message.get("role"), content]
    calls = message.get("tool_calls")
    if calls:
        key.append([_call(c) for c in calls])
    call_id = message.get("tool_call_id")
    if call_id is not None:
        key.append(call_id)
    # One JSON array a message: self-delimiting, so no two contexts hash alike by accident.
    return fastjson.dumps(key) + b"\n"


def _call(call: Any) -> list[Any]:
    if not isinstance(call, dict):
        return [call]
    function = call.get("function") or {}
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: kept as the string it is
            arguments = fastjson.loads(arguments)
    name = function.get("name") if isinstance(function, dict) else None
    return [call.get("id"), name, arguments]
