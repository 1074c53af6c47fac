"""Keys: the Bearer header and the original's ``user=`` / ``client=`` / ``admin=`` parameters;
every way a key can be missing, wrong, removed, disabled or rotated gives 401 in the one shape."""

from __future__ import annotations

import pytest

from tests.fakes.upstream import FakeUpstream

from .support import VIAS, Api, People, Via, user_key

AUTHED = [
    "/api/chat", "/api/recall", "/api/client/add-user", "/api/client/remove-user",
    "/api/client/update-user", "/api/client/users", "/api/remove-conversation",
    "/api/rotate-key", "/api/admin/accounts",
]


@pytest.mark.parametrize("via", VIAS)
async def test_every_endpoint_wants_a_key(api: Api, people: People, via: Via) -> None:
    for path in AUTHED:
        await api.error(path, {"prompt": "hi"}, via=via, status=401, code="missing_key")
        await api.error(path, {"prompt": "hi"}, key="gw_" + "x" * 43, via=via, status=401,
                        code="invalid_key")
        await api.error(path, {"prompt": "hi"}, key=people.admin + "x", via=via,
                        key_as="user", status=401, code="invalid_key")
        # An empty parameter or a Bearer header with no token is a missing key, not a bad one.
        await api.error(path, {"user": ""}, via=via, status=401, code="missing_key")
        await api.error(path, via=via, headers={"Authorization": "Bearer "}, status=401,
                        code="missing_key")


@pytest.mark.parametrize("via", VIAS)
async def test_key_by_header_or_original_parameters(api: Api, people: People, via: Via) -> None:
    ann = await user_key(api, people)
    seen: list[str] = []
    for key_as in (None, "user", "client", "admin"):
        body = await api.ok("/api/client/users", key=people.admin, via=via, key_as=key_as)
        assert body["total"] >= 3
        chat = await api.ok("/api/chat", {"prompt": "hi"}, key=ann, via=via, key_as=key_as)
        assert chat["api_user"] == "ann"
        seen.insert(0, chat["conversation_id"])
        listing = await api.ok("/api/recall", key=ann, via=via, key_as=key_as)
        assert [c["conversation_id"] for c in listing["conversations"]] == seen


async def test_lowercase_bearer_scheme_is_accepted(api: Api, people: People) -> None:
    await api.ok("/api/client/users", headers={"Authorization": f"bearer {people.admin}"})


async def test_removed_users_key_stops_at_once(api: Api, people: People) -> None:
    key, _ = await api.add_user(people.client, "bob", userid="u-1")
    await api.chat(key, "hello")
    await api.ok("/api/client/remove-user", {"userid": "u-1"}, key=people.client)
    for via in VIAS:
        await api.error("/api/chat", {"prompt": "again"}, key=key, via=via, status=401,
                        code="invalid_key")
        await api.error("/api/recall", key=key, via=via, status=401, code="invalid_key")


async def test_disabled_user_is_401_until_enabled(api: Api, people: People) -> None:
    key, _ = await api.add_user(people.client, "bob", userid="u-1")
    body = await api.ok("/api/client/update-user", {"userid": "u-1", "disabled": True},
                        key=people.client)
    assert body["user"]["disabled"]
    await api.error("/api/chat", {"prompt": "hi"}, key=key, status=401, code="key_disabled")
    await api.error("/api/rotate-key", key=key, status=401, code="key_disabled")
    # Acting for a disabled user is refused too, and no upstream call is made for it.
    await api.error("/api/chat", {"prompt": "hi", "user_id": "u-1"}, key=people.client,
                    status=403, code="user_disabled")
    body = await api.ok("/api/client/update-user", {"userid": "u-1", "disabled": "false"},
                        key=people.client, via="form")
    assert body["user"]["disabled"] is None
    assert (await api.chat(key, "hi"))["api_user"] == "bob"


async def test_disabled_client_takes_its_users_with_it(api: Api, people: People) -> None:
    key, _ = await api.add_user(people.client, "bob", userid="u-1")
    await api.ok("/api/client/update-user", {"userid": str(people.client_id), "disabled": True},
                 key=people.admin)
    await api.error("/api/client/users", key=people.client, status=401, code="key_disabled")
    await api.error("/api/chat", {"prompt": "hi"}, key=key, status=401, code="key_disabled")


async def test_rotated_key_old_one_is_401(api: Api, people: People) -> None:
    ann = await user_key(api, people)
    body = await api.ok("/api/rotate-key", key=ann)
    new = body["api_key"]
    assert new != ann and body["user"]["name"] == "ann"
    assert body["user"]["key_prefix"] == new[:10]
    await api.error("/api/chat", {"prompt": "hi"}, key=ann, status=401, code="invalid_key")
    await api.error("/api/rotate-key", key=ann, status=401, code="invalid_key")
    assert (await api.chat(new, "hi"))["api_user"] == "ann"


async def test_bad_key_never_reaches_upstream(api: Api, upstream_a: FakeUpstream,
                                              upstream_b: FakeUpstream) -> None:
    await api.error("/api/chat", {"prompt": "hi"}, key="nope", status=401)
    await api.error("/api/chat", {"prompt": "hi"}, status=401)
    assert upstream_a.requests == [] and upstream_b.requests == []


async def test_non_string_key_parameter_is_400_not_500(api: Api) -> None:
    await api.error("/api/chat", {"user": {"k": 1}}, status=400, code="invalid_parameter")
    await api.error("/api/chat", {"user": 12345}, status=401, code="invalid_key")
