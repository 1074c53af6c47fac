"""Typed application state of the web UI."""

from __future__ import annotations

from aiohttp import web

from .sessions import Session, WebSessions
from .templates import Templates

SESSIONS = web.AppKey("ui_sessions", WebSessions)
STATIC = web.AppKey("ui_static", web.StaticResource)
TEMPLATES = web.AppKey("ui_templates", Templates)
SESSION = web.RequestKey("ui_session", Session)
"""Set on a request by the UI middleware when its cookie names a live session."""
