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
as given); tool calls by id, name and arguments (arguments as compact JSON, since clients
such as LangChain parse them and write them again with other spacing); a tool result's call
id.
Messages are hashed in order, so the fingerprint of the prefix comes on the way.
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import fastjson
from .records import frozen_record
from .upstream import Message


@frozen_record
class Context:
    """The fingerprints of one /v1 request's messages."""

    continues: bytes | None
    """The fingerprint of the messages up to the last assistant one (what an earlier turn of
    this caller would have stored), or None when there is no assistant message."""
    prefix: Any
    """The hash of those messages (None: none), which the turn's own fingerprint goes on from."""
    rest: bytes
    """The messages after them, framed for hashing."""

    def after(self, reply: Message) -> bytes:
        """The fingerprint a turn stores: this context followed by its reply."""
        hashed = hashlib.sha256() if self.prefix is None else self.prefix.copy()
        _update(hashed, self.rest + _framed([_key(reply)]))
        return _fingerprint(hashed)


def of(messages: list[Message]) -> Context:
    # Nearly every message is a role and its text: keyed inline, without a call each.
    keys = [(m.get("role"), text) if (text := m.get("content")).__class__ is str
            and "tool_calls" not in m and "tool_call_id" not in m else _key(m)
            for m in messages]
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            prefix = hashlib.sha256()
            _update(prefix, _framed(keys[:index + 1]))
            return Context(_fingerprint(prefix), prefix, _framed(keys[index + 1:]))
    return Context(None, None, _framed(keys))


GIL_KEPT_BELOW = 2048
"""hashlib lets go of the interpreter's lock to hash this many bytes or more in one call (and
on every later call on the same object). On the event loop that hands the interpreter to
another thread (SQLite's writer, the log's) and then waits to have it back: a 3 KB history
cost tens of microseconds under load that way, where hashing it takes four."""


def _update(hashed: Any, data: bytes) -> None:
    if len(data) < GIL_KEPT_BELOW:
        hashed.update(data)
        return
    view = memoryview(data)
    for start in range(0, len(data), GIL_KEPT_BELOW - 1):
        hashed.update(view[start:start + GIL_KEPT_BELOW - 1])


def _fingerprint(hashed: Any) -> bytes:
    # 128 bits: no two contexts of one caller meet by chance, and the index stays small.
    digest: bytes = hashed.digest()
    return digest[:16]


def _framed(keys: list[Any]) -> bytes:
    """Each message's key as JSON followed by a comma: the same bytes whether messages are
    written one call at a time or many (JSON values are self-delimiting)."""
    return fastjson.dumps(keys)[1:-1] + b"," if keys else b""


def _key(message: Message) -> Any:
    content = message.get("content")
    calls = message.get("tool_calls")
    call_id = message.get("tool_call_id")
    if content is None:
        content = ""
    elif isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = "".join(str(p.get("text", "")) for p in content)
    key: list[Any] = [message.get("role"), content]
    if calls:
        key.append([_call(c) for c in calls] if isinstance(calls, list) else calls)
    if call_id is not None:
        key.append(call_id)
    return key


def _call(call: Any) -> list[Any]:
    if not isinstance(call, dict):
        return [call]
    function = call.get("function") or {}
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if isinstance(arguments, str):
        arguments = _compact(arguments)
    name = function.get("name") if isinstance(function, dict) else None
    return [call.get("id"), name, arguments]


def _compact(arguments: str) -> str:
    """JSON arguments written again compactly (the same whatever spacing a client used); not
    JSON, or nested past what a parser or writer takes: the string as it is."""
    try:
        return fastjson.dumps(fastjson.loads(arguments)).decode("utf-8")
    except (ValueError, RecursionError):
        return arguments
