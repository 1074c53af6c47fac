"""``[chat] max_reply_bytes``: an upstream reply past the limit, streamed or not, is refused
with a 502 and nothing is stored; a huge body is never read whole. The account answered, so it
is not cooled and a new conversation is not retried elsewhere: the size is the gateway's policy.
The campaign stored a 100 MB reply in one row (the process grew to 861 MiB)."""

from __future__ import annotations

import asyncio

from tests.fakes.upstream import FakeUpstream, Flood, Reply

from .support import Api, MakeApi, sse_events

LIMIT = 4096


async def no_conversations(api: Api, key: str) -> None:
    assert (await api.ok("/api/recall", key=key))["total"] == 0


async def test_a_reply_over_the_limit_is_a_502_and_is_not_stored(
    custom_api: MakeApi, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    api, gateway = await custom_api(chat={"max_reply_bytes": LIMIT})
    admin = await gateway.create_admin("root")
    upstream_a.enqueue(Reply("é" * (LIMIT // 2 + 1)))  # 2 bytes each in UTF-8: just over
    result = await api.error("/api/chat", {"prompt": "hi"}, key=admin, status=502,
                             code="upstream_reply_too_large")
    assert f"{LIMIT}" in result.body["message"]
    await no_conversations(api, admin)
    assert upstream_b.chat_requests() == []  # not retried elsewhere
    health = {a["name"]: a for a in (await api.ok("/api/admin/accounts", key=admin))["accounts"]}
    assert health["A"]["health"] == "healthy"
    # A reply just at the limit is taken, and a follow-up over it is refused the same way.
    upstream_b.enqueue(Reply("é" * (LIMIT // 2)))
    body = await api.chat(admin, "again")
    assert body["account"] == "B" and len(body["reply"]) == LIMIT // 2
    upstream_b.enqueue(Reply("x" * (LIMIT + 1)))
    await api.error("/api/chat", {"prompt": "more", "conversation_id": body["conversation_id"]},
                    key=admin, status=502, code="upstream_reply_too_large")
    recalled = await api.ok("/api/recall", {"conversation_id": body["conversation_id"]},
                            key=admin)
    assert [m["prompt"] for m in recalled["messages"]] == ["again"]


async def test_a_streamed_reply_over_the_limit_ends_in_an_error_and_is_not_stored(
    custom_api: MakeApi, upstream_a: FakeUpstream,
) -> None:
    api, gateway = await custom_api(chat={"max_reply_bytes": LIMIT})
    admin = await gateway.create_admin("root")
    upstream_a.enqueue(Reply("word " * LIMIT, chunk_delay=0.0005))
    result = await api.call("/api/chat", {"prompt": "hi", "stream": True}, key=admin)
    assert result.status == 200, result.text
    events = sse_events(result.text)
    name, data = events[-1]
    assert name == "error" and data["code"] == "upstream_reply_too_large", events[-1]
    sent = "".join(d["text"] for n, d in events if n == "delta")
    assert len(sent.encode()) <= LIMIT
    await no_conversations(api, admin)


async def test_a_huge_body_is_not_read_whole(
    custom_api: MakeApi, upstream_a: FakeUpstream,
) -> None:
    api, gateway = await custom_api(chat={"max_reply_bytes": LIMIT},
                                    account_extra={"timeout_s": 30})
    admin = await gateway.create_admin("root")
    upstream_a.enqueue(Flood(total_bytes=64 << 20))
    async with asyncio.timeout(20):
        await api.error("/api/chat", {"prompt": "hi"}, key=admin, status=502,
                        code="upstream_reply_too_large")
    # The gateway hung up well before the 64 MiB were sent (what is sent beyond its own
    # limit sits in the loopback's socket buffers).
    assert upstream_a.flood_sent < 16 << 20
    await no_conversations(api, admin)
