"""Embeddings (``/v1/embeddings``): passed to an account that serves the model, its usage
recorded like any other call.

An account serves an embedding model named in its ``embedding_models`` (or ``models``). The
request goes as given (batch inputs, ``dimensions``, ``encoding_format``) to the next healthy
account of the caller's tiers that serves it, moving on when an account fails on its own
account (rate limit, 5xx, time-out); the answer comes back as given. No conversation is made:
an embedding has no reply to keep, only its usage row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from .accounts import Account, AccountPool, SlotRefused
from .billing import cost_of
from .budgets import Budgets, Hold
from .clock import iso, utc_now
from .config import Settings
from .errors import BadRequest, Forbidden, NotFound, Unavailable
from .history import estimate_tokens
from .models import PlusChoice, Principal
from .observer import NO_OBSERVER, Observer
from .storage.conversations import ConversationRepo, UsageRecord
from .storage.database import Statement
from .storage.limits import RateLimiter
from .upstream import UpstreamFailure, post_json
from .upstream_errors import as_gateway_error, describe
from .wire import count_of, object_of

log = logging.getLogger(__name__)

ENDPOINT = "embeddings"
MAX_ANSWER_BYTES = 256 << 20
"""A batch of 2,048 inputs of 3,072 floats as JSON is about 130 MB."""


def serves(account: Account, model: str) -> bool:
    return model in account.settings.embedding_models or model in account.settings.served_models


def check_request(body: Any) -> tuple[str, dict[str, Any]]:
    """The model asked for, and the request to pass on; a 400 naming the parameter."""
    if not isinstance(body, dict):
        raise _param("the request body must be a JSON object", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _param("'model' must name an embedding model", "model")
    value = body.get("input")
    ok = (isinstance(value, str) and value != "") or (isinstance(value, list) and bool(value) and (
        all(isinstance(v, str) and v for v in value)
        or all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value)))
    if not ok:
        raise _param("'input' must be a non-empty string, an array of non-empty strings, "
                     "or tokens (an array of integers, or of arrays of them)", "input")
    return model, body


def _param(message: str, param: str) -> BadRequest:
    error = BadRequest(message, code="invalid_value")
    error.param = param  # type: ignore[attr-defined]
    return error


class EmbeddingService:
    def __init__(self, settings: Settings, pool: AccountPool, conversations: ConversationRepo,
                 limiter: RateLimiter, budgets: Budgets,
                 observer: Observer = NO_OBSERVER) -> None:
        """``observer`` sees every usage row as it is made (metrics)."""
        self.settings = settings
        self.observer = observer
        self.pool = pool
        self.conversations = conversations
        self.limiter = limiter
        self.budgets = budgets
        self._cursor = 0

    def models(self, choice: PlusChoice) -> list[tuple[str, Account]]:
        """Each embedding model the tiers of ``choice`` serve, with its first account."""
        seen: dict[str, Account] = {}
        for account in self.pool.candidates(choice):
            if account.health() != "out":
                for model in account.settings.embedding_models:
                    seen.setdefault(model, account)
        return list(seen.items())

    async def embed(self, principal: Principal, body: Any) -> dict[str, Any]:
        model, request = check_request(body)
        choice: PlusChoice = "any" if principal.plus or principal.is_admin else "false"
        accounts = [a for a in self.pool.candidates(choice) if serves(a, model)]
        if not accounts:
            if any(serves(a, model) for a in self.pool.candidates("any")):
                raise Forbidden(f"the model {model!r} is on the plus tier, which your key does "
                                "not include", code="model_not_allowed")
            raise NotFound(f"the model {model!r} is not served by this gateway",
                           code="model_not_found")
        await self.limiter.check(principal.id)
        # The inputs are the whole use: held against the member's budgets at the dearest
        # account's price until the answer says what they were.
        estimate = _estimate(request.get("input"))
        hold = await self.budgets.hold(
            principal, tokens=estimate, ttl_s=max(a.settings.timeout_s for a in accounts) + 30,
            cost=max(cost_of(a.settings, model, estimate, 0) or 0.0 for a in accounts))
        try:
            return await self._embed(principal, model, request, accounts, choice, hold)
        finally:
            await self.budgets.release(hold)

    async def _embed(self, principal: Principal, model: str, request: dict[str, Any],
                     accounts: list[Account], choice: PlusChoice,
                     hold: Hold | None) -> dict[str, Any]:
        started = time.perf_counter()
        start = self._cursor % len(accounts)
        self._cursor += 1
        last: tuple[Account, UpstreamFailure] | None = None
        busy = False
        for account in accounts[start:] + accounts[:start]:
            if account.health() != "healthy":
                continue
            try:
                async with account.slot(self.settings.chat.slot_wait_s):
                    answer = await post_json(account.target(model), "/embeddings", request,
                                             purpose="embeddings", max_bytes=MAX_ANSWER_BYTES)
            except SlotRefused as refusal:
                busy = busy or refusal.why == "busy"
                continue
            except UpstreamFailure as failure:
                await self.pool.record_failure(account, failure, self.settings.chat.cooldown_s,
                                               self.settings.chat.max_cooldown_s)
                last = (account, failure)
                if failure.is_the_accounts_fault:
                    log.warning("account %s failed embeddings (%s); trying the next one",
                                account.name, failure.kind)
                    continue
                break
            tokens = self._tokens(answer)
            estimated = tokens is None
            if tokens is None:
                tokens = _estimate(request.get("input"))
            account.record_success(tokens, 0)
            cost = cost_of(account.settings, model, tokens, 0) or 0.0
            rows = self.budgets.spend_rows(principal, 1, tokens, cost)
            await self._log(principal, account.name, model, "ok", started, tokens, cost=cost,
                            estimated=estimated,
                            extra=self.budgets.statements(rows, hold))
            await self.budgets.settled(rows, hold)
            return answer
        if last is not None:
            await self._log(principal, last[0].name, model, f"upstream_{last[1].kind}", started)
            if not last[1].is_the_accounts_fault:
                raise as_gateway_error(last[1], last[0].name)
            raise Unavailable(f"no upstream account can answer now: every account serving "
                              f"{model!r} failed (last: {describe(last[1])})",
                              code="no_healthy_account")
        await self._log(principal, None, model, "busy" if busy else "unavailable", started)
        raise Unavailable(f"no account serving {model!r} can answer now: "
                          + ("all are busy" if busy else "all are cooling down or out"),
                          code="accounts_busy" if busy else "no_healthy_account",
                          retry_after=self.pool.soonest_recovery(choice))

    @staticmethod
    def _tokens(answer: dict[str, Any]) -> int | None:
        usage = object_of(answer, "usage")
        return count_of(usage, "prompt_tokens") if usage else None

    async def _log(self, principal: Principal, account: str | None, model: str, outcome: str,
                   started: float, input_tokens: int | None = None, *, cost: float | None = None,
                   estimated: bool = False, extra: Sequence[Statement] = ()) -> None:
        # A usage row like any other call's, so statistics and budgets count embeddings: with
        # ``extra``, what it adds to the member's running totals, in the same transaction.
        record = UsageRecord(
            principal_id=principal.id, client_id=principal.client_id, conversation_id=None,
            account=account, model=model, endpoint=ENDPOINT, outcome=outcome,
            created_utc=iso(utc_now()), duration_ms=int((time.perf_counter() - started) * 1000),
            input_tokens=input_tokens, output_tokens=0 if input_tokens is not None else None,
            cost=cost, estimated=estimated, purpose="embedding",
        )
        self.observer.usage(record)
        await self.conversations.log_usage(record, extra)


def _estimate(value: Any) -> int:
    """Tokens of an embeddings input (a string, a list of strings, or token arrays)."""
    if isinstance(value, str):
        return estimate_tokens(value)
    if isinstance(value, list):
        return sum(len(item) if isinstance(item, list) else _estimate(item) for item in value)
    return 0
