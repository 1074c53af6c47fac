"""How the pages look: each main page on a laptop and on a phone, light and dark, is checked for
what a screenshot reviewer would catch first (nothing wider than the screen, the colour scheme
followed, the composer and the reply in view) and, with ``UI_SCREENSHOTS=DIR``, screenshotted
into ``DIR/looks/`` for a person to look at:

    UI_SCREENSHOTS=/tmp/shots .venv/bin/python -m pytest tests/ui/test_looks.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from core.chat import ChatRequest
from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream

from .conftest import LAPTOP, OpenContext
from .support import LOOP, make_key

pytestmark = LOOP

PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "is_mobile": True,
                         "has_touch": True, "device_scale_factor": 2}
SCREENS = {"laptop": {"viewport": LAPTOP}, "phone": PHONE}
BACKGROUND = {"light": "rgb(246, 247, 249)", "dark": "rgb(15, 18, 23)"}
REPLY = (
    "Here is a **short** answer with a list, code and a table.\n\n"
    "- first point, long enough to wrap on a narrow phone screen without overflowing it\n"
    "- second point with `inline code`\n\n"
    "```python\nimport asyncio\n\nasync def main() -> None:\n"
    "    print('a rather long line of code that must scroll inside its block, not the page')\n"
    "\nasyncio.run(main())\n```\n\n"
    "| Tier | Who | Model |\n|:--|:--|--:|\n| free | everyone | 1 |\n| plus | granted | 2 |\n"
)


class Camera:
    """Checks a page in both colour schemes and, when ``UI_SCREENSHOTS`` is set, screenshots
    each into ``UI_SCREENSHOTS/looks``."""

    def __init__(self, page: Page, screen: str) -> None:
        chosen = os.environ.get("UI_SCREENSHOTS")
        self.folder = Path(chosen) / "looks" if chosen else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.page = page
        self.screen = screen

    async def check(self, name: str, *, full_page: bool = False) -> None:
        page = self.page
        for scheme in ("light", "dark"):
            await page.emulate_media(color_scheme=scheme)
            await expect(page.locator("body")).to_have_css("background-color",
                                                           BACKGROUND[scheme])
            width = await page.evaluate("document.documentElement.scrollWidth")
            viewport = await page.evaluate("window.innerWidth")
            assert width <= viewport, f"{name}: {width}px wide in a {viewport}px window"
            # Every link of the top bar in view, none cut off behind who is signed in.
            cut = await page.evaluate(
                "(n => n ? n.scrollWidth - n.clientWidth : 0)(document.querySelector('.mainnav'))")
            assert cut <= 0, f"{name}: the top bar's links need {cut}px more"
            if self.folder is not None:
                path = self.folder / f"{name}-{self.screen}-{scheme}.png"
                await page.screenshot(path=str(path), full_page=full_page)


@pytest.mark.parametrize("screen", ["laptop", "phone"])
async def test_pages_fit_and_follow_the_colour_scheme(
    open_context: OpenContext, gateway: Gateway, admin_key: str,
    upstream_a: FakeUpstream, upstream_b: FakeUpstream, screen: str,
) -> None:
    key = await make_key(gateway, admin_key, "Ann Example", plus=True)
    ann = await gateway.authenticate(key)
    upstream_a.enqueue(REPLY)
    upstream_a.enqueue_title("Lists, code and tables")
    await gateway.chat(ann, ChatRequest(prompt="Show me what formatting looks like"))
    # Round robin: the next conversation goes to B, the one after to A.
    for fake, title in ((upstream_b, "Essay outline on photosynthesis"),
                        (upstream_a, "Debugging a Python import error")):
        fake.enqueue_title(title)
        await gateway.chat(ann, ChatRequest(prompt=title))

    ctx = await open_context(**SCREENS[screen])
    page = await ctx.new_page()
    camera = Camera(page, screen)
    await page.goto("/login")
    await camera.check("login")

    await page.fill("#key", key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("html[data-chat-ready]")).to_have_count(1)
    if screen == "phone":
        await expect(page.locator("#sidebar")).not_to_be_in_viewport()
        await page.click("#sidebar-toggle")
        await expect(page.locator("#sidebar")).to_be_in_viewport(ratio=1)
        await camera.check("chat-list")
    else:
        await camera.check("chat-new")
    await page.locator("#conversation-list a", has_text="Lists, code").click()
    await expect(page.locator("#chat-title")).to_have_text("Lists, code and tables")
    await expect(page.locator("html[data-chat-ready]")).to_have_count(1)
    await expect(page.locator(".turn .reply-body table")).to_be_visible()
    await expect(page.locator("#prompt")).to_be_in_viewport()
    await camera.check("chat")
    await page.locator(".turn").first.get_by_role("button", name="JSON").click()
    await camera.check("chat-json")
    await page.goto("/own-key")
    await camera.check("keys", full_page=True)
    await page.goto("/access-token")
    await camera.check("access-token", full_page=True)
    await page.goto("/usage")
    await expect(page.locator("svg#daily-tokens g.day")).to_have_count(1)
    await camera.check("usage", full_page=True)

    await ctx.clear_cookies()
    await page.goto("/login")
    await page.fill("#key", admin_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.goto("/admin/users")
    await page.fill("#new-username", "Bea Example")
    await page.click("#create-submit")
    await expect(page.locator("#revealed-secret")).to_be_visible()
    await camera.check("admin-users", full_page=True)
    await page.goto("/admin/accounts")
    await camera.check("admin-accounts", full_page=True)
    await page.goto("/admin/usage")
    await expect(page.locator("svg#chart-tokens g.day rect")).to_have_count(2)
    await camera.check("admin-usage", full_page=True)


async def test_the_phone_top_bar_names_who_is_signed_in(
    open_context: OpenContext, gateway: Gateway, admin_key: str,
) -> None:
    key = await make_key(gateway, admin_key, "Ann Example", plus=True)
    page = await (await open_context(**PHONE)).new_page()
    await page.goto("/login")
    await page.fill("#key", key)
    await page.get_by_role("button", name="Sign in").click()
    who = page.locator(".topbar .who-name")
    await expect(who).to_be_visible()
    await expect(who).to_contain_text("Ann")
    await expect(who).to_be_in_viewport(ratio=1)
    await expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport(ratio=1)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= await page.evaluate("window.innerWidth")
