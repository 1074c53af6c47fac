"""Stopping a reply while it is written.

A front (the Discord bot's Stop button, the web UI's) hands a ``StopSignal`` in with its
``ChatRequest`` and calls ``stop()`` when the member asks. The upstream call is then cancelled,
which closes its connection (the upstream stops generating), and the turn is stored with the
text that had arrived, marked ``stopped``.
"""

from __future__ import annotations

import asyncio

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
