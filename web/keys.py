"""Typed application state keys, in one place."""

from __future__ import annotations

from aiohttp import web

from core.config import Settings
from core.gateway import Gateway
from core.stopping import StopSignal

GATEWAY = web.AppKey("gateway", Gateway)
SETTINGS = web.AppKey("settings", Settings)
WRITING = web.AppKey("writing", dict[str, tuple[int, StopSignal]])
"""Web UI replies being written in this process, by turn id: their owner and Stop."""
