"""Web UI sessions without a browser: stored hashed, ended by idleness, by age, and by anything
that would make their key fail (rotation, disabling, removal, a disabled client)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from core.gateway import Gateway
from core.web_sessions import IDLE_TIMEOUT, MAX_AGE, Flash, WebSessions

from .support import LOOP, make_key

pytestmark = LOOP


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_session_lives_while_used_and_ends_when_idle_or_old(gateway: Gateway,
                                                                   admin_key: str) -> None:
    clock = Clock()
    store = WebSessions(gateway.storage.sessions, gateway.usable, clock=clock)
    key = await make_key(gateway, admin_key, "ann")
    session_id = await store.create(await gateway.authenticate(key), key)
    row = await gateway.storage.db.fetchone("SELECT id_hash FROM web_sessions")
    assert row is not None and bytes(row[0]) == hashlib.sha256(session_id.encode()).digest()

    session = await store.load(session_id)
    assert session is not None and session.principal.name == "ann"
    assert await store.load("not-a-session") is None and await store.load(None) is None

    # Used every few hours, it lives on (sliding expiry) ...
    for _ in range(10):
        clock.now += IDLE_TIMEOUT - timedelta(hours=1)
        assert await store.load(session_id) is not None
    # ... but never past its maximum age.
    clock.now += MAX_AGE
    assert await store.load(session_id) is None
    assert await gateway.storage.db.fetchall("SELECT * FROM web_sessions") == []

    other = await store.create(await gateway.authenticate(key), key)
    clock.now += IDLE_TIMEOUT + timedelta(seconds=1)
    assert await store.load(other) is None


async def test_session_ends_with_its_key(gateway: Gateway, admin_key: str) -> None:
    store = gateway.web_sessions
    admin = await gateway.authenticate(admin_key)
    client_key = await make_key(gateway, admin_key, "bot", role="client")
    client = await gateway.authenticate(client_key)
    user, user_key = await gateway.add_user(client, userid="7", username="dana")

    session_id = await store.create(user, user_key)
    await gateway.update_user(admin, str(client.id), disabled=True)
    assert await store.load(session_id) is None  # its client is disabled
    await gateway.update_user(admin, str(client.id), disabled=False)

    session_id = await store.create(user, user_key)
    await gateway.update_user(client, "7", disabled=True)
    assert await store.load(session_id) is None  # disabled
    await gateway.update_user(client, "7", disabled=False)

    session_id = await store.create(user, user_key)
    mine = await store.create(user, user_key)
    session = await store.load(mine)
    assert session is not None
    _, new_key = await gateway.rotate_key(user)
    await store.rebind(session.id_hash, new_key)
    assert await store.load(session_id) is None  # another browser, old key: ended
    assert await store.load(mine) is not None  # the browser that rotated stays in

    await gateway.remove_user(client, "7")
    assert await store.load(mine) is None
    assert await gateway.storage.db.fetchall("SELECT * FROM web_sessions") == []


async def test_flash_is_shown_once(gateway: Gateway, admin_key: str) -> None:
    store = gateway.web_sessions
    session_id = await store.create(await gateway.authenticate(admin_key), admin_key)
    session = await store.load(session_id)
    assert session is not None and session.flash is None
    await store.set_flash(session.id_hash, Flash("ok", "Saved “ü”."))
    session = await store.load(session_id)
    assert session is not None and session.flash == Flash("ok", "Saved “ü”.")
    await store.set_flash(session.id_hash, None)
    session = await store.load(session_id)
    assert session is not None and session.flash is None
