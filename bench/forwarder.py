"""The bare forwarder: the smallest aiohttp proxy, with no auth, no storage and no logging.

    python -m bench.forwarder --upstream http://127.0.0.1:PORT [--port 0] [--uvloop]

Every request is passed to the upstream (same method, path, body, Content-Type and
Authorization) and the answer is passed back: read whole, or, for ``text/event-stream``, chunk by
chunk as it arrives. It is the practical limit for one Python hop on this machine, the yardstick
the gateway is compared with. ``--uvloop`` runs it on uvloop's event loop: the faster yardstick
the targets of issue 14 name. Prints ``READY <port>`` once it listens; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    if auth := request.headers.get("Authorization"):
        headers["Authorization"] = auth
    body = await request.read()
    async with session.request(request.method, request.app[UPSTREAM] + request.path_qs,
                               data=body, headers=headers) as upstream:
        content_type = upstream.headers.get("Content-Type", "application/octet-stream")
        if content_type.startswith("text/event-stream"):
            response = web.StreamResponse(status=upstream.status, headers={
                "Content-Type": content_type, "Cache-Control": "no-cache"})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.Response(body=await upstream.read(), status=upstream.status,
                            headers={"Content-Type": content_type})


async def serve(host: str, port: int, upstream: str) -> None:
    app = web.Application(client_max_size=1 << 20)
    app[UPSTREAM] = upstream.rstrip("/")
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=120),
    )
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await app[SESSION].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the forwarder listens on the loopback interface only")
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.host, args.port, args.upstream))
    else:
        asyncio.run(serve(args.host, args.port, args.upstream))


if __name__ == "__main__":
    main()
