"""Account health is one state for every process: a cool-down (honouring Retry-After), an
account taken out on 401, an admin's enable and disable are seen by every process within one
second, and a restarted process finds them as they were. Enabling an account whose key variable
is unset is refused, saying so."""

from __future__ import annotations

import time

from tests.fakes.upstream import FakeUpstream, Status

from .conftest import ADMIN_LINE, Gateways, Proc, StartGateways, account, within

SEEN_WITHIN_S = 1.0
RETRY_AFTER_S = 120


async def health_everywhere(gw: Gateways, procs: list[Proc], name: str, health: str,
                            *, started: float) -> float:
    """Seconds until ``name`` shows ``health`` on every one of ``procs`` (at most 1 s)."""

    async def shown() -> bool:
        for proc in procs:
            if (await gw.accounts(proc))[name]["health"] != health:
                return False
        return True

    return await within(SEEN_WITHIN_S, shown, f"account {name} {health} on gateways "
                        f"{[p.number for p in procs]}", started=started)


async def test_account_health_is_shared_and_survives_a_restart(
        start_gateways: StartGateways, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
        upstream_c: FakeUpstream) -> None:
    gw = await start_gateways(
        [account("A", upstream_a, "KEY_A"), account("B", upstream_b, "KEY_B"),
         account("C", upstream_c, "KEY_C")],
        env={"KEY_C": None})
    p0, p1, p2 = gw.procs
    key = await gw.add_user("ann")
    for proc in gw.procs:
        accounts = await gw.accounts(proc)
        assert [accounts[n]["health"] for n in "ABC"] == ["healthy", "healthy", "out"]
        assert "KEY_C" in accounts["C"]["out_reason"]

    # A conversation on A, started through gateway 0 (a new process's first pick is A).
    pinned = await gw.ok(p0, "/api/chat", {"prompt": "on A"}, key=key)
    assert pinned["account"] == "A"

    # A 429 with Retry-After on A, met by gateway 1 (its first new conversation goes to A):
    # the request moves on to B, and A cools down for everyone.
    upstream_a.enqueue(Status(429, headers={"Retry-After": str(RETRY_AFTER_S)}))
    reply = await gw.ok(p1, "/api/chat", {"prompt": "first"}, key=key)
    changed = time.monotonic()
    assert reply["account"] == "B"
    assert len(upstream_a.chat_requests(titles=False)) == 2
    took = await health_everywhere(gw, [p0, p2], "A", "cooling", started=changed)
    print(f"cool-down seen by the others in {took:.3f} s")
    for proc in (p0, p2):
        cooling = (await gw.accounts(proc))["A"]
        assert RETRY_AFTER_S - 30 < cooling["cooldown_s"] <= RETRY_AFTER_S
        assert cooling["cooldown_reason"]
    # The others send new conversations to B, none to A; A's conversation waits, saying why.
    for proc in (p0, p2, p0, p2):
        reply = await gw.ok(proc, "/api/chat", {"prompt": f"via {proc.number}"}, key=key)
        assert reply["account"] == "B"
    waiting = await gw.call(p2, "/api/chat", {"prompt": "go on",
                                              "conversation_id": pinned["conversation_id"]},
                            key=key)
    assert (waiting.status, waiting.body["code"]) == (503, "account_cooling")
    assert RETRY_AFTER_S - 30 < int(waiting.headers["Retry-After"]) <= RETRY_AFTER_S
    assert len(upstream_a.chat_requests(titles=False)) == 2

    # An admin's enable through gateway 1 ends the cool-down everywhere.
    await gw.ok(p1, "/api/admin/accounts", {"action": "enable", "name": "A"}, key=gw.admin)
    await health_everywhere(gw, [p0, p2], "A", "healthy", started=time.monotonic())

    # A 401 on A takes it out, for everyone.
    upstream_a.enqueue(Status(401))
    for attempt in range(3):
        reply = await gw.ok(p2, "/api/chat", {"prompt": f"401 attempt {attempt}"}, key=key)
        if upstream_a.pending == 0:
            break
    changed = time.monotonic()
    assert upstream_a.pending == 0, "A was never asked"
    assert reply["account"] == "B"
    await health_everywhere(gw, [p0, p1], "A", "out", started=changed)
    assert "401" in (await gw.accounts(p0))["A"]["out_reason"]

    # An admin takes B out through gateway 0: out everywhere, and nothing can serve.
    await gw.ok(p0, "/api/admin/accounts", {"action": "disable", "name": "B"}, key=gw.admin)
    await health_everywhere(gw, [p1, p2], "B", "out", started=time.monotonic())
    refused = await gw.call(p1, "/api/chat", {"prompt": "nobody"}, key=key)
    assert refused.status == 503, refused.text
    # And brings A back through gateway 2.
    await gw.ok(p2, "/api/admin/accounts", {"action": "enable", "name": "A"}, key=gw.admin)
    await health_everywhere(gw, [p0, p1], "A", "healthy", started=time.monotonic())

    # A cools again; a restarted process finds A cooling and B out.
    upstream_a.enqueue(Status(429, headers={"Retry-After": str(RETRY_AFTER_S)}))
    refused = await gw.call(p0, "/api/chat", {"prompt": "cool A again"}, key=key)
    assert refused.status == 503, refused.text
    await health_everywhere(gw, [p1, p2], "A", "cooling", started=time.monotonic())
    assert await p1.stop() == 0
    await p1.start()
    await p1.wait_ready(gw.http)
    # (It found its admin there too: no second first-start key.)
    assert sum(len(ADMIN_LINE.findall(p.stdout.read_text())) for p in gw.procs) == 1
    accounts = await gw.accounts(p1)
    assert accounts["A"]["health"] == "cooling"
    assert RETRY_AFTER_S - 60 < accounts["A"]["cooldown_s"] <= RETRY_AFTER_S
    assert accounts["B"]["health"] == "out"
    assert accounts["B"]["out_reason"] == "taken out by an admin"
    refused = await gw.call(p1, "/api/chat", {"prompt": "still nobody"}, key=key)
    assert refused.status == 503, refused.text

    # C has no key in any process: enabling it is refused with the reason, everywhere.
    for proc in gw.procs:
        refused = await gw.call(proc, "/api/admin/accounts", {"action": "enable", "name": "C"},
                                key=gw.admin)
        assert refused.status == 409, refused.text
        assert refused.body["code"] == "account_has_no_key"
        assert "KEY_C" in refused.body["message"]
        assert (await gw.accounts(proc))["C"]["health"] == "out"
