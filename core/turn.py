"""The records of one chat turn: what was asked (``ChatRequest``), what a streaming front hears
(``ChatListener``, ``StartInfo``), what comes back (``ChatResult``), and the turn while it is
being answered (``Attempt``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .clock import utc_now
from .context_digest import Context
from .exchange import Draft
from .images import ImageFile
from .models import Conversation, PlusChoice, Principal, Turn
from .records import frozen_record
from .stopping import StopSignal
from .upstream import Completion, Message


@frozen_record
class ChatRequest:
    prompt: str | None
    conversation_id: str | None = None
    plus: PlusChoice = "false"
    access_token: str | None = field(default=None, repr=False)
    user_plus: bool = False
    external_ref: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """Extra Chat Completions fields passed upstream as given (temperature, max_tokens, ...)."""
    endpoint: str = "api"
    model: str | None = None
    """Ask for this model: only accounts serving it are picked (the /v1 API's ``model``)."""
    messages: list[Message] | None = None
    """The caller's own message list, sent instead of the stored history (the /v1 API, where
    the client owns the context). ``prompt`` is then what is stored as the turn's prompt."""
    generate_title: bool = True
    """False: the title is cut from the prompt, with no extra upstream call."""
    needs: Mapping[str, str] = field(default_factory=dict)
    """Capabilities the request needs (core/capabilities.py), each with the parameter that
    needs it: only accounts that have them all may answer."""
    exchange: Draft | None = None
    """What the turn stores of its exchange (the /v1 APIs); None: prompt and reply only."""
    responses_request: dict[str, Any] | None = None
    """A /v1/responses caller's request, sent as given to an ``api = "responses"`` account."""
    continues_turn: str | None = None
    """The turn this request continues (a /v1/responses ``previous_response_id``): it must
    still be the conversation's last, and the history is rebuilt from the stored exchanges."""
    later_title: bool = False
    """With ``generate_title`` False: the model's title is asked after the turn is stored,
    batched with other new conversations' (core/title_batch.py), and replaces the cut one."""
    stop: StopSignal | None = field(default=None, compare=False)
    """Set by the front to stop the reply as it is written; what arrived is stored."""
    replace_turn: str | None = None
    """Regenerate: answer this turn's prompt again, on the same account, and put the new
    answer in its place. It must be the conversation's last turn; ``prompt`` is ignored."""
    channel_ref: str | None = None
    """Where a client's member asked (a Discord channel id): that channel's persona applies."""
    persona: str | None = None
    """The channel's system prompt, found by the facade from ``channel_ref``; sent after the
    organisation's own."""
    images: tuple[ImageFile, ...] = ()
    """Images a front's member attached (core/images.py): sent as image parts after the
    prompt, only to an account that can do ``vision``, and stored as the turn's exchange."""
    context: Context | None = None
    """A /v1 caller's context fingerprinted (core/context_digest.py): the turn stores it with
    its reply; without a conversation id, a stored turn it continues is followed up."""
    follows_turn: str | None = None
    """Set by the service when ``context`` found the turn this request continues: it is
    followed up only if that turn is still its conversation's last and its account can
    answer; else a new conversation starts, as without it."""


@frozen_record
class StartInfo:
    conversation_id: str
    message_id: str
    parent_id: str | None
    model: str
    account: str | None
    is_new: bool


class ChatListener(Protocol):
    """Receives a streamed turn as it happens."""

    async def started(self, info: StartInfo) -> None: ...
    async def delta(self, text: str) -> None: ...
    async def title(self, title: str) -> None: ...


@frozen_record
class ChatResult:
    conversation: Conversation
    turn: Turn
    previous: Turn | None
    is_new: bool
    prompt_time: datetime
    elapsed_s: float
    finish_reason: str = "stop"
    """As the upstream said: "stop", or "length" when max_tokens cut the reply."""
    completion: Completion | None = None
    """The upstream's answer as read (tool calls, raw choices), for the /v1 fronts."""


@dataclass(slots=True)
class Attempt:
    """One turn while it is answered: who asked what, where it will be stored, since when."""

    principal: Principal
    request: ChatRequest
    prompt: str
    conversation_id: str
    message_id: str
    is_new: bool
    parent_id: str | None = None
    prompt_time: datetime = field(default_factory=utc_now)
    started: float = field(default_factory=time.perf_counter)
    title_usage: Completion | None = None
    """The title call's usage, when the model was asked for one: the member's use too."""

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def start_info(self, model: str, account: str | None) -> StartInfo:
        return StartInfo(self.conversation_id, self.message_id, self.parent_id, model,
                         account, self.is_new)
