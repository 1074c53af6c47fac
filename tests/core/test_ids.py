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


def test_a_forked_child_draws_ids_of_its_own() -> None:
    """Forked processes (multiprocessing's default here) never repeat their parent's ids,
    though neither checks its process id when drawing one."""
    import multiprocessing

    new_id()  # the parent's pool is filled: a child copies it at the fork
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        theirs = pool.map(_ids, [50, 50])
    ours = _ids(50)
    everything = ours + theirs[0] + theirs[1]
    assert len(set(everything)) == len(everything)


def _ids(n: int) -> list[str]:
    return [new_id() for _ in range(n)]
