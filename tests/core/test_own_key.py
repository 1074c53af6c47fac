"""Bring your own key: the member's credential goes to the first account's base URL instead of the
pool, the conversation stays in that mode, and the credential is never stored in plain text."""

from __future__ import annotations

import pytest

from core.errors import BadRequest, Conflict, GatewayError
from core.gateway import Gateway
from core.models import Principal
from tests.core.conftest import ask, db_bytes
from tests.fakes.upstream import FakeUpstream, Status

TOKEN = "sk-member-own-token-6f1d0c2a9b"
STORED = "sk-member-stored-key-77aa31e0c4"


async def test_access_token_goes_to_the_first_accounts_base_url(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
    upstream_plus: FakeUpstream,
) -> None:
    result = await ask(gw, user, "hello", access_token=TOKEN)
    assert (result.conversation.mode, result.conversation.account) == ("own_key", None)
    assert result.turn.reply == "reply 1 from A"
    sent = upstream_a.chat_requests()
    assert {r.api_key for r in sent} == {TOKEN}  # the reply and its title
    assert {r.model for r in sent} == {"model-a"}
    assert upstream_b.requests == [] and upstream_plus.requests == []
    # The pool account A was not touched by it.
    assert gw.pool.get("A").stats.requests == 0  # type: ignore[union-attr]

    again = await ask(gw, user, "more", result.conversation.id, access_token=TOKEN)
    assert again.turn.position == 1
    last = upstream_a.chat_requests(titles=False)[-1]
    assert last.api_key == TOKEN
    assert [m["content"] for m in last.messages] == ["hello", "reply 1 from A", "more"]


async def test_user_plus_picks_the_plus_model(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_plus: FakeUpstream
) -> None:
    result = await ask(gw, user, "hello", access_token=TOKEN, user_plus=True)
    assert upstream_a.chat_requests(titles=False)[-1].model == "model-plus"
    assert upstream_plus.requests == []  # the plus model, on the own-key base URL
    assert result.conversation.model == "model-plus"
    await ask(gw, user, "more", result.conversation.id, access_token=TOKEN)
    assert upstream_a.chat_requests(titles=False)[-1].model == "model-plus"


async def test_modes_do_not_mix_on_a_follow_up(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    own = await ask(gw, user, "mine", access_token=TOKEN)
    pooled = await ask(gw, user, "theirs")
    assert pooled.conversation.mode == "pool"
    before = len(upstream_a.requests) + len(upstream_b.requests)

    with pytest.raises(Conflict) as caught:
        await ask(gw, user, "follow", own.conversation.id)
    assert (caught.value.status, caught.value.code) == (409, "mode_mismatch")
    assert "access_token" in caught.value.message
    with pytest.raises(Conflict) as caught:
        await ask(gw, user, "follow", pooled.conversation.id, access_token=TOKEN)
    assert caught.value.code == "mode_mismatch"
    assert len(upstream_a.requests) + len(upstream_b.requests) == before
    for conversation in (own.conversation, pooled.conversation):
        assert len((await gw.recall(user, conversation.id))[1]) == 1


async def test_the_access_token_is_never_stored(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    result = await ask(gw, user, "hello", access_token=TOKEN)
    await ask(gw, user, "more", result.conversation.id, access_token=TOKEN)
    assert TOKEN.encode() not in await db_bytes(gw)
    await gw.close()
    assert TOKEN.encode() not in await db_bytes(gw)


async def test_a_refused_access_token_is_a_clear_error_and_leaves_the_pool_alone(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    upstream_a.enqueue(Status(401))
    upstream_a.enqueue_title(Status(401))
    with pytest.raises(GatewayError) as caught:
        await ask(gw, user, "hello", access_token="sk-wrong")
    assert isinstance(caught.value, BadRequest)
    assert caught.value.code == "access_token_rejected"
    assert (await gw.list_conversations(user))[1] == 0
    row = await gw.storage.db.fetchone("SELECT outcome, account FROM usage WHERE purpose = 'reply'")
    assert row is not None and row["outcome"] == "upstream_auth" and row["account"] is None
    assert gw.pool.get("A").health() == "healthy"  # type: ignore[union-attr]
    assert (await ask(gw, user, "pool")).conversation.account == "A"


async def test_a_stored_own_key_is_encrypted_and_used(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream
) -> None:
    await gw.set_own_key(user, STORED)
    stored = await db_bytes(gw)
    assert STORED.encode() not in stored
    sealed = await gw.principals.own_key(user.id)
    assert sealed and STORED.encode() not in sealed

    me = await gw.principals.get(user.id)  # a fresh look, as the next request would have
    assert me is not None and me.has_own_key and "sealed" not in repr(me.public())
    assert await gw.own_key(me) == STORED
    result = await ask(gw, me, "hello")
    assert result.conversation.mode == "own_key"
    assert {r.api_key for r in upstream_a.chat_requests()} == {STORED}
    assert upstream_b.requests == []

    # Following up in that conversation uses the stored key again; no token to resend.
    again = await ask(gw, me, "more", result.conversation.id)
    assert again.turn.position == 1
    assert upstream_a.chat_requests(titles=False)[-1].api_key == STORED

    # Cleared, the member is back on the pool.
    await gw.set_own_key(me, None)
    me = await gw.principals.get(user.id)
    assert me is not None and not me.has_own_key
    assert (await ask(gw, me, "pool again")).conversation.mode == "pool"
    await gw.close()
    assert STORED.encode() not in await db_bytes(gw)
