"""API keys: random, at least 128 bits, stored only as a hash, revocable and rotatable."""

from __future__ import annotations

import asyncio
import hashlib
import math

import pytest

from core.errors import Forbidden, Unauthorized
from core.gateway import Gateway
from core.keys import KEY_PREFIX, new_key
from core.models import Principal
from tests.core.conftest import ask, db_bytes


def test_keys_carry_at_least_128_random_bits() -> None:
    keys = {new_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        body = key[len(KEY_PREFIX):]
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert len(body) * math.log2(64) >= 128


async def test_database_holds_no_issued_key_only_its_hash(gw: Gateway,
                                                          admin: Principal) -> None:
    keys = [await gw.create_admin("second")]
    client, client_key = await gw.add_user(admin, userid=None, username="bot", role="client")
    keys.append(client_key)
    for n in range(3):
        _, key = await gw.add_user(client, userid=f"discord-{n}", username=f"member {n}")
        keys.append(key)
    rotated_user = await gw.authenticate(keys[-1])
    _, rotated = await gw.rotate_key(rotated_user)
    keys.append(rotated)

    stored = await db_bytes(gw)
    for key in keys:
        assert key.encode() not in stored
        assert key[len(KEY_PREFIX):].encode() not in stored  # not even the random part
    row = await gw.storage.db.fetchone("SELECT key_hash, key_prefix FROM principals WHERE id = ?",
                                  (rotated_user.id,))
    assert row is not None
    assert bytes(row["key_hash"]) == hashlib.sha256(rotated.encode()).digest()
    assert rotated.startswith(row["key_prefix"]) and len(row["key_prefix"]) < len(rotated) // 2

    await gw.close()  # the WAL is folded into the main file on close: check that too
    stored = await db_bytes(gw)
    assert not any(key.encode() in stored for key in keys)


async def test_keys_authenticate_their_owner(gw: Gateway, admin: Principal) -> None:
    user, key = await gw.add_user(admin, userid="ann", username="Ann")
    assert (await gw.authenticate(key)).id == user.id
    assert (await gw.authenticate(f"  {key}\n")).id == user.id  # pasted with whitespace
    for bad in (None, "", "gw_nope", key + "x", key.upper()):
        with pytest.raises(Unauthorized):
            await gw.authenticate(bad)


async def test_rotation_kills_the_old_key_at_once(gw: Gateway, admin: Principal) -> None:
    user, old = await gw.add_user(admin, userid="ann", username="Ann")
    me = await gw.authenticate(old)
    target, new = await gw.rotate_key(me)
    assert target.id == user.id and new != old
    with pytest.raises(Unauthorized, match="not valid"):
        await gw.authenticate(old)
    assert (await gw.authenticate(new)).id == user.id
    # A manager may rotate the key of a user it manages.
    _, newer = await gw.rotate_key(admin, "ann")
    with pytest.raises(Unauthorized):
        await gw.authenticate(new)
    assert (await gw.authenticate(newer)).id == user.id


async def test_disabled_key_is_refused_and_can_be_restored(gw: Gateway, admin: Principal,
                                                           upstream_a) -> None:
    user, key = await gw.add_user(admin, userid="ann", username="Ann")
    await gw.update_user(admin, "ann", disabled=True)
    with pytest.raises(Unauthorized) as caught:
        await gw.authenticate(key)
    assert caught.value.code == "key_disabled"
    # Nor may a manager act for a disabled user.
    with pytest.raises(Forbidden):
        await gw.acting_as(admin, "ann")
    await gw.update_user(admin, "ann", disabled=False)
    assert (await gw.authenticate(key)).id == user.id


async def test_removed_user_is_refused(gw: Gateway, admin: Principal, upstream_a) -> None:
    _, key = await gw.add_user(admin, userid="ann", username="Ann")
    result = await ask(gw, await gw.authenticate(key), "hello")
    await gw.remove_user(admin, "ann")
    with pytest.raises(Unauthorized):
        await gw.authenticate(key)
    # Their conversations went with them.
    assert await gw.conversations.get(result.conversation.id) is None
    assert await gw.conversations.turns(result.conversation.id) == []


async def test_disabling_a_client_refuses_its_users(gw: Gateway, admin: Principal) -> None:
    client, client_key = await gw.add_user(admin, userid="bot", username="bot", role="client")
    _, user_key = await gw.add_user(client, userid="1234", username="member")
    other_client, _ = await gw.add_user(admin, userid="bot2", username="bot2", role="client")
    _, other_user_key = await gw.add_user(other_client, userid="1234", username="member")

    await gw.update_user(admin, "bot", disabled=True)
    for key in (client_key, user_key):
        with pytest.raises(Unauthorized) as caught:
            await gw.authenticate(key)
        assert caught.value.code == "key_disabled"
    await gw.authenticate(other_user_key)  # another client's users are untouched

    await gw.update_user(admin, "bot", disabled=False)
    await gw.authenticate(user_key)


async def test_removing_a_client_removes_its_users(gw: Gateway, admin: Principal) -> None:
    client, _ = await gw.add_user(admin, userid="bot", username="bot", role="client")
    _, user_key = await gw.add_user(client, userid="1234", username="member")
    await gw.remove_user(admin, "bot")
    with pytest.raises(Unauthorized):
        await gw.authenticate(user_key)


async def test_bootstrap_admin_only_on_an_empty_database(gw: Gateway) -> None:
    key = await gw.bootstrap_admin()
    assert key is not None
    assert (await gw.authenticate(key)).is_admin
    assert await gw.bootstrap_admin() is None


@pytest.mark.parametrize("change", ["rotate", "disable", "remove"])
async def test_a_change_racing_a_check_of_the_key_is_never_cached_as_current(
    gw: Gateway, admin: Principal, change: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D1: a request whose key check is under way while the key is rotated, disabled or
    removed may finish as it started, but nothing it read may be remembered: every request
    that starts after the change has returned is refused (it was accepted for up to 60 s)."""
    _, key = await gw.add_user(admin, userid="ann", username="Ann")
    reading, go_on = asyncio.Event(), asyncio.Event()
    real_by_key = gw.principals.by_key

    async def slow_by_key(candidate: str) -> Principal | None:
        found = await real_by_key(candidate)  # read before the change ...
        reading.set()
        await go_on.wait()  # ... and finished after it
        return found

    monkeypatch.setattr(gw.principals, "by_key", slow_by_key)
    racing = asyncio.create_task(gw.authenticate(key))
    await reading.wait()
    if change == "rotate":
        await gw.rotate_key(admin, "ann")
    elif change == "disable":
        await gw.update_user(admin, "ann", disabled=True)
    else:
        await gw.remove_user(admin, "ann")
    go_on.set()
    await racing  # started before the change: it may pass
    monkeypatch.setattr(gw.principals, "by_key", real_by_key)
    with pytest.raises(Unauthorized):
        await gw.authenticate(key)
