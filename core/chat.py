"""One chat turn, from prompt to stored reply: the order of things.

New conversations take the next healthy account of the tiers asked for and move on to the next one
when an account fails before it has said anything. Follow-ups go to the account that started the
conversation and nowhere else. Turns of one conversation are serialised by a per-conversation
lock (across every process sharing the storage) held from reading the history to storing the
reply, so two follow-ups sent at once both land, in order, the second seeing the first. Nothing is
stored until the reply is complete.

The jobs around it live beside it: ``answering`` asks the upstream (reply, title, slots),
``recording`` stores the outcome, ``upstream_errors`` says what a failure means to the caller,
``turn`` holds the records a turn passes around.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from . import exchange, images
from .accounts import BUSY_RETRY_AFTER_S, Account, AccountPool, SlotRefused
from .answering import Answerer, Progress, max_tokens
from .billing import cost_of
from .budgets import Budgets, Hold
from .capabilities import CapabilityMissing, can, missing
from .capabilities import refusal as capability_refusal
from .config import Settings
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    TooLarge,
    Unavailable,
)
from .history import build_messages, estimate_tokens, prompt_budget
from .ids import new_id
from .models import Conversation, PlusChoice, Principal, Turn
from .observer import NO_OBSERVER, Observer
from .recording import TurnRecorder, ref_owner
from .storage.conversations import ConversationRepo
from .storage.limits import RateLimiter
from .title_batch import Pending, TitleBatcher
from .titles import TITLE_MAX_TOKENS
from .turn import Attempt, ChatListener, ChatRequest, ChatResult, StartInfo
from .upstream import Message, Target, UpstreamFailure
from .upstream_errors import as_gateway_error, describe
from .upstream_http import UpstreamSession
from .wire import content_text

__all__ = ["ChatListener", "ChatRequest", "ChatResult", "ChatService", "StartInfo"]

log = logging.getLogger(__name__)

MAX_HISTORY_TURNS = 500
"""Turns read back for the history; the context budget nearly always binds well before this."""


class ChatService:
    def __init__(
        self,
        settings: Settings,
        pool: AccountPool,
        conversations: ConversationRepo,
        own_key_session: UpstreamSession,
        *,
        limiter: RateLimiter,
        lock: Callable[[str], AbstractAsyncContextManager[Any]],
        budgets: Budgets,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        """``lock(key)``: held by one holder at a time in every process sharing the storage;
        the turns of a conversation are taken one after the other under it."""
        self.settings = settings
        self.pool = pool
        self.conversations = conversations
        self._own_key_session = own_key_session
        self._lock = lock
        self.limiter = limiter
        self.budgets = budgets
        self._answerer = Answerer(settings, pool)
        self._recorder = TurnRecorder(conversations, pool, budgets, observer)
        self.titles = TitleBatcher(settings, pool, conversations, budgets)
        self.answering = 0
        """Prompts being answered now, by every way in (``quiet``)."""

    def quiet(self) -> bool:
        """At most one prompt is being answered: nothing else waits for the event loop, so
        its turn may be committed there (``Storage.commit_on_the_loop_when``)."""
        return self.answering <= 1

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
        self.answering += 1
        try:
            return await self._chat(principal, request, own_key, listener)
        finally:
            self.answering -= 1

    async def _chat(self, principal: Principal, request: ChatRequest, own_key: str | None,
                    listener: ChatListener | None) -> ChatResult:
        prompt = (request.prompt or "").strip() or (
            images.prompt_for(len(request.images)) if request.images
            else self.settings.chat.default_prompt)
        if len(prompt) > self.settings.chat.max_prompt_chars:
            raise TooLarge(
                f"the prompt has {len(prompt)} characters; the limit is "
                f"{self.settings.chat.max_prompt_chars}",
                code="prompt_too_large",
            )
        if request.images:
            # Only an account that sees images may answer; the turn stores them by hash.
            request = dataclasses.replace(
                request, needs={**request.needs, "vision": "images"},
                exchange=images.draft(prompt, request.images,
                                      self.settings.chat.max_attachment_bytes))
        await self.limiter.check(principal.id)
        if request.conversation_id:
            return await self._follow_up(principal, request, prompt, listener, own_key)
        continuing = await self._continuing(principal, request)
        if continuing is not None:
            try:
                return await self._follow_up(principal, continuing, prompt, listener, own_key)
            except _NotContinued:
                pass  # answered as a new conversation, as it would have been
        attempt = Attempt(principal, request, prompt, new_id(), new_id(), is_new=True)
        result = await self._start(attempt, own_key, listener)
        conversation = result.conversation
        if request.later_title and conversation.account is not None:
            self.titles.add(Pending(conversation.id, prompt, conversation.title,
                                    conversation.account, conversation.model, principal,
                                    request.endpoint))
        return result

    # ----------------------------------------------------------------- new conversations

    async def _start(self, attempt: Attempt, own_key: str | None,
                     listener: ChatListener | None) -> ChatResult:
        request = attempt.request
        client_id = ref_owner(attempt)
        if client_id is not None and request.external_ref and \
                await self.conversations.by_external_ref(client_id, request.external_ref):
            # Checked before the upstream call, so a clash costs no tokens and no reply is lost.
            raise Conflict(f"the reference {request.external_ref!r} already names a conversation",
                           code="external_ref_taken")
        credential = request.access_token or own_key
        if credential:
            return await self._start_on_own_key(attempt, credential, listener)
        choice = self._tier_choice(attempt)
        hold = await self._hold(attempt, self.pool.candidates(choice, request.model),
                                lambda: self._new_messages_estimate(attempt))
        try:
            return await self._start_on_pool(attempt, choice, listener, hold)
        finally:
            await self.budgets.release(hold)  # nothing, once the turn is stored

    async def _start_on_pool(self, attempt: Attempt, choice: PlusChoice,
                             listener: ChatListener | None, hold: Hold | None) -> ChatResult:
        request = attempt.request
        tried: set[str] = set()
        last_failure: UpstreamFailure | None = None
        busy = False
        # One bound on the whole search: waiting for a busy account's slot (only when every
        # healthy account is busy) never adds up across accounts.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.chat.slot_wait_s
        needs = list(request.needs)
        while (account := self.pool.pick(choice, tried, request.model, needs)) is not None:
            tried.add(account.name)
            messages = self._messages([], attempt.prompt, account.settings.context_tokens,
                                      request)
            progress = Progress(listener)
            target = account.target(request.model)
            try:
                completion, title = await self._answerer.answer(
                    attempt, target, account, messages,
                    progress if listener is not None else None,
                    slot_wait_s=max(0.0, deadline - loop.time()),
                )
            except SlotRefused as refusal:
                # Nothing was asked of it: busy past the wait, or cooled while we waited.
                busy = busy or refusal.why == "busy"
                continue
            except UpstreamFailure as failure:
                last_failure = failure
                if progress.sent_text or not failure.is_the_accounts_fault:
                    await self._recorder.failed(attempt, account.name, failure)
                    raise as_gateway_error(failure, account.name) from None
                log.warning("account %s failed (%s); trying the next one", account.name,
                            failure.kind)
                continue
            account.record_success(completion.input_tokens, completion.output_tokens)
            return await self._recorder.store_new(attempt, "pool", account.name, completion,
                                                  title, requested_model=target.model,
                                                  hold=hold)
        raise await self._none_could_answer(attempt, choice, busy, last_failure)

    async def _start_on_own_key(self, attempt: Attempt, credential: str,
                                listener: ChatListener | None) -> ChatResult:
        target = self._own_key_target(credential, attempt.request.user_plus)
        messages = self._messages([], attempt.prompt, self.settings.own_key.context_tokens,
                                  attempt.request)
        try:
            completion, title = await self._answerer.answer(attempt, target, None, messages,
                                                            listener)
        except UpstreamFailure as failure:
            await self._recorder.failed(attempt, None, failure)
            raise as_gateway_error(failure, None) from None
        return await self._recorder.store_new(attempt, "own_key", None, completion, title,
                                              requested_model=target.model)

    def _tier_choice(self, attempt: Attempt) -> PlusChoice:
        """The tiers this new conversation may use; refused when it asks for one it may not,
        or when none serves it."""
        request, principal = attempt.request, attempt.principal
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
        self._check_capabilities(request, choice)
        return choice

    def _check_capabilities(self, request: ChatRequest, choice: PlusChoice) -> None:
        """A 400 naming the parameter when no account the request may use can do all it
        needs (an account that can do the rest is no answer: the part would be lost)."""
        if not request.needs or self.pool.candidates(choice, request.model, list(request.needs)):
            return
        serving = self.pool.candidates(choice, request.model)
        for capability, param in request.needs.items():
            if not any(can(a.settings.api, a.settings.capabilities, capability)
                       for a in serving):
                where = (f"no account serving the model {request.model!r} can"
                         if request.model else "no account you may use can")
                raise capability_refusal(capability, param, where)
        first = next(iter(request.needs.values()))
        raise CapabilityMissing(
            f"'{first}' and the other parameters of this request together need more than any "
            "one account you may use can do", first)

    async def _none_could_answer(self, attempt: Attempt, choice: PlusChoice, busy: bool,
                                 last_failure: UpstreamFailure | None) -> Unavailable:
        """Every account of the tier was tried, busy, cooling or out: the usage row, and the
        error saying which, with when to try again."""
        if busy and last_failure is None:
            await self._recorder.failed(attempt, None, None, "busy")
            return Unavailable(
                "every upstream account of this tier is busy (all its slots taken, none freed "
                f"within {self.settings.chat.slot_wait_s:g} s); try again shortly",
                code="accounts_busy", retry_after=BUSY_RETRY_AFTER_S,
            )
        reason = "every account of this tier is cooling down or out of service"
        if last_failure is not None:
            reason = f"every account of this tier failed (last: {describe(last_failure)})"
        await self._recorder.failed(attempt, None, None, "unavailable")
        return Unavailable(f"no upstream account can answer now: {reason}",
                          code="no_healthy_account",
                          retry_after=self.pool.soonest_recovery(choice, attempt.request.model))

    # ----------------------------------------------------------------- follow-ups

    async def _continuing(self, principal: Principal,
                          request: ChatRequest) -> ChatRequest | None:
        """A /v1 context sent without a conversation id that continues a conversation of
        this caller (core/context_digest.py): the request as a follow-up of its last turn,
        storing what the context adds."""
        context = request.context
        if context is None or context.continues is None or request.external_ref:
            return None
        found = await self.conversations.ending_context(principal.id, context.continues)
        if found is None:
            return None
        conversation_id, turn_id = found
        return dataclasses.replace(
            request, conversation_id=conversation_id, follows_turn=turn_id,
            exchange=exchange.continued(request.exchange) if request.exchange else None)

    async def _follow_up(self, principal: Principal, request: ChatRequest, prompt: str,
                         listener: ChatListener | None, own_key: str | None) -> ChatResult:
        assert request.conversation_id is not None
        # A caller that sends its own context (/v1) needs only the last turn, as parent.
        own_context = request.messages is not None and request.continues_turn is None
        # The lock first: the conversation and its turns are then read as the turn before
        # this one left them, together (one round trip on PostgreSQL).
        async with self._lock(f"conversation:{request.conversation_id}"):
            conversation, recent = await self.conversations.with_recent_turns(
                request.conversation_id, 1 if own_context else MAX_HISTORY_TURNS)
            if request.follows_turn is not None and (
                    conversation is None or not recent or recent[0].id != request.follows_turn
                    or request.model not in (None, conversation.model)):
                # A context's conversation (``_continuing``) whose last turn is no longer the
                # one the context ends, or that another model answers.
                raise _NotContinued
            if conversation is None or conversation.owner_id != principal.id or not recent:
                raise NotFound("no such conversation", code="conversation_not_found")
            try:
                account, target, context = self._answerer_of(conversation, principal, request,
                                                             own_key)
            except GatewayError:
                if request.follows_turn is None:
                    raise
                # What a caller naming the conversation is refused (its account cooling or
                # out, another mode) starts a new one for a context that only matched it.
                raise _NotContinued from None
            replaced = None
            sees_images = account is None or can(account.settings.api, account.capabilities,
                                                 "vision")
            if request.replace_turn is not None:
                replaced, recent, prompt = _regenerating(request.replace_turn, recent)
                request = await self._with_images_of(replaced, request, conversation.id)
            previous = recent[0] if recent else None
            if request.continues_turn is not None and (
                    previous is None or previous.id != request.continues_turn):
                raise Conflict(
                    "previous_response_id must name the latest response of its conversation; "
                    "an earlier one was already continued", code="response_not_latest")
            attempt = Attempt(principal, request, prompt, conversation.id, new_id(),
                              is_new=False, parent_id=previous.id if previous else None)
            previous_response_id = None
            messages: list[Message]
            if request.continues_turn is not None and target.api != "responses":
                messages = await self._exchange_history(recent, request, conversation.id)
            elif target.api == "responses" and previous is None:
                messages = [_user_message(prompt, request, sees_images)]
            elif target.api == "responses":
                assert previous is not None
                # The upstream holds the history: send only the new prompt, chained by id.
                previous_response_id = previous.upstream_id
                if not previous_response_id:
                    raise Conflict("this conversation's last turn has no upstream response id "
                                   "to continue from", code="history_unavailable")
                if request.continues_turn is not None:
                    messages = request.messages or []
                elif request.messages is not None:
                    # A /v1 caller's context: what it adds (the user's turn, tool results).
                    messages = exchange.new_messages(request.messages, is_new=False)
                else:
                    messages = [_user_message(prompt, request, sees_images)]
            else:
                # A /v1 caller sends its own context: no stored images to send again.
                contents = images.resend_plan(recent, self.settings.chat.max_attachment_bytes) \
                    if sees_images and request.messages is None else {}
                messages = self._messages(recent, prompt, context, request, contents,
                                          send_images=sees_images)
                if contents:  # the images of the turns the context kept, loaded now
                    messages = await self._with_stored_images(messages, conversation.id)
            hold = None
            if account is not None:
                hold = await self._hold(attempt, [account], lambda: _estimate(messages))
            try:
                return await self._answer_follow_up(attempt, conversation, previous, replaced,
                                                    target, account, messages, listener,
                                                    previous_response_id, hold)
            finally:
                await self.budgets.release(hold)

    async def _answer_follow_up(self, attempt: Attempt, conversation: Conversation,
                                previous: Turn | None, replaced: Turn | None, target: Target,
                                account: Account | None,
                                messages: list[Message], listener: ChatListener | None,
                                previous_response_id: str | None,
                                hold: Hold | None) -> ChatResult:
        """The turn itself, under the conversation's lock."""
        principal = attempt.principal
        try:
            completion, _ = await self._answerer.answer(
                attempt, target, account, messages, listener,
                previous_response_id=previous_response_id,
                slot_wait_s=self.settings.chat.slot_wait_s,
            )
        except SlotRefused as refusal:
            if refusal.why != "busy":
                # It cooled (or went out) while this turn waited: say so, as before a wait.
                self._account_for_follow_up(conversation, principal)
            await self._recorder.failed(attempt, conversation.account, None, "busy")
            raise Unavailable(
                f"this conversation's account '{refusal.account.name}' is busy: all its "
                f"{refusal.account.settings.max_concurrency} slots are taken and none freed "
                f"within {self.settings.chat.slot_wait_s:g} s; try again shortly",
                code="account_busy", retry_after=BUSY_RETRY_AFTER_S,
            ) from None
        except UpstreamFailure as failure:
            await self._recorder.failed(attempt, conversation.account, failure)
            raise as_gateway_error(failure, conversation.account) from None
        if account is not None:
            account.record_success(completion.input_tokens, completion.output_tokens)
        if replaced is not None:
            return await self._recorder.replace(attempt, conversation, replaced, previous,
                                                completion, hold)
        assert previous is not None
        return await self._recorder.append(attempt, conversation, previous, completion,
                                           hold)

    async def _exchange_history(self, recent: list[Turn], request: ChatRequest,
                                conversation_id: str) -> list[Message]:
        """The conversation so far from its stored exchanges, inline data restored, then the
        request's new messages: how a stateless account continues a stateful caller."""
        turns = list(reversed(recent))
        if any(turn.exchange is None for turn in turns):
            raise Conflict("this conversation has turns stored without their exchange; "
                           "continue it where it started", code="history_unavailable")
        stored = exchange.history([turn.exchange for turn in turns if turn.exchange])
        attachments = await self.conversations.attachments(conversation_id,
                                                           exchange.references(stored))
        return [*exchange.restore(stored, attachments), *(request.messages or [])]

    async def _with_stored_images(self, messages: list[Message],
                                  conversation_id: str) -> list[Message]:
        """The history's image parts with their images inline, read from this conversation's
        own attachments."""
        refs = {ref for m in messages for ref in images.image_refs(m.get("content"))}
        found = await self.conversations.attachments(conversation_id, refs)
        return [{**m, "content": images.with_images(m["content"], found)}
                if images.image_refs(m.get("content")) else m for m in messages]

    async def _with_images_of(self, replaced: Turn, request: ChatRequest,
                              conversation_id: str) -> ChatRequest:
        """A regenerated turn asks again with the images its prompt came with, and keeps
        them (sent only to an account that sees images)."""
        content = images.stored_content(replaced.exchange)
        if content is None:
            return request
        found = await self.conversations.attachments(conversation_id,
                                                     images.image_refs(content))
        return dataclasses.replace(request, exchange=images.restored_draft(content, found))

    def _answerer_of(self, conversation: Conversation, principal: Principal,
                     request: ChatRequest, own_key: str | None,
                     ) -> tuple[Account | None, Target, int]:
        """Who answers a follow-up: the conversation's account (None: the member's own key),
        the target asked, its context budget. Refused when that cannot be as asked."""
        # The member's stored own key continues an own-key conversation as the token would.
        credential = request.access_token or own_key
        if conversation.mode == "own_key" and not credential:
            raise Conflict(
                "this conversation was started with your own access_token; send it again "
                "to follow up", code="mode_mismatch",
            )
        if conversation.mode == "pool" and request.access_token:
            raise Conflict(
                "this conversation runs on the organisation's account; follow up without "
                "access_token", code="mode_mismatch",
            )
        if conversation.mode == "pool":
            account = self._account_for_follow_up(conversation, principal)
            lacking = missing(request.needs, account.settings.api, account.capabilities)
            if lacking is not None:
                raise capability_refusal(
                    *lacking, f"this conversation's account '{account.name}' cannot")
            return account, account.target(conversation.model), account.settings.context_tokens
        assert credential is not None
        target = self._own_key_target(credential, request.user_plus)
        target.model = conversation.model
        return None, target, self.settings.own_key.context_tokens

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

    # ----------------------------------------------------------------- budgets

    async def _hold(self, attempt: Attempt, accounts: list[Account],
                    estimate: Callable[[], int]) -> Hold | None:
        """Hold the turn's worst case against the member's budgets (refused when one is
        spent): its prompt (``estimate()`` tokens, only worked out when a budget applies),
        the longest reply it may get and, for a new conversation asking the model for a
        title, the title's call, at the dearest of the accounts it may use."""
        if not accounts:
            return None
        scopes = await self.budgets.scopes(attempt.principal)
        if not scopes:
            return None  # no budget applies: nothing to work out (most members)
        input_tokens = estimate()
        options = attempt.request.options
        reply = max_tokens(options) or max(
            a.settings.max_tokens or max(1, a.settings.context_tokens - input_tokens)
            for a in accounts)
        title_in = title_out = 0
        if attempt.is_new and attempt.request.generate_title:
            title_in, title_out = estimate_tokens(attempt.prompt) + 60, TITLE_MAX_TOKENS
        tokens = input_tokens + reply + title_in + title_out
        cost = max(cost_of(a.settings, attempt.request.model, input_tokens + title_in,
                           reply + title_out) or 0.0 for a in accounts)
        ttl = max(a.settings.timeout_s for a in accounts) + self.settings.chat.slot_wait_s \
            + self.settings.chat.title_timeout_s + 30
        return await self.budgets.hold(attempt.principal, tokens=tokens, cost=cost, ttl_s=ttl,
                                       scopes=scopes)

    def _new_messages_estimate(self, attempt: Attempt) -> int:
        request = attempt.request
        if request.messages is not None:
            return _estimate(request.messages)
        return estimate_tokens(attempt.prompt) + len(request.images) * images.IMAGE_TOKENS \
            + estimate_tokens(self.settings.chat.system_prompt)

    # ----------------------------------------------------------------- helpers

    def _check_model(self, model: str, choice: PlusChoice) -> None:
        """Unknown model: 404. Served only on a tier the caller may not use: 403."""
        if self.pool.candidates(choice, model):
            return
        if self.pool.candidates("any", model):
            raise Forbidden(f"the model {model!r} is on the plus tier, which your key does not "
                            "include", code="model_not_allowed")
        raise NotFound(f"the model {model!r} is not served by this gateway",
                       code="model_not_found")

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
                  request: ChatRequest,
                  contents: dict[str, list[dict[str, Any]]] | None = None, *,
                  send_images: bool = True) -> list[Message]:
        """The stored history and the prompt; ``contents``: the turns that carried images
        (by reference); ``send_images`` False: the account cannot see them, the prompt's
        words go alone."""
        if request.messages is not None:
            return request.messages
        budget = prompt_budget(context_tokens, max_tokens(request.options))
        system_prompt = "\n\n".join(
            part for part in (self.settings.chat.system_prompt, request.persona) if part)
        draft = request.exchange if send_images else None  # a front's message with images
        prompt_images = images.image_count(draft.messages[-1]["content"]) if draft else 0
        messages = build_messages(recent, prompt, budget=budget, system_prompt=system_prompt,
                                  contents=contents, prompt_images=prompt_images)
        if messages is None:
            raise TooLarge(
                f"the prompt does not fit the model's context of {context_tokens} tokens",
                code="prompt_too_large",
            )
        if draft is not None:
            messages[-1] = images.sendable(draft)
        return messages


def _user_message(prompt: str, request: ChatRequest, send_images: bool) -> Message:
    """The member's new message alone (an upstream that keeps the history): with its images
    when a front sent some and the account sees them."""
    if send_images and request.exchange is not None and request.messages is None:
        return images.sendable(request.exchange)
    return {"role": "user", "content": prompt}


def _estimate(messages: list[Message]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if type(content) is str:  # the common case, without the calls for content parts
            total += estimate_tokens(content)
        else:
            total += (estimate_tokens(content_text(content))
                      + images.image_count(content) * images.IMAGE_TOKENS)
    return total


def _regenerating(turn_id: str, recent: list[Turn]) -> tuple[Turn, list[Turn], str]:
    """For a regenerated answer: the turn it replaces (which must be the last), the history
    before it, and its prompt, asked again."""
    if recent[0].id != turn_id:
        raise Conflict("only the latest answer of a conversation can be regenerated",
                       code="not_last_turn")
    return recent[0], recent[1:], recent[0].prompt


class _NotContinued(Exception):
    """A recognised context's conversation cannot be followed up as the context asks."""


def _may_use_plus(principal: Principal) -> bool:
    return principal.plus or principal.is_admin
