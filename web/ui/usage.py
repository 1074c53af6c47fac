"""Usage pages: a member's own use this month against their budgets (``/usage``), and for admins
and clients a dashboard over a date range (``/admin/usage``) with its CSV (``/admin/usage.csv``).

Every number comes from the facade: ``gateway.usage`` (the member's totals and budgets, as
``/api/usage`` gives them), the spend totals per day (what the budgets count), and
``gateway.usage_report`` (as ``/api/admin/usage``: a client sees its own users only).
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from core.billing import KIND_MEASURE
from core.config import BUDGET_KEYS
from core.errors import BadRequest, Forbidden
from core.gateway import Gateway
from core.models import Principal
from core.storage.usage_report import GROUPS, GroupBy, UsageLine

from ..api import MAX_ID_CHARS
from ..keys import GATEWAY
from .admin import MANAGERS, NOT_A_MANAGER, member
from .charts import SERIES_COLOURS, Series, bar_chart
from .pages import page, render, signed_in

TOP_USERS = 10
MAX_CHART_MODELS = 7
"""Past eight models, all but the first seven share one "other models" colour: a chart of twenty
colours reads as none."""
OTHER_MODELS = "other models"
BUDGET_LABELS = {"tokens_per_day": "Tokens per day", "tokens_per_month": "Tokens per month",
                 "cost_per_month": "Cost per month"}
USED_BY_KIND = {"tokens_per_day": "tokens_today", "tokens_per_month": "tokens_this_month",
                "cost_per_month": "cost_this_month"}
GROUP_LABELS: dict[str, str] = {"user": "by user", "client": "by client",
                                "account": "by account", "model": "by model", "day": "by day"}


def tokens(value: float) -> str:
    return f"{round(value):,} tokens"


def money(value: float, currency: str) -> str:
    """Costs are often fractions of a cent: enough digits to tell them from zero."""
    size = abs(value)
    digits = 2 if size == 0 or size >= 1 else 4 if size >= 0.0001 else 6
    return f"{value:,.{digits}f} {currency}"


def amount(kind: str, value: float, currency: str) -> str:
    return money(value, currency) if KIND_MEASURE[kind] == "cost" else tokens(value)


def month_days(month: str) -> list[str]:
    """Every day of ``YYYY-MM``."""
    year, number = int(month[:4]), int(month[5:7])
    count = calendar.monthrange(year, number)[1]
    return [f"{month}-{day:02d}" for day in range(1, count + 1)]


# --------------------------------------------------------------------------------- a member's


def budget_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each budget the member falls under: its limit (theirs, or their client's ceiling), what
    they used, what is left (the tighter of the two) and when it resets."""
    currency = summary["currency"]
    rows = []
    for kind in BUDGET_KEYS:
        own = summary["limits"].get(kind)
        ceiling = summary["client_limits"].get(kind)
        left = summary["remaining"].get(kind)
        if own is None and ceiling is None:
            continue
        limit = own if own is not None else ceiling
        left = limit if left is None else left
        gone = 100 if limit <= 0 else min(100, max(0, round(100 * (limit - left) / limit)))
        rows.append({
            "kind": kind, "label": BUDGET_LABELS[kind],
            "limit": amount(kind, limit, currency),
            "ceiling": None if ceiling is None else amount(kind, ceiling, currency),
            "used": amount(kind, summary[USED_BY_KIND[kind]], currency),
            "left": amount(kind, left, currency), "spent": left <= 0,
            "percent": gone, "resets": summary["resets"].get(kind),
        })
    return rows


@page()
async def member_page(request: web.Request) -> web.StreamResponse:
    """This month's use, the budgets with what is left, and a chart of tokens per day: the
    viewer's own, or with ``?user=REF`` (admins and clients) a member's they manage."""
    viewer = signed_in(request).principal
    gateway = request.app[GATEWAY]
    ref = request.query.get("user", "").strip()[:MAX_ID_CHARS]
    principal = viewer
    if ref:
        if viewer.role not in MANAGERS:
            raise Forbidden(NOT_A_MANAGER, code="not_allowed")
        # Anyone for an admin, its own users for a client (by its own ids).
        principal = await member(gateway, viewer, ref)
    # Asked as the member: what /api/usage answers them.
    summary = await gateway.usage(principal)
    days = month_days(summary["month"])
    per_day = await _daily_spend(gateway, principal, days)
    currency = summary["currency"]
    month_name = datetime.strptime(summary["month"], "%Y-%m").strftime("%B %Y")
    whose = f"{principal.name}'s" if ref else "Your"
    chart = bar_chart("daily-tokens", f"{whose} tokens per day, {month_name}", days,
                      [Series("tokens", {d: float(t) for d, (_, t, _) in per_day.items()})],
                      tokens)
    return await render(request, "usage.html", {
        "section": "admin" if ref else "usage", "summary": summary, "month_name": month_name,
        "owner": principal if ref else None, "tab": "users",
        "whose": "your users' together" if principal.is_client else "your",
        "stats": [
            ("Tokens this month", f"{summary['tokens_this_month']:,}"),
            (f"Cost this month ({currency})", money(summary["cost_this_month"], currency)),
            ("Requests this month", f"{summary['requests_this_month']:,}"),
            ("Tokens today", f"{summary['tokens_today']:,}"),
        ],
        "budgets": budget_rows(summary), "chart": chart,
        "days": [(d, r, tokens(t), money(c, currency))
                 for d, (r, t, c) in per_day.items() if r or t or c],
    })


async def _daily_spend(gateway: Gateway, principal: Principal, days: list[str]
                       ) -> dict[str, tuple[int, int, float]]:
    """(requests, tokens, cost) per day: the running totals the budgets count, one row a day
    (a client's are all its users' together)."""
    keys = [(principal.id, f"d:{day}") for day in days]
    found = await gateway.budgets.spend.totals(keys)
    result = {}
    for day, key in zip(days, keys, strict=True):
        totals = found.get(key)
        result[day] = (totals.requests, totals.tokens, totals.cost) if totals else (0, 0, 0.0)
    return result


# --------------------------------------------------------------------------------- dashboard


def _dates(request: web.Request) -> tuple[str | None, str | None]:
    return (request.query.get("from", "").strip()[:10] or None,
            request.query.get("to", "").strip()[:10] or None)


def presets(today: str) -> list[tuple[str, str, str]]:
    """Ranges one click away: (label, from, to)."""
    day = datetime.strptime(today, "%Y-%m-%d")
    last_month_end = day.replace(day=1) - timedelta(days=1)
    return [
        ("This month", today[:8] + "01", today),
        ("Last 7 days", (day - timedelta(days=6)).strftime("%Y-%m-%d"), today),
        ("Last 30 days", (day - timedelta(days=29)).strftime("%Y-%m-%d"), today),
        ("Last month", last_month_end.strftime("%Y-%m-01"), last_month_end.strftime("%Y-%m-%d")),
    ]


def model_name(model: str | None) -> str:
    return "(no model)" if model is None else str(model)


def by_model(lines: list[UsageLine], ranked: list[str]
             ) -> tuple[list[str], dict[str, dict[str, float]], dict[str, dict[str, float]],
                        dict[str, list[float]]]:
    """The charts' series from lines per day and model: the models in ``ranked`` order (the
    busiest first), tokens and cost per series and day, and [requests, tokens, cost] per day."""
    # Eight models fit; a ninth would make "other models" stand for two.
    shown = ranked if len(ranked) <= MAX_CHART_MODELS + 1 else ranked[:MAX_CHART_MODELS]
    names = shown + ([OTHER_MODELS] if len(ranked) > len(shown) else [])
    token_values: dict[str, dict[str, float]] = {name: {} for name in names}
    cost_values: dict[str, dict[str, float]] = {name: {} for name in names}
    per_day: dict[str, list[float]] = {}
    for line in lines:
        name = model_name(line.model)
        name = name if name in shown else OTHER_MODELS
        day = str(line.key)
        token_values[name][day] = token_values[name].get(day, 0.0) + line.tokens
        cost_values[name][day] = cost_values[name].get(day, 0.0) + line.cost
        sums = per_day.setdefault(day, [0, 0, 0.0])
        sums[0] += line.requests
        sums[1] += line.tokens
        sums[2] += line.cost
    return names, token_values, cost_values, per_day


@page(roles=MANAGERS, refusal=NOT_A_MANAGER)
async def dashboard(request: web.Request) -> web.StreamResponse:
    """Daily tokens and cost by model, top users and per-account use over a date range."""
    viewer = signed_in(request).principal
    gateway = request.app[GATEWAY]
    service = gateway.usage_service
    wanted = _dates(request)
    error, status = None, 200
    try:
        start, end = service.date_range(*wanted)
    except BadRequest as err:
        error, status = err.message, err.status
        start, end = service.date_range(None, None)
    users = await gateway.usage_report(viewer, "user", start, end)
    accounts = await gateway.usage_report(viewer, "account", start, end)
    models = await gateway.usage_report(viewer, "model", start, end)
    currency = users.currency
    days = service.days(start, end)
    begin_utc, _ = service.calendar.day_bounds(start)
    _, end_utc = service.calendar.day_bounds(end)
    # The facade checked the viewer's role above (usage_report); a client's lines are its own.
    lines = await service.lines("day", begin_utc, end_utc, by_model=True,
                                client_id=viewer.id if viewer.is_client else None)
    names, token_values, cost_values, per_day = by_model(
        lines, [model_name(row["key"]) for row in models.lines])

    def fmt_money(value: float) -> str:
        return money(value, currency)

    span = f"{start} to {end}"
    token_chart = bar_chart("chart-tokens", f"Tokens per day by model, {span}", days,
                            [Series(n, token_values[n]) for n in names], tokens)
    cost_chart = bar_chart("chart-cost", f"Cost per day by model ({currency}), {span}", days,
                           [Series(n, cost_values[n]) for n in names], fmt_money,
                           empty="No cost in this period" if lines else "No use in this period")
    today = service.date_range(None, None)[1]
    return await render(request, "admin_usage.html", {
        "section": "admin", "tab": "usage", "start": start, "end": end, "error": error,
        "currency": currency,
        "stats": [
            ("Requests", f"{users.totals['requests']:,}"),
            ("Tokens", f"{users.totals['tokens']:,}"),
            (f"Cost ({currency})", money(users.totals["cost"], currency)),
            ("Failed calls", f"{users.totals['failed']:,}"),
        ],
        "token_chart": token_chart, "cost_chart": cost_chart,
        "legend": [(number % SERIES_COLOURS, name) for number, name in enumerate(names)],
        "days": [(d, int(s[0]), tokens(s[1]), money(s[2], currency))
                 for d, s in sorted(per_day.items())],
        "top_users": users.lines[:TOP_USERS], "user_count": len(users.lines),
        "accounts": accounts.lines, "models": models.lines,
        "money": fmt_money, "presets": presets(today),
        "groups": [(g, GROUP_LABELS[g]) for g in GROUPS],
    }, status=status)


@page(roles=MANAGERS, refusal=NOT_A_MANAGER)
async def csv_download(request: web.Request) -> web.StreamResponse:
    """The report ``/api/admin/usage?format=csv`` gives, through the signed-in session."""
    viewer = signed_in(request).principal
    group = request.query.get("group_by", "user")
    if group not in GROUPS:
        raise BadRequest(f"group_by must be one of {', '.join(GROUPS)}", code="bad_group")
    group_by: GroupBy = group
    report = await request.app[GATEWAY].usage_report(viewer, group_by, *_dates(request))
    name = f"usage-{report.group_by}-{report.start}-{report.end}.csv"
    return web.Response(text=report.csv(), content_type="text/csv", charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
