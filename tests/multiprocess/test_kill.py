"""``kill -9`` of one process under load: the two others keep answering, every reply that was
acknowledged is stored and recallable as the upstream gave it, and nothing half-written is
visible."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.fakes.upstream import Delay, FakeUpstream, Reply, message_text

from .conftest import Gateways, Proc, StartGateways, account

REQUESTS = 150
CLIENTS = 6
KILL_AFTER = 60
"""Answers received before gateway 2 is killed (once a request to it is in flight)."""
UPSTREAM_DELAY_S = 0.1


@dataclass
class Ack:
    """A reply the gateway acknowledged: a 200 with its conversation and message ids."""

    key: str
    conversation_id: str
    message_id: str
    prompt: str
    reply: str


@dataclass
class Load:
    gw: Gateways
    victim: Proc
    given: dict[str, str]
    """Prompt -> the reply the upstream gave for it."""
    acks: list[Ack] = field(default_factory=list)
    sent: int = 0
    died: int = 0
    """Requests in flight to the victim when it was killed."""
    refused: list[str] = field(default_factory=list)
    """Anything else that was not a 200 (there must be none)."""
    to_victim: int = 0
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once ``KILL_AFTER`` answers are in."""
    follow_ups_at_victim: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Follow-ups in flight to the victim: prompt -> (key, conversation id)."""
    orphaned: list[tuple[str, str]] = field(default_factory=list)
    """(key, conversation id) of the follow-ups that died with the victim."""

    def live(self) -> list[Proc]:
        # A load balancer's job: once a process is down, nothing more is sent to it.
        return [p for p in self.gw.procs if p is not self.victim or not self.killed.is_set()]


async def client(load: Load, number: int, key: str, rng: random.Random) -> None:
    conversations: list[str] = []
    while load.sent < REQUESTS:
        index = load.sent
        load.sent += 1
        live = load.live()
        proc = live[index % len(live)]
        prompt = f"client {number} request {index}"
        params: dict[str, Any] = {"prompt": prompt}
        if conversations and index % 2:
            params["conversation_id"] = rng.choice(conversations)
        to_victim = proc is load.victim
        load.to_victim += to_victim
        if to_victim and "conversation_id" in params:
            load.follow_ups_at_victim[prompt] = (key, params["conversation_id"])
        try:
            reply = await load.gw.call(proc, "/api/chat", params, key=key)
        except (aiohttp.ClientError, OSError) as exc:
            if to_victim and load.killed.is_set():
                load.died += 1
                if prompt in load.follow_ups_at_victim:
                    load.orphaned.append(load.follow_ups_at_victim[prompt])
                continue
            load.refused.append(f"gateway {proc.number}: {exc!r}")
            continue
        if reply.status != 200:
            load.refused.append(f"gateway {proc.number}: {reply.status} {reply.text}")
            continue
        load.follow_ups_at_victim.pop(prompt, None)
        body = reply.body
        load.acks.append(Ack(key, body["conversation_id"], body["message"]["id"], prompt,
                             body["reply"]))
        if len(load.acks) >= KILL_AFTER:
            load.enough.set()
        if body["is_new_conversation"]:
            conversations.append(body["conversation_id"])


async def killer(load: Load) -> None:
    await load.enough.wait()
    # Then as soon as it holds a conversation's lock: the upstream has received one of its
    # follow-ups and is taking its time to answer.
    for _ in range(2000):
        if any(prompt in load.given for prompt in load.follow_ups_at_victim):
            break
        await asyncio.sleep(0.005)
    # Set first: the clients' requests to it fail as soon as the signal lands.
    load.killed.set()
    await load.victim.kill()


async def test_kill_9_under_load_loses_no_acknowledged_reply(
        start_gateways: StartGateways, upstream_a: FakeUpstream,
        upstream_b: FakeUpstream) -> None:
    gw = await start_gateways([account("A", upstream_a, "KEY_A"),
                               account("B", upstream_b, "KEY_B")])
    given: dict[str, str] = {}

    def answer(messages: list[dict[str, Any]]) -> Delay:
        prompt = message_text(messages[-1])
        given[prompt] = f"the answer to <{prompt}>, after {len(messages) // 2} earlier turns"
        return Delay(UPSTREAM_DELAY_S, Reply(given[prompt]))

    upstream_a.default_reply = upstream_b.default_reply = answer
    keys = [await gw.add_user(f"client-{n}") for n in range(CLIENTS)]
    load = Load(gw, gw[2], given)
    rng = random.Random(9)
    await asyncio.wait_for(asyncio.gather(
        killer(load), *(client(load, n, key, rng) for n, key in enumerate(keys))), 90)

    assert load.killed.is_set()
    # The two others kept answering: every request that did not go to the dead process was a
    # 200 (before and after the kill), and so was every one to it before the kill.
    assert load.refused == []
    assert len(load.acks) + load.died == REQUESTS

    # The conversations whose follow-ups died with their process go on through the others:
    # the dead process's lock on them went with its connections.
    assert load.orphaned, "no follow-up was in flight at the kill"
    for number, (key, conversation_id) in enumerate(load.orphaned):
        prompt = f"after the kill {number}"
        body = await gw.ok(gw[number % 2], "/api/chat",
                           {"prompt": prompt, "conversation_id": conversation_id}, key=key)
        load.acks.append(Ack(key, conversation_id, body["message"]["id"], prompt,
                             body["reply"]))

    # Every acknowledged reply is stored, as the upstream gave it, and is recalled through
    # a surviving process.
    survivors = [gw[0], gw[1]]
    stored: dict[str, dict[str, Any]] = {}
    conversations: dict[str, list[dict[str, Any]]] = {}
    for n, key in enumerate(keys):
        listing = await gw.ok(survivors[n % 2], "/api/recall", {"limit": 200}, key=key)
        assert listing["total"] == len(listing["conversations"])
        for item in listing["conversations"]:
            recalled = await gw.ok(survivors[(n + 1) % 2], "/api/recall",
                                   {"conversation_id": item["conversation_id"]}, key=key)
            turns = recalled["messages"]
            conversations[item["conversation_id"]] = turns
            # Nothing half-written: turns 0..n-1, no gap, each with its reply, each chained
            # to the one before, and the conversation's count agrees.
            assert [t["position"] for t in turns] == list(range(len(turns)))
            assert item["turns"] == len(turns)
            parents = [None] + [t["id"] for t in turns[:-1]]
            assert [t["parent_id"] for t in turns] == parents
            for turn in turns:
                assert turn["reply"] and turn["reply"] == given[turn["prompt"]]
                stored[turn["id"]] = turn
    for ack in load.acks:
        assert ack.reply == given[ack.prompt]
        turn = stored.get(ack.message_id)
        assert turn is not None, f"acknowledged but not stored: {ack}"
        assert (turn["prompt"], turn["reply"]) == (ack.prompt, ack.reply)
        assert ack.message_id in {t["id"] for t in conversations[ack.conversation_id]}
    # What was stored but never acknowledged can only be what the dead process wrote before
    # its answer got out.
    unacknowledged = len(stored) - len(load.acks)
    assert 0 <= unacknowledged <= load.died
    print(f"requests sent {load.sent}, to the killed process {load.to_victim}; acknowledged "
          f"{len(load.acks) - len(load.orphaned)} (+{len(load.orphaned)} follow-ups after the "
          f"kill); failed because their process died {load.died}; stored "
          f"{len(stored)} turns in {len(conversations)} conversations "
          f"({unacknowledged} stored but never acknowledged)")
