"""Account health that every process shares and a restart keeps.

A row per account that is cooling down or out of service; no row (or a blank one) is healthy.
Cool-downs are wall-clock deadlines (seconds since the epoch), so every process and machine
reads them alike. Each change is announced on ``CHANGES`` with the account's name, and moves the
row's ``version`` on: a process that re-reads a row after an announcement keeps it only if it
is newer than what it holds, so a slow read never undoes a later change.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..clock import iso, utc_now
from .database import ChangeListener, Database, Row

CHANGES = "gateway_accounts"


@dataclass(frozen=True, slots=True)
class AccountState:
    name: str
    cooling_until: float = 0.0
    cooling_reason: str | None = None
    out_reason: str | None = None
    version: int = 0
    """Moved on by every save (0: never saved)."""


def _state(row: Row) -> AccountState:
    return AccountState(row["name"], float(row["cooling_until"]), row["cooling_reason"],
                        row["out_reason"], int(row["version"]))


class AccountStateRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> dict[str, AccountState]:
        rows = await self.db.fetchall(
            "SELECT name, cooling_until, cooling_reason, out_reason, version FROM account_state")
        return {row["name"]: _state(row) for row in rows}

    async def get(self, name: str) -> AccountState:
        row = await self.db.fetchone(
            "SELECT name, cooling_until, cooling_reason, out_reason, version"
            " FROM account_state WHERE name = ?", (name,))
        return _state(row) if row else AccountState(name)

    async def save(self, state: AccountState) -> int:
        """Save ``state`` (its version aside); the version it was saved as."""
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO account_state (name, cooling_until, cooling_reason, out_reason,"
                " updated_utc) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " cooling_until = excluded.cooling_until,"
                " cooling_reason = excluded.cooling_reason,"
                " out_reason = excluded.out_reason, updated_utc = excluded.updated_utc,"
                " version = account_state.version + 1 RETURNING version",
                (state.name, state.cooling_until, state.cooling_reason, state.out_reason,
                 iso(utc_now())),
            )
            await tx.notify(CHANGES, state.name)
        return int(row[0]) if row else 0

    def subscribe(self, listener: ChangeListener) -> None:
        """``listener(name)`` when an account's state changes anywhere (``*``: reload all)."""
        self.db.subscribe(CHANGES, listener)
