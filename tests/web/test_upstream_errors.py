"""Upstream failures as the caller sees them: a new conversation moves on to the next account,
a follow-up stays on its own and says why it cannot be answered (502/503, Retry-After when known),
an account whose key is refused is never reported as the caller's 401, and nothing half-done is
stored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream, Garbage, Hang, Reply, Status

from .support import Api, MakeApi, People, assert_error, sse_events, user_key


async def accounts(api: Api, admin: str) -> dict[str, dict[str, object]]:
    body = await api.ok("/api/admin/accounts", key=admin)
    return {a["name"]: a for a in body["accounts"]}


async def turns(api: Api, key: str, conversation_id: str) -> list[str]:
    body = await api.ok("/api/recall", {"conversation_id": conversation_id}, key=key)
    return [m["prompt"] for m in body["messages"]]


async def test_rate_limited_account_is_skipped_for_new_conversations(
    api: Api, people: People, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    ann = await user_key(api, people)
    upstream_a.enqueue(Status(429, headers={"Retry-After": "7"}))
    body = await api.chat(ann, "hello")
    assert body["account"] == "B" and body["reply"] == "reply 1 from B"
    health = await accounts(api, people.admin)
    assert health["A"]["health"] == "cooling"
    assert health["A"]["cooldown_reason"] == "rate_limited"
    assert 5 < float(health["A"]["cooldown_s"]) <= 7  # type: ignore[arg-type]
    assert health["A"]["failures"] == 1
    # While A cools, every new conversation goes to B.
    assert (await api.chat(ann, "again"))["account"] == "B"
    assert len(upstream_a.chat_requests(titles=False)) == 1


async def test_every_account_failing_is_503_with_retry_after(
    api: Api, people: People, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    ann = await user_key(api, people)
    upstream_a.enqueue(Status(429, headers={"Retry-After": "20"}))
    upstream_b.enqueue(Status(503, headers={"Retry-After": "9"}))
    result = await api.error("/api/chat", {"prompt": "hi"}, key=ann, status=503,
                             code="no_healthy_account")
    assert 8 <= int(result.headers["Retry-After"]) <= 9
    # Nothing was stored and both accounts now cool: the next try fails fast without a call.
    assert (await api.ok("/api/recall", key=ann))["total"] == 0
    result = await api.error("/api/chat", {"prompt": "hi"}, key=ann, via="get", status=503,
                             code="no_healthy_account")
    assert int(result.headers["Retry-After"]) >= 1
    assert len(upstream_a.chat_requests(titles=False)) == 1
    assert len(upstream_b.chat_requests(titles=False)) == 1
    # The admin restores A; new conversations go there again.
    await api.ok("/api/admin/accounts", {"action": "enable", "name": "A"}, key=people.admin)
    assert (await api.chat(ann, "hi"))["account"] == "A"


async def test_follow_up_failures_stay_on_their_account(
    api: Api, people: People, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    ann = await user_key(api, people)
    first = await api.chat(ann, "hello")
    cid = first["conversation_id"]
    assert first["account"] == "A"

    upstream_a.enqueue(Status(500))
    await api.error("/api/chat", {"prompt": "p2", "conversation_id": cid}, key=ann,
                    status=502, code="upstream_server")
    result = await api.error("/api/chat", {"prompt": "p3", "conversation_id": cid}, key=ann,
                             status=503, code="account_cooling")
    assert int(result.headers["Retry-After"]) >= 1
    await api.ok("/api/admin/accounts", {"action": "enable", "name": "A"}, key=people.admin)

    upstream_a.enqueue(Status(429, headers={"Retry-After": "4"}))
    result = await api.error("/api/chat", {"prompt": "p4", "conversation_id": cid}, key=ann,
                             status=503, code="upstream_rate_limited")
    assert result.headers["Retry-After"] == "4"
    await api.ok("/api/admin/accounts", {"action": "enable", "name": "A"}, key=people.admin)

    upstream_a.enqueue(Garbage())
    await api.error("/api/chat", {"prompt": "p5", "conversation_id": cid}, key=ann,
                    status=502, code="upstream_garbage")
    await api.ok("/api/admin/accounts", {"action": "enable", "name": "A"}, key=people.admin)

    upstream_a.enqueue(Status(400, message="context too long"))
    result = await api.error("/api/chat", {"prompt": "p6", "conversation_id": cid}, key=ann,
                             status=400, code="upstream_rejected")
    assert "context too long" in result.body["message"]

    # No failed follow-up moved to B, and none left a turn behind.
    assert upstream_b.chat_requests() == []
    assert await turns(api, ann, cid) == ["hello"]
    follow = await api.chat(ann, "p7", conversation_id=cid)
    assert follow["account"] == "A" and follow["last_message_prompt"] == "hello"
    assert await turns(api, ann, cid) == ["hello", "p7"]


async def test_refused_account_key_is_never_the_callers_401(
    api: Api, people: People, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    ann = await user_key(api, people)
    first = await api.chat(ann, "hello")
    assert first["account"] == "A"
    assert (await api.chat(ann, "on B"))["account"] == "B"
    upstream_a.enqueue(Status(401))
    # The next new conversation is A's turn: it meets A's refusal and is answered by B.
    body = await api.chat(ann, "new one")
    assert body["account"] == "B"
    assert upstream_a.pending == 0
    health = await accounts(api, people.admin)
    assert health["A"]["health"] == "out" and health["A"]["out_reason"]
    # A follow-up pinned to A is told plainly that the account is out: 503, not 401.
    await api.error("/api/chat", {"prompt": "more", "conversation_id": first["conversation_id"]},
                    key=ann, status=503, code="account_out")
    # The caller's own key still works everywhere.
    await api.ok("/api/recall", key=ann)
    await api.ok("/api/admin/accounts", {"action": "enable", "name": "A"}, key=people.admin,
                 via="form")
    follow = await api.chat(ann, "more", conversation_id=first["conversation_id"])
    assert follow["account"] == "A"


async def test_refused_key_on_follow_up_is_503(api: Api, people: People,
                                               upstream_a: FakeUpstream) -> None:
    ann = await user_key(api, people)
    first = await api.chat(ann, "hello")
    upstream_a.enqueue(Status(403))
    await api.error("/api/chat", {"prompt": "more", "conversation_id": first["conversation_id"]},
                    key=ann, status=503, code="account_out")


async def test_timeouts(custom_api: MakeApi, upstream_a: FakeUpstream,
                        upstream_b: FakeUpstream) -> None:
    api, gateway = await custom_api(account_extra={"timeout_s": 0.3})
    admin = await gateway.create_admin("root")
    upstream_a.enqueue(Hang())
    body = await api.chat(admin, "hello")
    assert body["account"] == "B"
    upstream_b.enqueue(Hang())
    await api.error("/api/chat", {"prompt": "more", "conversation_id": body["conversation_id"]},
                    key=admin, status=502, code="upstream_timeout")
    health = await accounts(api, admin)
    assert health["A"]["cooldown_reason"] == health["B"]["cooldown_reason"] == "timeout"


async def test_retried_stream_ends_on_the_account_that_answered(
    api: Api, people: People, upstream_a: FakeUpstream,
) -> None:
    ann = await user_key(api, people)
    upstream_a.enqueue(Status(429))
    result = await api.call("/api/chat", {"prompt": "hi", "stream": True}, key=ann)
    assert result.status == 200, result.text
    events = sse_events(result.text)
    done = events[-1]
    assert done[0] == "done" and done[1]["account"] == "B"
    assert done[1]["reply"] == "reply 1 from B"
    assert "error" not in [name for name, _ in events]


async def test_unconfigured_tier_is_503(custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    api, gateway = await custom_api()
    admin = await gateway.create_admin("root")
    await api.ok("/api/admin/accounts", {"action": "disable", "name": "P"}, key=admin)
    result = await api.call("/api/chat", {"prompt": "x", "plus": True}, key=admin)
    assert_error(result, 503, "no_healthy_account")
    upstream_a.enqueue(Reply("still fine"))
    assert (await api.chat(admin, "x"))["reply"] == "still fine"


COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "model-a",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
CHUNK: dict[str, Any] = {
    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "model-a",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}
WRONG_ANSWERS = {
    "usage as a list": Garbage.json({**COMPLETION, "usage": [1, 2]}),
    "content as a number": Garbage.json(
        {**COMPLETION, "choices": [{"index": 0, "message": {"content": 42}}]}),
    "choices as a string": Garbage.json({**COMPLETION, "choices": "hi"}),
    "a token count as text": Garbage.json({**COMPLETION, "usage": {"prompt_tokens": "many"}}),
    "the model as an object": Garbage.json({**COMPLETION, "model": {"name": "x"}}),
    "a list for the whole answer": Garbage.json([COMPLETION]),
}
WRONG_STREAMS = {
    "choices as a string": Garbage.sse({**CHUNK, "choices": "hi"}),
    "content as a number": Garbage.sse(
        {**CHUNK, "choices": [{"index": 0, "delta": {"content": 42}}]}),
    "usage as a list": Garbage.sse({**CHUNK, "usage": [3, 1]}, CHUNK),
    "a chunk that is a number": Garbage.sse(7),
    "a delta as a list": Garbage.sse({**CHUNK, "choices": [{"index": 0, "delta": ["hi"]}]}),
}


@pytest.mark.parametrize("shape", list(WRONG_ANSWERS))
async def test_an_answer_of_the_wrong_shape_is_the_upstreams_failure(
    api: Api, people: People, upstream_a: FakeUpstream, upstream_b: FakeUpstream, shape: str,
) -> None:
    ann = await user_key(api, people)
    upstream_a.enqueue(WRONG_ANSWERS[shape])
    body = await api.chat(ann, "hello")
    assert body["account"] == "B" and body["reply"] == "reply 1 from B"
    health = await accounts(api, people.admin)
    assert health["A"]["health"] == "cooling" and health["A"]["cooldown_reason"] == "garbage"
    # A follow-up must stay on its account: 502, and nothing stored.
    upstream_b.enqueue(WRONG_ANSWERS[shape])
    await api.error("/api/chat", {"prompt": "more", "conversation_id": body["conversation_id"]},
                    key=ann, status=502, code="upstream_garbage")
    assert await turns(api, ann, body["conversation_id"]) == ["hello"]


@pytest.mark.parametrize("shape", list(WRONG_STREAMS))
async def test_a_stream_of_the_wrong_shape_is_the_upstreams_failure(
    api: Api, people: People, upstream_a: FakeUpstream, upstream_b: FakeUpstream, shape: str,
) -> None:
    ann = await user_key(api, people)
    upstream_a.enqueue(WRONG_STREAMS[shape])
    result = await api.call("/api/chat", {"prompt": "hi", "stream": True}, key=ann)
    assert result.status == 200, result.text
    done = sse_events(result.text)[-1]
    assert done[0] == "done" and done[1]["account"] == "B", result.text
    health = await accounts(api, people.admin)
    assert health["A"]["cooldown_reason"] == "garbage"
    upstream_b.enqueue(WRONG_STREAMS[shape])
    cid = done[1]["conversation_id"]
    # The bad chunk comes first, so no text has gone out: the error keeps its status.
    await api.error("/api/chat", {"prompt": "more", "conversation_id": cid, "stream": True},
                    key=ann, status=502, code="upstream_garbage")
    assert await turns(api, ann, cid) == ["hi"]
