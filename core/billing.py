"""What calls cost and which budgets apply: prices, calendar periods, limits.

Pure functions and records, no I/O: ``core.budgets`` holds and settles amounts against these.

A budget is a kind (``tokens_per_day``, ``tokens_per_month``, ``cost_per_month``) with a limit,
over a *scope*: a principal's own use, or a client's (all its users together, its ceiling).
Periods are calendar days and months in ``[billing] timezone``, named by their spend key
(``d:2026-12-01``, ``m:2026-12``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from .config import BUDGET_KEYS, AccountSettings, Settings
from .models import Principal

Measure = Literal["tokens", "cost"]
KIND_PERIOD: dict[str, Literal["day", "month"]] = {
    "tokens_per_day": "day", "tokens_per_month": "month", "cost_per_month": "month",
}
KIND_MEASURE: dict[str, Measure] = {
    "tokens_per_day": "tokens", "tokens_per_month": "tokens", "cost_per_month": "cost",
}
ALERT_THRESHOLDS = (80, 100)
"""Percent of a budget at which the admin channel hears of it, once each per period."""


def cost_of(account: AccountSettings | None, model: str | None, input_tokens: int | None,
            output_tokens: int | None) -> float | None:
    """What a call cost the organisation; None when it ran on no account (own key)."""
    if account is None:
        return None
    price = account.price(model)
    return ((input_tokens or 0) * price.price_input_per_mtok
            + (output_tokens or 0) * price.price_output_per_mtok) / 1_000_000


@dataclass(frozen=True, slots=True)
class Periods:
    """The day and month a moment falls in, and when each ends (UTC)."""

    day: str
    month: str
    day_ends: datetime
    month_ends: datetime

    def key(self, kind: str) -> str:
        return self.day if KIND_PERIOD[kind] == "day" else self.month

    def ends(self, kind: str) -> datetime:
        return self.day_ends if KIND_PERIOD[kind] == "day" else self.month_ends


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


class Calendar:
    """Periods at a moment, in one time zone; remembers the current day's, so the hot path
    does no date arithmetic until the day ends."""

    def __init__(self, timezone: str) -> None:
        self.zone = _zone(timezone)
        self._current: Periods | None = None
        self._valid_until = 0.0
        self._valid_from = 0.0

    def at(self, timestamp: float) -> Periods:
        current = self._current
        if current is not None and self._valid_from <= timestamp < self._valid_until:
            return current
        periods = self.compute(timestamp)
        self._current = periods
        self._valid_until = periods.day_ends.timestamp()
        start = datetime.strptime(periods.day[2:], "%Y-%m-%d").replace(tzinfo=self.zone)
        self._valid_from = start.timestamp()
        return periods

    def compute(self, timestamp: float) -> Periods:
        local = datetime.fromtimestamp(timestamp, self.zone)
        day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        # Midnight of the next calendar day, whatever a DST change did to this one's length.
        next_day = (day_start + timedelta(days=1, hours=3)).replace(hour=0)
        month_start = day_start.replace(day=1)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        return Periods(
            day="d:" + day_start.strftime("%Y-%m-%d"),
            month="m:" + month_start.strftime("%Y-%m"),
            day_ends=_utc(next_day), month_ends=_utc(next_month),
        )

    def day_bounds(self, day: str) -> tuple[datetime, datetime]:
        """The UTC start and end of a local calendar date ``YYYY-MM-DD``."""
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=self.zone)
        end = (start + timedelta(days=1, hours=3)).replace(hour=0)
        return _utc(start), _utc(end)

    def local_day(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d")


def _utc(moment: datetime) -> datetime:
    # Re-resolve the local wall time (fold and offset) before converting.
    return datetime(moment.year, moment.month, moment.day, moment.hour, tzinfo=moment.tzinfo)\
        .astimezone(UTC)


Limits = dict[str, float]
"""Budget kind -> limit, for the kinds that have one."""


class TierDefaults:
    """``[limits.free]`` and ``[limits.plus]``, read once."""

    def __init__(self, settings: Settings) -> None:
        self.free = settings.limits.free.model_dump()
        self.plus = settings.limits.plus.model_dump()
        # The kinds that have a limit, made once: a user without limits of its own (most
        # users) gets them on each request, twice (issue 14).
        self._configured = {False: _with_value(self.free), True: _with_value(self.plus)}

    def configured(self, plus: bool) -> Limits:
        """The tier's defaults that have a value (a copy)."""
        return dict(self._configured[plus])


def _with_value(defaults: dict[str, float | None]) -> Limits:
    return {kind: value for kind, value in defaults.items() if value is not None}


def member_limits(principal: Principal, tiers: TierDefaults) -> Limits:
    """The budgets of a principal's own use: those set for it, else its tier's defaults.
    Tier defaults apply to users; clients and admins have only what is set for them (a
    client's budget caps all its users together, so a per-member default would not fit)."""
    if not principal.limits:
        return tiers.configured(principal.plus) if principal.role == "user" else {}
    defaults: dict[str, float | None] = {}
    if principal.role == "user":
        defaults = tiers.plus if principal.plus else tiers.free
    own = dict(principal.limits)
    limits: Limits = {}
    for kind in BUDGET_KEYS:
        value = own[kind] if kind in own else defaults.get(kind)
        if value is not None:
            limits[kind] = value
    return limits


def describe_limit(kind: str, value: float, currency: str) -> str:
    if KIND_MEASURE[kind] == "cost":
        return f"{value:,.2f} {currency}"
    return f"{int(value):,} tokens"
