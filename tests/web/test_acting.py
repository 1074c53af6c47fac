"""A client acting for its users, as the original allowed: ``user_id`` + ``username`` (+
``user_id_plus``) creates the user on first use; later requests name it by ``user_id`` alone;
a client never reaches another client's user; a plain user cannot act for anyone."""

from __future__ import annotations

import pytest

from tests.fakes.upstream import FakeUpstream

from .support import VIAS, Api, People, Via, user_key


async def users_of(api: Api, key: str) -> dict[str, dict[str, object]]:
    body = await api.ok("/api/client/users", {"limit": 200}, key=key)
    return {u["userid"]: u for u in body["users"]}


@pytest.mark.parametrize("via", VIAS)
async def test_user_created_on_first_use_then_named_by_user_id(api: Api, people: People,
                                                               via: Via) -> None:
    assert await users_of(api, people.client) == {}
    first = await api.ok("/api/chat", {"prompt": "hi", "user_id": "discord-1",
                                       "username": "Dana"}, key=people.client, via=via)
    assert first["api_user"] == "Dana" and first["api_user_id"] == "discord-1"
    assert first["api_client_id"] == people.client_id
    users = await users_of(api, people.client)
    assert list(users) == ["discord-1"]
    assert users["discord-1"]["plus"] is False and users["discord-1"]["name"] == "Dana"

    again = await api.ok("/api/chat", {"prompt": "more", "user_id": "discord-1",
                                       "conversation_id": first["conversation_id"]},
                         key=people.client, via=via)
    assert again["api_user"] == "Dana" and again["last_message_prompt"] == "hi"
    # A second username on a known user_id neither renames nor duplicates it.
    await api.ok("/api/chat", {"prompt": "x", "user_id": "discord-1", "username": "Other"},
                 key=people.client, via=via)
    users = await users_of(api, people.client)
    assert list(users) == ["discord-1"] and users["discord-1"]["name"] == "Dana"
    # The conversations belong to the user, not to the client.
    assert (await api.ok("/api/recall", key=people.client, via=via))["total"] == 0
    listing = await api.ok("/api/recall", {"user_id": "discord-1"}, key=people.client, via=via)
    assert listing["total"] == 2


@pytest.mark.parametrize("via", VIAS)
async def test_user_id_plus_on_first_use(api: Api, people: People, upstream_plus: FakeUpstream,
                                         via: Via) -> None:
    body = await api.ok("/api/chat", {"prompt": "hi", "user_id": "p-1", "username": "Pia",
                                      "user_id_plus": "true", "plus": "true"},
                        key=people.client, via=via)
    assert body["account"] == "P"
    assert (await users_of(api, people.client))["p-1"]["plus"] is True
    assert upstream_plus.chat_requests(titles=False)[0].api_key == "sk-account-plus"
    await api.ok("/api/chat", {"prompt": "hi", "user_id": "f-1", "username": "Fay",
                               "user_id_plus": False}, key=people.client, via=via)
    await api.error("/api/chat", {"prompt": "hi", "user_id": "f-1", "plus": True},
                    key=people.client, via=via, status=403, code="plus_not_allowed")


async def test_unknown_user_id_without_username_is_404(api: Api, people: People,
                                                       upstream_a: FakeUpstream) -> None:
    for via in VIAS:
        await api.error("/api/chat", {"prompt": "hi", "user_id": "ghost"}, key=people.client,
                        via=via, status=404, code="user_not_found")
    await api.error("/api/recall", {"user_id": "ghost"}, key=people.client, status=404,
                    code="user_not_found")
    assert upstream_a.requests == []
    assert await users_of(api, people.client) == {}


async def test_clients_are_isolated(api: Api, people: People) -> None:
    mine = await api.ok("/api/chat", {"prompt": "secret plans", "user_id": "u-7",
                                      "username": "Mine"}, key=people.client)
    # The other client cannot reach it by the same userid: without username it is unknown...
    await api.error("/api/chat", {"prompt": "hi", "user_id": "u-7"}, key=people.other_client,
                    status=404, code="user_not_found")
    await api.error("/api/recall", {"user_id": "u-7"}, key=people.other_client, status=404)
    await api.error("/api/client/remove-user", {"userid": "u-7"}, key=people.other_client,
                    status=404, code="user_not_found")
    await api.error("/api/client/update-user", {"userid": "u-7", "plus": True},
                    key=people.other_client, status=404, code="user_not_found")
    await api.error("/api/rotate-key", {"userid": "u-7"}, key=people.other_client, status=404)
    # ... and with a username it makes a different user of its own.
    theirs = await api.ok("/api/chat", {"prompt": "hello", "user_id": "u-7",
                                        "username": "Theirs"}, key=people.other_client)
    assert theirs["api_user"] == "Theirs"
    assert theirs["api_client_id"] == people.other_client_id != mine["api_client_id"]
    await api.error("/api/chat", {"prompt": "x", "user_id": "u-7",
                                  "conversation_id": mine["conversation_id"]},
                    key=people.other_client, status=404, code="conversation_not_found")
    await api.error("/api/recall", {"user_id": "u-7", "conversation_id": mine["conversation_id"]},
                    key=people.other_client, status=404, code="conversation_not_found")
    await api.error("/api/remove-conversation",
                    {"user_id": "u-7", "conversation_id": mine["conversation_id"]},
                    key=people.other_client, status=404, code="conversation_not_found")
    listing = await api.ok("/api/recall", {"user_id": "u-7"}, key=people.other_client)
    assert [c["conversation_id"] for c in listing["conversations"]] == [
        theirs["conversation_id"]]
    # Each client lists only its own users.
    assert list(await users_of(api, people.client)) == ["u-7"]
    assert list(await users_of(api, people.other_client)) == ["u-7"]
    assert (await users_of(api, people.client))["u-7"]["name"] == "Mine"
    # The first client's user and conversation are untouched.
    listing = await api.ok("/api/recall", {"user_id": "u-7"}, key=people.client)
    assert [c["conversation_id"] for c in listing["conversations"]] == [mine["conversation_id"]]


async def test_a_client_cannot_use_another_clients_user_key_as_its_own(api: Api,
                                                                        people: People) -> None:
    their_key, _ = await api.add_user(people.other_client, "Theo", userid="t-1")
    # The user's own key works for the user, but gives no power over anyone.
    await api.error("/api/chat", {"prompt": "x", "user_id": "t-1"}, key=their_key,
                    status=403, code="not_allowed")
    await api.error("/api/client/add-user", {"userid": "t-2", "username": "x"}, key=their_key,
                    status=403, code="not_allowed")


async def test_a_user_passing_user_id_is_403(api: Api, people: People,
                                             upstream_a: FakeUpstream) -> None:
    ann = await user_key(api, people, "ann")
    for via in VIAS:
        await api.error("/api/chat", {"prompt": "x", "user_id": "anyone", "username": "x"},
                        key=ann, via=via, status=403, code="not_allowed")
        await api.error("/api/recall", {"user_id": "anyone"}, key=ann, via=via, status=403,
                        code="not_allowed")
        await api.error("/api/remove-conversation", {"user_id": "anyone",
                                                     "conversation_id": "c"},
                        key=ann, via=via, status=403, code="not_allowed")
    assert upstream_a.requests == []


async def test_bad_request_creates_no_user(api: Api, people: People,
                                           upstream_a: FakeUpstream) -> None:
    await api.error("/api/chat", {"prompt": "x", "user_id": "n-1", "username": "New",
                                  "plus": "maybe"}, key=people.client, status=400,
                    code="invalid_parameter")
    await api.error("/api/chat", {"prompt": "x", "user_id": "n-1", "username": "New",
                                  "reply_only": "sometimes"}, key=people.client, status=400)
    assert await users_of(api, people.client) == {}
    assert upstream_a.requests == []


async def test_admin_acts_for_an_admin_made_user(api: Api, people: People) -> None:
    key, user = await api.add_user(people.admin, "Ula", userid="staff-9")
    body = await api.ok("/api/chat", {"prompt": "hi", "user_id": "staff-9"}, key=people.admin)
    assert body["api_user"] == "Ula"
    listing = await api.ok("/api/recall", key=key)
    assert [c["conversation_id"] for c in listing["conversations"]] == [body["conversation_id"]]
    by_id = await api.ok("/api/recall", {"user_id": str(user["id"])}, key=people.admin)
    assert by_id["total"] == 1
