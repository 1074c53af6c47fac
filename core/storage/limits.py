"""The per-caller request limit (``[limits] user_requests_per_minute``).

At most ``per_minute`` requests per principal in any sliding minute. On SQLite the one process
counts in memory; on PostgreSQL every process counts in one row per caller (its request times of
the last minute), checked and updated in one statement, so the limit holds for all processes
together at the cost of one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ..errors import RateLimited
from .database import Database

WINDOW_S = 60.0


class RateLimiter(Protocol):
    per_minute: int

    async def check(self, principal_id: int) -> None:
        """Count one request, or raise ``RateLimited`` (not counted) when over the limit."""
        ...

    async def state(self, principal_id: int) -> tuple[int, float]:
        """Requests left in the current minute, and seconds until one more is free."""
        ...


def _refusal(per_minute: int, retry_after: float) -> RateLimited:
    return RateLimited(f"limit of {per_minute} requests a minute reached; try again shortly",
                       retry_after=max(0.0, retry_after))


class MemoryRateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._seen: dict[int, list[float]] = {}
        self._next_sweep = 0.0

    async def check(self, principal_id: int) -> None:
        if not self.per_minute:
            return
        now = self._clock()
        if now >= self._next_sweep:
            # Forget callers idle for a minute, so the table does not grow with every key ever seen.
            self._seen = {p: times for p, times in self._seen.items()
                          if now - times[-1] < WINDOW_S}
            self._next_sweep = now + WINDOW_S
        recent = [t for t in self._seen.get(principal_id, ()) if now - t < WINDOW_S]
        if len(recent) >= self.per_minute:
            self._seen[principal_id] = recent
            raise _refusal(self.per_minute, WINDOW_S - (now - recent[0]))
        recent.append(now)
        self._seen[principal_id] = recent

    async def state(self, principal_id: int) -> tuple[int, float]:
        now = self._clock()
        recent = [t for t in self._seen.get(principal_id, ()) if now - t < WINDOW_S]
        left = max(0, self.per_minute - len(recent))
        return left, (WINDOW_S - (now - recent[0])) if recent and not left else 0.0


# The row lock that ON CONFLICT DO UPDATE takes orders concurrent requests of one caller, from
# any process; the WHERE refuses the update (no row returned) when the window is full.
_COUNT = (
    "INSERT INTO rate_windows AS w (principal_id, hits) VALUES ($1, ARRAY[$2::float8])"
    " ON CONFLICT (principal_id) DO UPDATE SET hits = array_append("
    "  ARRAY(SELECT h FROM unnest(w.hits) AS h WHERE h > $2::float8 - $4 ORDER BY h), $2::float8)"
    " WHERE (SELECT count(*) FROM unnest(w.hits) AS h WHERE h > $2::float8 - $4) < $3"
    " RETURNING 1"
)
_OLDEST = (
    "SELECT min(h) FROM rate_windows, unnest(hits) AS h"
    " WHERE principal_id = $1 AND h > $2::float8 - $3"
)


class SharedRateLimiter:
    def __init__(self, db: Database, per_minute: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.per_minute = per_minute
        self._clock = clock

    async def check(self, principal_id: int) -> None:
        if not self.per_minute:
            return
        now = self._clock()
        if await self.db.fetchone(_COUNT, (principal_id, now, self.per_minute, WINDOW_S)):
            return
        oldest = await self.db.fetchone(_OLDEST, (principal_id, now, WINDOW_S))
        first = float(oldest[0]) if oldest and oldest[0] is not None else now
        raise _refusal(self.per_minute, WINDOW_S - (now - first))

    async def state(self, principal_id: int) -> tuple[int, float]:
        now = self._clock()
        row = await self.db.fetchone(
            "SELECT count(*), min(h) FROM rate_windows, unnest(hits) AS h"
            " WHERE principal_id = $1 AND h > $2::float8 - $3", (principal_id, now, WINDOW_S))
        count = int(row[0]) if row else 0
        left = max(0, self.per_minute - count)
        first = float(row[1]) if row and row[1] is not None else now
        return left, (WINDOW_S - (now - first)) if not left else 0.0
