"""The application factory: ``create_app(gateway)`` gives a ready ``web.Application``."""

from __future__ import annotations

from aiohttp import web

from core.gateway import Gateway

from . import api, ui
from .errors import api_error, error_middleware_for
from .guard import GUARD, Guard
from .keys import GATEWAY, SETTINGS
from .openai_api import add_v1_routes, openai_error
from .server import track_requests


def create_app(gateway: Gateway) -> web.Application:
    """The HTTP front over an opened ``Gateway``; the caller owns the gateway's lifetime."""
    settings = gateway.settings
    metrics = gateway.metrics
    # Requests are counted around the error middleware, so errors count with their status.
    counting = []
    if metrics is not None:
        from . import metrics as web_metrics  # prometheus_client: only when metrics are on

        counting.append(web_metrics.count_requests(metrics))
    app = web.Application(
        # The UI's checks are on its own routes (ui.setup), not a middleware every API
        # request would pass through; a browser's unknown address still gets a page.
        middlewares=[track_requests, *counting,
                     error_middleware_for(api_error, ui.unmatched_page,
                                          (settings.paths.openai_prefix, openai_error))],
        client_max_size=settings.server.max_body_bytes,
    )
    app[GATEWAY] = gateway
    app[SETTINGS] = settings
    app[GUARD] = Guard(settings)
    api.add_routes(app, settings.paths)
    add_v1_routes(app, settings)
    ui.setup(app)
    if metrics is not None:
        web_metrics.setup(app, metrics)
    return app
