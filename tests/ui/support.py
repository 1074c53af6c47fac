"""Helpers of the browser suite: a ``Ui`` that signs in, sends prompts and waits on what a
person would see, while recording every dialog, request URL and console error of its page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage, Dialog, Locator, Page, Request, expect

from core.gateway import Gateway
from core.models import Role

KEY_RE = re.compile(r"gw_[A-Za-z0-9_-]{43}")
LOOP = pytest.mark.asyncio(loop_scope="session")
"""Every browser test runs on the session's loop, where the one shared Chromium lives."""


async def make_key(gateway: Gateway, admin_key: str, name: str, *, plus: bool = False,
                   role: Role = "user", userid: str | None = None) -> str:
    """A new principal's key, made by the admin through the facade (as the API would)."""
    admin = await gateway.authenticate(admin_key)
    _, key = await gateway.add_user(admin, userid=userid, username=name, plus=plus, role=role)
    return key


class Ui:
    def __init__(self, page: Page, base_url: str, gateway: Gateway) -> None:
        self.page = page
        self.base_url = base_url
        self.gateway = gateway
        self.dialogs: list[str] = []
        self.urls: list[str] = []
        self.console_errors: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("request", self._on_request)
        page.on("console", self._on_console)

    async def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    def _on_request(self, request: Request) -> None:
        self.urls.append(request.url)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def csp_violations(self) -> list[str]:
        return [text for text in self.console_errors if "Content Security Policy" in text]

    # ------------------------------------------------------------------ actions

    async def sign_in(self, key: str, *, start: str = "/login", lands: str = "/chat") -> None:
        await self.page.goto(start)
        await expect(self.page).to_have_url(re.compile(r"/login"))
        await self.page.fill("#key", key)
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.page).to_have_url(re.compile(re.escape(lands) + r"$"))

    async def sign_out(self) -> None:
        await self.page.get_by_role("button", name="Sign out").click()
        await expect(self.page).to_have_url(re.compile(r"/login\?bye=1$"))

    def turns(self) -> Locator:
        return self.page.locator("#turns .turn")

    async def chat_ready(self) -> None:
        """Wait until chat.js has wired the composer (scripts are deferred)."""
        await expect(self.page.locator("html[data-chat-ready]")).to_have_count(1)

    async def send(self, text: str, *, tier: str | None = None) -> Locator:
        """Type a prompt, press Enter, and wait until its reply has streamed to the end."""
        await self.chat_ready()
        before = await self.page.locator("#turns .turn.done").count()
        if tier is not None:
            await self.page.select_option("#tier", tier)
        await self.page.fill("#prompt", text)
        await self.page.press("#prompt", "Enter")
        turn = self.page.locator("#turns .turn.done").nth(before)
        await expect(turn).to_be_visible()
        await expect(turn.locator(".bubble")).to_have_text(text)
        return turn

    async def reply_tags(self, turn: Locator) -> list[str]:
        return list(await turn.locator(".reply-body").evaluate(
            "body => Array.from(body.querySelectorAll('*'), el => el.tagName.toLowerCase())"))

    async def post(self, path: str, form: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, str]:
        """A POST with this browser's cookies but without the page's help (no CSRF token
        unless given): what a forged request from another site could at best send."""
        response = await self.page.request.post(self.base_url + path, form=form or {},
                                                headers=headers or {}, max_redirects=0)
        return response.status, await response.text()
