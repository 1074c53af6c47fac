"""One lock per key (a conversation id, a Discord thread id), kept only while someone holds or
waits for it. Within one process: across processes, the storage's ``lock`` (PostgreSQL advisory
locks) orders them, with these in front so that each process waits in memory first."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Hashable


class KeyedLocks:
    """``locks[key]`` is the same ``asyncio.Lock`` for as long as anyone uses it, so the turns
    of one conversation run one after the other, in the order they came."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def __getitem__(self, key: Hashable) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    def __len__(self) -> int:
        return len(self._locks)
