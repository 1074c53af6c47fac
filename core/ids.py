"""Ids for conversations, turns and budget holds: UUID version 7 (RFC 9562) text.

A version-7 UUID starts with the time in milliseconds, then 74 random bits. Ids made later sort
later, so a new conversation's rows go to the end of each index that holds its id (the primary
keys of ``conversations`` and ``turns``, ``turns(conversation_id, position)``), and a follow-up
turn's to the end of the turns' primary key, on pages already in the cache.
Random ids (version 4) sent each insert to a random page of each of those indexes: with 200,000
conversations stored, each new conversation read 8 pages from the file and wrote 11 to the
write-ahead log, against 0.6 and 6 with these (strace, issue 14). The time an id carries is
the creation time its row already shows its owner; nothing grants access by knowing an id.

``uuid.uuid4()`` made one ``os.urandom`` system call per id; the hot path needs two or three
ids a request, and under load those calls were 3-6% of the event loop (bench/, py-spy). Here
the same kernel randomness is drawn 4,000 bytes (400 ids) at a time, with no system call per
id: a forked child starts a pool of its own (``os.register_at_fork``) rather than checking its
process id on every id, so no two processes share random bytes. Processes that are not forked
(several gateways on one PostgreSQL database) each draw their own from the kernel.
"""

from __future__ import annotations

import os
import time

_POOL_BYTES = 4000
_RANDOM_BYTES = 10  # 80 bits, 74 of them kept beside the version and variant


class _RandomPool:
    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def reset(self) -> None:
        self._buffer, self._offset = b"", 0

    def take(self) -> bytes:
        if self._offset + _RANDOM_BYTES > len(self._buffer):
            self._buffer, self._offset = os.urandom(_POOL_BYTES), 0
        chunk = self._buffer[self._offset:self._offset + _RANDOM_BYTES]
        self._offset += _RANDOM_BYTES
        return chunk


_pool = _RandomPool()
# Refilled after a fork, so a child never repeats its parent's ids.
os.register_at_fork(after_in_child=_pool.reset)


def new_id(unix_ms: int | None = None) -> str:
    """A UUID version 7, as text: ``unix_ms`` (now, by default: milliseconds since the epoch)
    in the first 48 bits, then 74 random bits, the version and the variant."""
    if unix_ms is None:
        unix_ms = time.time_ns() // 1_000_000
    raw = bytearray(unix_ms.to_bytes(6, "big") + _pool.take())
    raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant RFC 9562 (formerly 4122)
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
