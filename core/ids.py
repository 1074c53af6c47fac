"""Random ids (UUID version 4 text) for conversations and turns.

``uuid.uuid4()`` makes one ``os.urandom`` system call per id; the hot path needs two or three
ids a request, and under load those calls were 3-6% of the event loop (bench/, py-spy). Here
the same kernel randomness is drawn 4 KiB at a time and cut into ids, with no system call per
id: a forked child starts a pool of its own (``os.register_at_fork``) rather than checking its
process id on every id, so no two processes share random bytes. Processes that are not forked
(several gateways on one PostgreSQL database) each draw their own from the kernel.
"""

from __future__ import annotations

import os

_POOL_BYTES = 4096


class _RandomPool:
    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def reset(self) -> None:
        self._buffer, self._offset = b"", 0

    def take16(self) -> bytes:
        if self._offset + 16 > len(self._buffer):
            self._buffer, self._offset = os.urandom(_POOL_BYTES), 0
        chunk = self._buffer[self._offset:self._offset + 16]
        self._offset += 16
        return chunk


_pool = _RandomPool()
# Refilled after a fork, so a child never repeats its parent's ids.
os.register_at_fork(after_in_child=_pool.reset)


def new_id() -> str:
    """A random UUID (version 4), as text: 122 random bits, the version and variant set."""
    raw = bytearray(_pool.take16())
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant RFC 4122
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
