"""Accounts reach their upstream through their configured SOCKS5 proxy; a proxy that fails cools
the account down and a new conversation moves on to the next account."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from core.chat import ChatRequest
from core.config import Settings
from core.gateway import build_gateway
from tests.conftest import ENVIRON, account
from tests.fakes.socks import FakeSocks5
from tests.fakes.upstream import FakeUpstream


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_account_traffic_goes_through_its_proxy(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream, scheme: str
) -> None:
    # socks5h: the proxy resolves names; the address still goes through it as given.
    async with FakeSocks5() as proxy:
        url = proxy.url.replace("socks5://", f"{scheme}://", 1)
        settings = make_settings([account("A", upstream_a, "KEY_A", proxy="default")],
                                 proxy={"default": url})
        async with build_gateway(settings, environ=ENVIRON) as gateway:
            user, _ = await gateway.principals.create("user", "ann")
            result = await gateway.chat(user, ChatRequest(prompt="hello"))
    assert result.turn.reply == "reply 1 from A"
    assert ("127.0.0.1", upstream_a.port) in proxy.destinations
    assert upstream_a.chat_requests(titles=False)[0].api_key == "sk-account-a"


async def test_failing_proxy_cools_the_account_and_the_next_one_answers(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    settings = make_settings([
        account("A", upstream_a, "KEY_A", proxy=f"socks5://127.0.0.1:{_closed_port()}"),
        account("B", upstream_b, "KEY_B"),
    ])
    async with build_gateway(settings, environ=ENVIRON) as gateway:
        user, _ = await gateway.principals.create("user", "ann")
        result = await gateway.chat(user, ChatRequest(prompt="hello"))
        health = {a["name"]: a for a in gateway.accounts(
            (await gateway.principals.create("admin", "root"))[0])}
    assert result.conversation.account == "B"
    assert health["A"]["health"] == "cooling"
    assert health["A"]["cooldown_reason"] == "proxy"
    assert upstream_a.requests == []


async def test_a_proxy_that_refuses_the_destination_cools_the_account_as_a_proxy_failure(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    # The proxy answers, but refuses the CONNECT (a SOCKS reply, not a network error).
    async with FakeSocks5(refuse=True) as proxy:
        settings = make_settings([account("A", upstream_a, "KEY_A", proxy=proxy.url),
                                  account("B", upstream_b, "KEY_B")])
        async with build_gateway(settings, environ=ENVIRON) as gateway:
            user, _ = await gateway.principals.create("user", "ann")
            result = await gateway.chat(user, ChatRequest(prompt="hello"))
            health = {a["name"]: a for a in gateway.accounts(
                (await gateway.principals.create("admin", "root"))[0])}
    assert ("127.0.0.1", upstream_a.port) in proxy.destinations
    assert result.conversation.account == "B"
    assert health["A"]["cooldown_reason"] == "proxy"
    assert upstream_a.requests == []
