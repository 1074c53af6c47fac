"""/admin end to end: refused outside the admin channel and to non-admins; every subcommand."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import Unauthorized
from tests.fakediscord import EPHEMERAL
from tests.fakes.upstream import Status

from .conftest import ADMIN, ADMIN_CHANNEL, ANN, BOB, GENERAL, MEMBER_ROLE, MOD, PAT, Harness

SUBCOMMANDS: list[tuple[str, dict[str, Any]]] = [
    ("users", {}), ("plus", {"member": ANN, "enabled": True}), ("remove", {"member": ANN}),
    ("accounts", {}), ("audit", {"member": ANN}), ("stats", {}), ("usage", {}),
    ("limit", {"member": ANN, "kind": "tokens_per_day", "value": "0"}),
]


async def admin(h: Harness, sub: str, *, user: int = ADMIN, channel: int = ADMIN_CHANNEL,
                **options: Any) -> str:
    interaction = await h.fake.slash("admin", sub, user=user, channel=channel, **options)
    await h.settle()
    assert interaction.callbacks[0]["data"]["flags"] == EPHEMERAL
    return h.answer(interaction)


@pytest.mark.parametrize(("sub", "options"), SUBCOMMANDS)
async def test_admin_is_refused_to_members_and_outside_the_admin_channel(
        h: Harness, sub: str, options: dict[str, Any]) -> None:
    await h.chat("so that Ann exists")
    member = await h.fake.slash("admin", sub, user=BOB, channel=ADMIN_CHANNEL, **options)
    assert member.callbacks[0]["type"] == 4  # at once, before any work
    assert member.callbacks[0]["data"]["content"] == "Only the bot's admins may use /admin."
    assert member.callbacks[0]["data"]["flags"] == EPHEMERAL
    elsewhere = await h.fake.slash("admin", sub, user=ADMIN, channel=GENERAL, **options)
    assert elsewhere.callbacks[0]["type"] == 4
    assert elsewhere.callbacks[0]["data"]["content"] == (
        f"Admin commands work only in <#{ADMIN_CHANNEL}>.")
    await h.settle()
    user = await h.bot.known_member(ANN)
    assert user is not None and not user.plus and not user.limits  # nothing happened


async def test_admin_is_off_without_an_admin_channel(make_harness: Any) -> None:
    async with make_harness(admin_channel_id=0) as h:
        refused = await h.fake.slash("admin", "stats", user=ADMIN, channel=ADMIN_CHANNEL)
        assert "turned off" in refused.callbacks[0]["data"]["content"]


async def test_users_lists_members_with_plus_and_usage(h: Harness) -> None:
    await h.chat("one", user=ANN)
    await h.chat("two", user=ANN)
    await h.chat("three", user=PAT)
    text = await admin(h, "users")
    assert text.startswith("**Members** · 2 · page 1/1")
    ann_line = next(line for line in text.splitlines() if f"<@{ANN}>" in line)
    assert "ann · free · 2 conversations · 2 requests" in ann_line
    pat_line = next(line for line in text.splitlines() if f"<@{PAT}>" in line)
    assert "pat · plus · 1 conversation" in pat_line

    found = await admin(h, "users", search="pat", user=MOD)  # an admin by role
    assert f"<@{PAT}>" in found and f"<@{ANN}>" not in found


async def test_users_are_paged(h: Harness) -> None:
    for i in range(11):
        h.fake.add_member(300000000000000000 + i, f"member{i}", (MEMBER_ROLE,))
        await h.fake.slash("apikey", user=300000000000000000 + i)
    await h.settle()
    interaction = await h.fake.slash("admin", "users", user=ADMIN, channel=ADMIN_CHANNEL)
    await h.settle()
    assert interaction.original_id is not None
    assert "page 1/2" in h.answer(interaction)
    await h.fake.click(interaction.original_id, "Next ▶", user=ADMIN)
    await h.settle()
    assert "page 2/2" in h.fake.messages[interaction.original_id]["content"]


async def test_plus_grants_and_takes_plus(make_harness: Any) -> None:
    # Without plus roles, /admin plus alone decides plus, and it lasts.
    async with make_harness(plus_role_ids=[]) as h:
        assert (await admin(h, "plus", member=BOB, enabled=True)) == f"<@{BOB}> now has plus."
        h.upstreams["P"].enqueue("plus answer")
        interaction = await h.chat("big model", user=BOB, tier="plus")
        assert interaction.original_id is not None
        assert h.thread_text(interaction.original_id) == ["plus answer"]
        user = await h.bot.known_member(BOB)
        assert user is not None and user.plus

        assert (await admin(h, "plus", member=BOB, enabled=False)) == (
            f"<@{BOB}> no longer has plus.")
        refused = await h.chat("big model", user=BOB, tier="plus")
        assert "plus" in h.answer(refused)


async def test_plus_against_the_roles_says_the_roles_decide(h: Harness) -> None:
    text = await admin(h, "plus", member=ANN, enabled=True)
    assert text.startswith(f"<@{ANN}> now has plus.\nNote: here plus follows the roles")
    user = await h.bot.known_member(ANN)
    assert user is not None and user.plus


async def test_remove_deletes_the_member_their_key_and_conversations(h: Harness) -> None:
    thread = (await h.chat("hello")).original_id
    key_answer = await h.fake.slash("apikey", user=ANN)
    await h.settle()
    key = h.answer(key_answer).split("`")[1]
    text = await admin(h, "remove", member=ANN)
    assert text.startswith(f"Removed <@{ANN}> (ann)")
    assert await h.bot.known_member(ANN) is None
    with pytest.raises(Unauthorized):
        await h.gateway.authenticate(key)
    assert thread is not None and await h.bot.thread_conversation(thread) is None

    again = await admin(h, "remove", member=ANN)
    assert again.startswith("⚠️ no user with userid")


async def test_accounts_shows_health(h: Harness) -> None:
    h.upstreams["A"].enqueue(Status(429, headers={"Retry-After": "30"}))
    await h.chat("this fails")
    text = await admin(h, "accounts")
    assert text.startswith("**Accounts**")
    a_line = next(line for line in text.splitlines() if "**A**" in line)
    assert a_line.startswith("🟡 **A** · free") and "cooling down" in a_line
    p_line = next(line for line in text.splitlines() if "**P**" in line)
    assert p_line.startswith("🟢 **P** · plus") and "healthy" in p_line


async def test_audit_lists_a_members_conversations_and_reads_one(h: Harness) -> None:
    h.upstreams["A"].enqueue_title("Ann's topic")
    h.upstreams["A"].enqueue("the answer")
    await h.chat("Ann asks", user=ANN)
    listing = await admin(h, "audit", member=ANN)
    assert listing.startswith("**Conversations of ann** · 1")
    assert "**Ann's topic**" in listing

    choices = await h.fake.autocomplete("admin", "audit", user=ADMIN, channel=ADMIN_CHANNEL,
                                        focused="conversation", member=ANN, conversation="topic")
    assert [c["name"].split(" · ")[0] for c in choices] == ["Ann's topic"]
    assert await h.fake.autocomplete("admin", "audit", user=BOB, channel=ADMIN_CHANNEL,
                                     focused="conversation", member=ANN,
                                     conversation="") == []

    turns = await admin(h, "audit", member=ANN, conversation=choices[0]["value"])
    assert turns.startswith("**Ann's topic** · page 1/1")
    assert "Ann asks" in turns and "the answer" in turns

    unknown = await admin(h, "audit", member=BOB)
    assert unknown == f"<@{BOB}> has never used the bot."


async def test_stats_counts_the_bots_members_usage(h: Harness) -> None:
    await h.chat("one", user=ANN)
    await h.chat("two", user=BOB)
    text = await admin(h, "stats", user=MOD)
    assert text.splitlines() == [
        "**Usage by this bot's members**",
        "Members: 2 · Conversations: 2 · Turns: 2",
        text.splitlines()[2],
        "Accounts: 2 healthy, 0 cooling, 0 out",
    ]
    assert text.splitlines()[2].startswith("Requests: 2 (0 failed) · Tokens:")
