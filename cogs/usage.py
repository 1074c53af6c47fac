"""/usage: a member's own use today and this month, and what is left of each budget."""

from __future__ import annotations

import discord
from discord import app_commands

from cogs.utils.replies import reply
from cogs.utils.usage_text import usage_text
from discord_bot import GatewayBot, MemberCog


class Usage(MemberCog):
    @app_commands.command(name="usage")
    @app_commands.guild_only()
    async def usage(self, interaction: discord.Interaction[GatewayBot]) -> None:
        """Your use today and this month, and what is left of your budgets (only you see it)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self.bot.member_principal(interaction.user)
        summary = await self.bot.gateway.usage(user)
        states = await self.bot.gateway.budgets.states(user)
        await reply(interaction, usage_text(summary, states))


async def setup(bot: GatewayBot) -> None:
    await bot.add_cog(Usage(bot))
