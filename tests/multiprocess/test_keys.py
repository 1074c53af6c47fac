"""A key rotated, disabled or removed through one process is refused by the others within one
second, though each had just accepted it (and may remember that). A web UI session opened on one
process works on every process, and ends on all of them when its key is rotated."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator

import aiohttp

from tests.fakes.upstream import FakeUpstream

from .conftest import Gateways, Proc, StartGateways, account, within

REFUSED_WITHIN_S = 1.0


async def accepted(gw: Gateways, proc: Proc, key: str) -> bool:
    reply = await gw.call(proc, "/api/recall", key=key)
    assert reply.status in (200, 401), reply.text
    return reply.status == 200


async def warm(gw: Gateways, key: str) -> None:
    """Every process accepts the key, a few times, so each has it in its cache."""
    for proc in gw.procs:
        for _ in range(3):
            assert await accepted(gw, proc, key)


async def refused_by(gw: Gateways, procs: list[Proc], key: str, *, started: float,
                     what: str) -> float:
    async def all_refuse() -> bool:
        for proc in procs:
            if await accepted(gw, proc, key):
                return False
        return True

    return await within(REFUSED_WITHIN_S, all_refuse, what, started=started)


@contextlib.asynccontextmanager
async def hammering(gw: Gateways, procs: list[Proc], key: str) -> AsyncIterator[None]:
    """Requests with ``key`` to ``procs`` all along, so that their caches are being filled
    while the key changes (a check that began before the change must not outlive it)."""
    stop = asyncio.Event()

    async def hammer(proc: Proc) -> None:
        while not stop.is_set():
            await accepted(gw, proc, key)

    tasks = [asyncio.create_task(hammer(proc)) for proc in procs for _ in range(2)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def stays_refused(gw: Gateways, key: str) -> None:
    for _ in range(5):
        for proc in gw.procs:
            assert not await accepted(gw, proc, key), f"accepted again by gateway {proc.number}"


async def test_a_changed_key_or_session_is_refused_by_every_process_within_a_second(
        start_gateways: StartGateways, upstream_a: FakeUpstream) -> None:
    gw = await start_gateways([account("A", upstream_a, "KEY_A")])
    p0, p1, p2 = gw.procs

    # Rotated by its owner through gateway 0.
    old = await gw.add_user("ann")
    await warm(gw, old)
    async with hammering(gw, [p1, p2], old):
        body = await gw.ok(p0, "/api/rotate-key", key=old)
        took = await refused_by(gw, [p1, p2], old, started=time.monotonic(),
                                what="the rotated key refused by gateways 1 and 2")
    print(f"rotation seen by the others in {took:.3f} s")
    await stays_refused(gw, old)
    new = body["api_key"]
    for proc in gw.procs:
        assert await accepted(gw, proc, new)

    # Disabled by the admin through gateway 1.
    await warm(gw, new)
    async with hammering(gw, [p0, p2], new):
        await gw.ok(p1, "/api/client/update-user", {"userid": "ann", "disabled": True},
                    key=gw.admin)
        await refused_by(gw, [p0, p2], new, started=time.monotonic(),
                         what="the disabled key refused by gateways 0 and 2")
    await stays_refused(gw, new)
    reply = await gw.call(p2, "/api/chat", {"prompt": "hello"}, key=new)
    assert (reply.status, reply.body["code"]) == (401, "key_disabled")

    # Removed by the admin through gateway 2.
    bob = await gw.add_user("bob")
    await warm(gw, bob)
    async with hammering(gw, [p0, p1], bob):
        await gw.ok(p2, "/api/client/remove-user", {"userid": "bob"}, key=gw.admin)
        await refused_by(gw, [p0, p1], bob, started=time.monotonic(),
                         what="the removed key refused by gateways 0 and 1")
    await stays_refused(gw, bob)
    assert upstream_a.chat_requests() == []

    # (One test with the key changes above: three processes take a while to start.)
    await web_session_works_everywhere_and_ends_everywhere(gw)


async def sign_in(http: aiohttp.ClientSession, proc: Proc, key: str) -> None:
    async with http.get(f"{proc.url}/login") as resp:
        token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert token is not None
    async with http.post(f"{proc.url}/login", data={"key": key, "csrf_token": token[1]},
                         allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/chat"


async def page_status(http: aiohttp.ClientSession, proc: Proc, path: str) -> tuple[int, str]:
    async with http.get(f"{proc.url}{path}", allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location", "")


async def web_session_works_everywhere_and_ends_everywhere(gw: Gateways) -> None:
    p0, p1, p2 = gw.procs
    key = await gw.add_user("cat")
    # One browser: cookies go to every port of 127.0.0.1, as a browser's do to one site
    # behind a load balancer.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert await page_status(browser, p1, "/chat") == (303, "/login")
        await sign_in(browser, p0, key)
        for proc in gw.procs:
            assert await page_status(browser, proc, "/chat") == (200, "")
            assert await page_status(browser, proc, "/own-key") == (200, "")

        await gw.ok(p0, "/api/rotate-key", key=key)
        rotated = time.monotonic()

        async def ended_everywhere() -> bool:
            for proc in (p1, p2, p0):
                if (await page_status(browser, proc, "/chat"))[0] == 200:
                    return False
            return True

        await within(REFUSED_WITHIN_S, ended_everywhere, "the session ended everywhere",
                     started=rotated)
        for proc in gw.procs:
            assert await page_status(browser, proc, "/chat") == (303, "/login")
