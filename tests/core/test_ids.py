"""Conversation and turn ids: random version-4 UUIDs, never repeated."""

from __future__ import annotations

import uuid

from core.ids import new_id


def test_ids_are_distinct_version_4_uuids_across_pool_refills() -> None:
    ids = [new_id() for _ in range(2000)]  # several 256-id refills of the random pool
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(p.version == 4 and p.variant == uuid.RFC_4122 for p in parsed)
    assert all(str(p) == i for p, i in zip(parsed, ids, strict=True))
