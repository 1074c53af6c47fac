"""Roles through the Gateway facade: admins manage everyone, clients only their own users (by
their own userid), users manage nobody."""

from __future__ import annotations

import pytest

from core.errors import BadRequest, Conflict, Forbidden, NotFound
from core.gateway import Gateway
from core.models import Principal
from tests.core.conftest import ask


async def _client(gw: Gateway, admin: Principal, name: str) -> Principal:
    client, key = await gw.add_user(admin, userid=name, username=name, role="client")
    assert client.role == "client"
    return await gw.authenticate(key)


async def test_admin_creates_clients_users_and_admins(gw: Gateway, admin: Principal) -> None:
    client, _ = await gw.add_user(admin, userid=None, username="discord bot", role="client")
    user, _ = await gw.add_user(admin, userid="ann", username="Ann", plus=True)
    other_admin, _ = await gw.add_user(admin, userid=None, username="ops", role="admin")
    assert (client.role, client.client_id) == ("client", None)
    assert (user.role, user.external_id, user.plus, user.client_id) == ("user", "ann", True, None)
    assert other_admin.role == "admin" and other_admin.plus
    items, total = await gw.list_users(admin)
    assert total == 4  # the three and root
    assert {i["name"] for i in items} == {"root", "discord bot", "Ann", "ops"}


async def test_client_manages_only_its_own_users(gw: Gateway, admin: Principal) -> None:
    bot = await _client(gw, admin, "bot")
    web = await _client(gw, admin, "web")
    ann, _ = await gw.add_user(bot, userid="111", username="Ann")
    assert (ann.client_id, ann.external_id) == (bot.id, "111")
    # The same userid on another client is another person.
    bob, bob_key = await gw.add_user(web, userid="111", username="Bob")
    assert bob.id != ann.id
    await gw.add_user(web, userid="222", username="Cid")

    bot_users, bot_total = await gw.list_users(bot)
    assert bot_total == 1 and [u["userid"] for u in bot_users] == ["111"]
    assert bot_users[0]["name"] == "Ann"
    web_users, web_total = await gw.list_users(web)
    assert web_total == 2 and {u["name"] for u in web_users} == {"Bob", "Cid"}

    # The client refers to its users by its own userid, and acts for them.
    assert (await gw.acting_as(bot, "111")).id == ann.id
    assert (await gw.acting_as(web, "111")).id == bob.id
    # It cannot reach another client's user at all.
    with pytest.raises(NotFound):
        await gw.acting_as(bot, "222")
    with pytest.raises(NotFound):
        await gw.remove_user(bot, "222")
    with pytest.raises(NotFound):
        await gw.update_user(bot, "222", plus=True)
    with pytest.raises(NotFound):
        await gw.rotate_key(bot, "222")
    # Nor by the numeric id an admin would use, nor itself or other clients.
    for ref in (str(bob.id), str(web.id), str(bot.id), "web"):
        with pytest.raises(NotFound):
            await gw.remove_user(bot, ref)

    # Removing its own user removes only that one: web's "111" lives on.
    removed = await gw.remove_user(bot, "111")
    assert removed.id == ann.id
    assert await gw.principals.get(ann.id) is None
    assert (await gw.authenticate(bob_key)).id == bob.id
    assert (await gw.list_users(bot))[1] == 0
    with pytest.raises(NotFound):
        await gw.remove_user(bot, "111")


async def test_client_duplicate_userid_is_a_conflict(gw: Gateway, admin: Principal) -> None:
    bot = await _client(gw, admin, "bot")
    await gw.add_user(bot, userid="111", username="Ann")
    with pytest.raises(Conflict) as caught:
        await gw.add_user(bot, userid="111", username="Ann again")
    assert caught.value.code == "user_exists"
    assert (await gw.list_users(bot))[1] == 1


async def test_client_must_name_its_user_and_may_not_create_clients(gw: Gateway,
                                                                     admin: Principal) -> None:
    bot = await _client(gw, admin, "bot")
    with pytest.raises(BadRequest):
        await gw.add_user(bot, userid=None, username="nameless")
    for role in ("client", "admin"):
        with pytest.raises(Forbidden):
            await gw.add_user(bot, userid="x", username="x", role=role)  # type: ignore[arg-type]
    assert (await gw.list_users(bot))[1] == 0


async def test_users_cannot_manage_users(gw: Gateway, admin: Principal, user: Principal) -> None:
    await gw.add_user(admin, userid="bob", username="Bob")
    with pytest.raises(Forbidden):
        await gw.add_user(user, userid="x", username="x")
    with pytest.raises(Forbidden):
        await gw.remove_user(user, "bob")
    with pytest.raises(Forbidden):
        await gw.update_user(user, "ann", plus=True)
    with pytest.raises(Forbidden):
        await gw.list_users(user)
    with pytest.raises(Forbidden):
        await gw.acting_as(user, "bob")
    with pytest.raises(Forbidden):
        await gw.rotate_key(user, "bob")
    with pytest.raises(Forbidden):
        gw.accounts(user)
    with pytest.raises(Forbidden):
        await gw.stats(user)
    assert not (await gw.principals.get(user.id)).plus  # type: ignore[union-attr]


async def test_client_acts_for_a_user_created_on_first_use(gw: Gateway, admin: Principal,
                                                          upstream_a) -> None:
    bot = await _client(gw, admin, "bot")
    with pytest.raises(NotFound):
        await gw.acting_as(bot, "999")
    member = await gw.acting_as(bot, "999", username="Dee", plus=True)
    assert (member.client_id, member.external_id, member.plus) == (bot.id, "999", True)
    assert (await gw.acting_as(bot, "999", username="Dee")).id == member.id
    # The user's conversations are the user's, not the client's.
    result = await ask(gw, member, "hi")
    assert result.conversation.owner_id == member.id
    assert (await gw.list_conversations(member))[1] == 1
    assert (await gw.list_conversations(bot))[1] == 0


async def test_flag_updates(gw: Gateway, admin: Principal) -> None:
    bot = await _client(gw, admin, "bot")
    await gw.add_user(bot, userid="111", username="Ann")
    updated = await gw.update_user(bot, "111", plus=True)
    assert updated.plus and updated.disabled_utc is None
    updated = await gw.update_user(admin, str(updated.id), disabled=True)
    assert updated.plus and updated.disabled_utc is not None
    listed = (await gw.list_users(bot))[0][0]
    assert listed["plus"] is True and listed["disabled"] is not None
    updated = await gw.update_user(bot, "111", plus=False, disabled=False)
    assert not updated.plus and updated.disabled_utc is None
    with pytest.raises(BadRequest):
        await gw.update_user(bot, "111")


async def test_users_see_only_their_own_conversations_admin_sees_all(
    gw: Gateway, admin: Principal, upstream_a, upstream_b
) -> None:
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    bob, _ = await gw.add_user(admin, userid="bob", username="Bob")
    mine = await ask(gw, ann, "ann's question")
    await ask(gw, bob, "bob's question")
    with pytest.raises(NotFound):
        await gw.recall(bob, mine.conversation.id)
    with pytest.raises(NotFound):
        await gw.remove_conversation(bob, mine.conversation.id)
    with pytest.raises(NotFound):
        await ask(gw, bob, "sneaky follow-up", mine.conversation.id)
    _, turns = await gw.recall(admin, mine.conversation.id)  # audit
    assert [t.prompt for t in turns] == ["ann's question"]
    assert (await gw.list_conversations(admin, everyone=True))[1] == 2
    assert (await gw.list_conversations(admin))[1] == 0
    await gw.remove_conversation(ann, mine.conversation.id)
    assert (await gw.list_conversations(ann))[1] == 0
