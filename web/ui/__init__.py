"""The web UI: server-rendered pages (Jinja templates), a little plain JavaScript, no build step
and nothing loaded from another site.

    /                      to the chat, or to sign in
    /login, /logout        sign in with a gateway key (POST only), sign out
    /chat, /chat/{id}      conversations; /chat/stream streams a reply (server-sent events);
                           /chat/{id}/attachments/{sha256} an image or file a turn carried
    /own-key               the member's gateway key (rotate) and own upstream key (set, clear)
    /usage                 the member's use this month, budgets and a chart per day
                           (``?user=REF``: a managed member's, for admins and clients)
    /access-token          access-token retrieval (email and password)
    /admin/users, /admin/users/conversations, /admin/accounts,
    /admin/personas                                             by role
    /admin/usage, /admin/usage.csv   the usage dashboard and its CSV (admins, clients)
    /static/...            stylesheets, scripts, icon

``setup(app)`` registers all of it, each page behind its ``@page`` rules (``guarded``): the API's
routes pass through no UI code. ``unmatched_page`` answers a browser's unknown address.
The paths are fixed; a ``[paths]`` setting that collides with one stops the start, naming it.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from core.config import ConfigError

from ..keys import GATEWAY, SETTINGS
from . import account, admin, chat, usage
from .pages import Handler, SecureStatic, guarded, unmatched_page
from .state import SESSIONS, STATIC, TEMPLATES
from .templates import Templates

__all__ = ["ROUTES", "setup", "unmatched_page"]

WEB = Path(__file__).resolve().parent.parent
STATIC_DIR = WEB / "static"

ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/", account.home),
    ("GET", "/login", account.login_form),
    ("POST", "/login", account.login),
    ("POST", "/logout", account.logout),
    ("GET", "/chat", chat.index),
    ("POST", "/chat", chat.send_form),
    ("POST", "/chat/stream", chat.stream),
    ("POST", "/chat/stop", chat.stop),
    ("GET", "/chat/{conversation_id}", chat.conversation),
    ("GET", "/chat/{conversation_id}/attachments/{sha256}", chat.attachment),
    ("POST", "/chat/{conversation_id}/remove", chat.remove),
    ("GET", "/own-key", account.keys_page),
    ("POST", "/own-key", account.own_key_update),
    ("POST", "/own-key/rotate", account.rotate_own_key),
    ("GET", "/usage", usage.member_page),
    ("GET", "/access-token", account.access_token_page),
    ("POST", "/access-token", account.access_token_exchange),
    ("GET", "/admin", admin.home),
    ("GET", "/admin/users", admin.users),
    ("POST", "/admin/users", admin.create),
    ("POST", "/admin/users/update", admin.update),
    ("GET", "/admin/users/conversations", admin.conversations),
    ("GET", "/admin/usage", usage.dashboard),
    ("GET", "/admin/usage.csv", usage.csv_download),
    ("GET", "/admin/accounts", admin.accounts),
    ("POST", "/admin/accounts", admin.accounts_update),
    ("GET", "/admin/personas", admin.personas),
    ("POST", "/admin/personas", admin.personas_update),
]
UI_PREFIXES = ("/chat", "/admin", "/own-key", "/usage", "/access-token", "/login", "/logout",
               "/static")


def check_paths(paths: dict[str, str]) -> None:
    """Refuse a ``[paths]`` setting that would shadow (or be shadowed by) a UI page."""
    for name, value in paths.items():
        taken = value == "/" or any(value == p or value.startswith(p + "/") for p in UI_PREFIXES)
        if taken:
            raise ConfigError(f"[paths] {name} = {value!r} collides with the web UI, which "
                              f"uses /, {', '.join(UI_PREFIXES)}")


def setup(app: web.Application) -> None:
    check_paths(app[SETTINGS].paths.model_dump())
    static = SecureStatic("/static", STATIC_DIR, name="ui-static", append_version=True)
    app.router.register_resource(static)
    app[STATIC] = static
    app[TEMPLATES] = Templates(static)
    app[SESSIONS] = app[GATEWAY].web_sessions
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, guarded(handler))

