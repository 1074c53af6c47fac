"""Timestamps as the database stores them: ISO 8601, UTC, millisecond precision, sortable."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """``2026-11-25T21:18:54.123Z``: fixed width, so text order is time order."""
    # isoformat is C code, several times faster than strftime; this runs on every stored turn.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
