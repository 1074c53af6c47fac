"""``user_requests_per_minute = 10`` is ten a minute for all processes together."""

from __future__ import annotations

import asyncio

from tests.fakes.upstream import FakeUpstream

from .conftest import StartGateways, account

LIMIT = 10


async def test_the_rate_limit_holds_across_processes(
        start_gateways: StartGateways, upstream_a: FakeUpstream) -> None:
    gw = await start_gateways([account("A", upstream_a, "KEY_A")],
                              limits={"user_requests_per_minute": LIMIT})
    key = await gw.add_user("ann")
    other = await gw.add_user("bob")

    # Fifteen requests of one user: five rounds of three at once, one to each process.
    replies = []
    for round_number in range(5):
        replies += await asyncio.gather(*(
            gw.call(proc, "/api/chat", {"prompt": f"round {round_number} via {proc.number}"},
                    key=key)
            for proc in gw.procs))

    statuses = sorted(reply.status for reply in replies)
    assert statuses == [200] * LIMIT + [429] * 5, [r.text for r in replies if r.status != 200]
    for reply in replies:
        if reply.status == 429:
            assert reply.body["code"] == "rate_limited"
            assert 0 < int(reply.headers["Retry-After"]) <= 60
    assert len(upstream_a.chat_requests(titles=False)) == LIMIT

    # Counted per caller: another user is not slowed, on any process.
    for proc in gw.procs:
        assert (await gw.call(proc, "/api/chat", {"prompt": "mine"}, key=other)).status == 200
