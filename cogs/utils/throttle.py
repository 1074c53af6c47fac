"""Edits at most once per interval: Discord allows about five writes per channel every five
seconds, and a reply that edits on every token would hit that at once."""

from __future__ import annotations

import time
from collections.abc import Callable

EDIT_INTERVAL_S = 1.0


class Throttle:
    """Tells how long to wait before the next write so that writes are ``interval`` apart.

    ``clock`` (monotonic seconds) is injectable so tests need no real waits."""

    def __init__(self, interval: float = EDIT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None

    def delay(self) -> float:
        """Seconds to wait before writing again (0: write now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.interval - self._clock())

    def mark(self) -> None:
        """Record that a write just finished."""
        self._last = self._clock()
