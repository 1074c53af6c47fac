"""Titles of new /api/chat conversations ([chat] api_titles): ``batched`` (the default) answers
with a title cut from the prompt and asks the model afterwards, several conversations in one
call; ``prompt`` never asks; a failed title call leaves the prompt's titles."""

from __future__ import annotations

from core.gateway import Gateway
from core.title_batch import Pending
from core.titles import fallback_title
from tests.fakes.upstream import FakeUpstream, Reply, Status

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
