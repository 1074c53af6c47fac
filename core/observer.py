"""What the core tells about what happens, for monitoring (core/metrics.py explains each
call). ``Observer`` itself does nothing: with metrics off the core pays a method call, and the
gateway's start does not import prometheus_client (about 30 ms, issue 14)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .storage.conversations import UsageRecord


class Observer:
    """Told by the core what happened; this one does nothing (metrics off)."""

    def usage(self, record: UsageRecord) -> None:
        """A usage row was made: a reply, a title, or a turn that failed."""

    def upstream_failure(self, account: str, kind: str) -> None:
        """A pool account's call failed (``UpstreamFailure.kind``)."""

    def health_changed(self, account: str, state: str, reason: str) -> None:
        """An account went ``cooling`` or ``out`` (``reason``: the failure's kind, or "admin"),
        or an admin put it back (``healthy``)."""

    def quota_refused(self, budget: str, scope: str) -> None:
        """A request was refused: ``budget`` (e.g. tokens_per_day) of a ``member`` or of its
        ``client`` is spent."""


NO_OBSERVER = Observer()
