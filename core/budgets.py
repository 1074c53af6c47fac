"""Budgets: a request is refused before any upstream call once a budget it falls under is
spent, and concurrent requests cannot overspend by more than what they hold in flight.

Each request that falls under a budget *holds* its worst case (its prompt's estimate plus the
reply it may get) in every period of every scope it counts in (its member, and its client when
the client has a ceiling). It is refused while what a scope has used plus what others hold has
reached a limit. When the reply is stored, its real use is added to the totals in the same
transaction as its usage row, and the hold is dropped.

Where the amounts live:
- SQLite (one process): the totals of the current periods are read once at start and kept in
  memory from then on, as are the holds: a check costs no database round trip at all.
- PostgreSQL (any number of processes): holds are rows, taken in one transaction under a lock
  per scope, so processes admitting one member's requests at once are served one by one.

A principal without any budget (the common case) costs nothing here but a dictionary lookup.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .billing import (
    ALERT_THRESHOLDS,
    KIND_MEASURE,
    KIND_PERIOD,
    Calendar,
    Limits,
    Periods,
    TierDefaults,
    describe_limit,
    member_limits,
)
from .clock import iso, utc_now
from .config import BUDGET_KEYS, Settings
from .errors import RateLimited
from .ids import new_id
from .models import Principal
from .observer import NO_OBSERVER, Observer
from .storage import Storage
from .storage.database import Statement, StorageError
from .storage.spend import ALERTS, Alert, Key, SpendRepo, SpendRow, Totals, add_spend, drop_hold

log = logging.getLogger(__name__)


class QuotaExceeded(RateLimited):
    """A budget is spent: 429 ``quota_exceeded`` (``insufficient_quota`` on /v1)."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_after: float, budget: str) -> None:
        super().__init__(message, retry_after=retry_after)
        self.budget = budget


@dataclass(frozen=True, slots=True)
class Scope:
    id: int
    limits: Limits
    whose: str
    """How a refusal names it: "your" or "the client 'discord'" (all its users together)."""


@dataclass(slots=True)
class Hold:
    id: str
    scopes: tuple[Scope, ...]
    periods: Periods
    amounts: dict[Key, tuple[int, float]]
    settled: bool = False


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One budget as a member sees it: for /api/usage, /usage and the x-ratelimit headers."""

    kind: str
    limit: float
    used: float
    held: float
    resets: datetime
    whose: str

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.used - self.held)


class Budgets:
    def __init__(self, settings: Settings, storage: Storage,
                 clock: Callable[[], float] = time.time,
                 observer: Observer = NO_OBSERVER) -> None:
        """``observer`` is told of each refusal (metrics)."""
        self.settings = settings
        self._observer = observer
        self.spend = SpendRepo(storage.db)
        self.principals = storage.principals
        self.calendar = Calendar(settings.billing.timezone)
        self.tiers = TierDefaults(settings)
        self.currency = settings.billing.currency
        self._clock = clock
        self._shared = storage.db.shared
        # SQLite: the current periods' totals and every hold, authoritative in this process.
        self._totals: dict[Key, Totals] = {}
        self._held: dict[Key, list[float]] = {}
        self._periods: tuple[str, str] | None = None
        self._serial = itertools.count(1)
        self._alerted_marks: set[tuple[int, str, str, int]] = set()
        self._clients: dict[int, tuple[int, Limits, str]] = {}
        self._alert_listeners: list[Callable[[], Any]] = []
        storage.db.subscribe(ALERTS, self._alerted)

    async def open(self) -> None:
        if not self._shared:
            periods = self.calendar.at(self._clock())
            self._totals = await self.spend.all_in([periods.day, periods.month])
            self._periods = (periods.day, periods.month)

    # ------------------------------------------------------------------ who counts where

    async def scopes(self, principal: Principal) -> tuple[Scope, ...]:
        """The budgets a principal's pool requests fall under: its own, and its client's
        ceiling; empty when none has a limit."""
        scopes: list[Scope] = []
        own = member_limits(principal, self.tiers)
        if own:
            whose = "your" if not principal.is_client else \
                f"the client '{principal.name}' (all its users together)"
            scopes.append(Scope(principal.id, own, whose))
        if principal.client_id is not None:
            limits, name = await self._client_limits(principal.client_id)
            if limits:
                scopes.append(Scope(principal.client_id, limits,
                                    f"the client '{name}' (all its users together)"))
        return tuple(scopes)

    async def _client_limits(self, client_id: int) -> tuple[Limits, str]:
        version = self.principals.version
        cached = self._clients.get(client_id)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        client = await self.principals.get(client_id)
        limits = member_limits(client, self.tiers) if client is not None else {}
        name = client.name if client is not None else str(client_id)
        if version == self.principals.version:  # nothing changed while it was read
            self._clients[client_id] = (version, limits, name)
        return limits, name

    # ------------------------------------------------------------------ before the call

    async def hold(self, principal: Principal, *, tokens: int, cost: float,
                   ttl_s: float, scopes: tuple[Scope, ...] | None = None) -> Hold | None:
        """Hold a request's worst case, or raise ``QuotaExceeded`` naming the budget that is
        spent. None when no budget applies (nothing to settle). ``scopes``: the principal's,
        when the caller read them already."""
        if scopes is None:
            scopes = await self.scopes(principal)
        if not scopes:
            return None
        now = self._clock()
        periods = self.calendar.at(now)
        amounts = {(scope.id, key): (tokens, cost) for scope in scopes
                   for key in (periods.day, periods.month)}
        if self._shared:
            hold = Hold(new_id(), scopes, periods, amounts)  # a row every process can tell
            limits: dict[Key, dict[str, float]] = {(scope.id, periods.key(kind)): {}
                                                   for scope in scopes for kind in scope.limits}
            for scope in scopes:
                for kind, limit in scope.limits.items():
                    limits[(scope.id, periods.key(kind))][kind] = limit
            totals, held, refused_key, refused_kind = await self.spend.take_holds(
                hold.id, [s.id for s in scopes], [periods.day, periods.month], amounts,
                limits, now, now + ttl_s)
            if refused_key is not None and refused_kind is not None:
                scope = next(s for s in scopes if s.id == refused_key[0])
                raise self._refusal(scope, refused_kind, totals.get(refused_key, Totals()),
                                    held.get(refused_key, (0, 0.0)), periods, now)
            return hold
        self._roll(periods)
        totals, holding = self._totals, self._held
        for scope in scopes:
            for kind, limit in scope.limits.items():
                key = (scope.id, periods.key(kind))
                spent = totals.get(key, _NOTHING)
                held_now = holding.get(key, _NO_HOLD)
                used = spent.cost + held_now[1] if kind == "cost_per_month" \
                    else spent.tokens + held_now[0]
                if used >= limit:
                    raise self._refusal(scope, kind, spent, (int(held_now[0]), held_now[1]),
                                        periods, now)
        hold = Hold(str(next(self._serial)), scopes, periods, amounts)
        for key, (t, c) in amounts.items():
            held_now = self._held.setdefault(key, [0, 0.0])
            held_now[0] += t
            held_now[1] += c
        return hold

    def _refusal(self, scope: Scope, kind: str, spent: Totals, held: tuple[int, float],
                 periods: Periods, now: float) -> QuotaExceeded:
        self._observer.quota_refused(kind, "member" if scope.whose == "your" else "client")
        limit = scope.limits[kind]
        ends = periods.ends(kind)
        wait = max(1.0, ends.timestamp() - now)
        period = "today" if KIND_PERIOD[kind] == "day" else "this month"
        used = spent.cost if KIND_MEASURE[kind] == "cost" else spent.tokens
        in_flight = held[1] if KIND_MEASURE[kind] == "cost" else held[0]
        flight = f" and {describe_limit(kind, in_flight, self.currency)} held by requests in " \
            "flight" if in_flight else ""
        return QuotaExceeded(
            f"{scope.whose} {kind} budget of {describe_limit(kind, limit, self.currency)} is "
            f"spent ({describe_limit(kind, used, self.currency)} used {period}{flight}); it "
            f"resets at {ends.strftime('%Y-%m-%d %H:%M')} UTC, in {_duration(wait)}",
            retry_after=wait, budget=kind)

    def _roll(self, periods: Periods) -> None:
        """A new day or month began: forget the totals and holds of the ones that ended."""
        current = (periods.day, periods.month)
        if self._periods == current:
            return
        self._periods = current
        self._totals = {k: v for k, v in self._totals.items() if k[1] in current}
        self._held = {k: v for k, v in self._held.items() if k[1] in current}
        self._alerted_marks = {m for m in self._alerted_marks if m[2] in current}

    # ------------------------------------------------------------------ after the call

    def spend_rows(self, principal: Principal, requests: int, tokens: int,
                   cost: float) -> list[SpendRow]:
        """What one pool call adds to the totals: its member's and its client's, for the
        current day and month. Every pool call counts, with a budget or without, so budgets
        set later, usage pages and reports find the totals already there."""
        periods = self.calendar.at(self._clock())
        scope_ids = [principal.id]
        if principal.client_id is not None:
            scope_ids.append(principal.client_id)
        return [(scope_id, period, requests, tokens, cost)
                for scope_id in scope_ids for period in (periods.day, periods.month)]

    def statements(self, rows: Sequence[SpendRow], hold: Hold | None) -> list[Statement]:
        """The statements that go in the usage row's transaction."""
        statements = [add_spend(rows)] if rows else []
        if hold is not None and self._shared:
            statements.append(drop_hold(hold.id))
        return statements

    async def settled(self, rows: Sequence[SpendRow], hold: Hold | None) -> None:
        """The usage row and ``rows`` are stored: count them, drop the hold, and record the
        budget alerts this use crossed."""
        if not self._shared:
            self._roll(self.calendar.at(self._clock()))
            for scope_id, period, requests, tokens, cost in rows:
                if self._periods is not None and period in self._periods:
                    self._totals.setdefault((scope_id, period), Totals()).add(
                        requests, tokens, cost)
        if hold is None:
            return
        self._drop(hold)
        await self._alerts(hold, rows)

    async def release(self, hold: Hold | None) -> None:
        """The call failed or was refused: the hold goes, nothing is counted."""
        if hold is None or hold.settled:
            return
        self._drop(hold)
        if self._shared:
            try:
                await self.spend.release(hold.id)
            except StorageError:  # it lapses at its deadline anyway
                log.warning("could not release budget hold %s; it lapses by itself", hold.id)

    def _drop(self, hold: Hold) -> None:
        hold.settled = True
        if self._shared:
            return
        for key, (tokens, cost) in hold.amounts.items():
            held = self._held.get(key)
            if held is not None:
                held[0] -= tokens
                held[1] -= cost
                if held[0] <= 0 and held[1] <= 1e-12:
                    del self._held[key]

    async def _alerts(self, hold: Hold, rows: Sequence[SpendRow]) -> None:
        """Record the alert of every threshold a budget has reached (each once per period:
        remembered here, and the table refuses a second)."""
        added: dict[Key, Totals] = {}
        for scope_id, period, requests, tokens, cost in rows:
            added.setdefault((scope_id, period), Totals()).add(requests, tokens, cost)
        for scope in hold.scopes:
            for kind, limit in scope.limits.items():
                key = (scope.id, hold.periods.key(kind))
                delta = added.get(key)
                if delta is None or limit <= 0:
                    continue
                if self._shared:
                    # Read after this use was stored: requests admitted after this one's hold
                    # may have settled first, so what was known at the hold is no bound.
                    after = (await self.spend.totals([key])).get(key, _NOTHING)
                else:
                    after = self._totals.get(key, _NOTHING)
                used = _used(kind, after, (0, 0.0))
                for threshold in ALERT_THRESHOLDS:
                    mark = (scope.id, kind, key[1], threshold)
                    if used >= limit * threshold / 100 and mark not in self._alerted_marks:
                        if len(self._alerted_marks) > 100_000:  # old periods' (PostgreSQL)
                            self._alerted_marks.clear()
                        self._alerted_marks.add(mark)
                        await self._record_alert(Alert(scope.id, kind, key[1], threshold,
                                                       used, limit, iso(utc_now())))

    async def _record_alert(self, alert: Alert) -> None:
        try:
            await self.spend.record_alert(alert)
        except StorageError as exc:
            log.warning("could not record a budget alert: %s", exc)

    # ------------------------------------------------------------------ alerts out

    def on_alert(self, listener: Callable[[], Any]) -> None:
        """``listener()`` when new budget alerts await delivery (from any process)."""
        self._alert_listeners.append(listener)

    async def _alerted(self, payload: str) -> None:
        for listener in self._alert_listeners:
            outcome = listener()
            if outcome is not None:
                await outcome

    def off_alert(self, listener: Callable[[], Any]) -> None:
        with contextlib.suppress(ValueError):
            self._alert_listeners.remove(listener)

    async def take_alerts(self, client_id: int | None = None) -> list[Alert]:
        """Undelivered alerts, now delivered; ``client_id``: that client's and its users'."""
        return await self.spend.take_alerts(client_id)

    # ------------------------------------------------------------------ what is left

    async def states(self, principal: Principal) -> list[BudgetState]:
        """Every budget the principal falls under, with what is used and left."""
        scopes = await self.scopes(principal)
        if not scopes:
            return []
        now = self._clock()
        periods = self.calendar.at(now)
        keys = [(s.id, periods.key(kind)) for s in scopes for kind in s.limits]
        totals, held = await self._read(keys, periods, now)
        states = []
        for scope in scopes:
            for kind, limit in scope.limits.items():
                key = (scope.id, periods.key(kind))
                spent = totals.get(key, Totals())
                t, c = held.get(key, (0, 0.0))
                measure = KIND_MEASURE[kind]
                states.append(BudgetState(
                    kind, limit, spent.cost if measure == "cost" else spent.tokens,
                    c if measure == "cost" else t, periods.ends(kind), scope.whose))
        return states

    async def _read(self, keys: Sequence[Key], periods: Periods, now: float
                    ) -> tuple[dict[Key, Totals], dict[Key, tuple[int, float]]]:
        if self._shared:
            return await self.spend.totals(keys), await self.spend.held(keys, now)
        self._roll(periods)
        return ({k: self._totals[k] for k in keys if k in self._totals},
                {k: (int(self._held[k][0]), self._held[k][1]) for k in keys if k in self._held})

    async def totals(self, principal_id: int) -> tuple[Periods, Totals, Totals]:
        """A principal's own (or a client's whole) use today and this month."""
        periods = self.calendar.at(self._clock())
        keys = [(principal_id, periods.day), (principal_id, periods.month)]
        if self._shared:
            found = await self.spend.totals(keys)
        else:
            self._roll(periods)
            found = self._totals
        return periods, found.get(keys[0], Totals()), found.get(keys[1], Totals())

    def limits_of(self, principal: Principal) -> dict[str, float | None]:
        """Every budget kind with its limit for the principal's own use (None: no limit)."""
        own = member_limits(principal, self.tiers)
        return {kind: own.get(kind) for kind in BUDGET_KEYS}


_NOTHING = Totals()
"""Read-only stand-in for a period with no use yet."""
_NO_HOLD: list[float] = [0, 0.0]  # read-only


def _used(kind: str, spent: Totals, held: tuple[int, float]) -> float:
    if KIND_MEASURE[kind] == "cost":
        return spent.cost + held[1]
    return spent.tokens + held[0]


def _duration(seconds: float) -> str:
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{round(hours / 24)} days"
