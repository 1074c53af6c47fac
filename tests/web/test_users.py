"""User management: add-user, remove-user (same ``userid`` as add-user), update-user,
the users list with search, and key rotation."""

from __future__ import annotations

import pytest

from .support import KEY_RE, VIAS, Api, People, Via, user_key


@pytest.mark.parametrize("via", VIAS)
async def test_client_adds_lists_updates_and_removes_its_user(api: Api, people: People,
                                                              via: Via) -> None:
    body = await api.ok("/api/client/add-user", {"userid": "d-100", "username": "Dee",
                                                 "plus": "true"}, key=people.client, via=via)
    key, user = body["api_key"], body["user"]
    assert KEY_RE.fullmatch(key)
    assert (user["userid"], user["name"], user["plus"], user["role"]) == (
        "d-100", "Dee", True, "user")
    assert user["client_id"] == people.client_id
    assert user["key_prefix"] == key[:10]
    assert "api_key" not in user and "key_hash" not in user
    assert (await api.chat(key, "hi", plus=True))["account"] == "P"

    await api.error("/api/client/add-user", {"userid": "d-100", "username": "Again"},
                    key=people.client, via=via, status=409, code="user_exists")

    listing = await api.ok("/api/client/users", key=people.client, via=via)
    assert listing["total"] == 1
    [row] = listing["users"]
    assert row["userid"] == "d-100" and row["conversations"] == 1 and row["requests"] == 1

    updated = await api.ok("/api/client/update-user", {"userid": "d-100", "plus": False},
                           key=people.client, via=via)
    assert updated["user"]["plus"] is False
    await api.error("/api/chat", {"prompt": "x", "plus": "true"}, key=key, status=403)
    await api.error("/api/client/update-user", {"userid": "d-100"}, key=people.client,
                    via=via, status=400, code="no_change")

    removed = await api.ok("/api/client/remove-user", {"userid": "d-100"}, key=people.client,
                           via=via)
    assert removed["removed"] is True and removed["user"]["userid"] == "d-100"
    await api.error("/api/chat", {"prompt": "x"}, key=key, status=401, code="invalid_key")
    await api.error("/api/client/remove-user", {"userid": "d-100"}, key=people.client,
                    via=via, status=404, code="user_not_found")
    assert (await api.ok("/api/client/users", key=people.client, via=via))["total"] == 0
    # The userid is free again.
    await api.ok("/api/client/add-user", {"userid": "d-100", "username": "Dee"},
                 key=people.client, via=via)


async def test_add_user_rules(api: Api, people: People) -> None:
    await api.error("/api/client/add-user", {"username": "no id"}, key=people.client,
                    status=400, code="missing_userid")
    await api.error("/api/client/add-user", {"userid": "x", "username": "c", "role": "client"},
                    key=people.client, status=403, code="not_allowed")
    await api.error("/api/client/add-user", {"userid": "x", "username": "a", "role": "admin"},
                    key=people.client, status=403, code="not_allowed")
    await api.error("/api/client/add-user", {"userid": "x", "role": "overlord"},
                    key=people.admin, status=400, code="invalid_parameter")
    await api.error("/api/client/add-user", {"userid": "x", "username": " "},
                    key=people.admin, status=400, code="bad_name")
    await api.error("/api/client/add-user", {"userid": "x", "username": "n" * 101},
                    key=people.admin, status=400)
    ann = await user_key(api, people)
    for path in ("/api/client/add-user", "/api/client/remove-user",
                 "/api/client/update-user", "/api/client/users"):
        await api.error(path, {"userid": "x", "username": "y", "plus": True}, key=ann,
                        status=403, code="not_allowed")
    # The same userid under two clients is two users.
    await api.add_user(people.client, "One", userid="same")
    await api.add_user(people.other_client, "Two", userid="same")


async def test_admin_creates_a_client_that_creates_users(api: Api, people: People) -> None:
    key, client = await api.add_user(people.admin, "new-bot", role="client", via="form")
    assert client["role"] == "client"
    user_key_, user = await api.add_user(key, "Zed", userid="z-1")
    assert user["client_id"] == client["id"]
    assert (await api.chat(user_key_, "hi"))["api_client_id"] == client["id"]
    admin2, admin = await api.add_user(people.admin, "second-admin", role="admin")
    assert admin["role"] == "admin" and admin["plus"] is True
    await api.ok("/api/admin/accounts", key=admin2)


async def test_remove_user_takes_its_conversations(api: Api, people: People) -> None:
    key, _ = await api.add_user(people.client, "Dee", userid="d-1")
    convo = await api.chat(key, "hello")
    await api.ok("/api/client/remove-user", {"userid": "d-1"}, key=people.client, via="get")
    await api.error("/api/recall", {"conversation_id": convo["conversation_id"]},
                    key=people.admin, status=404)


async def test_remove_user_rules(api: Api, people: People) -> None:
    await api.error("/api/client/remove-user", key=people.client, status=400,
                    code="missing_userid")
    # A client cannot remove itself or another client, even by numeric id.
    await api.error("/api/client/remove-user", {"userid": str(people.other_client_id)},
                    key=people.client, status=404)
    await api.error("/api/client/remove-user", {"userid": str(people.client_id)},
                    key=people.client, status=404)
    # The admin can remove a client by its id; the client's users go with it.
    key, _ = await api.add_user(people.other_client, "Dee", userid="d-1")
    await api.ok("/api/client/remove-user", {"userid": str(people.other_client_id)},
                 key=people.admin)
    await api.error("/api/client/users", key=people.other_client, status=401)
    await api.error("/api/chat", {"prompt": "x"}, key=key, status=401)


@pytest.mark.parametrize("via", VIAS)
async def test_list_users_search_and_pages(api: Api, people: People, via: Via) -> None:
    for userid, name in (("a-1", "Alice Smith"), ("a-2", "Bob Jones"), ("x_3", "Carol 100%"),
                         ("a-4", "Alicia Keys")):
        await api.add_user(people.client, name, userid=userid)
    await api.add_user(people.other_client, "Alice Elsewhere", userid="a-1")

    async def names(**params: object) -> list[str]:
        body = await api.ok("/api/client/users", params, key=people.client, via=via)
        return [u["name"] for u in body["users"]]

    assert sorted(await names()) == ["Alice Smith", "Alicia Keys", "Bob Jones", "Carol 100%"]
    assert sorted(await names(search="ali")) == ["Alice Smith", "Alicia Keys"]
    assert await names(search="x_3") == ["Carol 100%"]
    assert await names(search="%") == ["Carol 100%"]  # a literal percent, not a wildcard
    assert await names(search="_") == ["Carol 100%"]
    assert await names(search="nobody") == []
    page = await api.ok("/api/client/users", {"limit": 2, "offset": 1}, key=people.client,
                        via=via)
    assert page["total"] == 4 and len(page["users"]) == 2
    # The admin sees everyone, both clients' users included.
    body = await api.ok("/api/client/users", {"search": "Alice", "limit": 200},
                        key=people.admin, via=via)
    assert sorted(u["name"] for u in body["users"]) == ["Alice Elsewhere", "Alice Smith"]


@pytest.mark.parametrize("via", VIAS)
async def test_rotate_key_for_a_user_by_userid(api: Api, people: People, via: Via) -> None:
    old, _ = await api.add_user(people.client, "Dee", userid="d-1")
    body = await api.ok("/api/rotate-key", {"userid": "d-1"}, key=people.client, via=via)
    new = body["api_key"]
    assert KEY_RE.fullmatch(new) and new != old
    assert body["user"]["userid"] == "d-1"
    await api.error("/api/chat", {"prompt": "x"}, key=old, status=401, code="invalid_key")
    assert (await api.chat(new, "x"))["api_user"] == "Dee"
    # The client's own key is untouched by rotating its user's.
    await api.ok("/api/client/users", key=people.client)
    # The admin rotates anyone's, by numeric id.
    admin_made, user = await api.add_user(people.admin, "Ann")
    body = await api.ok("/api/rotate-key", {"userid": str(user["id"])}, key=people.admin,
                        via=via)
    await api.error("/api/recall", key=admin_made, status=401)
    await api.ok("/api/recall", key=body["api_key"])


async def test_rotate_own_key_and_rules(api: Api, people: People) -> None:
    body = await api.ok("/api/rotate-key", key=people.client, via="get")
    await api.error("/api/client/users", key=people.client, status=401)
    new_client = body["api_key"]
    assert body["user"]["role"] == "client"
    await api.ok("/api/client/users", key=new_client)
    ann = await user_key(api, people)
    await api.error("/api/rotate-key", {"userid": "someone"}, key=ann, status=403,
                    code="not_allowed")
    await api.error("/api/rotate-key", {"userid": "ghost"}, key=new_client, status=404,
                    code="user_not_found")


async def test_admin_numeric_userid_is_not_mistaken_for_a_principal_id(api: Api,
                                                                       people: People) -> None:
    # Discord-style numeric userids: "2" is also the first client's principal id.
    userid = str(people.client_id)
    key, user = await api.add_user(people.admin, "Numa", userid=userid)
    assert user["userid"] == userid and user["id"] != people.client_id
    body = await api.ok("/api/chat", {"prompt": "hi", "user_id": userid}, key=people.admin)
    assert body["api_user"] == "Numa"
    assert (await api.ok("/api/recall", key=key))["total"] == 1
    await api.ok("/api/client/update-user", {"userid": userid, "plus": True}, key=people.admin)
    await api.ok("/api/client/users", key=people.client)  # the client was left alone
    await api.error("/api/client/add-user", {"userid": userid, "username": "Again"},
                    key=people.admin, status=409, code="user_exists")
