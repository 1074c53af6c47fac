"""A conversation's ``external_ref`` lives in its client's namespace (the Discord bot's thread
ids): only that client sets one. A user who could set one would squat the id its client maps
next, and the client would get a 409 for its own thread."""

from __future__ import annotations

from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream

from .support import Api, People


async def test_only_a_client_sets_an_external_ref(
    api: Api, people: People, gateway: Gateway, upstream_a: FakeUpstream,
) -> None:
    user_key, user = await api.add_user(people.client, "ann", userid="4242")
    calls = len(upstream_a.chat_requests())
    for via in ("json", "get", "form"):
        await api.error("/api/chat", {"prompt": "squat", "external_ref": "thread-999"},
                        key=user_key, via=via, status=403, code="external_ref_not_allowed")
    # An admin acting for the client's user may not write in that client's namespace either.
    await api.error("/api/chat", {"prompt": "x", "external_ref": "thread-999",
                                  "user_id": str(user["id"])},
                    key=people.admin, status=403, code="external_ref_not_allowed")
    assert len(upstream_a.chat_requests()) == calls, "a refused request cost an upstream call"
    assert (await api.ok("/api/recall", key=user_key))["total"] == 0

    # The client, acting for its user, maps the thread it opened: no 409.
    body = await api.ok("/api/chat", {"prompt": "hello", "external_ref": "thread-999",
                                      "user_id": "4242"}, key=people.client)
    client = await gateway.principals.get(people.client_id)
    assert client is not None
    mapped = await gateway.conversation_by_ref(client, "thread-999")
    assert mapped is not None and mapped.id == body["conversation_id"]
    # The user still chats without a reference.
    await api.chat(user_key, "no reference")
