"""/apikey and /ownkey end to end, the modal included."""

from __future__ import annotations

import re

import pytest

from core.errors import Unauthorized
from tests.fakediscord import EPHEMERAL

from .conftest import ANN, EVE, Harness

KEY = re.compile(r"`(gw_[A-Za-z0-9_\-]{30,})`")


async def apikey(h: Harness, user: int = ANN, **options: bool) -> str:
    interaction = await h.fake.slash("apikey", user=user, **options)
    await h.settle()
    assert interaction.callbacks[0] == {"type": 5, "data": {"flags": EPHEMERAL}}
    assert h.is_ephemeral(interaction)
    return h.answer(interaction)


async def test_apikey_gives_a_working_key_then_only_its_prefix(h: Harness) -> None:
    shown = await apikey(h)
    match = KEY.search(shown)
    assert match is not None and "/v1" in shown
    key = match.group(1)
    principal = await h.gateway.authenticate(key)  # the HTTP API's own check; marks it used
    assert principal.external_id == str(ANN)
    assert principal.client_id == h.bot.client_principal.id

    again = await apikey(h)
    assert KEY.search(again) is None
    assert f"starts with `{principal.key_prefix}…`" in again
    assert "rotate:True" in again
    assert (await h.gateway.authenticate(key)).id == principal.id  # still valid


async def test_apikey_rotate_replaces_the_key(h: Harness) -> None:
    first = KEY.search(await apikey(h))
    assert first is not None
    await h.gateway.authenticate(first.group(1))
    rotated = await apikey(h, rotate=True)
    second = KEY.search(rotated)
    assert second is not None and second.group(1) != first.group(1)
    assert "previous one stopped working" in rotated
    with pytest.raises(Unauthorized):
        await h.gateway.authenticate(first.group(1))
    assert (await h.gateway.authenticate(second.group(1))).external_id == str(ANN)


async def test_apikey_is_refused_without_an_allowed_role(h: Harness) -> None:
    refused = await h.fake.slash("apikey", user=EVE)
    assert refused.callbacks[0]["type"] == 4
    assert "Sorry" in refused.callbacks[0]["data"]["content"]


async def test_ownkey_set_through_the_modal_is_used_for_new_conversations(
        h: Harness) -> None:
    opened = await h.fake.slash("ownkey", "set", user=ANN)
    (callback,) = opened.callbacks
    assert callback["type"] == 9 and callback["data"]["title"] == "Your own upstream API key"
    submitted = await h.fake.submit_modal(opened, {"API key": "  sk-member-own-key "})
    await h.settle()
    assert h.answer(submitted).startswith("Saved your own key, encrypted.")
    assert h.is_ephemeral(submitted)
    user = await h.bot.known_member(ANN)
    assert user is not None and user.has_own_key
    assert await h.gateway.own_key(user) == "sk-member-own-key"

    upstream = h.upstreams["A"]
    upstream.enqueue("on your own key", "still yours")
    interaction = await h.chat("Use my key")
    assert upstream.chat_requests(titles=False)[-1].api_key == "sk-member-own-key"
    thread_id = interaction.original_id
    assert thread_id is not None
    conversation = await h.bot.thread_conversation(thread_id)
    assert conversation is not None and conversation.mode == "own_key"

    # A follow-up goes back to the member's own key.
    await h.fake.user_says(thread_id, "and again", user=ANN)
    await h.settle()
    assert h.thread_text(thread_id)[-1] == "still yours"
    assert upstream.chat_requests(titles=False)[-1].api_key == "sk-member-own-key"

    cleared = await h.fake.slash("ownkey", "clear", user=ANN)
    await h.settle()
    assert h.answer(cleared).startswith("Removed your own key.")
    user = await h.bot.known_member(ANN)
    assert user is not None and not user.has_own_key
    await h.fake.user_says(thread_id, "one more", user=ANN)
    await h.settle()
    assert "runs on your own key, which you have cleared" in h.thread_text(thread_id)[-1]

    none_left = await h.fake.slash("ownkey", "clear", user=ANN)
    await h.settle()
    assert h.answer(none_left) == "You have no own key stored."


async def test_ownkey_with_spaces_is_refused(h: Harness) -> None:
    opened = await h.fake.slash("ownkey", "set", user=ANN)
    submitted = await h.fake.submit_modal(opened, {"API key": "not a key"})
    await h.settle()
    assert submitted.callbacks[0]["data"]["content"].startswith("That doesn't look like")
    assert await h.bot.known_member(ANN) is None
