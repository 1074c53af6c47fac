from __future__ import annotations

from tests.conftest import bearer
from tests.fakes.upstream import FakeUpstream


async def test_new_conversation_and_follow_up(client, admin_key: str, upstream_a: FakeUpstream,
                                              upstream_b: FakeUpstream) -> None:
    r = await client.post("/api/client/add-user", json={"username": "ann"},
                          headers=bearer(admin_key))
    assert r.status == 200, await r.text()
    key = (await r.json())["api_key"]
    r = await client.get("/api/chat", params={"prompt": "hello", "user": key})
    body = await r.json()
    assert r.status == 200, body
    assert body["conversation_title"] == "Fake Title"
    r2 = await client.post("/api/chat", json={"prompt": "more", "conversation_id":
                                              body["conversation_id"]}, headers=bearer(key))
    body2 = await r2.json()
    assert r2.status == 200, body2
    assert body2["account"] == body["account"]
    assert body2["last_message_prompt"] == "hello"
    print(body2)
