"""The application factory: ``create_app(gateway)`` gives a ready ``web.Application``."""

from __future__ import annotations

from aiohttp import web

from core.gateway import Gateway

from . import api, ui
from .errors import api_error, error_middleware_for
from .guard import GUARD, Guard
from .keys import GATEWAY, SETTINGS
from .openai_api import create_v1_app
from .server import track_requests


def create_app(gateway: Gateway) -> web.Application:
    """The HTTP front over an opened ``Gateway``; the caller owns the gateway's lifetime."""
    settings = gateway.settings
    app = web.Application(
        # The UI's checks are on its own routes (ui.setup), not a middleware every API
        # request would pass through; a browser's unknown address still gets a page.
        middlewares=[track_requests, error_middleware_for(api_error, ui.unmatched_page)],
        client_max_size=settings.server.max_body_bytes,
    )
    app[GATEWAY] = gateway
    app[SETTINGS] = settings
    app[GUARD] = Guard(settings)
    api.add_routes(app, settings.paths)
    app.add_subapp(settings.paths.openai_prefix, create_v1_app(gateway))
    ui.setup(app)
    return app
