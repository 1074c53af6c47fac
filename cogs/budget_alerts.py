"""Budget alerts in the admin channel: when a member, or the bot's members together, pass 80%
and 100% of a budget, ``[discord] admin_channel_id`` gets one message each.

The core records each alert once per budget, window and threshold, from whichever process
served the request, and announces it (LISTEN/NOTIFY on PostgreSQL). Only the process running
the bot posts: this cog, loaded by the one bot, takes the alerts not yet delivered when it
hears of new ones, and at start those recorded while no bot ran. The bot takes only the alerts
of its client and its members: other clients' users' stay in the database, undelivered, for
their own front. Messages never ping: a member is named by a mention that does not notify.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from datetime import datetime

import discord
from discord.ext import commands

from cogs.utils.format import escape
from cogs.utils.replies import NO_MENTIONS
from cogs.utils.usage_text import CEILING_ALERT, alert_text, member_alert
from core.billing import Calendar
from core.clock import utc_now
from core.storage.database import StorageError
from core.storage.spend import Alert
from discord_bot import GatewayBot

log = logging.getLogger(__name__)

RETRY_S = 60.0
"""When Discord or the database failed a delivery, how long until the next try."""
MAX_ATTEMPTS = 5
"""Tries to post one alert before it is given up (and logged)."""


def period_end(calendar: Calendar, period: str) -> datetime:
    """When a spend period (``d:2026-12-01``, ``m:2026-12``) ends, in UTC."""
    if period.startswith("d:"):
        return calendar.day_bounds(period[2:])[1]
    start, _ = calendar.day_bounds(period[2:] + "-01")
    return calendar.compute(start.timestamp()).month_ends


class BudgetAlerts(commands.Cog):
    def __init__(self, bot: GatewayBot) -> None:
        self.bot = bot
        self._listening = False
        self._again = False
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._listener: Callable[[], None] | None = None
        self._unsent: list[tuple[Alert, int]] = []
        """Alerts taken but not posted yet, with the tries so far."""

    async def cog_load(self) -> None:
        if not self.bot.policy.admin_channel_id:
            log.info("no [discord] admin_channel_id: budget alerts are not posted")
            return
        self._listening = True
        # The bot is made anew after an outage: the listener is removed at unload, and holds
        # the cog weakly besides, so a bot that was never unloaded can still go.
        wake = weakref.WeakMethod(self.wake)

        def listener() -> None:
            method = wake()
            if method is not None:
                method()

        self._listener = listener
        self.bot.gateway.budgets.on_alert(listener)
        self.wake()  # those recorded while no bot ran

    async def cog_unload(self) -> None:
        # The bot's close already let a running delivery finish (it is a handler task).
        self._listening = False
        if self._listener is not None:
            self.bot.gateway.budgets.off_alert(self._listener)
        if self._retry is not None:
            self._retry.cancel()

    def wake(self) -> None:
        """New alerts await: deliver them in a task of their own, so the request whose use
        crossed a threshold does not wait for Discord."""
        if not self._listening:
            return
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._deliver(), name="gwbot: budget alerts")

    async def _deliver(self) -> None:
        try:
            while self._again and self._listening:
                self._again = False
                try:
                    taken = await self.bot.gateway.budgets.take_alerts(
                        self.bot.client_principal.id)
                except StorageError as exc:
                    log.warning("could not read the budget alerts (%s); trying again in %g s",
                                exc, RETRY_S)
                    self._later()
                    return
                self._unsent += [(alert, 0) for alert in taken]
                if not await self._post_unsent():
                    self._later()
                    return
        except Exception:  # a bug must not end the deliveries for good: logged, kept going
            log.exception("budget alerts could not be delivered")

    async def _post_unsent(self) -> bool:
        """Post every alert taken; False when Discord failed one (it and the rest wait)."""
        channel = self.bot.get_partial_messageable(self.bot.policy.admin_channel_id)
        while self._unsent:
            alert, tries = self._unsent[0]
            try:
                text = await self._text(alert)
                if text is not None:
                    await channel.send(text, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException as exc:
                if tries + 1 >= MAX_ATTEMPTS:
                    log.warning("gave up posting a budget alert (%s, %s of principal %s): %s",
                                alert.budget, alert.period, alert.scope_id, exc)
                    self._unsent.pop(0)
                    continue
                self._unsent[0] = (alert, tries + 1)
                log.warning("could not post a budget alert in the admin channel (%s); "
                            "trying again in %g s", exc, RETRY_S)
                return False
            self._unsent.pop(0)
        return True

    def _later(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(RETRY_S, self.wake)

    async def _text(self, alert: Alert) -> str | None:
        client = self.bot.client_principal
        if alert.scope_id == client.id:
            whose = CEILING_ALERT
        else:
            member = await self.bot.gateway.principals.get(alert.scope_id)
            if member is None or member.client_id != client.id:
                log.info("budget alert of principal %s (%s, %d%%) is not about the bot's "
                         "members: not posted", alert.scope_id, alert.budget, alert.threshold)
                return None
            who = f"<@{member.external_id}> ({escape(member.name)})" if member.external_id \
                else escape(member.name)
            whose = member_alert(who)
        budgets = self.bot.gateway.budgets
        return alert_text(alert, whose, period_end(budgets.calendar, alert.period), utc_now(),
                          budgets.currency)


async def setup(bot: GatewayBot) -> None:
    await bot.add_cog(BudgetAlerts(bot))
