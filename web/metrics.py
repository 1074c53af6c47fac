"""``/metrics`` over HTTP, and the HTTP requests counted into it (the metrics themselves are
``core.metrics.Metrics``, one registry per gateway).

Where it is served, by ``[metrics]``:
- no ``port``: on the gateway's own server at ``path``, to an admin key only
  (``Authorization: Bearer``: none 401, a non-admin 403), as every other admin endpoint;
- a ``port``: on its own listener at ``host``:``port`` and nowhere else, without a key, for a
  Prometheus on the same host or network (bind it where only the scraper can reach it).

Every request the app answers is counted by its route *pattern* (``/api/x/{id}``; anything that
matched no route is ``unmatched``), never by its raw path, so ids cannot make up new series.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.aiohttp import make_aiohttp_handler

from core.config import ConfigError
from core.metrics import Metrics

from .errors import ERROR_CODE
from .guard import authenticate
from .keys import GATEWAY
from .ui import UI_PREFIXES

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted by name; any other is ``other`` (a client may send any token)."""
CLIENT_CLOSED = 499
"""The status counted for a request whose caller left before it was answered (nginx's)."""


class MetricsServer:
    """The separate listener: ``path`` on ``host``:``port``, nothing else, no key."""

    def __init__(self, metrics: Metrics, path: str, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get(path, make_aiohttp_handler(metrics.registry))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._host, self._port = host, port
        self.addresses: list[tuple[str, int]] = []

    async def start(self) -> None:
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as exc:  # the operator's to fix: said in one line, naming the keys
            await self._runner.cleanup()
            raise ConfigError(f"[metrics] cannot listen on {self._host}:{self._port} "
                              f"(host, port): {exc.strerror or exc}") from None
        # The bound addresses: port 0 gives a free one.
        self.addresses = [address[:2] for address in self._runner.addresses]

    async def stop(self) -> None:
        await self._runner.cleanup()


METRICS_SERVER = web.AppKey("metrics_server", MetricsServer)


def setup(app: web.Application, metrics: Metrics) -> None:
    """Serve ``/metrics`` as ``[metrics]`` says (``count_requests`` is the app's to place)."""
    settings = app[GATEWAY].settings.metrics
    if settings.port is None:
        taken = settings.path == "/" or any(
            settings.path == p or settings.path.startswith(p + "/") for p in UI_PREFIXES)
        if taken:
            raise ConfigError(f"[metrics] path = {settings.path!r} collides with the web UI, "
                              f"which uses /, {', '.join(UI_PREFIXES)}")
        app.router.add_get(settings.path, admin_only(make_aiohttp_handler(metrics.registry)))
        return
    port = settings.port

    async def listener(app: web.Application) -> AsyncIterator[None]:
        server = MetricsServer(metrics, settings.path, settings.host, port)
        await server.start()
        for host, bound in server.addresses:
            log.info("metrics at http://%s:%s%s (no key: [metrics] port)", host, bound,
                     settings.path)
        app[METRICS_SERVER] = server
        try:
            yield
        finally:
            await server.stop()

    app.cleanup_ctx.append(listener)


def admin_only(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        # The header only: a key in a scrape URL would end up in the scraper's config and logs.
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        principal = await authenticate(request, key if scheme.lower() == "bearer" else None)
        request.app[GATEWAY].require_admin(principal)
        return await handler(request)

    return guarded


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def count_requests(metrics: Metrics) -> Middleware:
    """A middleware counting every request: by method, route pattern and status, its time,
    the error code it was answered with, and those in flight."""
    requests, errors = metrics.http_requests, metrics.http_errors
    duration, in_flight = metrics.http_duration, metrics.http_in_flight

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        method = request.method if request.method in METHODS else "other"
        in_flight.inc((route,))
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # a redirect, or an error the app lets through
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            in_flight.inc((route,), -1)
            duration.observe((method, route), time.perf_counter() - started)
            requests.inc((method, route, str(status)))
            code = request.get(ERROR_CODE)
            if code is not None:
                errors.inc((method, route, code))

    return middleware
