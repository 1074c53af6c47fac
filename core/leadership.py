"""Run a singleton (the Discord bot) on exactly one of the processes sharing a database.

Every process may start with the same configuration. Each waits for the storage's leadership
(on PostgreSQL an advisory lock held on a connection of its own; on SQLite, at once); the one
that gets it runs the singleton. If the leader dies, PostgreSQL frees the lock and another
process takes over within seconds. If the leader loses its database connection, it stops the
singleton at once: the lock may already be someone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .storage.database import Leadership

log = logging.getLogger(__name__)


async def while_leading(leadership: Leadership, run: Callable[[], Awaitable[None]],
                        what: str) -> None:
    """Forever: wait to lead, then ``run()`` until it returns (then return too) or leadership
    is lost (then cancel it and wait to lead again). Cancel this to stop."""
    while True:
        log.info("waiting to lead: %s runs on one process at a time", what)
        await leadership.acquire()
        log.info("this process now runs %s", what)
        work = asyncio.ensure_future(run())
        lost = asyncio.ensure_future(leadership.lost())
        done: set[asyncio.Future[None]] = set()
        try:
            done, _ = await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, lost):
                task.cancel()
            # Wait for the singleton to be stopped before anyone else may start it.
            await asyncio.gather(work, lost, return_exceptions=True)
            with contextlib.suppress(Exception):
                await leadership.release()
        if work in done:
            work.result()  # the singleton ended by itself: say how
            return
        log.warning("lost the database connection that held the lead: %s stopped here", what)
