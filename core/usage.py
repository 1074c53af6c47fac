"""What members and admins see of usage: a member's own use against their budgets, and reports
over a date range grouped by user, client, account, model or day (JSON or CSV).

Dates are calendar days in ``[billing] timezone``. A report by day groups the log by UTC hour
and folds the hours into local days, so it is exact for zones whose offset is whole hours.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .billing import KIND_MEASURE
from .budgets import Budgets
from .clock import iso
from .config import BUDGET_KEYS, Settings
from .errors import BadRequest
from .models import Principal
from .storage import Storage
from .storage.usage_report import GROUPS, GroupBy, UsageLine, principal_names, usage_lines

MAX_REPORT_DAYS = 400


@dataclass(slots=True)
class Report:
    group_by: GroupBy
    start: str
    end: str
    currency: str
    timezone: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"group_by": self.group_by, "from": self.start, "to": self.end,
                "currency": self.currency, "timezone": self.timezone,
                "rows": self.lines, "totals": self.totals}

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        columns = [self.group_by, "name", "requests", "failed", "input_tokens",
                   "output_tokens", "tokens", "cost", "currency"]
        writer.writerow(columns)
        for line in self.lines:
            writer.writerow([_cell(line["key"]), line.get("name") or "", line["requests"],
                             line["failed"], line["input_tokens"], line["output_tokens"],
                             line["tokens"], f"{line['cost']:.6f}", self.currency])
        return out.getvalue()


def _cell(value: Any) -> Any:
    return "" if value is None else value


class UsageService:
    def __init__(self, settings: Settings, storage: Storage, budgets: Budgets) -> None:
        self.settings = settings
        self.db = storage.db
        self.budgets = budgets
        self.calendar = budgets.calendar

    # ------------------------------------------------------------------ a member's own

    async def summary(self, principal: Principal) -> dict[str, Any]:
        """The principal's use today and this month (a client's: all its users together),
        its budgets, and what is left of each (the tighter of its own and its client's)."""
        periods, today, month = await self.budgets.totals(principal.id)
        states = await self.budgets.states(principal)
        limits = self.budgets.limits_of(principal)
        remaining: dict[str, float | None] = dict.fromkeys(BUDGET_KEYS)
        resets = {kind: iso(periods.ends(kind)) for kind in BUDGET_KEYS}
        client_limits: dict[str, float] = {}
        for state in states:
            value = _rounded(state.kind, state.remaining)
            current = remaining[state.kind]
            remaining[state.kind] = value if current is None else min(current, value)
            if state.whose != "your" and principal.client_id is not None:
                client_limits[state.kind] = state.limit
        return {
            "user": principal.public(),
            "currency": self.settings.billing.currency,
            "timezone": self.settings.billing.timezone,
            "day": periods.day[2:], "month": periods.month[2:],
            "requests_today": today.requests, "requests_this_month": month.requests,
            "tokens_today": today.tokens, "tokens_this_month": month.tokens,
            "cost_today": round(today.cost, 6), "cost_this_month": round(month.cost, 6),
            "limits": {k: (None if v is None else _rounded(k, v)) for k, v in limits.items()},
            "client_limits": client_limits,
            "remaining": remaining,
            "resets": resets,
        }

    # ------------------------------------------------------------------ reports

    def date_range(self, start: str | None, end: str | None) -> tuple[str, str]:
        """The report's first and last day (inclusive): by default this month so far."""
        today = self.calendar.local_day(datetime.now(self.calendar.zone))
        start = start or today[:8] + "01"
        end = end or today
        for name, value in (("from", start), ("to", end)):
            try:
                datetime.strptime(value, "%Y-%m-%d")
            except ValueError:
                raise BadRequest(f"{name} must be a date as YYYY-MM-DD, got {value!r}",
                                 code="bad_date") from None
        if start > end:
            raise BadRequest(f"from ({start}) is after to ({end})", code="bad_date")
        days = (datetime.strptime(end, "%Y-%m-%d") - datetime.strptime(start, "%Y-%m-%d")).days
        if days >= MAX_REPORT_DAYS:
            raise BadRequest(f"a report covers at most {MAX_REPORT_DAYS} days", code="bad_date")
        return start, end

    async def report(self, group_by: GroupBy, start: str | None = None,
                     end: str | None = None, *, client_id: int | None = None,
                     own_key: bool = False) -> Report:
        if group_by not in GROUPS:
            raise BadRequest(f"group_by must be one of {', '.join(GROUPS)}", code="bad_group")
        start, end = self.date_range(start, end)
        begin_utc, _ = self.calendar.day_bounds(start)
        _, end_utc = self.calendar.day_bounds(end)
        lines = await self.lines(group_by, begin_utc, end_utc, client_id=client_id,
                                 own_key=own_key)
        report = Report(group_by, start, end, self.settings.billing.currency,
                        self.settings.billing.timezone)
        names: dict[int, tuple[str, str | None]] = {}
        if group_by in ("user", "client"):
            names = await principal_names(self.db, [int(x.key) for x in lines
                                                    if x.key is not None])
        total = UsageLine(key=None)
        for line in sorted(lines, key=lambda x: _order(group_by, x)):
            total.add(line)
            item = _line(line)
            if group_by in ("user", "client"):
                name, userid = names.get(int(line.key), ("(removed)", None)) \
                    if line.key is not None else ("(none)", None)
                item["name"] = name
                if group_by == "user":
                    item["userid"] = userid
            report.lines.append(item)
        report.totals = _line(total)
        del report.totals["key"]
        return report

    async def lines(self, group_by: GroupBy, begin: datetime, end: datetime, *,
                    client_id: int | None = None, own_key: bool = False,
                    by_model: bool = False) -> list[UsageLine]:
        """Totals in [begin, end), local days when grouped by day."""
        if group_by != "day":
            return await usage_lines(self.db, group_by, iso(begin), iso(end),
                                     client_id=client_id, own_key=own_key, by_model=by_model)
        hours = await usage_lines(self.db, "hour", iso(begin), iso(end), client_id=client_id,
                                  own_key=own_key, by_model=by_model)
        days: dict[tuple[str, str | None], UsageLine] = {}
        for hour in hours:
            moment = datetime.fromisoformat(f"{hour.key}:00:00+00:00")
            day = self.calendar.local_day(moment)
            line = days.setdefault((day, hour.model), UsageLine(key=day, model=hour.model))
            line.add(hour)
        return list(days.values())

    def days(self, start: str, end: str) -> list[str]:
        first = datetime.strptime(start, "%Y-%m-%d")
        count = (datetime.strptime(end, "%Y-%m-%d") - first).days + 1
        return [(first + timedelta(days=n)).strftime("%Y-%m-%d") for n in range(count)]


def _order(group_by: GroupBy, line: UsageLine) -> tuple[Any, ...]:
    if group_by == "day":
        return (str(line.key),)
    return (-line.tokens, str(line.key))


def _line(line: UsageLine) -> dict[str, Any]:
    return {"key": line.key, "requests": line.requests, "failed": line.failed,
            "input_tokens": line.input_tokens, "output_tokens": line.output_tokens,
            "tokens": line.tokens, "cost": round(line.cost, 6)}


def _rounded(kind: str, value: float) -> float:
    return round(value, 6) if KIND_MEASURE[kind] == "cost" else int(value)
