"""Access-token retrieval in Chromium, against a small identity provider on 127.0.0.1: the token
is shown once and can become the member's own key; a refused password reads as a message."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from playwright.async_api import expect

from core.config import Settings
from core.gateway import Gateway
from tests.conftest import account
from tests.fakes.upstream import FakeUpstream

from .conftest import session_loop
from .support import LOOP, Ui, make_key

pytestmark = LOOP

PASSWORD = "correct horse battery staple"


@session_loop
async def idp() -> AsyncIterator[str]:
    """A token endpoint: the password grant with one good password."""

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "password" or form.get("password") != PASSWORD:
            return web.json_response({"error": "invalid_grant",
                                      "error_description": "wrong email or password"},
                                     status=400)
        return web.json_response({"access_token": f"at-for-{form.get('username')}",
                                  "token_type": "Bearer", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/token"
    finally:
        await runner.cleanup()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
             upstream_b: FakeUpstream, upstream_plus: FakeUpstream, idp: str) -> Settings:
    return make_settings([
        account("A", upstream_a, "KEY_A"),
        account("B", upstream_b, "KEY_B"),
        account("P", upstream_plus, "KEY_P", tier="plus"),
    ], access_token={"token_url": idp})


async def test_access_token_is_shown_once_and_can_become_my_own_key(
    ui: Ui, gateway: Gateway, admin_key: str,
) -> None:
    page = ui.page
    await ui.sign_in(await make_key(gateway, admin_key, "ann"),
                     start="/login?next=/access-token", lands="/access-token")
    await page.fill("#email", "ann@example.org")
    await page.fill("#password", "not it")
    await page.get_by_role("button", name="Get an access token").click()
    await expect(page.locator("#token-error")).to_be_visible()
    await expect(page.locator("#email")).to_have_value("ann@example.org")  # kept
    await expect(page.locator("#password")).to_have_value("")  # never echoed

    await page.fill("#password", PASSWORD)
    await page.get_by_role("button", name="Get an access token").click()
    await expect(page.locator("#revealed-secret")).to_have_value("at-for-ann@example.org")
    await page.get_by_role("button", name="Use it as my own key").click()
    await expect(page.locator("#own-key-status")).to_have_text("set")
    assert all(PASSWORD not in url and "at-for-" not in url for url in ui.urls)
