"""The Keys page in Chromium: a member's own upstream key (set, used for new conversations and
their follow-ups, cleared) and their gateway key (rotated, shown once, old one dead)."""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import expect

from core.errors import Unauthorized
from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream

from .support import KEY_RE, LOOP, Ui, make_key

pytestmark = LOOP


async def test_own_key_is_used_then_cleared(ui: Ui, gateway: Gateway, admin_key: str,
                                            upstream_a: FakeUpstream) -> None:
    page = ui.page
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    await page.get_by_role("link", name="Keys").click()
    await expect(page.locator("#own-key-status")).to_have_text("not set")
    await page.fill("#own-key-input", "sk-ann-own-123")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator(".flash-ok")).to_contain_text("own key")
    await expect(page.locator("#own-key-status")).to_have_text("set")
    assert "sk-ann-own-123" not in await page.content()  # never shown again

    await page.get_by_role("link", name="Chat").click()
    await expect(page.locator(".composer-foot .badge")).to_have_text("your own key")
    await ui.send("on my own key")
    await ui.send("and a follow-up")
    keys = [r.api_key for r in upstream_a.chat_requests(titles=False)]
    assert keys == ["sk-ann-own-123", "sk-ann-own-123"]
    await page.reload()
    await expect(page.locator(".chat-info")).to_contain_text("own key")

    await page.goto("/own-key")
    await page.get_by_role("button", name="Clear my own key").click()
    await expect(page.locator("#own-key-status")).to_have_text("not set")
    await page.goto("/chat")
    turn = await ui.send("back on the pool")
    reply = json.loads(await turn.locator("pre.json").text_content() or "{}")
    assert reply["mode"] == "pool" and reply["account"] in ("A", "B")
    assert [r.api_key for r in upstream_a.chat_requests(titles=False)][2:] in (
        [], ["sk-account-a"])


async def test_rotating_my_key_shows_the_new_one_once(ui: Ui, gateway: Gateway,
                                                      admin_key: str) -> None:
    old_key = await make_key(gateway, admin_key, "ann")
    page = ui.page
    await ui.sign_in(old_key, start="/login?next=/own-key", lands="/own-key")
    await page.get_by_text("Rotate my key…").click()
    await page.get_by_role("button", name="Rotate now").click()
    new_key = await page.locator("#revealed-secret").input_value()
    assert KEY_RE.fullmatch(new_key) and new_key != old_key
    await expect(page.locator("#gateway-key dd code")).to_have_text(new_key[:10] + "…")
    with pytest.raises(Unauthorized):
        await gateway.authenticate(old_key)
    # This browser stays signed in; the new key signs in anywhere else.
    await page.goto("/chat")
    await expect(page).to_have_url(re.compile(r"/chat$"))
    await ui.sign_out()
    await ui.sign_in(new_key)
    assert all(new_key not in url and old_key not in url for url in ui.urls)


async def test_access_token_page_says_when_it_is_not_configured(ui: Ui, gateway: Gateway,
                                                                admin_key: str) -> None:
    page = ui.page
    await ui.sign_in(await make_key(gateway, admin_key, "ann"),
                     start="/login?next=/access-token", lands="/access-token")
    await expect(page.locator(".notice-warn")).to_contain_text("not configured")
    await expect(page.get_by_role("button", name="Get an access token")).to_be_disabled()
