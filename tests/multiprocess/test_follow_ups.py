"""Follow-ups to one conversation sent at once through different processes (two, then three):
all are stored, in order, each sent upstream with the ones before it in its history, one
upstream call each, and never a 500."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from tests.fakes.upstream import Delay, FakeUpstream, Reply, message_text

from .conftest import StartGateways, account

UPSTREAM_DELAY_S = 0.8
"""Long enough that the second request reaches its gateway while the first is upstream."""


def answer_slowly(messages: list[dict[str, Any]]) -> Delay:
    prompt = message_text(messages[-1])
    return Delay(UPSTREAM_DELAY_S, Reply(f"answer to <{prompt}>"))


async def test_follow_ups_at_once_through_several_processes_all_land_in_order(
        start_gateways: StartGateways, upstream_a: FakeUpstream) -> None:
    gw = await start_gateways([account("A", upstream_a, "KEY_A")])
    key = await gw.add_user("ann")
    first = await gw.ok(gw[0], "/api/chat", {"prompt": "opening"}, key=key)
    conversation = first["conversation_id"]
    upstream_a.default_reply = answer_slowly

    spans: dict[str, tuple[float, float]] = {}

    async def follow_up(proc_number: int, prompt: str) -> Any:
        began = time.monotonic()
        reply = await gw.call(gw[proc_number], "/api/chat",
                              {"prompt": prompt, "conversation_id": conversation}, key=key)
        spans[prompt] = (began, time.monotonic())
        return reply

    one, two = await asyncio.gather(follow_up(1, "via gateway 1"), follow_up(2, "via gateway 2"))

    assert one.status == 200, one.text
    assert two.status == 200, two.text
    # They really overlapped: each was sent before the other was answered.
    (start_1, end_1), (start_2, end_2) = spans["via gateway 1"], spans["via gateway 2"]
    assert start_1 < end_2 and start_2 < end_1
    # Whichever took the conversation's lock first is the earlier turn.
    earlier, later = one.body, two.body
    if earlier["parent_id"] != first["message"]["id"]:
        earlier, later = later, earlier
    # The later follows the earlier, which follows the opening turn.
    assert earlier["parent_id"] == first["message"]["id"]
    assert later["parent_id"] == earlier["message"]["id"]
    assert later["last_message_prompt"] == earlier["api_prompt"]
    assert later["last_message_reply"] == earlier["reply"]

    # One upstream call each (the opening turn's and its title's aside), and the later one
    # carried the earlier exchange in its history.
    calls = upstream_a.chat_requests(titles=False)
    assert len(calls) == 3
    by_prompt = {message_text(call.messages[-1]): call for call in calls}
    assert set(by_prompt) == {"opening", "via gateway 1", "via gateway 2"}
    sent = [(m["role"], message_text(m)) for m in by_prompt[later["api_prompt"]].messages]
    assert sent == [
        ("user", "opening"), ("assistant", first["reply"]),
        ("user", earlier["api_prompt"]), ("assistant", f"answer to <{earlier['api_prompt']}>"),
        ("user", later["api_prompt"]),
    ]
    sent_earlier = [message_text(m) for m in by_prompt[earlier["api_prompt"]].messages]
    assert sent_earlier == ["opening", first["reply"], earlier["api_prompt"]]

    # Stored in order, as every process sees them.
    for proc in gw.procs:
        recalled = await gw.ok(proc, "/api/recall", {"conversation_id": conversation}, key=key)
        turns = [(t["position"], t["prompt"], t["reply"]) for t in recalled["messages"]]
        assert turns == [
            (0, "opening", first["reply"]),
            (1, earlier["api_prompt"], earlier["reply"]),
            (2, later["api_prompt"], later["reply"]),
        ]

    # Then three at once, one through each process, one of them streamed: all three land,
    # each sent upstream once with exactly the stored turns before it.
    def streamed_body(text: str) -> dict[str, Any]:
        done = re.search(r"event: done\ndata: (.*)\n", text)
        assert done is not None, text
        return dict(json.loads(done[1]))

    async def streamed(proc_number: int, prompt: str) -> dict[str, Any]:
        reply = await gw.call(gw[proc_number], "/api/chat", {
            "prompt": prompt, "conversation_id": conversation, "stream": True}, key=key)
        assert reply.status == 200, reply.text
        return streamed_body(reply.text)

    async def plain(proc_number: int, prompt: str) -> dict[str, Any]:
        reply = await follow_up(proc_number, prompt)
        assert reply.status == 200, reply.text
        return dict(reply.body)

    bodies = await asyncio.gather(streamed(0, "streamed via 0"), plain(1, "round 2 via 1"),
                                  plain(2, "round 2 via 2"))
    recalled = await gw.ok(gw[0], "/api/recall", {"conversation_id": conversation}, key=key)
    turns = recalled["messages"]
    assert [t["position"] for t in turns] == list(range(6))
    assert [t["parent_id"] for t in turns] == [None] + [t["id"] for t in turns[:-1]]
    assert {t["id"] for t in turns[3:]} == {body["message"]["id"] for body in bodies}
    calls = upstream_a.chat_requests(titles=False)
    assert len(calls) == 6
    for position, turn in enumerate(turns):
        (call,) = [c for c in calls if message_text(c.messages[-1]) == turn["prompt"]]
        history = [text for t in turns[:position] for text in (t["prompt"], t["reply"])]
        assert [message_text(m) for m in call.messages] == [*history, turn["prompt"]]
