"""/admin: the bot's members, their budgets and usage, and the accounts, for admins, in the
admin channel only.

Admins are the ``admin_user_ids`` and the members with one of the ``admin_role_ids``; every
subcommand is refused to anyone else and anywhere but ``admin_channel_id``. Answers are
ephemeral: the admin channel may be shared, a member's conversations are not.
"""

from __future__ import annotations

from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils.format import (
    PAGE_SIZE,
    accounts_text,
    conversations_page,
    escape,
    page_count,
    stats_text,
    transcript_pages,
    users_page,
)
from cogs.utils.paging import send_pages, static_pages
from cogs.utils.replies import Refusal, reply, role_ids, user_name
from cogs.utils.text import split_message
from cogs.utils.usage_text import admin_usage_text, limit_text
from core.models import Principal
from discord_bot import GatewayBot


class Admin(commands.Cog):
    admin = app_commands.Group(
        name="admin", guild_only=True,
        allowed_contexts=app_commands.AppCommandContext(guild=True),
        description="The bot's members, their budgets and usage, and the accounts (admins, admin "
                    "channel)")

    def __init__(self, bot: GatewayBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        refusal = self.bot.policy.admin_refusal(interaction.user.id, role_ids(interaction.user),
                                                interaction.channel_id)
        if refusal:
            raise Refusal(refusal)
        return True

    @property
    def client(self) -> Principal:
        return self.bot.client_principal

    async def _member(self, member: discord.abc.User) -> Principal:
        user = await self.bot.known_member(member.id)
        if user is None:
            raise Refusal(f"<@{member.id}> has never used the bot.")
        return user

    @admin.command(name="users")
    @app_commands.describe(search="Part of a name or a Discord id")
    async def users(self, interaction: discord.Interaction[GatewayBot], search: str = "") -> None:
        """List the bot's members with their plus, conversations and usage."""
        await interaction.response.defer(ephemeral=True, thinking=True)

        async def page(number: int) -> tuple[str, int]:
            items, total = await self.bot.gateway.list_users(
                self.client, search=search, limit=PAGE_SIZE, offset=number * PAGE_SIZE)
            return users_page(items, total, number, search), page_count(total)

        await send_pages(interaction, page)

    @admin.command(name="plus")
    @app_commands.describe(member="The member", enabled="True to grant plus, False to take it")
    async def plus(self, interaction: discord.Interaction[GatewayBot], member: discord.User,
                   enabled: bool) -> None:
        """Grant or take away the plus tier."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        # A member who never used the bot is created here, so plus can be granted ahead.
        await self.bot.gateway.acting_as(self.client, str(member.id),
                                         username=user_name(member), plus=enabled)
        await self.bot.gateway.update_user(self.client, str(member.id), plus=enabled)
        text = f"<@{member.id}> {'now has' if enabled else 'no longer has'} plus."
        by_roles = self.bot.policy.plus_for(role_ids(member))
        if by_roles is not None and by_roles != enabled:
            roles = ", ".join(f"<@&{r}>" for r in sorted(self.bot.policy.plus_role_ids))
            text += (f"\nNote: here plus follows the roles {roles}, so their next request sets "
                     "it back from their roles: change their roles to make this last.")
        await reply(interaction, text)

    @admin.command(name="remove")
    @app_commands.describe(member="The member to remove")
    async def remove(self, interaction: discord.Interaction[GatewayBot],
                     member: discord.User) -> None:
        """Remove a member: their gateway key, their conversations and their own key."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.gateway.remove_user(self.client, str(member.id))
        await reply(interaction, f"Removed <@{member.id}> ({escape(user_name(member))}): their key "
                                 "no longer works and their conversations are gone. They are "
                                 "a new member if they use the bot again.")

    @admin.command(name="accounts")
    async def accounts(self, interaction: discord.Interaction[GatewayBot]) -> None:
        """The upstream accounts: health, cool-downs, requests and tokens."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = accounts_text(self.bot.gateway.account_health(self.client))
        await send_pages(interaction, static_pages(split_message(text)))

    @admin.command(name="audit")
    @app_commands.describe(member="The member whose conversations to read",
                           conversation="One of their conversations: type to search its title")
    async def audit(self, interaction: discord.Interaction[GatewayBot], member: discord.User,
                    conversation: str | None = None) -> None:
        """Read a member's conversations, or one conversation's turns."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self._member(member)
        if conversation:
            found = await self.bot.find_conversation(user, conversation)
            stored, turns = await self.bot.gateway.recall(user, found.id)
            await send_pages(interaction, static_pages(transcript_pages(stored, turns)))
            return
        heading = f"Conversations of {escape(user_name(member))}"

        async def page(number: int) -> tuple[str, int]:
            items, total = await self.bot.gateway.list_conversations(
                user, limit=PAGE_SIZE, offset=number * PAGE_SIZE)
            return (conversations_page(heading, items, total, number, self.client.id,
                                       show_id=True), page_count(total))

        await send_pages(interaction, page)

    @audit.autocomplete("conversation")
    async def audit_choices(self, interaction: discord.Interaction[GatewayBot],
                            current: str) -> list[app_commands.Choice[str]]:
        if self.bot.policy.admin_refusal(interaction.user.id, role_ids(interaction.user),
                                         interaction.channel_id):
            return []
        member_id = getattr(interaction.namespace.member, "id", None)
        if member_id is None:
            return []
        return await self.bot.conversation_choices(int(member_id), current)

    @admin.command(name="stats")
    async def stats(self, interaction: discord.Interaction[GatewayBot]) -> None:
        """Usage statistics of the bot's members, and the accounts' health."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        stats = await self.bot.gateway.client_stats(self.client)
        _, members = await self.bot.gateway.list_users(self.client, limit=1)
        accounts = self.bot.gateway.account_health(self.client)
        await reply(interaction, stats_text(stats, members, accounts))

    @admin.command(name="usage")
    async def usage(self, interaction: discord.Interaction[GatewayBot]) -> None:
        """This month's use of the bot's members: the top ones, the totals and the budget."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.bot.gateway.usage_report(self.client, "user")
        # Read again: the bot's own principal is kept from its start, and an admin of the
        # gateway may have set its budget since.
        client = await self.bot.gateway.principals.get(self.client.id) or self.client
        ceiling = await self.bot.gateway.budgets.states(client)
        text = admin_usage_text(report.public(), ceiling)
        await send_pages(interaction, static_pages(split_message(text)))

    @admin.command(name="limit")
    @app_commands.describe(
        member="The member",
        kind="Which budget",
        value="A number (tokens, or the cost in the billing currency), none (no limit) or "
              "default (their tier's)")
    async def limit(self, interaction: discord.Interaction[GatewayBot], member: discord.User,
                    kind: Literal["tokens_per_day", "tokens_per_month", "cost_per_month"],
                    value: str) -> None:
        """Set a member's budget, lift it (none) or return it to their tier's (default)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        word = value.strip().casefold()
        wanted = word if word in ("none", "default") else value.strip()
        # A member who never used the bot is created here, so a budget can be set ahead.
        await self.bot.gateway.acting_as(
            self.client, str(member.id), username=user_name(member),
            plus=bool(self.bot.policy.plus_for(role_ids(member))))
        user = await self.bot.gateway.update_user(self.client, str(member.id),
                                                  limits={kind: wanted})
        budgets = self.bot.gateway.budgets
        own = dict(user.limits)
        tier = "plus" if user.plus else "free"
        tier_value = (budgets.tiers.plus if user.plus else budgets.tiers.free).get(kind)
        summary = await self.bot.gateway.usage(self.client, str(member.id))
        used_key = "cost_this_month" if kind == "cost_per_month" else (
            "tokens_today" if kind == "tokens_per_day" else "tokens_this_month")
        await reply(interaction, limit_text(member.id, kind, own.get(kind), kind in own, tier,
                                            tier_value, summary[used_key], budgets.currency))


async def setup(bot: GatewayBot) -> None:
    await bot.add_cog(Admin(bot))
