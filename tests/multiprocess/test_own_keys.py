"""Own keys across processes: on PostgreSQL every process seals them with GATEWAY_SECRET_KEY
(a process started without it is refused, saying why), so an own key stored through one process
is used by the others."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from tests.fakes.upstream import FakeUpstream

from .conftest import Proc, StartGateways, account

OWN_KEY = "sk-members-own-key-1234"


async def csrf_token(browser: aiohttp.ClientSession, proc: Proc, path: str) -> str:
    async with browser.get(f"{proc.url}{path}") as resp:
        assert resp.status == 200, path
        found = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert found is not None
    return found[1]


async def test_own_keys_need_the_shared_secret_and_open_on_every_process(
        start_gateways: StartGateways, upstream_a: FakeUpstream,
        upstream_own: FakeUpstream) -> None:
    gw = await start_gateways([account("A", upstream_a, "KEY_A")],
                              own_key={"base_url": upstream_own.base_url,
                                       "model": upstream_own.model})
    p0, p1, p2 = gw.procs

    # A fourth process without GATEWAY_SECRET_KEY is refused, saying why.
    keyless = gw.another(env={"GATEWAY_SECRET_KEY": None})
    await keyless.start()
    assert keyless.process is not None
    assert await asyncio.wait_for(keyless.process.wait(), 60) != 0
    assert "GATEWAY_SECRET_KEY is not set" in keyless.log()
    assert "Traceback" not in keyless.log()

    # A member stores their own key through gateway 0's web UI...
    key = await gw.add_user("ann")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        token = await csrf_token(browser, p0, "/login")
        async with browser.post(f"{p0.url}/login", data={"key": key, "csrf_token": token},
                                allow_redirects=False) as resp:
            assert resp.status == 303
        token = await csrf_token(browser, p0, "/own-key")
        async with browser.post(f"{p0.url}/own-key",
                                data={"own_key": OWN_KEY, "csrf_token": token},
                                allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()

    # ... and gateway 1 opens it for a new conversation, gateway 2 for its follow-up.
    first = await gw.ok(p1, "/api/chat", {"prompt": "on my own key"}, key=key)
    assert first["mode"] == "own_key"
    follow = await gw.ok(p2, "/api/chat", {"prompt": "still mine",
                                          "conversation_id": first["conversation_id"]}, key=key)
    assert follow["mode"] == "own_key"
    calls = upstream_own.chat_requests(titles=False)
    assert [call.api_key for call in calls] == [OWN_KEY, OWN_KEY]
    assert upstream_a.chat_requests() == []
