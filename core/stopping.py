"""Stopping a reply while it is written.

A front (the Discord bot's Stop button, the web UI's) hands a ``StopSignal`` in with its
``ChatRequest`` and calls ``stop()`` when the member asks. The upstream call is then cancelled,
which closes its connection (the upstream stops generating), and the turn is stored with the
text that had arrived, marked ``stopped``. The ``StopBoard`` knows the replies being written in
this process; a stop asked of another process (a web page whose Stop request the load balancer
sent elsewhere) is announced through the storage to every process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .storage import Storage

STOPPED = "stopped"
"""The finish reason of a reply the member stopped."""


class StopSignal:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def stop(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


STOP_CHANNEL = "gw_stop"


class StopBoard:
    """The replies being written in this process, by turn id: their member and their signal."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._writing: dict[str, tuple[int, StopSignal]] = {}
        # Before the storage opens, so no announcement can slip past.
        storage.subscribe(STOP_CHANNEL, self._heard)

    def writing(self, message_id: str, principal_id: int, signal: StopSignal) -> None:
        self._writing[message_id] = (principal_id, signal)

    def done(self, message_id: str) -> None:
        self._writing.pop(message_id, None)

    async def stop(self, principal_id: int, message_id: str) -> bool:
        """Stop the member's reply: True when it was found here and stopped, or asked of the
        other processes (which stop it only if it is that member's)."""
        found = self._writing.get(message_id)
        if found is not None:
            if found[0] != principal_id:
                return False
            found[1].stop()
            return True
        if not self._storage.shared:
            return False
        await self._storage.announce(STOP_CHANNEL, f"{principal_id}:{message_id}")
        return True

    def _heard(self, payload: str) -> None:
        principal_id, _, message_id = payload.partition(":")
        found = self._writing.get(message_id)
        if found is not None and str(found[0]) == principal_id:
            found[1].stop()
