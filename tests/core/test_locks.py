"""KeyedLocks: one holder a key, waiters served in the order they came, nothing kept after."""

from __future__ import annotations

import asyncio

import pytest

from core.locks import KeyedLocks


async def test_waiters_get_the_key_in_the_order_they_came() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    release = asyncio.Event()

    async def turn(name: str) -> None:
        async with locks["conversation:1"]:
            order.append(name)
            if name == "first":
                await release.wait()

    first = asyncio.create_task(turn("first"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(turn(name)) for name in ("second", "third", "fourth")]
    await asyncio.sleep(0)
    assert order == ["first"] and locks["conversation:1"].locked()
    release.set()
    await asyncio.gather(first, *rest)
    assert order == ["first", "second", "third", "fourth"]
    assert len(locks) == 0 and not locks["conversation:1"].locked()


async def test_other_keys_do_not_wait() -> None:
    locks = KeyedLocks()
    async with locks["a"]:
        await asyncio.wait_for(locks["b"].acquire(), timeout=5)
        locks["b"].release()
    assert len(locks) == 0


def _two_waiters(locks: KeyedLocks, got: list[str], first: str,
                 second: str) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
    """Two tasks that queue for "k" (held by the test) and note when each got it."""

    async def take(name: str) -> None:
        async with locks["k"]:
            got.append(name)

    return asyncio.create_task(take(first)), asyncio.create_task(take(second))


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_gets_the_key() -> None:
    locks, got = KeyedLocks(), []
    await locks["k"].acquire()
    cancelled, waiting = _two_waiters(locks, got, "cancelled", "waiting")
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    locks["k"].release()
    await asyncio.wait_for(waiting, timeout=5)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert got == ["waiting"] and len(locks) == 0


async def test_a_waiter_cancelled_as_the_key_reaches_it_passes_it_on() -> None:
    locks, got = KeyedLocks(), []
    await locks["k"].acquire()
    unlucky, after = _two_waiters(locks, got, "unlucky", "after")
    await asyncio.sleep(0)
    locks["k"].release()  # handed to "unlucky", which has not run yet
    unlucky.cancel()
    await asyncio.wait_for(after, timeout=5)  # the key must not stay with the cancelled one
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    assert got == ["after"] and len(locks) == 0


async def test_releasing_a_free_key_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        KeyedLocks()["k"].release()
