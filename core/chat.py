"""One chat turn, from prompt to stored reply.

New conversations take the next healthy account of the tiers asked for and move on to the next one
when an account fails before it has said anything. Follow-ups go to the account that started the
conversation and nowhere else. Turns of one conversation are serialised by a per-conversation
lock held from reading the history to storing the reply, so two follow-ups sent at once both land,
in order, the second seeing the first. Nothing is stored until the reply is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from .accounts import BUSY_RETRY_AFTER_S, Account, AccountPool, SlotRefused
from .clock import iso, utc_now
from .config import Settings
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    UpstreamError,
)
from .history import build_messages, estimate_tokens, prompt_budget
from .ids import new_id
from .models import Conversation, Mode, PlusChoice, Principal, Turn
from .storage.conversations import ConversationRepo, UsageRecord
from .storage.limits import RateLimiter
from .titles import TITLE_MAX_TOKENS, clean_title, fallback_title, title_messages
from .upstream import Completion, Message, Target, UpstreamFailure, complete
from .wire import content_text

log = logging.getLogger(__name__)

MAX_HISTORY_TURNS = 500
"""Turns read back for the history; the context budget nearly always binds well before this."""


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class ChatResult:
    conversation: Conversation
    turn: Turn
    previous: Turn | None
    is_new: bool
    prompt_time: datetime
    elapsed_s: float
    finish_reason: str = "stop"
    """As the upstream said: "stop", or "length" when max_tokens cut the reply."""


class ChatService:
    def __init__(
        self,
        settings: Settings,
        pool: AccountPool,
        conversations: ConversationRepo,
        own_key_session: aiohttp.ClientSession,
        *,
        limiter: RateLimiter,
        lock: Callable[[str], AbstractAsyncContextManager[Any]],
    ) -> None:
        """``lock(key)``: held by one holder at a time in every process sharing the storage;
        the turns of a conversation are taken one after the other under it."""
        self.settings = settings
        self.pool = pool
        self.conversations = conversations
        self._own_key_session = own_key_session
        self._lock = lock
        self.limiter = limiter

    # ----------------------------------------------------------------- entry point

    async def chat(
        self,
        principal: Principal,
        request: ChatRequest,
        *,
        own_key: str | None = None,
        listener: ChatListener | None = None,
    ) -> ChatResult:
        """Answer one prompt as ``principal``. ``own_key`` is the member's stored credential,
        used when the request carries no ``access_token`` for new conversations and to
        continue own-key ones."""
        prompt = (request.prompt or "").strip() or self.settings.chat.default_prompt
        if len(prompt) > self.settings.chat.max_prompt_chars:
            raise TooLarge(
                f"the prompt has {len(prompt)} characters; the limit is "
                f"{self.settings.chat.max_prompt_chars}",
                code="prompt_too_large",
            )
        await self.limiter.check(principal.id)
        if request.conversation_id:
            return await self._follow_up(principal, request, prompt, listener, own_key)
        return await self._start(principal, request, prompt, own_key, listener)

    # ----------------------------------------------------------------- new conversations

    async def _start(
        self,
        principal: Principal,
        request: ChatRequest,
        prompt: str,
        own_key: str | None,
        listener: ChatListener | None,
    ) -> ChatResult:
        prompt_time = utc_now()
        started = time.perf_counter()
        client_id = _ref_owner(principal, request)
        if client_id is not None and request.external_ref and \
                await self.conversations.by_external_ref(client_id, request.external_ref):
            # Checked before the upstream call, so a clash costs no tokens and no reply is lost.
            raise Conflict(f"the reference {request.external_ref!r} already names a conversation",
                           code="external_ref_taken")
        credential = request.access_token or own_key
        conversation_id, message_id = new_id(), new_id()
        if credential:
            target = self._own_key_target(credential, request.user_plus)
            messages = self._messages([], prompt, self.settings.own_key.context_tokens, request)
            try:
                completion, title = await self._answer_with_title(
                    target, None, messages, prompt, request, listener, new_conversation=True,
                    conversation_id=conversation_id, message_id=message_id,
                )
            except UpstreamFailure as failure:
                await self._log_failure(principal, request, None, None, started, failure)
                raise _as_gateway_error(failure, None) from None
            return await self._store_new(
                principal, request, prompt, prompt_time, started, "own_key", None,
                completion, title, conversation_id, message_id, requested_model=target.model,
            )

        if request.plus == "true" and not _may_use_plus(principal):
            raise Forbidden("your key does not include the plus tier; ask with plus=false",
                            code="plus_not_allowed")
        choice: PlusChoice = request.plus
        if choice == "any" and not _may_use_plus(principal):
            choice = "false"
        if request.model is not None:
            self._check_model(request.model, choice)
        elif not self.pool.candidates(choice):
            tier = {"false": "free", "true": "plus", "any": "any"}[choice]
            raise Unavailable(f"no upstream account is configured for the {tier} tier",
                              code="no_account")

        tried: set[str] = set()
        last_failure: UpstreamFailure | None = None
        busy = False
        # One bound on the whole search: waiting for a busy account's slot (only when every
        # healthy account is busy) never adds up across accounts.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.chat.slot_wait_s
        while (account := self.pool.pick(choice, tried, request.model)) is not None:
            tried.add(account.name)
            messages = self._messages([], prompt, account.settings.context_tokens, request)
            progress = _Progress(listener)
            try:
                completion, title = await self._answer_with_title(
                    account.target(request.model), account, messages, prompt, request,
                    progress if listener is not None else None,
                    new_conversation=True, conversation_id=conversation_id,
                    message_id=message_id, slot_wait_s=max(0.0, deadline - loop.time()),
                )
            except SlotRefused as refusal:
                # Nothing was asked of it: busy past the wait, or cooled while we waited.
                busy = busy or refusal.why == "busy"
                continue
            except UpstreamFailure as failure:
                last_failure = failure
                if progress.sent_text or not failure.is_the_accounts_fault:
                    await self._log_failure(principal, request, None, account.name,
                                            started, failure)
                    raise _as_gateway_error(failure, account.name) from None
                log.warning("account %s failed (%s); trying the next one", account.name,
                            failure.kind)
                continue
            account.record_success(completion.input_tokens, completion.output_tokens)
            return await self._store_new(
                principal, request, prompt, prompt_time, started, "pool", account.name,
                completion, title, conversation_id, message_id,
                requested_model=account.target(request.model).model,
            )
        retry = self.pool.soonest_recovery(choice, request.model)
        reason = "every account of this tier is cooling down or out of service"
        if busy and last_failure is None:
            await self._log_failure(principal, request, None, None, started, None, "busy")
            raise Unavailable(
                "every upstream account of this tier is busy (all its slots taken, none freed "
                f"within {self.settings.chat.slot_wait_s:g} s); try again shortly",
                code="accounts_busy", retry_after=BUSY_RETRY_AFTER_S,
            )
        if last_failure is not None:
            reason = f"every account of this tier failed (last: {_describe(last_failure)})"
        await self._log_failure(principal, request, None, None, started, None, "unavailable")
        raise Unavailable(f"no upstream account can answer now: {reason}",
                          code="no_healthy_account", retry_after=retry)

    async def _store_new(
        self,
        principal: Principal,
        request: ChatRequest,
        prompt: str,
        prompt_time: datetime,
        started: float,
        mode: Mode,
        account: str | None,
        completion: Completion,
        title: str,
        conversation_id: str,
        message_id: str,
        *,
        requested_model: str | None = None,
    ) -> ChatResult:
        elapsed = time.perf_counter() - started
        now = iso(utc_now())
        client_id = _ref_owner(principal, request)
        # The conversation keeps the model name it asked for, which its follow-ups ask for
        # again; an upstream may echo another (a dated snapshot, Azure's model behind a
        # deployment name) that it would not accept. Each turn records the echoed one.
        conversation = Conversation(
            id=conversation_id, owner_id=principal.id, title=title, mode=mode, account=account,
            model=requested_model or completion.model, client_id=client_id,
            external_ref=request.external_ref,
            turn_count=1, created_utc=iso(prompt_time), updated_utc=now,
        )
        turn = self._turn(message_id, conversation_id, None, 0, prompt, completion,
                          prompt_time, now, elapsed)
        await self.conversations.create_with_turn(
            conversation, turn, self._usage(principal, request, conversation_id, account,
                                            completion, now, elapsed),
        )
        return ChatResult(conversation, turn, None, True, prompt_time, elapsed,
                          completion.finish_reason or "stop")

    # ----------------------------------------------------------------- follow-ups

    async def _follow_up(
        self,
        principal: Principal,
        request: ChatRequest,
        prompt: str,
        listener: ChatListener | None,
        own_key: str | None = None,
    ) -> ChatResult:
        assert request.conversation_id is not None
        conversation = await self.conversations.get(request.conversation_id)
        if conversation is None or conversation.owner_id != principal.id:
            raise NotFound("no such conversation", code="conversation_not_found")
        # The member's stored own key continues an own-key conversation as the token would.
        credential = request.access_token or own_key
        if conversation.mode == "own_key" and not credential:
            raise Conflict(
                "this conversation was started with your own access_token; send it again to "
                "follow up", code="mode_mismatch",
            )
        if conversation.mode == "pool" and request.access_token:
            raise Conflict(
                "this conversation runs on the organisation's account; follow up without "
                "access_token", code="mode_mismatch",
            )
        account: Account | None = None
        if conversation.mode == "pool":
            account = self._account_for_follow_up(conversation, principal)
            target = account.target(conversation.model)
            context = account.settings.context_tokens
        else:
            assert credential is not None
            target = self._own_key_target(credential, request.user_plus)
            target.model = conversation.model
            context = self.settings.own_key.context_tokens

        async with self._lock(f"conversation:{conversation.id}"):
            if account is not None:
                # The turn before this one, which held the lock, may have cooled the account.
                account = self._account_for_follow_up(conversation, principal)
            prompt_time = utc_now()
            started = time.perf_counter()
            # A caller that sends its own context (/v1) needs only the last turn, as parent.
            recent = await self.conversations.recent_turns(
                conversation.id, 1 if request.messages is not None else MAX_HISTORY_TURNS)
            if not recent:
                raise NotFound("no such conversation", code="conversation_not_found")
            previous = recent[0]
            previous_response_id = None
            if target.api == "responses":
                # The upstream holds the history: send only the new prompt, chained by id.
                previous_response_id = previous.upstream_id
                if not previous_response_id:
                    raise Conflict("this conversation's last turn has no upstream response id "
                                   "to continue from", code="history_unavailable")
                messages = [{"role": "user", "content": prompt}]
            else:
                messages = self._messages(recent, prompt, context, request)
            message_id = new_id()
            try:
                completion, _ = await self._answer_with_title(
                    target, account, messages, prompt, request, listener,
                    new_conversation=False, conversation_id=conversation.id,
                    message_id=message_id, parent_id=previous.id,
                    previous_response_id=previous_response_id,
                    slot_wait_s=self.settings.chat.slot_wait_s,
                )
            except SlotRefused as refusal:
                if refusal.why != "busy":
                    # It cooled (or went out) while this turn waited: say so, as before a wait.
                    self._account_for_follow_up(conversation, principal)
                await self._log_failure(principal, request, conversation.id, conversation.account,
                                        started, None, "busy")
                raise Unavailable(
                    f"this conversation's account '{refusal.account.name}' is busy: all its "
                    f"{refusal.account.settings.max_concurrency} slots are taken and none freed "
                    f"within {self.settings.chat.slot_wait_s:g} s; try again shortly",
                    code="account_busy", retry_after=BUSY_RETRY_AFTER_S,
                ) from None
            except UpstreamFailure as failure:
                await self._log_failure(principal, request, conversation.id, conversation.account,
                                        started, failure)
                raise _as_gateway_error(failure, conversation.account) from None
            if account is not None:
                account.record_success(completion.input_tokens, completion.output_tokens)
            elapsed = time.perf_counter() - started
            now = iso(utc_now())
            turn = self._turn(message_id, conversation.id, previous.id, previous.position + 1,
                              prompt, completion, prompt_time, now, elapsed)
            stored = await self.conversations.append_turn(
                turn, self._usage(principal, request, conversation.id, conversation.account,
                                  completion, now, elapsed),
            )
            if not stored:
                raise NotFound("the conversation was removed while it was being answered",
                               code="conversation_removed")
        updated = dataclasses.replace(conversation, turn_count=turn.position + 1,
                                      updated_utc=turn.reply_utc)
        return ChatResult(updated, turn, previous, False, prompt_time, elapsed,
                          completion.finish_reason or "stop")

    def _account_for_follow_up(self, conversation: Conversation, principal: Principal) -> Account:
        name = conversation.account or ""
        account = self.pool.get(name)
        if account is None:
            raise Conflict(
                f"this conversation started on account '{name}', which is no longer configured; "
                "start a new conversation", code="account_gone",
            )
        if account.tier == "plus" and not _may_use_plus(principal):
            raise Forbidden("this conversation runs on the plus tier, which your key no longer "
                            "includes", code="plus_not_allowed")
        health = account.health()
        if health == "out":
            raise Unavailable(
                f"this conversation's account '{name}' is out of service ({account.out_reason});"
                " an admin must restore it", code="account_out",
            )
        if health == "cooling":
            wait = account.cooldown_left()
            raise Unavailable(
                f"this conversation's account '{name}' is cooling down after "
                f"{account.cooling_reason}; try again in {wait:.0f} s",
                code="account_cooling", retry_after=wait,
            )
        return account

    # ----------------------------------------------------------------- the upstream call

    async def _answer_with_title(
        self,
        target: Target,
        account: Account | None,
        messages: list[Message],
        prompt: str,
        request: ChatRequest,
        listener: ChatListener | None,
        *,
        new_conversation: bool,
        conversation_id: str,
        message_id: str,
        parent_id: str | None = None,
        previous_response_id: str | None = None,
        slot_wait_s: float = 0.0,
    ) -> tuple[Completion, str]:
        """The reply and, for a new conversation, its title, asked of the same target at once.
        With an account, a slot of it is won first (``SlotRefused`` if none comes within
        ``slot_wait_s`` or the account is no longer healthy), before the listener hears
        anything, so a refused attempt leaves no trace with the caller."""
        title_task = None
        try:
            async with contextlib.AsyncExitStack() as slot:
                if account is not None:
                    await slot.enter_async_context(account.slot(slot_wait_s))
                if listener is not None:
                    await listener.started(StartInfo(conversation_id, message_id, parent_id,
                                                     target.model,
                                                     target.name if account else None,
                                                     new_conversation))
                # Only now, so a listener hears "started" before any title; the reply is not
                # asked for before this point either, so the title still costs no wait.
                if new_conversation:
                    title_task = asyncio.create_task(
                        self._title(target, account, prompt, listener)
                        if request.generate_title
                        else self._prompt_title(prompt, listener)
                    )
                try:
                    completion = await self._call(target, messages, request, listener,
                                                  previous_response_id)
                except UpstreamFailure as failure:
                    if account is not None:
                        # Recorded before the slot is freed, so a call that waited for it
                        # finds the account cooling rather than asking it again.
                        await self._record_failure(account, failure)
                    raise
            title = ""
            if title_task is not None:
                title = await self._await_title(title_task, prompt, listener)
            return completion, title
        finally:
            if title_task is not None and not title_task.done():
                title_task.cancel()

    async def _call(self, target: Target, messages: list[Message], request: ChatRequest,
                    listener: ChatListener | None,
                    previous_response_id: str | None = None) -> Completion:
        completion = await complete(target, messages, options=request.options,
                                    on_delta=listener.delta if listener is not None else None,
                                    previous_response_id=previous_response_id,
                                    max_reply_bytes=self.settings.chat.max_reply_bytes)
        # Some servers (llama.cpp) report no usage when streaming: every turn still gets token
        # counts, estimated as the history is (about 3.5 characters a token).
        if completion.input_tokens is None:
            completion.input_tokens = sum(estimate_tokens(content_text(m.get("content")))
                                          for m in messages)
        if completion.output_tokens is None:
            estimate = estimate_tokens(completion.text) if completion.text else 0
            # The estimate errs large (right for trimming history), but the upstream cannot
            # have written more than it was allowed: a reply cut at 256 tokens is 256, not 295.
            limit = _max_tokens(request.options) or target.max_tokens
            completion.output_tokens = min(estimate, limit) if limit else estimate
        return completion

    @staticmethod
    async def _prompt_title(prompt: str, listener: ChatListener | None) -> str:
        title = fallback_title(prompt)
        if listener is not None:
            await listener.title(title)
        return title

    def _check_model(self, model: str, choice: PlusChoice) -> None:
        """Unknown model: 404. Served only on a tier the caller may not use: 403."""
        if self.pool.candidates(choice, model):
            return
        if self.pool.candidates("any", model):
            raise Forbidden(f"the model {model!r} is on the plus tier, which your key does not "
                            "include", code="model_not_allowed")
        raise NotFound(f"the model {model!r} is not served by this gateway",
                       code="model_not_found")

    async def _title(self, target: Target, account: Account | None, prompt: str,
                     listener: ChatListener | None) -> str:
        """The model's title, asked beside the reply in a slot of its own, but only in one
        free at once: the title must neither take the account past ``max_concurrency`` nor
        queue ahead of, or delay, anyone's reply. Without a free slot it is cut from the
        prompt, as it would be if the call failed."""
        try:
            async with account.slot(0, is_reply=False) if account is not None \
                    else contextlib.nullcontext():
                completion = await complete(
                    target, title_messages(prompt),
                    options={"max_tokens": TITLE_MAX_TOKENS, "temperature": 0.2},
                    purpose="title",
                )
            title = clean_title(completion.text) or fallback_title(prompt)
        except SlotRefused:
            log.debug("no free slot on %s for a title; using the prompt", target.name)
            title = fallback_title(prompt)
        except UpstreamFailure as failure:
            log.info("title request on %s failed (%s); using the prompt", target.name,
                     failure.kind)
            title = fallback_title(prompt)
        if listener is not None:
            await listener.title(title)
        return title

    async def _await_title(self, task: asyncio.Task[str], prompt: str,
                           listener: ChatListener | None = None) -> str:
        try:
            return await asyncio.wait_for(asyncio.shield(task),
                                          self.settings.chat.title_timeout_s)
        except TimeoutError:
            task.cancel()
            title = fallback_title(prompt)
            if listener is not None:
                # The title task never told the listener; a streaming front must still learn
                # the title that is stored.
                await listener.title(title)
            return title

    # ----------------------------------------------------------------- helpers

    def _own_key_target(self, credential: str, plus: bool) -> Target:
        cfg = self.settings.own_key
        accounts = self.settings.accounts
        base_url = cfg.base_url or (accounts[0].base_url if accounts else "")
        if not base_url:
            raise BadRequest("own-key mode is not available: no base URL is configured",
                             code="own_key_unavailable")
        free = next((a.model for a in accounts if a.tier == "free"), "")
        paid = next((a.model for a in accounts if a.tier == "plus"), "")
        model = (cfg.plus_model or paid or cfg.model or free) if plus else (cfg.model or free)
        if not model:
            raise BadRequest("own-key mode is not available: no model is configured",
                             code="own_key_unavailable")
        return Target(name="own_key", base_url=base_url.rstrip("/"), model=model,
                      session=self._own_key_session, api_key=credential,
                      timeout_s=cfg.timeout_s)

    def _messages(self, recent: list[Turn], prompt: str, context_tokens: int,
                  request: ChatRequest) -> list[Message]:
        if request.messages is not None:
            return request.messages
        budget = prompt_budget(context_tokens, _max_tokens(request.options))
        messages = build_messages(recent, prompt, budget=budget,
                                  system_prompt=self.settings.chat.system_prompt)
        if messages is None:
            raise TooLarge(
                f"the prompt does not fit the model's context of {context_tokens} tokens",
                code="prompt_too_large",
            )
        return messages

    async def _record_failure(self, account: Account, failure: UpstreamFailure) -> None:
        await self.pool.record_failure(account, failure, self.settings.chat.cooldown_s,
                                       self.settings.chat.max_cooldown_s)

    @staticmethod
    def _turn(message_id: str, conversation_id: str, parent_id: str | None, position: int,
              prompt: str, completion: Completion, prompt_time: datetime, now: str,
              elapsed: float) -> Turn:
        return Turn(
            id=message_id, conversation_id=conversation_id, parent_id=parent_id,
            position=position, prompt=prompt, reply=completion.text, model=completion.model,
            upstream_id=completion.upstream_id, prompt_utc=iso(prompt_time), reply_utc=now,
            duration_ms=int(elapsed * 1000), input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
        )

    @staticmethod
    def _usage(principal: Principal, request: ChatRequest, conversation_id: str | None,
               account: str | None, completion: Completion, now: str,
               elapsed: float) -> UsageRecord:
        return UsageRecord(
            principal_id=principal.id, client_id=principal.client_id,
            conversation_id=conversation_id, account=account, model=completion.model,
            endpoint=request.endpoint, outcome="ok", created_utc=now,
            duration_ms=int(elapsed * 1000), input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
        )

    async def _log_failure(self, principal: Principal, request: ChatRequest,
                           conversation_id: str | None, account: str | None, started: float,
                           failure: UpstreamFailure | None, outcome: str | None = None) -> None:
        await self.conversations.log_usage(UsageRecord(
            principal_id=principal.id, client_id=principal.client_id,
            conversation_id=conversation_id, account=account, model=None,
            endpoint=request.endpoint,
            outcome=outcome or (f"upstream_{failure.kind}" if failure else "error"),
            created_utc=iso(utc_now()),
            duration_ms=int((time.perf_counter() - started) * 1000),
        ))


class _Progress:
    """Wraps a listener to know whether any text reached the caller: after that, a failure can
    no longer be retried on another account without the caller seeing two answers."""

    def __init__(self, inner: ChatListener | None) -> None:
        self.inner = inner
        self.sent_text = False

    async def started(self, info: StartInfo) -> None:
        if self.inner is not None:
            await self.inner.started(info)

    async def delta(self, text: str) -> None:
        self.sent_text = True
        if self.inner is not None:
            await self.inner.delta(text)

    async def title(self, title: str) -> None:
        if self.inner is not None:
            await self.inner.title(title)


def _max_tokens(options: dict[str, Any]) -> int | None:
    """The reply length the caller asked for, under either of its Chat Completions names."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = options.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _ref_owner(principal: Principal, request: ChatRequest) -> int | None:
    """The client whose namespace a conversation's external reference lives in."""
    if not request.external_ref:
        return None
    return principal.id if principal.is_client else principal.client_id


def _may_use_plus(principal: Principal) -> bool:
    return principal.plus or principal.is_admin


def _describe(failure: UpstreamFailure) -> str:
    return {
        "rate_limited": "rate limited",
        "server": "server error",
        "timeout": "timed out",
        "proxy": "proxy failure",
        "connect": "unreachable",
        "auth": "key refused",
        "misconfigured": "wrong base_url or model",
        "garbage": "invalid answer",
        "rejected": "request refused",
        "reply_too_large": "reply too large",
    }[failure.kind]


def _as_gateway_error(failure: UpstreamFailure, account: str | None) -> GatewayError:
    where = f"account '{account}'" if account else "your own key's upstream"
    if account is None and failure.kind == "auth":
        return BadRequest("the upstream refused your access_token", code="access_token_rejected")
    if failure.kind == "rejected":
        return BadRequest(f"the upstream refused the request: {failure.detail}",
                          code="upstream_rejected")
    if failure.kind == "rate_limited":
        if account is None:
            return RateLimited(f"your own key is rate limited upstream: {failure.detail}",
                               code="upstream_rate_limited", retry_after=failure.retry_after)
        return Unavailable(f"{where} is rate limited; try again later",
                           code="upstream_rate_limited", retry_after=failure.retry_after)
    if failure.kind == "misconfigured" and account is None:
        return BadRequest(f"the upstream does not know this model or path: {failure.detail}",
                          code="upstream_rejected")
    if failure.takes_out:
        return Unavailable(f"{where} is out of service ({_describe(failure)})",
                           code="account_out")
    if failure.kind == "timeout":
        return UpstreamError(f"{where} did not answer in time", code="upstream_timeout")
    if failure.kind == "reply_too_large":
        return UpstreamError(f"the reply from {where} was refused: {failure.detail} "
                             "(max_reply_bytes); nothing was stored",
                             code="upstream_reply_too_large")
    return UpstreamError(f"{where} failed: {_describe(failure)}", code=f"upstream_{failure.kind}")

