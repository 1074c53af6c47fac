"""Follow-ups: pinned to the account that started the conversation, with the stored history in
order; told plainly when that account cannot serve; serialised; and nothing half-done is stored
when the upstream fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from core.config import Settings
from core.errors import Conflict, Forbidden, NotFound, Unavailable, UpstreamError
from core.gateway import Gateway
from core.models import Principal
from tests.conftest import account
from tests.core.conftest import FakeClock, OpenGateway, ask, new_user
from tests.fakes.upstream import Delay, FakeUpstream, Garbage, Reply, Status, StreamBreak


def history(fake: FakeUpstream) -> list[tuple[str, str]]:
    """(role, content) of the last non-title chat request the fake received."""
    last = fake.chat_requests(titles=False)[-1]
    return [(m["role"], m["content"]) for m in last.messages]


async def test_follow_up_goes_to_the_first_account_with_full_history(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    first = await ask(gw, user, "one")
    assert first.conversation.account == "A"
    await ask(gw, user, "elsewhere")  # round robin moves on to B
    second = await ask(gw, user, "two", first.conversation.id)
    third = await ask(gw, user, "three", first.conversation.id)

    assert third.conversation.account == "A" and third.conversation.turn_count == 3
    assert history(upstream_a) == [
        ("user", "one"), ("assistant", "reply 1 from A"),
        ("user", "two"), ("assistant", "reply 2 from A"),
        ("user", "three"),
    ]
    assert {r.api_key for r in upstream_a.chat_requests()} == {"sk-account-a"}
    assert [r.messages[-1]["content"] for r in upstream_b.chat_requests(titles=False)] == [
        "elsewhere"]
    # Parent is the last stored turn; positions count up; follow-ups ask no new title.
    assert second.turn.parent_id == first.turn.id and second.previous == first.turn
    assert third.turn.parent_id == second.turn.id
    assert [t.position for t in (first.turn, second.turn, third.turn)] == [0, 1, 2]
    assert len(upstream_a.chat_requests(titles=True)) == 1
    assert third.conversation.title == first.conversation.title == "Fake Title"
    _, turns = await gw.recall(user, first.conversation.id)
    assert [(t.prompt, t.reply, t.parent_id) for t in turns] == [
        ("one", "reply 1 from A", None),
        ("two", "reply 2 from A", first.turn.id),
        ("three", "reply 3 from A", second.turn.id),
    ]


async def test_follow_up_while_its_account_cools_names_it_and_does_not_move(
    gw: Gateway, user: Principal, clock: FakeClock,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    first = await ask(gw, user, "one")
    upstream_a.enqueue(Status(429, headers={"Retry-After": "40"}))
    with pytest.raises(UpstreamError):
        await ask(gw, user, "two", first.conversation.id)  # this one met the 429 itself
    with pytest.raises(Unavailable) as caught:
        await ask(gw, user, "three", first.conversation.id)
    err = caught.value
    assert (err.status, err.code, err.retry_after) == (503, "account_cooling", 40)
    assert "'A'" in err.message
    assert upstream_b.requests == []  # no silent move to B
    assert len(upstream_a.chat_requests(titles=False)) == 2  # "three" never went upstream
    clock.advance(40)
    result = await ask(gw, user, "four", first.conversation.id)
    assert result.turn.position == 1 and result.conversation.account == "A"


async def test_follow_up_on_an_out_account_names_it(
    gw: Gateway, admin: Principal, user: Principal,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    first = await ask(gw, user, "one")
    await gw.set_account_enabled(admin, "A", False)
    with pytest.raises(Unavailable) as caught:
        await ask(gw, user, "two", first.conversation.id)
    assert caught.value.code == "account_out" and "'A'" in caught.value.message
    assert upstream_b.requests == []
    await gw.set_account_enabled(admin, "A", True)
    assert (await ask(gw, user, "two", first.conversation.id)).turn.position == 1


async def test_follow_up_rejected_by_the_key_is_not_a_401(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    first = await ask(gw, user, "one")
    upstream_a.enqueue(Status(401))
    with pytest.raises(Unavailable) as caught:
        await ask(gw, user, "two", first.conversation.id)
    assert caught.value.status == 503 and "'A'" in caught.value.message
    assert gw.pool.get("A").health() == "out"  # type: ignore[union-attr]


async def test_follow_up_when_the_account_left_the_config_is_account_gone(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    both = make_settings([account("A", upstream_a, "KEY_A"), account("B", upstream_b, "KEY_B")])
    gw = await open_gateway(both)
    admin = await gw.authenticate(await gw.create_admin("root"))
    _, key = await gw.add_user(admin, userid="ann", username="Ann")
    on_a = await ask(gw, await gw.authenticate(key), "one")
    on_b = await ask(gw, await gw.authenticate(key), "two")
    assert (on_a.conversation.account, on_b.conversation.account) == ("A", "B")
    await gw.close()

    gw = await open_gateway(make_settings([account("B", upstream_b, "KEY_B")]))
    user = await gw.authenticate(key)  # same database file: the user is still there
    with pytest.raises(Conflict) as caught:
        await ask(gw, user, "again", on_a.conversation.id)
    assert caught.value.code == "account_gone" and "'A'" in caught.value.message
    assert len(upstream_a.chat_requests(titles=False)) == 1
    # The conversation itself is intact and readable; B's conversation goes on.
    _, turns = await gw.recall(user, on_a.conversation.id)
    assert [t.prompt for t in turns] == ["one"]
    assert (await ask(gw, user, "more", on_b.conversation.id)).turn.position == 1


async def test_unknown_conversation_is_not_found(gw: Gateway, user: Principal,
                                                 upstream_a: FakeUpstream) -> None:
    with pytest.raises(NotFound):
        await ask(gw, user, "hi", "no-such-id")
    assert upstream_a.requests == []


async def test_concurrent_follow_ups_both_land_in_order(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    first = await ask(gw, user, "start")
    cid = first.conversation.id

    def answer(messages: list[dict[str, Any]]) -> Any:
        # Slow enough that an unserialised second call would go upstream before the first
        # reply is stored.
        return Delay(0.05, f"answer to {messages[-1]['content']}")

    upstream_a.default_reply = answer
    results = await asyncio.gather(ask(gw, user, "left", cid), ask(gw, user, "right", cid))
    assert sorted(r.turn.position for r in results) == [1, 2]
    one, two = sorted(results, key=lambda r: r.turn.position)
    assert two.turn.parent_id == one.turn.id and one.turn.parent_id == first.turn.id

    later = upstream_a.chat_requests(titles=False)[-1]
    assert [(m["role"], m["content"]) for m in later.messages] == [
        ("user", "start"), ("assistant", "reply 1 from A"),
        ("user", one.turn.prompt), ("assistant", f"answer to {one.turn.prompt}"),
        ("user", two.turn.prompt),
    ]
    _, turns = await gw.recall(user, cid)
    assert [t.position for t in turns] == [0, 1, 2]
    assert (await gw.conversations.get(cid)).turn_count == 3  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "failure", [Status(500), StreamBreak(after_chunks=2), Garbage()],
    ids=["500", "stream-break", "garbage"],
)
async def test_a_failed_new_conversation_stores_nothing(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway,
    upstream_a: FakeUpstream, failure: Any,
) -> None:
    gw = await open_gateway(make_settings([account("A", upstream_a, "KEY_A")]))
    user = await new_user(gw)
    upstream_a.enqueue(failure)
    with pytest.raises(UpstreamError) as caught:
        await ask(gw, user, "hello")
    assert caught.value.status in (502, 503)
    assert "Traceback" not in caught.value.message
    for table in ("conversations", "turns"):
        assert (await gw.storage.db.fetchone(f"SELECT count(*) FROM {table}"))[0] == 0
    rows = await gw.storage.db.fetchall("SELECT principal_id, outcome, conversation_id FROM usage"
                                        " WHERE purpose = 'reply'")
    assert len(rows) == 1
    assert rows[0]["principal_id"] == user.id and rows[0]["outcome"] != "ok"
    assert rows[0]["conversation_id"] is None


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [(Status(500), "upstream_server"), (StreamBreak(after_chunks=1), "upstream_server"),
     (Garbage(), "upstream_garbage"), (Garbage.no_choices(), "upstream_garbage")],
    ids=["500", "stream-break", "garbage", "no-choices"],
)
async def test_a_failed_follow_up_stores_no_turn(
    gw: Gateway, user: Principal, clock: FakeClock, upstream_a: FakeUpstream,
    failure: Any, outcome: str,
) -> None:
    first = await ask(gw, user, "one")
    before = await gw.conversations.get(first.conversation.id)
    upstream_a.enqueue(failure)
    with pytest.raises(UpstreamError) as caught:
        await ask(gw, user, "two", first.conversation.id)
    assert caught.value.status == 502 and "'A'" in caught.value.message
    after = await gw.conversations.get(first.conversation.id)
    assert after == before  # no turn, no count, no time bumped
    _, turns = await gw.recall(user, first.conversation.id)
    assert [t.prompt for t in turns] == ["one"]
    rows = await gw.storage.db.fetchall(
        "SELECT outcome, conversation_id, account FROM usage WHERE purpose = 'reply'"
        " ORDER BY id")
    assert [tuple(r) for r in rows] == [("ok", first.conversation.id, "A"),
                                        (outcome, first.conversation.id, "A")]
    # Once A is back, the conversation carries on where it was.
    clock.advance(30)
    again = await ask(gw, user, "two again", first.conversation.id)
    assert again.turn.position == 1 and again.turn.parent_id == first.turn.id


async def test_follow_ups_ask_for_the_model_the_conversation_asked_for(
    gw: Gateway, user: Principal, upstream_a: FakeUpstream
) -> None:
    # Upstreams may echo another name than the one asked for (a dated snapshot; Azure names
    # the model behind a deployment): the follow-up must ask for the same name as before.
    upstream_a.enqueue(Reply("hi", model="model-a-2024-07-18"))
    first = await ask(gw, user, "one")
    assert first.conversation.model == "model-a"
    assert first.turn.model == "model-a-2024-07-18"  # what answered is still recorded
    await ask(gw, user, "two", first.conversation.id)
    assert [r.model for r in upstream_a.chat_requests(titles=False)] == ["model-a", "model-a"]


async def test_follow_up_on_the_plus_tier_after_plus_was_revoked_is_forbidden(
    gw: Gateway, admin: Principal, plus_user: Principal, upstream_plus: FakeUpstream
) -> None:
    first = await ask(gw, plus_user, "one", plus="true")
    assert first.conversation.account == "P"
    await gw.update_user(admin, "pat", plus=False)
    me = await gw.principals.get(plus_user.id)
    assert me is not None
    with pytest.raises(Forbidden) as caught:
        await ask(gw, me, "two", first.conversation.id)
    assert caught.value.code == "plus_not_allowed"
    assert len(upstream_plus.chat_requests(titles=False)) == 1
