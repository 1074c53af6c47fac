"""Paged answers: Previous / Next buttons under a message, for its author only."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import discord

from .replies import NO_MENTIONS, answer_error, reply

PAGER_TIMEOUT_S = 600.0
"""Buttons work this long after the last click (ephemeral answers expire after 15 minutes)."""

PageFn = Callable[[int], Awaitable[tuple[str, int]]]
"""Page number (from 0) -> the page's text and the number of pages."""


def static_pages(pages: Sequence[str]) -> PageFn:
    async def page(number: int) -> tuple[str, int]:
        return pages[number], len(pages)
    return page


PAGER_PREFIX = "pager:"


def is_stale_pager(custom_id: str, live: set[str]) -> bool:
    """A click on pager buttons nobody serves any more (expired, or from before a restart)."""
    if not custom_id.startswith(PAGER_PREFIX):
        return False
    return custom_id[len(PAGER_PREFIX):].split(":", 1)[0] not in live


class Pager(discord.ui.View):
    """Buttons whose ids carry the pager's token; ``live`` holds the tokens still served, so
    a click on a dead pager can be answered rather than left to fail in silence."""

    def __init__(self, owner_id: int, fetch: PageFn, pages: int, *, live: set[str],
                 timeout: float = PAGER_TIMEOUT_S) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.fetch = fetch
        self.pages = pages
        self.page = 0
        self.token = uuid.uuid4().hex
        for button, name in ((self.previous, "previous"), (self.counter, "page"),
                             (self.next, "next")):
            button.custom_id = f"{PAGER_PREFIX}{self.token}:{name}"
        self._live = live
        live.add(self.token)
        self._sync()

    async def on_timeout(self) -> None:
        self._live.discard(self.token)

    def _sync(self) -> None:
        self.previous.disabled = self.page <= 0
        self.next.disabled = self.page >= self.pages - 1
        self.counter.label = f"{self.page + 1}/{self.pages}"

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        if interaction.user.id == self.owner_id:
            return True
        await interaction.response.send_message("These pages belong to someone else.",
                                                ephemeral=True)
        return False

    @discord.ui.button(label="◀ Previous", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction[Any],
                       button: discord.ui.Button[Pager]) -> None:
        await self._turn(interaction, self.page - 1)

    @discord.ui.button(label="1/1", style=discord.ButtonStyle.secondary, disabled=True)
    async def counter(self, interaction: discord.Interaction[Any],
                      button: discord.ui.Button[Pager]) -> None:
        await interaction.response.defer()

    @discord.ui.button(label="Next ▶", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction[Any],
                   button: discord.ui.Button[Pager]) -> None:
        await self._turn(interaction, self.page + 1)

    async def _turn(self, interaction: discord.Interaction[Any], page: int) -> None:
        await interaction.response.defer()
        page = max(0, min(page, self.pages - 1))
        content, self.pages = await self.fetch(page)
        self.page = min(page, self.pages - 1)
        self._sync()
        await interaction.edit_original_response(content=content, view=self,
                                                 allowed_mentions=NO_MENTIONS)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception,
                       item: discord.ui.Item[Any]) -> None:
        await answer_error(interaction, error)


async def send_pages(interaction: discord.Interaction[Any], fetch: PageFn) -> None:
    """Answer with the first page, and buttons when there are more."""
    content, pages = await fetch(0)
    view = None
    if pages > 1:
        view = Pager(interaction.user.id, fetch, pages, live=interaction.client.live_pagers)
    await reply(interaction, content, view=view)
