"""Which event loop runs the gateway: uvloop's when it is installed, asyncio's own otherwise.

uvloop (libuv under asyncio's interface) spends 10-19% less CPU a request here (issue 14,
measured from outside); aiohttp, asyncpg, aiosqlite and discord.py run on it unchanged.
``[server] event_loop`` chooses: ``auto`` (the default), ``uvloop`` or ``asyncio``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from .config import ConfigError

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]


def loop_factory(choice: LoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the chosen loop; None for asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("[server] event_loop = \"uvloop\", but uvloop is not installed: "
                              "pip install uvloop, or set event_loop = \"auto\"") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(choice: LoopChoice) -> str:
    return "asyncio" if loop_factory(choice) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], choice: LoopChoice) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
