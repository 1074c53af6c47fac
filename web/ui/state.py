"""Typed application state of the web UI."""

from __future__ import annotations

from aiohttp import web

from .sessions import Session, WebSessions

SESSIONS = web.AppKey("ui_sessions", WebSessions)
STATIC = web.AppKey("ui_static", web.StaticResource)
SESSION = web.RequestKey("ui_session", Session)
"""Set on a request by the UI middleware when its cookie names a live session."""
