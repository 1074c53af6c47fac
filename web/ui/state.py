"""Typed application state of the web UI."""

from __future__ import annotations

from aiohttp import web

from .sessions import SessionStore

SESSIONS = web.AppKey("ui_sessions", SessionStore)
STATIC = web.AppKey("ui_static", web.StaticResource)
