"""Storing what a turn produced: a new conversation with its first turn, a follow-up turn, or
the usage row of a failure. Each is one transaction; nothing half-done is ever stored."""

from __future__ import annotations

import dataclasses

from .clock import iso, utc_now
from .errors import NotFound
from .models import Conversation, Mode, Turn
from .stopping import STOPPED
from .storage.conversations import ConversationRepo, UsageRecord
from .turn import Attempt, ChatResult
from .upstream import Completion, UpstreamFailure


class TurnRecorder:
    def __init__(self, conversations: ConversationRepo) -> None:
        self.conversations = conversations

    async def store_new(self, attempt: Attempt, mode: Mode, account: str | None,
                        completion: Completion, title: str, requested_model: str) -> ChatResult:
        """The new conversation and its first turn, together or not at all."""
        turn, usage = self._records(attempt, account, completion, position=0)
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
        await self.conversations.create_with_turn(conversation, turn, usage)
        return ChatResult(conversation, turn, None, True, attempt.prompt_time,
                          turn.duration_ms / 1000, completion.finish_reason or "stop")

    async def append(self, attempt: Attempt, conversation: Conversation, previous: Turn,
                     completion: Completion) -> ChatResult:
        """A follow-up turn after ``previous``; 404 when the conversation was removed
        meanwhile (then nothing is stored)."""
        turn, usage = self._records(attempt, conversation.account, completion,
                                    position=previous.position + 1)
        if not await self.conversations.append_turn(turn, usage):
            raise NotFound("the conversation was removed while it was being answered",
                           code="conversation_removed")
        updated = dataclasses.replace(conversation, turn_count=turn.position + 1,
                                      updated_utc=turn.reply_utc)
        return ChatResult(updated, turn, previous, False, attempt.prompt_time,
                          turn.duration_ms / 1000, completion.finish_reason or "stop")

    async def replace(self, attempt: Attempt, conversation: Conversation, replaced: Turn,
                      previous: Turn | None, completion: Completion) -> ChatResult:
        """A regenerated answer in the place of ``replaced``; 404 when the conversation (or
        that turn) was removed meanwhile (then nothing is stored)."""
        turn, usage = self._records(attempt, conversation.account, completion,
                                    position=replaced.position)
        if not await self.conversations.replace_last_turn(replaced, turn, usage):
            raise NotFound("the conversation was removed while it was being answered",
                           code="conversation_removed")
        updated = dataclasses.replace(conversation, updated_utc=turn.reply_utc)
        return ChatResult(updated, turn, previous, False, attempt.prompt_time,
                          turn.duration_ms / 1000, completion.finish_reason or "stop")

    async def failed(self, attempt: Attempt, account: str | None,
                     failure: UpstreamFailure | None, outcome: str | None = None) -> None:
        """The usage row of a turn that stored nothing else."""
        await self.conversations.log_usage(UsageRecord(
            principal_id=attempt.principal.id, client_id=attempt.principal.client_id,
            conversation_id=None if attempt.is_new else attempt.conversation_id,
            account=account, model=None, endpoint=attempt.request.endpoint,
            outcome=outcome or (f"upstream_{failure.kind}" if failure else "error"),
            created_utc=iso(utc_now()), duration_ms=int(attempt.elapsed_s * 1000),
        ))

    @staticmethod
    def _records(attempt: Attempt, account: str | None, completion: Completion, *,
                 position: int) -> tuple[Turn, UsageRecord]:
        elapsed_ms = int(attempt.elapsed_s * 1000)
        now = iso(utc_now())
        turn = Turn(
            id=attempt.message_id, conversation_id=attempt.conversation_id,
            parent_id=attempt.parent_id, position=position, prompt=attempt.prompt,
            reply=completion.text, model=completion.model, upstream_id=completion.upstream_id,
            prompt_utc=iso(attempt.prompt_time), reply_utc=now, duration_ms=elapsed_ms,
            input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
            stopped=completion.finish_reason == STOPPED,
        )
        usage = UsageRecord(
            principal_id=attempt.principal.id, client_id=attempt.principal.client_id,
            conversation_id=attempt.conversation_id, account=account, model=completion.model,
            endpoint=attempt.request.endpoint, outcome="ok", created_utc=now,
            duration_ms=elapsed_ms, input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
        )
        return turn, usage


def ref_owner(attempt: Attempt) -> int | None:
    """The client whose namespace a conversation's external reference lives in."""
    if not attempt.request.external_ref:
        return None
    principal = attempt.principal
    return principal.id if principal.is_client else principal.client_id
