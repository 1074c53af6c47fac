"""Typed application state keys, in one place."""

from __future__ import annotations

from aiohttp import web

from core.config import Settings
from core.gateway import Gateway

GATEWAY = web.AppKey("gateway", Gateway)
SETTINGS = web.AppKey("settings", Settings)
