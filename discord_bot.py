"""The Discord bot: a *client* of the gateway.

Members become the client's users, named by their Discord ids; each thread the bot opens maps to
a stored conversation through the client's external reference, so a restart loses nothing. The
cogs in ``cogs/`` are thin: they parse an interaction, call the ``Gateway`` facade and format
the answer. ``create_bot`` is the one factory, used by ``bot.py`` and by the tests.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from cogs.utils.access import AccessPolicy
from cogs.utils.format import title_choices
from cogs.utils.paging import is_stale_pager
from cogs.utils.replies import NO_MENTIONS, Refusal, answer_error, role_ids
from cogs.utils.throttle import EDIT_INTERVAL_S
from core.config import Settings
from core.errors import GatewayError, NotFound
from core.gateway import Gateway
from core.locks import KeyedLocks
from core.models import Conversation, Principal

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.chat", "cogs.conversations", "cogs.keys", "cogs.usage", "cogs.admin",
              "cogs.budget_alerts")
HANDLER_TASKS = ("CommandTree-invoker", "discord.py: ", "discord-ui-view-dispatch",
                 "discord-ui-modal-dispatch", "gwbot: ")
"""Names of the tasks in which discord.py 2.7 and this bot handle events."""
SHUTDOWN_GRACE_S = 30.0
"""On close, how long the answers being written may take to finish."""
API_VERSION_PATH = re.compile(r"/api/v\d+$")
RETRY_FIRST_S = 2.0
RETRY_MAX_S = 300.0
"""Back-off between attempts to reach Discord: doubled after each failure, up to the maximum."""
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, aiohttp.ClientError, discord.GatewayNotFound,
    discord.ConnectionClosed, discord.HTTPException,
)
"""Failures a later attempt may not meet: Discord unreachable, slow or failing for a while."""
INVITE_SCOPES = ("bot", "applications.commands")
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,              # see the channels where /chat is used
    send_messages=True,
    create_public_threads=True,     # /chat opens a thread on its answer
    create_private_threads=True,    # /chat private:True
    send_messages_in_threads=True,  # the answer and its follow-ups are written in the thread
    read_message_history=True,      # a thread's earlier messages (the one it was opened on)
    embed_links=True,               # links in answers show their preview
    manage_threads=True,            # /forget archives and locks the conversation's thread
)
"""What the cogs do, and nothing more: no files are attached, no reactions, no voice."""


def rest_base(api_base: str) -> str:
    """The REST base discord.py wants (``…/api/v10``), from a base given with or without it."""
    base = api_base.rstrip("/")
    if API_VERSION_PATH.search(base):
        return base
    if base.endswith("/api"):
        return base + "/v10"
    return base + "/api/v10"


def point_discord_at(api_base: str, gateway_url: str) -> None:
    """Send discord.py's REST calls (interaction webhooks included) and its gateway connection
    to another server, such as a local fake. Both are process-wide class attributes."""
    if api_base:
        discord.http.Route.BASE = rest_base(api_base)
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def handler_tasks() -> set[asyncio.Task[Any]]:
    """The tasks handling an event right now (the caller's own left out)."""
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not current and not task.done()
            and task.get_name().startswith(HANDLER_TASKS)}


class GatewayTree(app_commands.CommandTree["GatewayBot"]):
    async def on_error(self, interaction: discord.Interaction[GatewayBot],
                       error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)


class GatewayBot(commands.Bot):
    def __init__(self, gateway: Gateway, settings: Settings, *,
                 edit_interval: float = EDIT_INTERVAL_S, **options: Any) -> None:
        # The bot never joins a voice channel: discord.py's warnings at each start that voice
        # is unsupported (no PyNaCl, no davey) say nothing true of it. This clears only those
        # two flags, which discord.py reads once; every other warning still reaches the log.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        intents.message_content = True  # a member's messages in their thread are follow-ups
        options.setdefault("intents", intents)
        options.setdefault("allowed_mentions", NO_MENTIONS)
        super().__init__(command_prefix=commands.when_mentioned, help_command=None,
                         tree_cls=GatewayTree, **options)
        self.gateway = gateway
        self.config = settings.discord
        self.policy = AccessPolicy.from_settings(settings.discord)
        self.edit_interval = edit_interval
        self.thread_locks = KeyedLocks()
        """One lock per thread: its follow-ups run one at a time, in order."""
        self.live_pagers: set[str] = set()
        """Tokens of the page buttons still served (``cogs.utils.paging``)."""
        self._client_principal: Principal | None = None

    @property
    def client_principal(self) -> Principal:
        """The bot's own principal in the gateway (a client), known once setup_hook ran."""
        if self._client_principal is None:
            raise RuntimeError("the bot is not set up yet")
        return self._client_principal

    async def setup_hook(self) -> None:
        self._client_principal = await self.gateway.ensure_client(self.config.client_name)
        for extension in EXTENSIONS:
            try:
                await self.load_extension(extension)
            except commands.ExtensionError:
                log.exception("could not load the %s cog", extension)
        await self.sync_commands()

    async def sync_commands(self) -> None:
        """Commands are synced here, at start, never in on_ready (which runs on reconnects)."""
        if not self.config.guild_ids:
            synced = await self.tree.sync()
            log.info("synced %d commands globally", len(synced))
            return
        for guild_id in self.config.guild_ids:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild_id)

    async def close(self) -> None:
        """Let the answers being written finish (for a while) before the session closes under
        them; cut off after that, they store nothing."""
        busy = handler_tasks()
        if busy:
            log.info("waiting for %d handler(s) to finish", len(busy))
            _, late = await asyncio.wait(busy, timeout=SHUTDOWN_GRACE_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        await super().close()

    async def on_ready(self) -> None:
        log.info("discord bot ready as %s in %d servers", self.user, len(self.guilds))

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: a message only matters as a follow-up (the chat cog's)."""

    async def on_interaction(self, interaction: discord.Interaction[GatewayBot]) -> None:
        """Page buttons nobody serves any more (expired, or older than this start) would fail
        in silence: say so instead."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        if is_stale_pager(custom_id, self.live_pagers):
            await interaction.response.send_message(
                "These pages have expired: run the command again.", ephemeral=True)

    # ----------------------------------------------------------------- members

    async def member_principal(self, member: discord.abc.User) -> Principal:
        """The member as the gateway's user, created on first use, their plus synced from
        their roles (when roles decide plus) at every request."""
        plus = self.policy.plus_for(role_ids(member))
        user = await self.gateway.acting_as(self.client_principal, str(member.id),
                                            username=member.name, plus=bool(plus))
        if plus is not None and user.plus != plus:
            user = await self.gateway.update_user(self.client_principal, str(member.id),
                                                  plus=plus)
            log.info("member %s %s plus with their roles", member.id,
                     "gained" if plus else "lost")
        return user

    async def known_member(self, member_id: int) -> Principal | None:
        """The member's user if they have used the bot before (never creates one)."""
        try:
            return await self.gateway.acting_as(self.client_principal, str(member_id))
        except NotFound:
            return None

    async def thread_conversation(self, thread_id: int) -> Conversation | None:
        return await self.gateway.conversation_by_ref(self.client_principal, str(thread_id))

    async def conversation_choices(self, member_id: int,
                                   typed: str) -> list[app_commands.Choice[str]]:
        """Autocomplete: the member's conversations whose title holds what was typed."""
        try:
            user = await self.known_member(member_id)
            if user is None:
                return []
            items, _ = await self.gateway.list_conversations(user, limit=200)
        except GatewayError:
            return []
        return [app_commands.Choice(name=name, value=value)
                for name, value in title_choices(items, typed)]

    async def find_conversation(self, user: Principal, ref: str) -> Conversation:
        """A conversation of ``user`` by id, or by its exact title when the member typed one
        instead of picking a suggestion."""
        try:
            return await self.gateway.conversation_for(user, ref)
        except NotFound:
            items, _ = await self.gateway.list_conversations(user, limit=200)
            matches = [c for c in items if c.title.casefold() == ref.strip().casefold()]
            if len(matches) == 1:
                return matches[0]
            raise


class MemberCog(commands.Cog):
    """A cog of member commands: a member without an allowed role is refused politely, before
    anything else happens."""

    def __init__(self, bot: GatewayBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        refusal = self.bot.policy.refusal(interaction.user.id, role_ids(interaction.user))
        if refusal:
            raise Refusal(refusal)
        return True


def create_bot(gateway: Gateway, settings: Settings, **discord_options: Any) -> GatewayBot:
    """The bot over an open gateway; ``discord_options`` go to discord.py's ``Client`` (tests
    pass ``guild_ready_timeout``) or to the bot (``edit_interval``)."""
    return GatewayBot(gateway, settings, **discord_options)


def invite_url(application_id: int) -> str:
    """The OAuth2 URL that adds the bot to a server with the scopes and permissions it needs."""
    return discord.utils.oauth_url(application_id, permissions=BOT_PERMISSIONS,
                                   scopes=INVITE_SCOPES)


async def run_discord(gateway: Gateway, settings: Settings, token: str, *,
                      first_delay_s: float = RETRY_FIRST_S, max_delay_s: float = RETRY_MAX_S,
                      **discord_options: Any) -> None:
    """Run the bot until cancelled, starting it again, with a growing delay, whenever Discord
    cannot be reached (at start, or when discord.py's own reconnection gives up). One log line
    per failed attempt names the next delay. A token Discord refuses, or a privileged intent the
    application lacks, is a configuration error that no retry fixes: logged, and the bot stays
    off (this returns) while the rest of the process runs on.

    Once cancelled, no bot is left connected: the running one is closed (letting the answers
    being written finish, see ``GatewayBot.close``) before the cancellation goes on."""
    point_discord_at(settings.discord.api_base, settings.discord.gateway_url)
    delay, attempt = first_delay_s, 0
    while True:
        attempt += 1
        bot = create_bot(gateway, settings, **discord_options)
        try:
            await bot.start(token)
        except discord.LoginFailure as exc:
            log.error("Discord refused the bot's token (%s): the bot stays off until a valid "
                      "token is in $%s (Developer Portal > Bot > Reset Token) and the gateway "
                      "restarts", exc, settings.discord.token_env)
            return
        except discord.PrivilegedIntentsRequired:
            log.error("Discord refused the bot: turn on the Message Content intent (Developer "
                      "Portal > Bot > Privileged Gateway Intents); the bot stays off until the "
                      "gateway restarts")
            return
        except TRANSIENT_ERRORS as exc:
            failure = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug must not end the bot for good either: logged, retried
            log.exception("the Discord bot failed")
            failure = f"{type(exc).__name__}: {exc}"
        else:
            failure = "the connection ended"
        finally:
            was_ready = bot.is_ready()
            await bot.close()
        if was_ready:  # it had been connected: a new outage, so back-off starts over
            delay = first_delay_s
        log.warning("cannot reach Discord (attempt %d: %s): next attempt in %g s",
                    attempt, failure[:300], delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)
