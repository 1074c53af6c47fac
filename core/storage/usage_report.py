"""Usage totals over a time range, grouped by user, client, account, model or day: what the
admin usage report, its CSV and the dashboards read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .database import Database

GroupBy = Literal["user", "client", "account", "model", "day", "hour"]
GROUPS: tuple[GroupBy, ...] = ("user", "client", "account", "model", "day")

_KEYS: dict[str, str] = {
    "user": "u.principal_id",
    # A client's own calls count as the client's, as its users' do.
    "client": "coalesce(u.client_id, CASE WHEN p.role = 'client' THEN p.id END)",
    "account": "u.account",
    "model": "u.model",
    "day": "substr(u.created_utc, 1, 10)",
    "hour": "substr(u.created_utc, 1, 13)",
}


@dataclass(slots=True)
class UsageLine:
    key: Any
    requests: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    model: str | None = None
    """Set when a report is split by model too (the dashboard's chart)."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: UsageLine) -> None:
        self.requests += other.requests
        self.failed += other.failed
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost += other.cost


async def usage_lines(db: Database, group_by: GroupBy, start_utc: str, end_utc: str, *,
                      client_id: int | None = None, own_key: bool = False,
                      by_model: bool = False) -> list[UsageLine]:
    """Totals of the usage rows made in [start_utc, end_utc), grouped. ``client_id``: only that
    client's users (and the client's own calls). ``own_key``: include calls made with
    members' own keys (their spending, not the organisation's). ``by_model``: split each group
    by model too."""
    where = ["u.created_utc >= ?", "u.created_utc < ?"]
    params: list[Any] = [start_utc, end_utc]
    if client_id is not None:
        where.append("(u.client_id = ? OR u.principal_id = ?)")
        params += [client_id, client_id]
    if not own_key:
        where.append("u.own_key = ?")
        params.append(False)
    key = _KEYS[group_by]
    model = ", u.model" if by_model else ""
    rows = await db.fetchall(
        f"SELECT {key} AS k{model},"
        " sum(CASE WHEN u.purpose <> 'title' AND u.outcome = 'ok' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN u.outcome <> 'ok' THEN 1 ELSE 0 END),"
        " coalesce(sum(u.input_tokens), 0), coalesce(sum(u.output_tokens), 0),"
        " coalesce(sum(u.cost), 0)"
        " FROM usage u LEFT JOIN principals p ON p.id = u.principal_id"
        f" WHERE {' AND '.join(where)} GROUP BY {key}{model}", params)
    lines = []
    for row in rows:
        offset = 1 if by_model else 0
        lines.append(UsageLine(
            key=row[0], requests=int(row[1 + offset] or 0), failed=int(row[2 + offset] or 0),
            input_tokens=int(row[3 + offset] or 0), output_tokens=int(row[4 + offset] or 0),
            cost=float(row[5 + offset] or 0), model=row[1] if by_model else None))
    return lines


async def principal_names(db: Database, ids: list[int]) -> dict[int, tuple[str, str | None]]:
    """Names and userids of principals, for a report's labels."""
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    rows = await db.fetchall(
        f"SELECT id, name, external_id FROM principals WHERE id IN ({marks})", ids)
    return {int(r[0]): (r[1], r[2]) for r in rows}
