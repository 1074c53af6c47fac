"""Running totals of what each principal used per period, the holds of requests in flight, and
the budget alerts: the storage side of ``core.budgets``.

``spend`` has one row per scope and period (``d:2026-12-01``, ``m:2026-12``): a principal's own
use, and a client's for all its users together. Every pool call adds to its rows in the same
transaction as its usage row (one multi-row upsert), so a budget check or a usage page reads a
row or two, never the whole log.

Holds (reservations of requests in flight) live in memory on SQLite, whose one process sees them
all; on PostgreSQL in ``budget_holds``, checked and taken under a transaction-scoped advisory
lock per scope, so that processes taking holds for one member at once are served one by one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..clock import iso, utc_now
from .database import Database, Row, Statement

ALERTS = "gateway_budget_alerts"
"""Announced when a budget alert is recorded; the Discord bot posts it."""


@dataclass(slots=True)
class Totals:
    requests: int = 0
    tokens: int = 0
    cost: float = 0.0

    def add(self, requests: int, tokens: int, cost: float) -> None:
        self.requests += requests
        self.tokens += tokens
        self.cost += cost


SpendRow = tuple[int, str, int, int, float]
"""(scope_id, period, requests, tokens, cost): an amount to add."""
Key = tuple[int, str]


def add_spend(rows: Sequence[SpendRow]) -> Statement:
    """One statement adding ``rows`` to the totals, creating the rows a period starts with."""
    return _add_spend_sql(len(rows)), [value for row in rows for value in row]


@functools.cache
def _add_spend_sql(count: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * count)
    return (
        f"INSERT INTO spend (scope_id, period, requests, tokens, cost) VALUES {values}"
        " ON CONFLICT (scope_id, period) DO UPDATE SET"
        " requests = spend.requests + excluded.requests,"
        " tokens = spend.tokens + excluded.tokens, cost = spend.cost + excluded.cost"
    )


def drop_hold(hold_id: str) -> Statement:
    return ("DELETE FROM budget_holds WHERE id = ?", (hold_id,))


@dataclass(frozen=True, slots=True)
class Alert:
    scope_id: int
    budget: str
    period: str
    threshold: int
    used: float
    limit: float
    created_utc: str


class SpendRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def totals(self, keys: Iterable[Key]) -> dict[Key, Totals]:
        """The totals of these (scope, period) pairs; absent pairs are not in the answer."""
        keys = list(keys)
        if not keys:
            return {}
        where = " OR ".join(["(scope_id = ? AND period = ?)"] * len(keys))
        rows = await self.db.fetchall(
            f"SELECT scope_id, period, requests, tokens, cost FROM spend WHERE {where}",
            [value for key in keys for value in key])
        return {(r[0], r[1]): Totals(int(r[2]), int(r[3]), float(r[4])) for r in rows}

    async def all_in(self, periods: Sequence[str]) -> dict[Key, Totals]:
        """Every scope's totals for these periods (the SQLite ledger's start)."""
        marks = ", ".join("?" * len(periods))
        rows = await self.db.fetchall(
            f"SELECT scope_id, period, requests, tokens, cost FROM spend WHERE period IN ({marks})",
            list(periods))
        return {(r[0], r[1]): Totals(int(r[2]), int(r[3]), float(r[4])) for r in rows}

    async def top(self, period: str, *, client_id: int | None, limit: int) -> list[Row]:
        """The principals who used the most tokens in a period (their own use), most first;
        ``client_id``: among that client's users."""
        where = "s.period = ?"
        params: list[Any] = [period]
        if client_id is not None:
            where += " AND p.client_id = ?"
            params.append(client_id)
        else:
            where += " AND p.role <> 'client'"  # a client's row is its users' sum
        return await self.db.fetchall(
            "SELECT p.id, p.name, p.external_id, p.client_id, s.requests, s.tokens, s.cost"
            f" FROM spend s JOIN principals p ON p.id = s.scope_id WHERE {where}"
            " ORDER BY s.tokens DESC, p.id LIMIT ?", [*params, limit])

    # ------------------------------------------------------------------ holds (PostgreSQL)

    async def take_holds(self, hold_id: str, scope_ids: Sequence[int], periods: Sequence[str],
                         wanted: dict[Key, tuple[int, float]], limits: dict[Key, dict[str, float]],
                         now: float, expires: float
                         ) -> tuple[dict[Key, Totals], dict[Key, tuple[int, float]], Key | None,
                                    str | None]:
        """Under a lock per scope: read the totals and the live holds, and take ``wanted``
        unless a limit is already reached. Returns the totals, the holds of others, and the
        (key, kind) that refused, if any (then nothing is held)."""
        from .postgres import lock_key  # asyncpg only when it is used

        keys = [(s, p) for s in scope_ids for p in periods]
        async with self.db.transaction() as tx:
            for scope_id in sorted(set(scope_ids)):
                await tx.fetchone("SELECT pg_advisory_xact_lock(?)",
                                  (lock_key(f"budget:{scope_id}"),))
            where = " OR ".join(["(scope_id = ? AND period = ?)"] * len(keys))
            flat = [value for key in keys for value in key]
            rows = await tx.fetchall(
                f"SELECT scope_id, period, requests, tokens, cost FROM spend WHERE {where}", flat)
            totals = {(r[0], r[1]): Totals(int(r[2]), int(r[3]), float(r[4])) for r in rows}
            # Holds whose process never settled them (it died) end at their deadline.
            await tx.execute(f"DELETE FROM budget_holds WHERE ({where}) AND expires <= ?",
                             [*flat, now])
            held_rows = await tx.fetchall(
                "SELECT scope_id, period, sum(tokens), sum(cost) FROM budget_holds"
                f" WHERE {where} GROUP BY scope_id, period", flat)
            held = {(r[0], r[1]): (int(r[2]), float(r[3])) for r in held_rows}
            for key, kinds in limits.items():
                spent = totals.get(key, Totals())
                tokens_held, cost_held = held.get(key, (0, 0.0))
                for kind, limit in kinds.items():
                    used = spent.cost + cost_held if kind == "cost_per_month" \
                        else spent.tokens + tokens_held
                    if used >= limit:
                        return totals, held, key, kind
            for (scope_id, period), (tokens, cost) in wanted.items():
                await tx.execute(
                    "INSERT INTO budget_holds (id, scope_id, period, tokens, cost, expires)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (hold_id, scope_id, period, tokens, cost, expires))
        return totals, held, None, None

    async def held(self, keys: Sequence[Key], now: float) -> dict[Key, tuple[int, float]]:
        if not keys:
            return {}
        where = " OR ".join(["(scope_id = ? AND period = ?)"] * len(keys))
        rows = await self.db.fetchall(
            "SELECT scope_id, period, sum(tokens), sum(cost) FROM budget_holds"
            f" WHERE ({where}) AND expires > ? GROUP BY scope_id, period",
            [*[value for key in keys for value in key], now])
        return {(r[0], r[1]): (int(r[2]), float(r[3])) for r in rows}

    async def release(self, hold_id: str) -> None:
        await self.db.write([drop_hold(hold_id)], quick=True)

    # ------------------------------------------------------------------ alerts

    async def record_alert(self, alert: Alert) -> bool:
        """Record an alert unless this one (scope, budget, period, threshold) already was;
        True when it is new, announced to every process."""
        async with self.db.transaction() as tx:
            added = await tx.execute(
                "INSERT INTO budget_alerts (scope_id, budget, period, threshold, used,"
                " budget_limit, created_utc) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (alert.scope_id, alert.budget, alert.period, alert.threshold, alert.used,
                 alert.limit, alert.created_utc))
            if added:
                await tx.notify(ALERTS, str(alert.scope_id))
        return bool(added)

    async def take_alerts(self, client_id: int | None = None) -> list[Alert]:
        """The alerts not yet delivered, marked delivered (by whoever takes them first);
        ``client_id``: only those of that client and its users (others stay for others)."""
        where = "delivered_utc IS NULL"
        params: list[Any] = [iso(utc_now())]
        if client_id is not None:
            where += (" AND scope_id IN (SELECT id FROM principals WHERE id = ?"
                      " OR client_id = ?)")
            params += [client_id, client_id]
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                f"UPDATE budget_alerts SET delivered_utc = ? WHERE {where}"
                " RETURNING scope_id, budget, period, threshold, used, budget_limit,"
                " created_utc", params)
        alerts = [Alert(r[0], r[1], r[2], int(r[3]), float(r[4]), float(r[5]), r[6])
                  for r in rows]
        return sorted(alerts, key=lambda a: (a.created_utc, a.threshold))
