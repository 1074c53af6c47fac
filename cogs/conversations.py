"""/conversations, /recall and /forget: a member's own conversations, listed, shown, removed."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from cogs.utils.format import (
    PAGE_SIZE,
    conversations_page,
    escape,
    page_count,
    thread_of,
    transcript_pages,
)
from cogs.utils.paging import send_pages, static_pages
from cogs.utils.replies import NO_MENTIONS, Refusal, reply, role_ids
from core.models import Conversation, Principal
from discord_bot import GatewayBot, MemberCog

log = logging.getLogger(__name__)


class Conversations(MemberCog):
    @app_commands.command(name="conversations")
    @app_commands.guild_only()
    async def conversations(self, interaction: discord.Interaction[GatewayBot]) -> None:
        """List your conversations, newest first, with links to their threads (only you see
        it)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self.bot.member_principal(interaction.user)
        client_id = self.bot.client_principal.id

        async def page(number: int) -> tuple[str, int]:
            items, total = await self.bot.gateway.list_conversations(
                user, limit=PAGE_SIZE, offset=number * PAGE_SIZE)
            return (conversations_page("Your conversations", items, total, number, client_id),
                    page_count(total))

        await send_pages(interaction, page)

    @app_commands.command(name="recall")
    @app_commands.guild_only()
    @app_commands.describe(conversation="The conversation to show: type to search your titles "
                                        "(in one of my threads: that one)")
    async def recall(self, interaction: discord.Interaction[GatewayBot],
                     conversation: str | None = None) -> None:
        """Show a conversation's turns, oldest first (only you see them)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self.bot.member_principal(interaction.user)
        found = await self._conversation(interaction, user, conversation)
        stored, turns = await self.bot.gateway.recall(user, found.id)
        await send_pages(interaction, static_pages(transcript_pages(stored, turns)))

    @app_commands.command(name="forget")
    @app_commands.guild_only()
    @app_commands.describe(conversation="The conversation to remove: type to search your titles "
                                        "(in one of my threads: that one)")
    async def forget(self, interaction: discord.Interaction[GatewayBot],
                     conversation: str | None = None) -> None:
        """Remove a conversation for good, and archive and lock its thread."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self.bot.member_principal(interaction.user)
        found = await self._conversation(interaction, user, conversation)
        thread_id = thread_of(found, self.bot.client_principal.id)
        if thread_id is None:
            removed = await self.bot.gateway.remove_conversation(user, found.id)
            note = ""
        else:
            # After the reply being written in that thread, if any.
            async with self.bot.thread_locks[thread_id]:
                removed = await self.bot.gateway.remove_conversation(user, found.id)
            note = await self._close_thread(thread_id, interaction.user)
        await reply(interaction, f"Forgot **{escape(removed.title)}**.{note}")

    @recall.autocomplete("conversation")
    @forget.autocomplete("conversation")
    async def conversation_choices(self, interaction: discord.Interaction[GatewayBot],
                                   current: str) -> list[app_commands.Choice[str]]:
        if self.bot.policy.refusal(interaction.user.id, role_ids(interaction.user)):
            return []
        return await self.bot.conversation_choices(interaction.user.id, current)

    async def _conversation(self, interaction: discord.Interaction[GatewayBot], user: Principal,
                            ref: str | None) -> Conversation:
        """The conversation named by the option, else the one of the thread this is used in."""
        if ref:
            return await self.bot.find_conversation(user, ref)
        if interaction.channel_id is not None:  # in one of the bot's threads?
            found = await self.bot.thread_conversation(interaction.channel_id)
            if found is not None and found.owner_id == user.id:
                return found
        raise Refusal("Name the conversation (type to search your titles), or use this inside "
                      "its thread.")

    async def _close_thread(self, thread_id: int, member: discord.abc.User) -> str:
        """Archive and lock a forgotten conversation's thread, saying so in it."""
        try:
            channel = self.bot.get_channel(thread_id) or await self.bot.fetch_channel(thread_id)
            if not isinstance(channel, discord.Thread):
                return ""
            if not channel.archived:
                await channel.send(
                    f"🗑️ {escape(member.display_name)} forgot this conversation: the thread is "
                    "archived and locked.", allowed_mentions=NO_MENTIONS)
            await channel.edit(archived=True, locked=True)
        except discord.HTTPException as exc:
            log.info("could not archive thread %s: %s", thread_id, exc)
            return f" Its thread <#{thread_id}> could not be archived ({exc.text or exc.status})."
        return f" Its thread <#{thread_id}> is archived and locked."


async def setup(bot: GatewayBot) -> None:
    await bot.add_cog(Conversations(bot))
