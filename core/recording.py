"""Storing what a turn produced: a new conversation with its first turn, a follow-up turn, or
the usage row of a failure. Each is one transaction; nothing half-done is ever stored.

With a turn go its usage rows (the reply's and, for a new conversation, its title's), each with
its cost at the account's prices, and, for pool calls, what they add to the member's and the
client's running totals (``core.budgets``), in the same transaction."""

from __future__ import annotations

from . import exchange
from .accounts import AccountPool
from .billing import cost_of
from .budgets import Budgets, Hold
from .clock import iso, utc_now
from .errors import NotFound
from .exchange import Attachment
from .models import Conversation, Mode, Turn
from .observer import NO_OBSERVER, Observer
from .stopping import STOPPED
from .storage.conversations import ConversationRepo, UsageRecord, usage_statement
from .storage.database import Statement
from .storage.spend import SpendRow
from .turn import Attempt, ChatResult
from .upstream import Completion, UpstreamFailure


class TurnRecorder:
    def __init__(self, conversations: ConversationRepo, pool: AccountPool,
                 budgets: Budgets, observer: Observer = NO_OBSERVER) -> None:
        """``observer`` sees every usage row as it is made (metrics)."""
        self.conversations = conversations
        self.pool = pool
        self.budgets = budgets
        self.observer = observer

    async def store_new(self, attempt: Attempt, mode: Mode, account: str | None,
                        completion: Completion, title: str, requested_model: str,
                        hold: Hold | None = None) -> ChatResult:
        """The new conversation and its first turn, together or not at all."""
        turn, usage = self._records(attempt, account, completion, position=0)
        rows, extra = self._counted(attempt, usage, hold)
        request = attempt.request
        # The conversation keeps the model name it asked for, which its follow-ups ask for
        # again; an upstream may echo another (a dated snapshot, Azure's model behind a
        # deployment name) that it would not accept. Each turn records the echoed one.
        conversation = Conversation(
            id=attempt.conversation_id, owner_id=attempt.principal.id, title=title, mode=mode,
            account=account, model=requested_model or completion.model,
            client_id=ref_owner(attempt), external_ref=request.external_ref,
            turn_count=1, created_utc=iso(attempt.prompt_time), updated_utc=turn.reply_utc,
        )
        await self.conversations.create_with_turn(conversation, turn, usage,
                                                  _attachments(attempt), extra)
        await self.budgets.settled(rows, hold)
        return ChatResult(conversation, turn, None, True, attempt.prompt_time,
                          turn.duration_ms / 1000, completion.finish_reason or "stop",
                          completion)

    async def append(self, attempt: Attempt, conversation: Conversation, previous: Turn,
                     completion: Completion, hold: Hold | None = None) -> ChatResult:
        """A follow-up turn after ``previous``; 404 when the conversation was removed
        meanwhile (then nothing is stored)."""
        turn, usage = self._records(attempt, conversation.account, completion,
                                    position=previous.position + 1)
        rows, extra = self._counted(attempt, usage, hold)
        if not await self.conversations.append_turn(turn, usage, _attachments(attempt),
                                                    extra):
            raise NotFound("the conversation was removed while it was being answered",
                           code="conversation_removed")
        await self.budgets.settled(rows, hold)
        updated = conversation.touched(turn.reply_utc, turn_count=turn.position + 1)
        return ChatResult(updated, turn, previous, False, attempt.prompt_time,
                          turn.duration_ms / 1000, completion.finish_reason or "stop",
                          completion)

    async def replace(self, attempt: Attempt, conversation: Conversation, replaced: Turn,
                      previous: Turn | None, completion: Completion,
                      hold: Hold | None = None) -> ChatResult:
        """A regenerated answer in the place of ``replaced``; 404 when the conversation (or
        that turn) was removed meanwhile (then nothing is stored). The new answer is the
        member's use like any other (the one it replaces stays counted: it was made)."""
        turn, usage = self._records(attempt, conversation.account, completion,
                                    position=replaced.position)
        rows, extra = self._counted(attempt, usage, hold)
        if not await self.conversations.replace_last_turn(replaced, turn, usage,
                                                          _attachments(attempt), extra):
            raise NotFound("the conversation was removed while it was being answered",
                           code="conversation_removed")
        await self.budgets.settled(rows, hold)
        updated = conversation.touched(turn.reply_utc)
        return ChatResult(updated, turn, previous, False, attempt.prompt_time,
                          turn.duration_ms / 1000, completion.finish_reason or "stop",
                          completion)

    async def failed(self, attempt: Attempt, account: str | None,
                     failure: UpstreamFailure | None, outcome: str | None = None) -> None:
        """The usage row of a turn that stored nothing else."""
        record = UsageRecord(
            principal_id=attempt.principal.id, client_id=attempt.principal.client_id,
            conversation_id=None if attempt.is_new else attempt.conversation_id,
            account=account, model=None, endpoint=attempt.request.endpoint,
            outcome=outcome or (f"upstream_{failure.kind}" if failure else "error"),
            created_utc=iso(utc_now()), duration_ms=int(attempt.elapsed_s * 1000),
        )
        self.observer.usage(record)
        await self.conversations.log_usage(record)

    def _counted(self, attempt: Attempt, usage: UsageRecord, hold: Hold | None
                 ) -> tuple[list[SpendRow], list[Statement]]:
        """The title's usage row, and what the turn adds to the running totals."""
        statements: list[Statement] = []
        usages = [usage]
        if attempt.title_usage is not None:
            title = self._usage(attempt, usage.account, attempt.title_usage, usage.created_utc,
                                0, purpose="title")
            statements.append(usage_statement(title))
            usages.append(title)
        if usage.own_key:
            return [], statements
        rows: list[SpendRow] = []
        for item in usages:
            rows += self.budgets.spend_rows(attempt.principal, int(item.purpose == "reply"),
                                            item.tokens, item.cost or 0.0)
        return rows, statements + self.budgets.statements(_merged(rows), hold)

    def _records(self, attempt: Attempt, account: str | None, completion: Completion, *,
                 position: int) -> tuple[Turn, UsageRecord]:
        elapsed_ms = int(attempt.elapsed_s * 1000)
        now = iso(utc_now())
        request = attempt.request
        # What the caller will send back as the assistant: stored, and ending the context.
        reply = exchange.reply_message(completion) if request.exchange is not None else None
        turn = Turn(
            id=attempt.message_id, conversation_id=attempt.conversation_id,
            parent_id=attempt.parent_id, position=position, prompt=attempt.prompt,
            reply=completion.text, model=completion.model, upstream_id=completion.upstream_id,
            prompt_utc=iso(attempt.prompt_time), reply_utc=now, duration_ms=elapsed_ms,
            input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
            exchange_json=(exchange.record(request.exchange, completion, reply)
                           if request.exchange is not None else None),
            stopped=completion.finish_reason == STOPPED,
            context_digest=(request.context.after(reply or exchange.reply_message(completion))
                            if request.context is not None else None),
        )
        return turn, self._usage(attempt, account, completion, now, elapsed_ms)

    def _usage(self, attempt: Attempt, account: str | None, completion: Completion, now: str,
               elapsed_ms: int, purpose: str = "reply") -> UsageRecord:
        found = self.pool.get(account) if account else None
        own_key = account is None
        # Seen as it is made: the upstream has answered, so its tokens are spent even if
        # storing the turn fails (a conversation removed meanwhile).
        record = UsageRecord(
            principal_id=attempt.principal.id, client_id=attempt.principal.client_id,
            conversation_id=attempt.conversation_id, account=account, model=completion.model,
            endpoint=attempt.request.endpoint, outcome="ok", created_utc=now,
            duration_ms=elapsed_ms, input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cost=None if own_key else cost_of(found.settings if found else None,
                                               completion.model, completion.input_tokens,
                                               completion.output_tokens) or 0.0,
            estimated=completion.usage_estimated, purpose=purpose, own_key=own_key,
        )
        self.observer.usage(record)
        return record


def _merged(rows: list[SpendRow]) -> list[SpendRow]:
    """One row per (scope, period): a statement may not upsert one key twice."""
    merged: dict[tuple[int, str], list[float]] = {}
    for scope_id, period, requests, tokens, cost in rows:
        total = merged.setdefault((scope_id, period), [0, 0, 0.0])
        total[0] += requests
        total[1] += tokens
        total[2] += cost
    return [(k[0], k[1], int(v[0]), int(v[1]), v[2]) for k, v in merged.items()]


def _attachments(attempt: Attempt) -> list[Attachment]:
    draft = attempt.request.exchange
    return draft.attachments if draft is not None else []


def ref_owner(attempt: Attempt) -> int | None:
    """The client whose namespace a conversation's external reference lives in."""
    if not attempt.request.external_ref:
        return None
    principal = attempt.principal
    return principal.id if principal.is_client else principal.client_id
