"""One lock per key (a conversation id, a Discord thread id), kept only while someone holds or
waits for it. Within one process: across processes, the storage's ``lock`` (PostgreSQL advisory
locks) orders them, with these in front so that each process waits in memory first."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from types import TracebackType

Waiters = dict[Hashable, deque[asyncio.Future[None]]]


class KeyedLocks:
    """``locks[key]`` is a lock on ``key``: the turns of one conversation run one after the
    other, in the order they came (the lock passes straight to the longest waiter).

    A key is held while it is in one dictionary, with the futures of its waiters: taking a
    free key is a dictionary insert. (An ``asyncio.Lock`` a key, kept in a
    ``WeakValueDictionary`` until no one used it, cost twice the time a request: a lock
    object made, a weak reference and its callback, for what is almost never contended.)"""

    def __init__(self) -> None:
        self._held: Waiters = {}

    def __getitem__(self, key: Hashable) -> KeyLock:
        return KeyLock(self._held, key)

    def __len__(self) -> int:
        """Keys held now (none are kept once released)."""
        return len(self._held)


class KeyLock:
    """The lock of one key, as ``asyncio.Lock`` is used: ``async with``, or ``acquire``,
    ``locked`` and ``release``. Any holder of the key may release it."""

    __slots__ = ("_held", "_key")

    def __init__(self, held: Waiters, key: Hashable) -> None:
        self._held = held
        self._key = key

    def locked(self) -> bool:
        return self._key in self._held

    async def acquire(self) -> bool:
        waiters = self._held.get(self._key)
        if waiters is None:
            self._held[self._key] = deque()
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as it was cancelled: pass it on
            else:
                waiters.remove(waiter)
            raise
        return True

    def release(self) -> None:
        waiters = self._held.get(self._key)
        if waiters is None:
            raise RuntimeError("the lock is not held")
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled waiter has left
                waiter.set_result(None)
                return
        del self._held[self._key]

    async def __aenter__(self) -> None:
        if self._key not in self._held:
            self._held[self._key] = deque()
        else:
            await self.acquire()

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.release()
