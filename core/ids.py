"""Random ids (UUID version 4 text) for conversations and turns.

``uuid.uuid4()`` makes one ``os.urandom`` system call per id; the hot path needs two or three
ids a request, and under load those calls were 3-6% of the event loop (bench/, py-spy). Here
the same kernel randomness is drawn 4 KiB at a time and cut into ids.
"""

from __future__ import annotations

import os
import uuid

_POOL_BYTES = 4096


class _RandomPool:
    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0
        self._pid = os.getpid()

    def take16(self) -> bytes:
        if self._offset + 16 > len(self._buffer) or self._pid != os.getpid():
            # Refilled after a fork too, so a child never repeats its parent's ids.
            self._buffer, self._offset, self._pid = os.urandom(_POOL_BYTES), 0, os.getpid()
        chunk = self._buffer[self._offset:self._offset + 16]
        self._offset += 16
        return chunk


_pool = _RandomPool()


def new_id() -> str:
    """A random UUID (version 4), as text."""
    return str(uuid.UUID(bytes=_pool.take16(), version=4))
