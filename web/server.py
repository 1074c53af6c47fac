"""The HTTP server of the gateway: the app, with every connection watched, so clients that
hold connections without using them cannot take the server's file descriptors.

aiohttp closes an idle keep-alive connection (``keepalive_timeout``), and that also bounds a
keep-alive connection trickling its next request. It has no limit on how long a new
connection may take to send its headers (a slowloris client sending a header line every few
seconds holds it forever), none on how long a body may take, and no cap on connections.
So each connection is wrapped in a ``_Connection`` (an asyncio protocol in front of aiohttp's
own) that adds:

- a header deadline from the moment it opens until its first request starts;
- a body deadline from the start of a request until its body has arrived;
- a cap: past ``max_connections``, the connection that has waited longest without serving a
  request is closed to make room; when every one is serving, the new one is refused (503).

``track_requests`` (a middleware, first in the app) tells a connection when its requests
start and end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from core import request_notes
from core.config import ServerSettings
from core.errors import GatewayError

from .access_log import RedactingAccessLogger

log = logging.getLogger(__name__)
UPSTREAM_LOG = logging.getLogger("core.upstream")
"""Where the notes of a request that gets no access line go (core/upstream.py's logger)."""

SPARE_FILES = 64
"""File descriptors kept for what is not a client connection: the database, upstream
connections, logs."""
REFUSAL_LOG_EVERY_S = 60.0
REFUSAL_WAIT_S = 1.0
"""How long a refused connection may take to send its request before it is closed unanswered."""

_REFUSAL_BODY = json.dumps({
    "status": "error", "code": "too_many_connections",
    "message": "the gateway is at its connection limit; try again shortly",
}).encode()
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
            + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY)
"""Written whole on a refused connection: nothing of its request is parsed."""


class RequestTimeout(GatewayError):
    status = 408
    code = "request_timeout"


class EdgeServer:
    """``await start()``, ``addresses``, ``await stop()``: the app served on host and port."""

    def __init__(self, app: web.Application, settings: ServerSettings) -> None:
        self.settings = settings
        # The original took prompts by GET: a query may be as long as a POST body may be
        # large, so a long prompt meets the gateway's own limits (JSON 413), not aiohttp's
        # 8 KiB line.
        self.runner = web.AppRunner(
            app, access_log_class=RedactingAccessLogger,
            max_line_size=settings.max_body_bytes,
            keepalive_timeout=settings.keepalive_timeout_s,
        )
        self._connections: dict[_Connection, None] = {}
        """Open connections, least recently active first."""
        self._server: asyncio.Server | None = None
        self.refused = self.evicted = self.timed_out = 0
        self._refusals_logged_at = 0.0

    async def start(self) -> None:
        allow_open_files(self.settings.max_connections + SPARE_FILES)
        await self.runner.setup()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self.settings.host, self.settings.port, backlog=128)

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self._server.sockets] if self._server else []

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections; the open ones are shut down below
        await self.runner.cleanup()
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()

    def _protocol(self) -> asyncio.Protocol:
        server = self.runner.server
        assert server is not None
        return _Connection(self, server())

    def _admit(self, connection: _Connection) -> bool:
        while len(self._connections) >= self.settings.max_connections:
            idle = next((c for c in self._connections if not c.busy), None)
            if idle is None:
                self.refused += 1
                self._log_refusal()
                return False
            self.evicted += 1
            idle.close()
        self._connections[connection] = None
        return True

    def _log_refusal(self) -> None:
        now = time.monotonic()
        if now - self._refusals_logged_at >= REFUSAL_LOG_EVERY_S:
            self._refusals_logged_at = now
            log.warning("all %d connections are serving requests: refusing new ones "
                        "(%d refused so far; [server] max_connections)",
                        self.settings.max_connections, self.refused)

    def _forget(self, connection: _Connection) -> None:
        self._connections.pop(connection, None)

    def _touch(self, connection: _Connection) -> None:
        if self._connections.pop(connection, False) is None:
            self._connections[connection] = None


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the deadlines and the cap."""

    def __init__(self, edge: EdgeServer, inner: Any) -> None:
        self.edge = edge
        self.inner = inner  # aiohttp's RequestHandler
        self.busy = False
        self.admitted = False
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not derive from asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        if not self.edge._admit(self):
            # Answered once the request starts arriving: closing a socket the client is
            # still writing to resets it, and the client would lose the answer.
            self._arm(REFUSAL_WAIT_S, transport.close)
            return
        self.admitted = True
        self._arm(self.edge.settings.header_timeout_s, self._headers_late)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)
        elif self.transport is not None and not self.transport.is_closing():
            self._disarm()
            self.transport.write(_REFUSAL)
            self.transport.close()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.admitted:
            self.admitted = False
            self.edge._forget(self)
            self.inner.connection_lost(exc)

    def close(self) -> None:
        self._disarm()
        self.edge._forget(self)
        self.inner.force_close()

    # -- requests (told by track_requests) ------------------------------------------------

    def request_started(self, request: web.BaseRequest) -> None:
        self.busy = True
        self._disarm()
        if request.body_exists and not request.content.is_eof():
            self._arm(self.edge.settings.body_timeout_s, lambda: self._body_late(request))

    def request_ended(self) -> None:
        self.busy = False
        self._disarm()
        self.edge._touch(self)

    # -- deadlines --------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        self.edge.timed_out += 1
        log.debug("closing a connection that sent no complete request in %s s",
                  self.edge.settings.header_timeout_s)
        self.close()

    def _body_late(self, request: web.BaseRequest) -> None:
        self._timer = None
        if request.content.is_eof():
            return
        self.edge.timed_out += 1
        # The handler's read fails with an error it answers like any other; the connection
        # is closed at once, so that answer goes nowhere and nothing lingers.
        request.content.set_exception(RequestTimeout(
            f"the request body did not arrive within {self.edge.settings.body_timeout_s:g} s"))
        self.close()


@web.middleware
async def track_requests(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                         ) -> web.StreamResponse:
    """Tells the request's connection (when ``EdgeServer`` serves it) that it is busy, and
    opens the notes its access line tells (core/request_notes.py) when that line is written
    by ours."""
    access = request.protocol.access_logger
    noted = isinstance(access, RedactingAccessLogger) and access.enabled
    if noted:
        request_notes.begin()
    transport = request.transport
    connection = transport.get_protocol() if transport is not None else None
    if not isinstance(connection, _Connection):
        connection = None  # a test server, without the edge
    else:
        connection.request_started(request)
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if noted:  # no access line for a cancelled handler (a shutdown past its grace)
            request_notes.spill(UPSTREAM_LOG)
        raise
    finally:
        if connection is not None:
            connection.request_ended()


def allow_open_files(needed: int) -> None:
    """Raise the soft open-file limit toward ``needed`` (up to the hard limit); say so when
    even that is too low for ``max_connections``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < needed:
        log.warning("the open-file limit (%d) is below [server] max_connections + %d: "
                    "lower max_connections or raise the limit (ulimit -n)", soft, SPARE_FILES)
