"""/apikey and /ownkey: the member's gateway key, and their own upstream key."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from cogs.utils.format import when
from cogs.utils.replies import Refusal, answer_error, reply
from discord_bot import GatewayBot, MemberCog

KEY_USE = ("Use it as `Authorization: Bearer KEY` with the HTTP API (`/api/chat`, "
           "`/api/recall`) and the OpenAI-compatible API (`/v1`, as the SDK's `api_key`).")


def issued_text(key: str, rotated: bool) -> str:
    first = ("Your new gateway key (the previous one stopped working just now):" if rotated
             else "Your gateway key:")
    return (f"{first}\n`{key}`\n{KEY_USE}\nIt is shown only now and stored only as a hash: "
            "keep it somewhere safe. `/apikey rotate:True` replaces it.")


def existing_text(prefix: str, last_used: str | None) -> str:
    return (f"Your gateway key starts with `{prefix}…` and was last used {when(last_used)}. "
            "It is stored only as a hash, so it can't be shown again. Lost it? "
            "`/apikey rotate:True` gives you a new one and stops this one.\n" + KEY_USE)


class OwnKeyModal(discord.ui.Modal, title="Your own upstream API key"):
    key: discord.ui.TextInput[OwnKeyModal] = discord.ui.TextInput(
        label="API key", placeholder="sk-…", max_length=500)

    def __init__(self, bot: GatewayBot) -> None:
        super().__init__(timeout=600)
        self.bot = bot

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        credential = self.key.value.strip()
        if not credential or any(c.isspace() for c in credential):
            raise Refusal("That doesn't look like an API key (it is empty or has spaces).")
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self.bot.member_principal(interaction.user)
        await self.bot.gateway.set_own_key(user, credential)
        await reply(interaction, "Saved your own key, encrypted. Your new conversations use it "
                                 "instead of the organisation's accounts; `/ownkey clear` "
                                 "removes it.")

    async def on_error(  # type: ignore[override]  # Modal's has no item argument
            self, interaction: discord.Interaction[Any], error: Exception, /) -> None:
        await answer_error(interaction, error)


class Keys(MemberCog):
    ownkey = app_commands.Group(
        name="ownkey", guild_only=True,
        allowed_contexts=app_commands.AppCommandContext(guild=True),
        description="Your own upstream API key, used instead of the organisation's accounts")

    @app_commands.command(name="apikey")
    @app_commands.guild_only()
    @app_commands.describe(rotate="Issue a new key now; the current one stops working at once")
    async def apikey(self, interaction: discord.Interaction[GatewayBot],
                     rotate: bool = False) -> None:
        """Your gateway key for the HTTP and OpenAI-compatible APIs (only you see it)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self.bot.member_principal(interaction.user)
        if rotate or user.last_used_utc is None:
            # A key never used can be replaced without breaking anything: that is how a member
            # sees a key at all, since keys are stored only as hashes.
            _, key = await self.bot.gateway.rotate_key(self.bot.client_principal,
                                                       str(interaction.user.id))
            await reply(interaction, issued_text(key, rotated=rotate))
        else:
            await reply(interaction, existing_text(user.key_prefix, user.last_used_utc))

    @ownkey.command(name="set")
    async def ownkey_set(self, interaction: discord.Interaction[GatewayBot]) -> None:
        """Store your own upstream API key (encrypted); your new conversations use it."""
        await interaction.response.send_modal(OwnKeyModal(self.bot))

    @ownkey.command(name="clear")
    async def ownkey_clear(self, interaction: discord.Interaction[GatewayBot]) -> None:
        """Remove your own key; new conversations use the organisation's accounts again."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self.bot.member_principal(interaction.user)
        if not user.has_own_key:
            await reply(interaction, "You have no own key stored.")
            return
        await self.bot.gateway.set_own_key(user, None)
        await reply(interaction, "Removed your own key. New conversations use the "
                                 "organisation's accounts; those started on your key can't "
                                 "continue until you set it again.")


async def setup(bot: GatewayBot) -> None:
    await bot.add_cog(Keys(bot))
