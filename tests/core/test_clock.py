"""Stored timestamps: ISO 8601 in UTC to the millisecond, whatever zone a time comes in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from core.clock import iso


def _reference(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def test_iso_is_utc_to_the_millisecond_in_any_zone() -> None:
    assert iso(datetime(2026, 11, 25, 21, 18, 54, 123999, tzinfo=UTC)) == (
        "2026-11-25T21:18:54.123Z")
    assert iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"
    # Another zone, the same second seen twice (the kept text of a second), a naive time
    # (taken as local, as astimezone does), a year below 1000 (fixed width).
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    moments = [datetime(2026, 12, 31, 23, 59, 59, 999500, tzinfo=z) for z in zones]
    moments += [datetime(2026, 12, 31, 23, 59, 59, 1000, tzinfo=UTC),
                datetime(2026, 3, 29, 1, 30), datetime(999, 5, 6, 7, 8, 9, 10000, tzinfo=UTC)]
    for moment in moments:
        assert iso(moment) == _reference(moment), moment
