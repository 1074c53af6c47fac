"""Titles of new /api/chat conversations ([chat] api_titles): ``batched`` (the default) answers
with a title cut from the prompt and asks the model afterwards, several conversations in one
call; ``prompt`` never asks; a failed title call leaves the prompt's titles."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.gateway import Gateway
from core.title_batch import QUEUED_BATCHES, Pending
from core.titles import fallback_title
from tests.fakes.upstream import FakeUpstream, Hold, Reply, Status

from .support import MakeApi

PROMPT = "How do the tides work on the open sea, far from any coast?"


async def titles_of(gateway: Gateway, key: str) -> dict[str, str]:
    principal = await gateway.authenticate(key)
    items, _ = await gateway.conversations.list_page(owner_id=principal.id, limit=50, offset=0)
    return {c.id: c.title for c in items}


async def test_a_new_conversation_costs_one_call_and_gets_the_model_title_after(
        custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    api, gateway = await custom_api(chat={"api_titles": "batched"})
    _, key = await gateway.principals.create("user", "ann")
    body = await api.ok("/api/chat", {"prompt": PROMPT}, key=key)
    # The reply did not wait for a title: one upstream call, the prompt's title.
    assert body["conversation_title"] == fallback_title(PROMPT)
    assert len(upstream_a.chat_requests(titles=False)) == 1
    await gateway.chat_service.titles.idle()
    assert len(upstream_a.chat_requests(titles=True)) == 1
    assert await titles_of(gateway, key) == {body["conversation_id"]: "Fake Title"}
    recall = await api.ok("/api/recall", {"conversation_id": body["conversation_id"]}, key=key)
    assert recall["conversation_title"] == "Fake Title"


async def test_titles_queued_together_are_asked_in_one_call(
        custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    api, gateway = await custom_api(chat={"api_titles": "prompt"})
    ann, key = await gateway.principals.create("user", "ann")
    prompts = [PROMPT, "Bake bread without yeast?", "Third question, left untitled"]
    ids = [(await api.ok("/api/chat", {"prompt": p}, key=key))["conversation_id"]
           for p in prompts]
    assert upstream_a.chat_requests(titles=True) == []  # "prompt": never asked
    upstream_a.enqueue_title(Reply("1. Tides at Sea\n2. **Bread Without Yeast**\n3.",
                                   usage={"prompt_tokens": 90, "completion_tokens": 11,
                                          "total_tokens": 101}))
    batcher = gateway.chat_service.titles
    before = (await gateway.usage(ann))["tokens_today"]
    for conversation_id, prompt in zip(ids, prompts, strict=True):  # no await: one batch
        batcher.add(Pending(conversation_id, prompt, fallback_title(prompt), "A",
                            upstream_a.model, ann))
    await batcher.idle()
    asked = upstream_a.chat_requests(titles=True)
    assert len(asked) == 1 and batcher.calls == 1
    numbered = str((asked[0].body or {})["messages"][-1]["content"])
    assert numbered.splitlines() == [f"{n}. {p}" for n, p in enumerate(prompts, 1)]
    assert await titles_of(gateway, key) == {
        ids[0]: "Tides at Sea", ids[1]: "Bread Without Yeast", ids[2]: fallback_title(prompts[2])}
    # The call's use is the members': shared among the conversations it titled, all of it.
    rows = await gateway.storage.db.fetchall(
        "SELECT conversation_id, input_tokens, output_tokens FROM usage WHERE purpose = 'title'")
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert sum(r[1] for r in rows) == 90 and sum(r[2] for r in rows) == 11
    assert (await gateway.usage(ann))["tokens_today"] == before + 101


async def test_a_failed_title_call_leaves_the_prompts_titles(
        custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    api, gateway = await custom_api(chat={"api_titles": "batched"})
    _, key = await gateway.principals.create("user", "ann")
    upstream_a.enqueue_title(Status(500))
    body = await api.ok("/api/chat", {"prompt": PROMPT}, key=key)
    await gateway.chat_service.titles.idle()
    assert len(upstream_a.chat_requests(titles=True)) == 1
    assert await titles_of(gateway, key) == {body["conversation_id"]: fallback_title(PROMPT)}
    # The next conversation still gets its model title.
    body = await api.ok("/api/chat", {"prompt": "Another one"}, key=key)
    await gateway.chat_service.titles.idle()
    assert (await titles_of(gateway, key))[body["conversation_id"]] == "Fake Title"


async def test_a_backlog_is_asked_in_full_batches_in_the_order_it_came(
        custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    """Titles queued while a call is out go in calls of ``title_batch_size``, oldest first."""
    api, gateway = await custom_api(chat={"api_titles": "prompt", "title_batch_size": 4,
                                          "title_batch_wait_s": 0})
    ann, key = await gateway.principals.create("user", "ann")
    gate = asyncio.Event()
    upstream_a.enqueue_title(Hold(gate, "Held Title"))
    batcher = gateway.chat_service.titles
    prompts = [f"Question number {n} about the sea" for n in range(11)]
    ids = [(await api.ok("/api/chat", {"prompt": p}, key=key))["conversation_id"]
           for p in prompts]
    for conversation_id, prompt in zip(ids, prompts, strict=True):
        batcher.add(Pending(conversation_id, prompt, fallback_title(prompt), "A",
                            upstream_a.model, ann))
        await asyncio.sleep(0)  # the worker takes the first one alone, and is held
    assert batcher.queued == 10
    upstream_a.enqueue_title(*(Reply("\n".join(f"{n}. Sea {first + n}" for n in range(1, 5)))
                               for first in (0, 4, 8)))
    gate.set()
    await batcher.idle()
    asked = [str((r.body or {})["messages"][-1]["content"])
             for r in upstream_a.chat_requests(titles=True)]
    assert [len(a.splitlines()) for a in asked] == [1, 4, 4, 2]
    assert [line.split(". ", 1)[1] for a in asked[1:] for line in a.splitlines()] == prompts[1:]
    titles = await titles_of(gateway, key)
    assert titles[ids[0]] == "Held Title"
    assert [titles[i] for i in ids[1:]] == [f"Sea {n}" for n in range(1, 11)]
    assert batcher.queued == 0 and batcher.dropped == 0


async def test_a_full_queue_keeps_the_prompts_titles_and_stays_bounded(
        custom_api: MakeApi, upstream_a: FakeUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    """When new conversations come faster than the model titles them, the queue stops at
    ``QUEUED_BATCHES`` calls' worth: later conversations keep their prompt's title (logged),
    and those queued are still titled."""
    _, gateway = await custom_api(chat={"api_titles": "prompt", "title_batch_size": 2,
                                        "title_batch_wait_s": 0})
    ann, _ = await gateway.principals.create("user", "ann")
    gate = asyncio.Event()
    upstream_a.enqueue_title(Hold(gate))
    batcher = gateway.chat_service.titles
    assert batcher.limit == QUEUED_BATCHES * 2
    batcher.add(Pending("first", "Held", "Held", "A", upstream_a.model, ann))
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="core.title_batch"):
        for n in range(batcher.limit + 50):
            batcher.add(Pending(f"c{n}", f"prompt {n}", f"prompt {n}", "A", upstream_a.model,
                                ann))
    assert batcher.queued == batcher.limit and batcher.dropped == 50
    assert [r.getMessage() for r in caplog.records].count(
        f"titles queue full ({batcher.limit} waiting): new conversations keep their "
        "prompt's title (1 so far)") == 1
    gate.set()
    await batcher.idle()
    assert batcher.calls == 1 + QUEUED_BATCHES and batcher.queued == 0


async def test_titles_wait_for_others_to_share_a_call(
        custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    """A batched title waits (``title_batch_wait_s``) for others: a call goes when a batch is
    full, or when the oldest has waited long enough, not one a conversation."""
    _, gateway = await custom_api(chat={"api_titles": "prompt", "title_batch_size": 3,
                                        "title_batch_wait_s": 60})
    ann, _ = await gateway.principals.create("user", "ann")
    batcher = gateway.chat_service.titles

    def add(n: int) -> None:
        batcher.add(Pending(f"c{n}", f"prompt {n}", f"prompt {n}", "A", upstream_a.model, ann))

    for n in range(2):
        add(n)
        for _ in range(5):
            await asyncio.sleep(0)
    assert batcher.calls == 0 and batcher.queued == 2  # waiting for a third
    add(2)
    await upstream_a.wait_until(lambda: len(upstream_a.chat_requests(titles=True)) == 1)
    add(3)
    await batcher.idle()  # asks now for what waits
    asked = [str((r.body or {})["messages"][-1]["content"])
             for r in upstream_a.chat_requests(titles=True)]
    assert [len(a.splitlines()) for a in asked] == [3, 1]


async def test_a_lone_title_is_asked_once_it_has_waited(
        custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    _, gateway = await custom_api(chat={"api_titles": "prompt", "title_batch_wait_s": 0.05})
    ann, _ = await gateway.principals.create("user", "ann")
    batcher = gateway.chat_service.titles
    batcher.add(Pending("c1", "prompt", "prompt", "A", upstream_a.model, ann))
    # No idle(): it would ask at once.
    await upstream_a.wait_until(lambda: len(upstream_a.chat_requests(titles=True)) == 1)
    assert batcher.calls == 1


async def test_titles_waiting_when_the_gateway_stops_are_asked_first(
        custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    api, gateway = await custom_api(chat={"api_titles": "batched", "title_batch_wait_s": 60})
    _, key = await gateway.principals.create("user", "ann")
    body = await api.ok("/api/chat", {"prompt": PROMPT}, key=key)
    assert upstream_a.chat_requests(titles=True) == []  # waiting for others
    await gateway.chat_service.titles.close()  # as Gateway.close() does first
    assert len(upstream_a.chat_requests(titles=True)) == 1
    assert await titles_of(gateway, key) == {body["conversation_id"]: "Fake Title"}
