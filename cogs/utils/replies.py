"""Answering an interaction whatever state it is in, and turning errors into short messages.

Expected failures (a ``GatewayError``, a ``Refusal``, a bad option) are answered with their own
message; anything else is a bug: logged with its traceback and a reference, and answered with a
short apology that quotes the reference. Never silence.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import discord
from discord import app_commands

from core.errors import GatewayError

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


class Refusal(app_commands.CheckFailure):
    """A polite no (role missing, wrong channel, not your thread), shown as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def role_ids(user: discord.abc.User) -> list[int]:
    """The ids of a member's roles (none for a user outside a server).

    ``Member.roles`` leaves out roles missing from the guild's role cache; the raw ids the
    member payload carried are what the member actually has, so those decide."""
    raw = getattr(user, "_roles", None)
    return [int(r) for r in raw] if raw is not None else []


def user_name(user: discord.abc.Snowflake) -> str:
    """A user's name, or their id when only that is known (an option Discord did not resolve)."""
    return str(getattr(user, "name", None) or user.id)


def describe(error: BaseException) -> str | None:
    """The message to show for an expected failure, or None for a bug."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, GatewayError):
        return f"⚠️ {error.message}"
    if isinstance(error, Refusal):
        return error.message
    if isinstance(error, app_commands.NoPrivateMessage):
        return "Use this command in a server channel."
    if isinstance(error, app_commands.TransformerError):
        return f"That is not a valid value for this option: {error.value!r}."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    return None


async def reply(interaction: discord.Interaction[Any], content: str, *, ephemeral: bool = True,
                view: discord.ui.View | None = None) -> None:
    """Answer: the first response, or the deferred one, or a follow-up after those."""
    extra: dict[str, Any] = {} if view is None else {"view": view}
    response = interaction.response
    if not response.is_done():
        await response.send_message(content, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS,
                                    **extra)
    elif response.type is discord.InteractionResponseType.deferred_channel_message:
        await interaction.edit_original_response(content=content, allowed_mentions=NO_MENTIONS,
                                                 **extra)
    else:
        await interaction.followup.send(content, ephemeral=ephemeral,
                                        allowed_mentions=NO_MENTIONS, **extra)


async def answer_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Tell the member what went wrong; log what nobody expected."""
    message = describe(error)
    if message is None:
        reference = uuid.uuid4().hex[:8]
        command = interaction.command.qualified_name if interaction.command else "interaction"
        log.error("unexpected error in %s (reference %s)", command, reference, exc_info=error)
        message = f"Sorry, something went wrong on my side (reference `{reference}`)."
    try:
        await reply(interaction, message)
    except discord.HTTPException as exc:
        log.warning("could not tell the member about a failure: %s", exc)
