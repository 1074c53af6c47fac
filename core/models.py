"""The records the core hands to its fronts: plain, immutable, free of SQL and HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from . import fastjson
from .records import frozen_record

Role = Literal["admin", "client", "user"]
Mode = Literal["pool", "own_key"]
PlusChoice = Literal["false", "true", "any"]


@dataclass(frozen=True, slots=True)
class Principal:
    id: int
    role: Role
    name: str
    client_id: int | None
    external_id: str | None
    plus: bool
    key_prefix: str
    created_utc: str
    disabled_utc: str | None = None
    last_used_utc: str | None = None
    has_own_key: bool = False
    limits: tuple[tuple[str, float | None], ...] = ()
    """Budgets set for this principal alone (update-user), as (kind, value) pairs; a value of
    None lifts the kind's tier default. Kinds not listed follow the tier default."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_client(self) -> bool:
        return self.role == "client"

    def public(self) -> dict[str, Any]:
        """What may be shown about this principal (never its key or credentials)."""
        return {
            "id": self.id,
            "role": self.role,
            "name": self.name,
            "client_id": self.client_id,
            "userid": self.external_id,
            "plus": self.plus,
            "key_prefix": self.key_prefix,
            "created": self.created_utc,
            "disabled": self.disabled_utc,
            "last_used": self.last_used_utc,
            "has_own_key": self.has_own_key,
            "limits": {kind: ("none" if value is None else value) for kind, value in self.limits},
        }


@frozen_record
class Conversation:
    id: str
    owner_id: int
    title: str
    mode: Mode
    account: str | None
    model: str
    client_id: int | None
    external_ref: str | None
    turn_count: int
    created_utc: str
    updated_utc: str

    def touched(self, updated_utc: str, turn_count: int | None = None) -> Conversation:
        """This conversation as a stored turn leaves it: updated then, and with
        ``turn_count`` turns when given. (``dataclasses.replace`` costs several times as
        much, and this runs once or twice a turn.)"""
        return Conversation(self.id, self.owner_id, self.title, self.mode, self.account,
                            self.model, self.client_id, self.external_ref,
                            self.turn_count if turn_count is None else turn_count,
                            self.created_utc, updated_utc)

    def public(self) -> dict[str, Any]:
        return {
            "conversation_id": self.id,
            "title": self.title,
            "owner_id": self.owner_id,
            "mode": self.mode,
            "account": self.account,
            "model": self.model,
            "external_ref": self.external_ref,
            "turns": self.turn_count,
            "created": self.created_utc,
            "updated": self.updated_utc,
        }


@frozen_record
class Turn:
    id: str
    conversation_id: str
    parent_id: str | None
    position: int
    prompt: str
    reply: str
    model: str
    upstream_id: str | None
    prompt_utc: str
    reply_utc: str
    duration_ms: int
    input_tokens: int | None
    output_tokens: int | None
    stopped: bool = False
    """The member stopped the reply while it was written: ``reply`` is what had arrived."""
    exchange_json: str | None = None
    """The exchange as it was (see core/exchange.py), for /v1 turns; None for plain ones."""
    context_digest: bytes | None = None
    """The fingerprint of the /v1 context this turn ends (core/context_digest.py)."""

    @property
    def exchange(self) -> dict[str, Any] | None:
        if not self.exchange_json:
            return None
        value = fastjson.loads(self.exchange_json)
        return value if isinstance(value, dict) else None

    def public(self) -> dict[str, Any]:
        exchange = self.exchange
        extra: dict[str, Any] = {}
        if exchange is not None:
            # The exchange as stored: content parts (attachments by hash), tool calls and
            # results, the finish reason.
            extra = {"exchange": {key: exchange.get(key)
                                  for key in ("api", "messages", "reply")},
                     "attachments": exchange.get("attachments") or [],
                     "finish_reason": (exchange.get("reply") or {}).get("finish_reason")}
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "position": self.position,
            "prompt": self.prompt,
            "reply": self.reply,
            "model": self.model,
            "prompt_time": self.prompt_utc,
            "reply_time": self.reply_utc,
            "duration_ms": self.duration_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "stopped": self.stopped,
            **extra,
        }


@dataclass(frozen=True, slots=True)
class Persona:
    """A system prompt for the conversations a client's members start in one channel."""

    client_id: int
    channel_ref: str
    label: str
    """What the channel is called where it lives (``#general``), for lists."""
    system_prompt: str
    updated_utc: str

    def public(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "channel": self.channel_ref, "label": self.label,
                "system_prompt": self.system_prompt, "updated": self.updated_utc}


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """A model a member may pick for a new conversation, and what it offers."""

    model: str
    tier: str
    """"free" or "plus": the tier of the first account serving it."""
    account: str
    capabilities: tuple[str, ...] = ("text",)
    """What the model takes besides text (once accounts declare it, e.g. "vision")."""

    def label(self) -> str:
        return f"{self.model} ({self.tier}; {', '.join(self.capabilities)})"
