"""The text of usage and budgets in Discord: ``/usage``, ``/admin usage``, ``/admin limit`` and
the budget alerts. Pure functions of the core's records, so the wording is tested without
Discord.

Times are Discord timestamps (``<t:UNIX:R>``): each reader sees them in their own time zone,
whatever ``[billing] timezone`` the periods are counted in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from core.billing import KIND_MEASURE, KIND_PERIOD, describe_limit
from core.budgets import BudgetState
from core.storage.spend import Alert

from .format import escape

BAR_CELLS = 10
TOP_MEMBERS = 10
"""Members listed by ``/admin usage``."""
KIND_LABEL = {"tokens_per_day": "Tokens per day", "tokens_per_month": "Tokens per month",
              "cost_per_month": "Cost per month"}


def bar(percent: float) -> str:
    """``█████░░░░░ 52%``: a cell per tenth, filled only once that tenth is used up, so a full
    bar means the budget is spent."""
    filled = min(BAR_CELLS, max(0, math.floor(percent / (100 / BAR_CELLS))))
    return f"`{'█' * filled}{'░' * (BAR_CELLS - filled)}` {math.floor(percent)}%"


def money(value: float, currency: str) -> str:
    """An amount with two decimals, or four when it is under a cent (not shown as 0.00)."""
    return f"{value:,.4f} {currency}" if 0 < value < 0.01 else f"{value:,.2f} {currency}"


def amount(kind: str, value: float, currency: str) -> str:
    if KIND_MEASURE[kind] == "cost":
        return money(value, currency)
    return describe_limit(kind, value, currency)


def timestamp(moment: datetime, style: str = "R") -> str:
    return f"<t:{int(moment.timestamp())}:{style}>"


def percent_used(state: BudgetState) -> float:
    """What is used and held (in flight) of a budget, in percent; a zero budget is spent."""
    if state.limit <= 0:
        return 100.0
    return (state.used + state.held) * 100 / state.limit


def budget_line(state: BudgetState, currency: str) -> str:
    left = amount(state.kind, state.remaining, currency)
    limit = amount(state.kind, state.limit, currency)
    return (f"{KIND_LABEL[state.kind]}: {bar(percent_used(state))} · {left} left of {limit}"
            f" · resets {timestamp(state.resets)}")


def totals_line(label: str, tokens: int, requests: int, cost: float, currency: str) -> str:
    return (f"{label}: {tokens:,} tokens · {requests:,} request{'s' * (requests != 1)}"
            f" · {money(cost, currency)}")


def usage_text(summary: Mapping[str, Any], states: Sequence[BudgetState]) -> str:
    """``/usage``: the member's use today and this month, and each budget they fall under."""
    currency = str(summary["currency"])
    lines = [
        "**Your usage**",
        totals_line(f"Today ({summary['day']})", summary["tokens_today"],
                    summary["requests_today"], summary["cost_today"], currency),
        totals_line(f"This month ({summary['month']})", summary["tokens_this_month"],
                    summary["requests_this_month"], summary["cost_this_month"], currency),
        "",
    ]
    own = [s for s in states if s.whose == "your"]
    shared = [s for s in states if s.whose != "your"]
    if not states:
        lines.append("No budget limits your use: you may use the bot as much as you need "
                     "(within its rate limit).")
    if own:
        lines.append("**Your budgets**")
        lines += [budget_line(s, currency) for s in own]
    if shared:
        lines.append("**The server's shared budget** (all members together)")
        lines += [budget_line(s, currency) for s in shared]
    if any(s.remaining <= 0 for s in states):
        lines.append("A spent budget refuses new requests until it resets.")
    return "\n".join(lines)


def admin_usage_text(report: Mapping[str, Any], ceiling: Sequence[BudgetState],
                     top: int = TOP_MEMBERS) -> str:
    """``/admin usage``: this month's totals of the bot's members, the top ones, and the bot's
    own budget (all members together) when it has one. ``report``: ``Report.public()``."""
    currency = str(report["currency"])
    totals = report["totals"]
    rows = list(report["rows"])
    failed = f" ({totals['failed']:,} failed)" if totals["failed"] else ""
    lines = [
        f"**Usage this month** · {report['from']} to {report['to']} · {len(rows):,} "
        f"member{'s' * (len(rows) != 1)}",
        totals_line("Total", totals["tokens"], totals["requests"], totals["cost"], currency)
        + failed,
    ]
    if rows:
        lines.append(f"**Top {min(top, len(rows))}** (by tokens)")
        for rank, row in enumerate(rows[:top], 1):
            name = escape(str(row.get("name")))
            who = f"<@{row['userid']}> ({name})" if row.get("userid") else name
            lines.append(f"{rank}. {who} · {row['tokens']:,} tokens · {row['requests']:,} "
                         f"request{'s' * (row['requests'] != 1)} · {money(row['cost'], currency)}")
        if len(rows) > top:
            lines.append(f"… and {len(rows) - top:,} more")
    else:
        lines.append("No member has used the bot this month.")
    if ceiling:
        lines.append("**The bot's shared budget** (all members together)")
        lines += [budget_line(s, currency) for s in ceiling]
    return "\n".join(lines)


def limit_text(member_id: int, kind: str, set_value: float | None, explicit: bool, tier: str,
               tier_value: float | None, used: float, currency: str) -> str:
    """``/admin limit``: what the member's budget of ``kind`` is now, and where it comes
    from (set for them, or their tier's default)."""
    label = KIND_LABEL[kind].lower()
    period = "today" if KIND_PERIOD[kind] == "day" else "this month"
    default = None if tier_value is None else amount(kind, tier_value, currency)
    if explicit and set_value is None:
        text = f"<@{member_id}> now has no {label} budget" + (
            "." if default is None else
            f" (the {tier} tier's default, {default}, no longer applies to them).")
    elif explicit:
        assert set_value is not None
        text = (f"<@{member_id}>'s {label} budget is now {amount(kind, set_value, currency)}, "
                "set for them " + (f"(the {tier} tier has none)." if default is None else
                                   f"(the {tier} tier's default is {default})."))
    elif default is None:
        text = f"<@{member_id}> follows the {tier} tier again, which has no {label} budget."
    else:
        text = f"<@{member_id}>'s {label} budget follows the {tier} tier's default: {default}."
    return f"{text}\nThey have used {amount(kind, used, currency)} {period}."


CEILING_ALERT = ("The bot's members together have", "the bot's shared")
"""How an alert names the bot's own budget (all its members together)."""


def member_alert(who: str) -> tuple[str, str]:
    """How an alert names a member's own budget."""
    return f"{who} has", "their"


def alert_text(alert: Alert, whose: tuple[str, str], ends: datetime, now: datetime,
               currency: str) -> str:
    """One budget alert for the admin channel. ``whose``: ``member_alert(who)`` or
    ``CEILING_ALERT``."""
    subject, possessive = whose
    label = KIND_LABEL[alert.budget].lower()
    window = alert.period[2:]
    used = amount(alert.budget, alert.used, currency)
    limit = amount(alert.budget, alert.limit, currency)
    resets = f"resets {timestamp(ends)}" if ends > now else "that window has ended"
    if alert.threshold >= 100:
        head = f"🛑 {subject} used all of {possessive} {label} budget for {window}"
        if ends > now:
            resets = f"requests are refused until it resets {timestamp(ends)}"
    else:
        head = (f"⚠️ {subject} used {alert.threshold}% of {possessive} {label} budget for "
                f"{window}")
    return f"{head}: {used} of {limit} ({resets})."
