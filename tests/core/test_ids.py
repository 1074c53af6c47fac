"""Conversation and turn ids: version-7 UUIDs (the time, then random bits), never repeated,
ordered by the time they were made."""

from __future__ import annotations

import time
import uuid

from core.ids import new_id


def test_ids_are_distinct_version_7_uuids_across_pool_refills() -> None:
    ids = [new_id() for _ in range(2000)]  # several 400-id refills of the random pool
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
    assert all(str(p) == i for p, i in zip(parsed, ids, strict=True))


def _unix_ms(ident: str) -> int:
    return uuid.UUID(ident).int >> 80


def test_an_id_carries_the_time_it_was_made_and_later_ids_sort_later() -> None:
    before = time.time_ns() // 1_000_000
    first = new_id()
    while time.time_ns() // 1_000_000 == _unix_ms(first):
        pass  # the next millisecond
    second = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= _unix_ms(first) < _unix_ms(second) <= after
    # As text too, which is how the indexes order them.
    assert first < second


def test_an_id_for_a_given_time() -> None:
    """The bench's seeded history gets ids of the times it pretends to be from."""
    moment = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    ids = [new_id(moment) for _ in range(50)]
    assert {_unix_ms(i) for i in ids} == {moment}
    assert len(set(ids)) == 50
    assert new_id(moment) < new_id(moment + 1) < new_id()


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
