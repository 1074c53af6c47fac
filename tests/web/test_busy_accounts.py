"""A busy or hung account: new conversations move on to another account at once, nobody waits
for a slot longer than ``[chat] slot_wait_s``, and a call that waited finds out whether the
account cooled meanwhile instead of asking it again.

The upstream's hold is scripted (``Hang``, ``Hold``), so the tests wait on what the fake has
received and released, not on timers; the only timers are the gateway's own bounds, set small.
"""

from __future__ import annotations

import asyncio

from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream, Hang, Hold, Status

from .support import Api, MakeApi, Result, assert_error


async def conversations_on(api: Api, key: str, account: str, count: int) -> list[str]:
    """``count`` new conversations pinned to ``account`` (round robin puts every other one
    there; the rest land on the other free account)."""
    ids: list[str] = []
    while len(ids) < count:
        body = await api.chat(key, f"start {len(ids)}")
        if body["account"] == account:
            ids.append(body["conversation_id"])
    return ids


async def queued_on(gateway: Gateway, name: str, timeout: float = 5) -> None:
    """Wait until a call queues for a slot of account ``name``: the gateway announces no such
    thing, so its counter is polled."""
    account = gateway.pool.get(name)
    assert account is not None
    async with asyncio.timeout(timeout):
        while account.stats.waiting == 0:  # noqa: ASYNC110 - nothing to wait on but the count
            await asyncio.sleep(0.005)


def follow_up(api: Api, key: str, conversation_id: str) -> asyncio.Task[Result]:
    return asyncio.create_task(api.call("/api/chat", {"prompt": "more",
                                                      "conversation_id": conversation_id},
                                        key=key))


async def test_a_saturated_account_is_skipped_and_a_follow_up_waits_a_bounded_time(
    custom_api: MakeApi, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    api, gateway = await custom_api(account_extra={"max_concurrency": 2, "timeout_s": 60},
                                    chat={"slot_wait_s": 0.3})
    admin = await gateway.create_admin("root")
    held = await conversations_on(api, admin, "A", 3)
    upstream_a.enqueue(Hang(), Hang())
    hung = [follow_up(api, admin, cid) for cid in held[:2]]
    await upstream_a.wait_in_flight(2)

    # Every slot of A is taken by a call that will not end: new conversations go to B, twice
    # (A's round-robin turn included), without waiting for A.
    for _ in range(2):
        assert (await api.chat(admin, "new"))["account"] == "B"
    # A follow-up must stay on A: it waits slot_wait_s, then is told A is busy.
    async with asyncio.timeout(5):
        result = await api.call("/api/chat", {"prompt": "more", "conversation_id": held[2]},
                                key=admin)
    assert_error(result, 503, "account_busy")
    assert "'A'" in result.body["message"] and "busy" in result.body["message"]
    assert result.headers["Retry-After"] == "5"
    assert upstream_a.in_flight == 2 and not any(task.done() for task in hung)
    assert len(upstream_a.chat_requests(titles=False)) == 3 + 2
    for task in hung:
        task.cancel()


async def test_new_conversations_wait_a_bounded_time_when_every_account_is_busy(
    custom_api: MakeApi, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    api, gateway = await custom_api(account_extra={"max_concurrency": 1, "timeout_s": 60},
                                    chat={"slot_wait_s": 0.3})
    admin = await gateway.create_admin("root")
    on_a = await conversations_on(api, admin, "A", 1)
    on_b = await conversations_on(api, admin, "B", 1)
    upstream_a.enqueue(Hang())
    upstream_b.enqueue(Hang())
    hung = [follow_up(api, admin, on_a[0]), follow_up(api, admin, on_b[0])]
    await upstream_a.wait_in_flight(1)
    await upstream_b.wait_in_flight(1)
    async with asyncio.timeout(5):
        result = await api.call("/api/chat", {"prompt": "new"}, key=admin)
    assert_error(result, 503, "accounts_busy")
    assert result.headers["Retry-After"] == "5"
    assert upstream_a.in_flight == upstream_b.in_flight == 1
    for task in hung:
        task.cancel()


async def test_calls_that_waited_behind_a_hung_account_are_not_sent_to_it(
    custom_api: MakeApi, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    """The campaign's case: 16 follow-ups on a hung account with 4 slots finished at 6, 13, 20
    and 27 s, each batch asking the hung upstream again. Now the first 4 time out, the account
    cools, and the 12 that waited are told so at once; the upstream sees 4 calls, not 16."""
    api, gateway = await custom_api(account_extra={"max_concurrency": 4, "timeout_s": 0.5},
                                    chat={"slot_wait_s": 30})
    admin = await gateway.create_admin("root")
    held = await conversations_on(api, admin, "A", 16)
    before = len(upstream_a.chat_requests(titles=False))
    upstream_a.enqueue(*[Hang()] * 16)
    async with asyncio.timeout(10):
        results = await asyncio.gather(*[follow_up(api, admin, cid) for cid in held])
    codes = sorted(r.body["code"] for r in results)
    assert codes == ["account_cooling"] * 12 + ["upstream_timeout"] * 4
    for result in results:
        assert_error(result, 503 if result.body["code"] == "account_cooling" else 502)
    assert len(upstream_a.chat_requests(titles=False)) - before == 4
    # A new conversation meanwhile goes to B.
    assert (await api.chat(admin, "new"))["account"] == "B"


async def test_a_new_conversation_that_waited_for_a_cooled_account_moves_on(
    custom_api: MakeApi, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    api, gateway = await custom_api(account_extra={"max_concurrency": 1, "timeout_s": 60},
                                    chat={"slot_wait_s": 30})
    admin = await gateway.create_admin("root")
    on_a = await conversations_on(api, admin, "A", 1)
    on_b = await conversations_on(api, admin, "B", 1)
    # One conversation went to A, then one to B: the next new one's round-robin turn is A's.
    fail_a, free_b = asyncio.Event(), asyncio.Event()
    upstream_a.enqueue(Hold(fail_a, then=Status(500)))
    upstream_b.enqueue(Hold(free_b, then="B's follow-up"))
    held = [follow_up(api, admin, on_a[0]), follow_up(api, admin, on_b[0])]
    await upstream_a.wait_in_flight(1)
    await upstream_b.wait_in_flight(1)
    asked_a = len(upstream_a.chat_requests())

    new = asyncio.create_task(api.call("/api/chat", {"prompt": "new"}, key=admin))
    await queued_on(gateway, "A")
    fail_a.set()  # A's call fails: A cools, and its slot goes to the waiting conversation
    assert_error(await held[0], 502, "upstream_server")
    free_b.set()
    assert (await held[1]).status == 200
    result = await new
    assert result.status == 200, result.text
    assert result.body["account"] == "B"
    assert len(upstream_a.chat_requests()) == asked_a  # A was not asked again


async def test_a_follow_up_that_waited_for_a_cooled_account_is_told_it_cools(
    custom_api: MakeApi, upstream_a: FakeUpstream,
) -> None:
    api, gateway = await custom_api(account_extra={"max_concurrency": 1, "timeout_s": 60},
                                    chat={"slot_wait_s": 30})
    admin = await gateway.create_admin("root")
    first, second = await conversations_on(api, admin, "A", 2)
    fail = asyncio.Event()
    upstream_a.enqueue(Hold(fail, then=Status(503, headers={"Retry-After": "12"})))
    held = follow_up(api, admin, first)
    await upstream_a.wait_in_flight(1)
    asked = len(upstream_a.chat_requests())
    waiting = follow_up(api, admin, second)
    await queued_on(gateway, "A")
    fail.set()
    assert_error(await held, 502, "upstream_server")
    result = await waiting
    assert_error(result, 503, "account_cooling")
    assert "'A'" in result.body["message"]
    assert 11 <= int(result.headers["Retry-After"]) <= 12
    assert len(upstream_a.chat_requests()) == asked

async def test_title_requests_count_against_max_concurrency(
    custom_api: MakeApi, upstream_a: FakeUpstream,
) -> None:
    """The campaign saw 16 upstream requests at once on an account limited to 8: each new
    conversation's title call went beside the limit. Here the titles hang until released, so
    any title sent beside the limit would still be in flight when the replies are all in."""
    api, gateway = await custom_api(account_extra={"max_concurrency": 2, "timeout_s": 60},
                                    chat={"slot_wait_s": 30, "title_timeout_s": 30})
    admin = await gateway.create_admin("root")
    await api.ok("/api/admin/accounts", {"action": "disable", "name": "B"}, key=admin)
    gate = asyncio.Event()
    upstream_a.enqueue_title(*[Hold(gate, then="A Model Title")] * 8)
    chats = [asyncio.create_task(api.call("/api/chat", {"prompt": f"question {n}"}, key=admin))
             for n in range(8)]
    await upstream_a.wait_until(lambda: len(upstream_a.chat_requests(titles=False)) == 8)
    assert upstream_a.in_flight <= 2
    gate.set()
    results = await asyncio.gather(*chats)
    assert [r.status for r in results] == [200] * 8
    assert upstream_a.max_in_flight <= 2
    # Titles that found no free slot at once were cut from their prompts, not waited for.
    titles = {r.body["conversation_title"] for r in results}
    assert titles <= {"A Model Title"} | {f"question {n}" for n in range(8)}
