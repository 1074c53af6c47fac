"""A turn's exchange as it was, for the record: the new messages (content parts, tool results)
and the reply (text, tool calls, refusal, finish reason).

Images, audio and files sent inline (``data:`` URLs, or ``input_audio``'s base64) are taken out
of the messages and stored once each, by the SHA-256 of their bytes, in the ``attachments``
table; the stored messages name them as ``attachment:<sha256>`` (``attachment-base64:<sha256>``
where the original was bare base64). A picture sent in every request of a conversation (as /v1
callers resend their context) is kept once, and a turn row stays small.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import fastjson
from .errors import BadRequest, TooLarge
from .records import frozen_record
from .wire import Completion, Message

REF = "attachment:"
RAW_REF = "attachment-base64:"
_DATA = "data:"
_BASE64 = ";base64,"


@dataclass(frozen=True, slots=True)
class Attachment:
    sha256: str
    mime_type: str
    """What the data URL said before ``;base64,`` (``image/png``, with any parameters)."""
    data: bytes

    def public(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "mime_type": self.mime_type, "bytes": len(self.data)}


@frozen_record
class Draft:
    """What a turn will store of its request: the new messages (references in place of
    inline data) and the attachments they refer to."""

    api: str
    messages: list[Message]
    attachments: list[Attachment]
    store: bool = True


class _Extractor:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.found: dict[str, Attachment] = {}

    def keep(self, payload: str, mime_type: str, where: str) -> str:
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{where} is not valid base64", code="invalid_value") from None
        self.total += len(data)
        if self.total > self.limit:
            raise TooLarge(
                f"the request carries more than {self.limit} bytes of attachments, the limit "
                "set by [chat] max_attachment_bytes", code="attachments_too_large")
        digest = hashlib.sha256(data).hexdigest()
        self.found.setdefault(digest, Attachment(digest, mime_type, data))
        return digest

    def walk(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            if value.startswith(_DATA) and _BASE64 in value[:300]:
                head, _, payload = value.partition(_BASE64)
                return REF + self.keep(payload, head[len(_DATA):], where)
            return value
        if isinstance(value, list):
            return [self.walk(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key == "data" and isinstance(item, str) and isinstance(value.get("format"),
                                                                          str):
                    # input_audio: bare base64 with its format beside it.
                    out[key] = RAW_REF + self.keep(item, f"audio/{value['format']}",
                                                   f"{where}.data")
                else:
                    out[key] = self.walk(item, f"{where}.{key}")
            return out
        return value


def extract(messages: list[Message], limit: int,
            where: str = "messages") -> tuple[list[Message], list[Attachment]]:
    """The messages with every inline attachment replaced by its reference, and the
    attachments (each once). Refused with 413 past ``limit`` bytes in all."""
    if fastjson.dumps(messages).find(b'"data') < 0:
        # No string starts with "data:" and no key is "data": nothing inline. Serialising in
        # C and searching the bytes is a tenth of walking every message and part in Python,
        # and most requests (a /v1 caller's whole history of text) carry nothing. (find, not
        # ``in``: bytes.__contains__ first tries its operand as an int, formatting an error.)
        return messages, []
    extractor = _Extractor(limit)
    stored = extractor.walk(messages, where)
    return stored, list(extractor.found.values())


def data_url(attachment: Attachment) -> str:
    """The attachment inline again, as a ``data:`` URL."""
    return f"{_DATA}{attachment.mime_type}{_BASE64}{base64.b64encode(attachment.data).decode()}"


def restore(value: Any, attachments: Mapping[str, Attachment]) -> Any:
    """Stored messages made sendable again: each reference back to its inline data."""
    if isinstance(value, str):
        if value.startswith(REF) and (found := attachments.get(value[len(REF):])):
            return data_url(found)
        if value.startswith(RAW_REF) and (found := attachments.get(value[len(RAW_REF):])):
            return base64.b64encode(found.data).decode()
        return value
    if isinstance(value, list):
        return [restore(item, attachments) for item in value]
    if isinstance(value, dict):
        return {key: restore(item, attachments) for key, item in value.items()}
    return value


def references(value: Any) -> set[str]:
    """The attachment hashes stored messages refer to."""
    if isinstance(value, str):
        for prefix in (REF, RAW_REF):
            if value.startswith(prefix):
                return {value[len(prefix):]}
        return set()
    if isinstance(value, list):
        return set().union(*(references(item) for item in value)) if value else set()
    if isinstance(value, dict):
        return references(list(value.values()))
    return set()


def new_messages(messages: list[Message], is_new: bool) -> list[Message]:
    """What a /v1 caller's message list adds to its conversation: all of it when it starts
    one, else what follows the last assistant message (the user's turn, tool results)."""
    if is_new:
        return messages
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            return messages[index + 1:]
    return messages


def continued(draft: Draft) -> Draft:
    """What a turn stores of a /v1 context that continues its conversation: the messages
    after the last assistant one, and only the attachments they refer to (the earlier ones
    are stored with the turns that brought them)."""
    kept = new_messages(draft.messages, is_new=False)
    if kept is draft.messages:
        return draft
    attachments = draft.attachments
    if attachments:
        used = references(kept)
        attachments = [a for a in attachments if a.sha256 in used]
    return dataclasses.replace(draft, messages=kept, attachments=attachments)


def reply_message(completion: Completion) -> Message:
    """The reply in Chat Completions' shape: what a history sends back as the assistant."""
    message: Message = {"role": "assistant", "content": completion.text or None}
    message.update(completion.message or {})
    if message["content"] is None and not message.get("tool_calls") \
            and not message.get("function_call"):
        message["content"] = ""
    return message


def record(draft: Draft, completion: Completion, reply: Message | None = None) -> str:
    """The exchange as stored in the turn's ``exchange_json`` (compact JSON, by orjson).
    ``reply``: ``reply_message(completion)``, when the caller has it already."""
    return fastjson.dumps({
        "api": draft.api,
        "messages": draft.messages,
        "reply": {**(reply or reply_message(completion)),
                  "finish_reason": completion.finish_reason or "stop"},
        "attachments": [a.public() for a in draft.attachments],
        "store": draft.store,
    }).decode("utf-8")


def history(exchanges: list[dict[str, Any]]) -> list[Message]:
    """The conversation so far as Chat Completions messages, from its stored exchanges (oldest
    first), references not yet restored."""
    messages: list[Message] = []
    for exchange in exchanges:
        messages.extend(exchange.get("messages") or [])
        reply = dict(exchange.get("reply") or {})
        reply.pop("finish_reason", None)
        if reply:
            messages.append(reply)
    return messages


@dataclass(frozen=True, slots=True)
class Summary:
    """What a stored exchange held besides text, for views that show a turn briefly (the web
    UI, Discord's audit): its attachments, the tools the reply called, the tool results it
    sent."""

    attachments: list[dict[str, Any]]
    tool_calls: list[tuple[str, str]]
    """(name, arguments) of each call the reply made."""
    tool_results: list[tuple[str, str]]
    """(call id, result text) of each tool result the request carried."""
    refusal: str | None = None


def summary(stored: Mapping[str, Any] | None) -> Summary | None:
    if not stored:
        return None
    reply = stored.get("reply") or {}
    calls = [(str((c.get("function") or {}).get("name")),
              str((c.get("function") or {}).get("arguments") or ""))
             for c in reply.get("tool_calls") or [] if isinstance(c, dict)]
    results = [(str(m.get("tool_call_id")), _plain(m.get("content")))
               for m in stored.get("messages") or []
               if isinstance(m, dict) and m.get("role") == "tool"]
    return Summary(list(stored.get("attachments") or []), calls, results, reply.get("refusal"))


def _plain(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
