"""Asking an upstream for one turn's reply and, for a new conversation, its title.

The reply is asked in a slot of its account (``max_concurrency``); the title, beside it, only
in a slot that is free at once, or it is cut from the prompt. Token counts that the upstream
did not report are estimated. A failure is recorded against the account (a cool-down, a
removal) before the slot is freed, so whoever waited for the slot finds the account as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from .accounts import Account, AccountPool, SlotRefused
from .config import Settings
from .history import estimate_tokens
from .stopping import STOPPED, StopSignal
from .titles import TITLE_MAX_TOKENS, clean_title, fallback_title, title_messages
from .turn import Attempt, ChatListener, StartInfo
from .upstream import Completion, Message, Target, UpstreamFailure, complete
from .wire import content_text

log = logging.getLogger(__name__)


class Answerer:
    def __init__(self, settings: Settings, pool: AccountPool) -> None:
        self.settings = settings
        self.pool = pool

    async def answer(
        self,
        attempt: Attempt,
        target: Target,
        account: Account | None,
        messages: list[Message],
        listener: ChatListener | None,
        *,
        previous_response_id: str | None = None,
        slot_wait_s: float = 0.0,
    ) -> tuple[Completion, str]:
        """The reply and, for a new conversation, its title, asked of the same target at once.
        With an account, a slot of it is won first (``SlotRefused`` if none comes within
        ``slot_wait_s`` or the account is no longer healthy), before the listener hears
        anything, so a refused attempt leaves no trace with the caller."""
        title_task = None
        title = ""
        try:
            async with (account.slot(slot_wait_s) if account is not None
                        else contextlib.nullcontext()):
                if listener is not None:
                    await listener.started(attempt.start_info(
                        target.model, target.name if account else None))
                # Only now, so a listener hears "started" before any title; the reply is not
                # asked for before this point either, so the title still costs no wait.
                if attempt.is_new and attempt.request.generate_title:
                    title_task = asyncio.create_task(
                        self._title(target, account, attempt, listener))
                elif attempt.is_new:
                    # Cut from the prompt: known at once, so no task and no wait for it (a
                    # task, its shield and its wait_for were ~2.5 % of a /v1 request, issue 14).
                    title = await self._prompt_title(attempt.prompt, listener)
                try:
                    completion = await self._call(target, messages, attempt.request.options,
                                                  listener, previous_response_id,
                                                  attempt.request.responses_request,
                                                  stop=attempt.request.stop)
                except UpstreamFailure as failure:
                    if account is not None:
                        # Recorded before the slot is freed, so a call that waited for it
                        # finds the account cooling rather than asking it again.
                        await self.record_failure(account, failure)
                    raise
            if title_task is not None:
                title = await self._await_title(title_task, attempt.prompt, listener)
            return completion, title
        finally:
            if title_task is not None and not title_task.done():
                title_task.cancel()

    async def record_failure(self, account: Account, failure: UpstreamFailure) -> None:
        await self.pool.record_failure(account, failure, self.settings.chat.cooldown_s,
                                       self.settings.chat.max_cooldown_s)

    async def _call(self, target: Target, messages: list[Message], options: dict[str, Any],
                    listener: ChatListener | None,
                    previous_response_id: str | None = None,
                    responses_request: dict[str, Any] | None = None, *,
                    stop: StopSignal | None = None) -> Completion:
        arrived: list[str] = []

        async def on_delta(text: str) -> None:
            arrived.append(text)
            if listener is not None:
                await listener.delta(text)

        call = complete(target, messages, options=options,
                        on_delta=on_delta if listener is not None else None,
                        on_raw=getattr(listener, "raw", None),
                        previous_response_id=previous_response_id,
                        responses_request=responses_request,
                        max_reply_bytes=self.settings.chat.max_reply_bytes)
        if stop is None:
            completion = await call
        elif (finished := await _until_stopped(call, stop)) is not None:
            completion = finished
        else:
            completion = Completion(text="".join(arrived), model=target.model,
                                    finish_reason=STOPPED)
            log.info("reply on %s stopped by its member after %d characters", target.name,
                     len(completion.text))
        # Some servers (llama.cpp) report no usage when streaming: every turn still gets token
        # counts, estimated as the history is (about 3.5 characters a token).
        if completion.input_tokens is None or completion.output_tokens is None:
            completion.usage_estimated = True
        if completion.input_tokens is None:
            completion.input_tokens = sum(estimate_tokens(content_text(m.get("content")))
                                          for m in messages)
        if completion.output_tokens is None:
            estimate = estimate_tokens(completion.text) if completion.text else 0
            # The estimate errs large (right for trimming history), but the upstream cannot
            # have written more than it was allowed: a reply cut at 256 tokens is 256, not 295.
            limit = max_tokens(options) or target.max_tokens
            completion.output_tokens = min(estimate, limit) if limit else estimate
        return completion

    @staticmethod
    async def _prompt_title(prompt: str, listener: ChatListener | None) -> str:
        title = fallback_title(prompt)
        if listener is not None:
            await listener.title(title)
        return title

    async def _title(self, target: Target, account: Account | None, attempt: Attempt,
                     listener: ChatListener | None) -> str:
        """The model's title, asked beside the reply in a slot of its own, but only in one
        free at once: the title must neither take the account past ``max_concurrency`` nor
        queue ahead of, or delay, anyone's reply. Without a free slot it is cut from the
        prompt, as it would be if the call failed."""
        prompt = attempt.prompt
        try:
            async with account.slot(0, is_reply=False) if account is not None \
                    else contextlib.nullcontext():
                asked = title_messages(prompt)
                completion = await complete(
                    target, asked,
                    options={"max_tokens": TITLE_MAX_TOKENS, "temperature": 0.2},
                    purpose="title",
                )
            # The title is the member's use too: counted with the turn it names.
            if completion.input_tokens is None or completion.output_tokens is None:
                completion.usage_estimated = True
                completion.input_tokens = completion.input_tokens or sum(
                    estimate_tokens(content_text(m.get("content"))) for m in asked)
                completion.output_tokens = completion.output_tokens or min(
                    estimate_tokens(completion.text), TITLE_MAX_TOKENS)
            attempt.title_usage = completion
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


class Progress:
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

    async def raw(self, chunks: Sequence[dict[str, Any] | str]) -> bool:
        """The upstream's streamed objects, to a front that passes them on as given (/v1):
        once one of them reached the caller, a failure can no longer move accounts."""
        forward = getattr(self.inner, "raw", None)
        if forward is not None and await forward(chunks):
            self.sent_text = True
            return True
        return False

    async def title(self, title: str) -> None:
        if self.inner is not None:
            await self.inner.title(title)


async def _until_stopped(call: Coroutine[Any, Any, Completion],
                         stop: StopSignal) -> Completion | None:
    """The call's completion, or None once ``stop`` is signalled first: the call is then
    cancelled, which closes its connection, so the upstream stops generating."""
    task = asyncio.create_task(call)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        return task.result() if task.done() else None
    finally:
        for pending in (task, stopped):
            pending.cancel()
        # The cancelled call must finish its cleanup (the connection closed) before the
        # turn is stored; a failure after the stop no longer matters.
        await asyncio.gather(task, stopped, return_exceptions=True)


def max_tokens(options: dict[str, Any]) -> int | None:
    """The reply length the caller asked for, under either of its Chat Completions names."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = options.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
