"""/chat, and follow-ups by plain message: every conversation is a thread.

``/chat`` in a text channel opens a thread (a private one if asked) as soon as an account takes
the request, streams the reply into it and names it after the generated title. Inside one of the
bot's threads, ``/chat`` and the owner's plain messages are follow-ups, one at a time per thread.
Replies are written into the thread, not through interaction follow-ups (which expire after 15
minutes), except private answers to ``/chat private:True`` in a thread, which stay ephemeral to
the last message.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils.format import escape
from cogs.utils.replies import NO_MENTIONS, Refusal, describe, role_ids
from cogs.utils.stream import ReplyStream
from cogs.utils.text import MESSAGE_LIMIT, clip, open_fence, shorten
from core.budgets import QuotaExceeded
from core.chat import ChatRequest, ChatResult, StartInfo
from core.errors import GatewayError
from core.models import Conversation, PlusChoice, Principal
from core.titles import fallback_title
from discord_bot import GatewayBot, MemberCog

log = logging.getLogger(__name__)

THREAD_NAME_LIMIT = 100
TIERS: dict[str, PlusChoice] = {"free": "false", "plus": "true", "any": "any"}
NOT_SAVED = "Nothing was saved; send it again when you like."
SPENT = "Nothing was sent to the model. `/usage` shows your budgets and when each resets."


CLIENT_BUDGET = re.compile(r"^the client '.*?' \(all its users together\) ")
"""How the core names a client's budget in a refusal; members know it as the server's."""


def failure(err: GatewayError) -> tuple[str, str]:
    """What a member reads when a turn failed: the reason, and what it means for them. A spent
    budget refuses the same request again until it resets, so it is not "send it again"."""
    if isinstance(err, QuotaExceeded):
        message = CLIENT_BUDGET.sub("the server's shared (all members together) ", err.message)
        return f"⚠️ {message[:1].upper()}{message[1:]}.", SPENT
    return f"⚠️ {err.message}", NOT_SAVED


def prompt_echo(author: str, prompt: str, limit: int = MESSAGE_LIMIT) -> str:
    """The message that shows the question above its answer."""
    head = f"**{escape(author)}** asked:\n"
    body = clip(prompt, limit - len(head) - 4)
    return head + body + ("\n```" if open_fence(body) else "")


class ChannelSink:
    """Writes a reply as messages in a channel (a thread); the first one may reply to the
    member's message. ``channel`` may be a coroutine function that gives the thread once it
    is open."""

    def __init__(
        self,
        channel: discord.abc.Messageable | Callable[[], Awaitable[discord.abc.Messageable]],
        reply_to: discord.Message | None = None,
    ) -> None:
        self._channel = channel
        self._reply_to = reply_to

    async def post(self, content: str) -> discord.Message:
        channel = self._channel
        if not isinstance(channel, discord.abc.Messageable):
            channel = await channel()
        extra: dict[str, Any] = {}
        if self._reply_to is not None:
            extra["reference"] = self._reply_to.to_reference(fail_if_not_exists=False)
            self._reply_to = None
        return await channel.send(content, allowed_mentions=NO_MENTIONS, **extra)

    async def edit(self, handle: discord.Message, content: str) -> None:
        await handle.edit(content=content, allowed_mentions=NO_MENTIONS)


class EphemeralSink:
    """Writes a reply only its member sees: the deferred response, then ephemeral follow-ups."""

    def __init__(self, interaction: discord.Interaction[GatewayBot]) -> None:
        self._interaction = interaction
        self._original_used = False

    async def post(self, content: str) -> discord.InteractionMessage | discord.WebhookMessage:
        if not self._original_used:
            self._original_used = True
            return await self._interaction.edit_original_response(
                content=content, allowed_mentions=NO_MENTIONS)
        return await self._interaction.followup.send(content, ephemeral=True, wait=True,
                                                     allowed_mentions=NO_MENTIONS)

    async def edit(self, handle: discord.InteractionMessage | discord.WebhookMessage,
                   content: str) -> None:
        await handle.edit(content=content, allowed_mentions=NO_MENTIONS)


class StreamListener:
    """The core's ``ChatListener``: text goes to the stream, the title to the opener."""

    def __init__(self, stream: ReplyStream[Any], opener: ThreadOpener | None = None) -> None:
        self.stream = stream
        self.opener = opener

    async def started(self, info: StartInfo) -> None:
        pass

    async def delta(self, text: str) -> None:
        self.stream.feed(text)

    async def title(self, title: str) -> None:
        if self.opener is not None:
            self.opener.title_known(title)


class ThreadOpener:
    """Opens the thread of a new conversation when the first text of the reply is written (so
    a request that is refused or fails before answering opens nothing), and names it after the
    title. It holds the thread's lock until the conversation is stored and mapped, so a
    follow-up sent meanwhile waits for it."""

    def __init__(self, bot: GatewayBot, interaction: discord.Interaction[GatewayBot],
                 channel: discord.TextChannel, prompt: str, private: bool,
                 opening: set[asyncio.Task[discord.Thread]]) -> None:
        self.bot = bot
        self.opening = opening
        self.interaction = interaction
        self.channel = channel
        self.prompt = prompt
        self.private = private
        self.task: asyncio.Task[discord.Thread] | None = None
        self._title: str | None = None
        self._named: str | None = None
        self._rename: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None

    def open(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._open(), name="gwbot: open thread")
            self.opening.add(self.task)
            self.task.add_done_callback(self.opening.discard)

    async def thread(self) -> discord.Thread:
        self.open()
        assert self.task is not None
        return await self.task

    def title_known(self, title: str) -> None:
        self._title = title
        if self.task is not None and self._rename is None:
            self._rename = asyncio.create_task(self._retitle(), name="gwbot: name thread")

    async def _open(self) -> discord.Thread:
        name = shorten(self._title or fallback_title(self.prompt), THREAD_NAME_LIMIT)
        member = self.interaction.user
        echo = prompt_echo(member.display_name, self.prompt)
        if self.private:
            thread = await self.channel.create_thread(
                name=name, type=discord.ChannelType.private_thread, invitable=False)
            await self._hold(thread)
            try:
                await thread.add_user(member)
            except discord.HTTPException as exc:  # they can still be shown it by a moderator
                log.warning("could not add member %s to private thread %s: %s", member.id,
                            thread.id, exc)
            await thread.send(echo, allowed_mentions=NO_MENTIONS)
            await self.interaction.edit_original_response(
                content=f"Your private conversation is in {thread.mention}.")
        else:
            message = await self.interaction.edit_original_response(
                content=echo, allowed_mentions=NO_MENTIONS)
            thread = await self.channel.create_thread(name=name, message=message)
            await self._hold(thread)
        self._named = name
        return thread

    async def _hold(self, thread: discord.Thread) -> None:
        self._lock = self.bot.thread_locks[thread.id]
        await self._lock.acquire()

    async def _retitle(self) -> None:
        assert self.task is not None
        thread = await self.task
        if self._title is None:
            return
        name = shorten(self._title, THREAD_NAME_LIMIT)
        if name == self._named:
            return
        try:
            await thread.edit(name=name)
        except discord.HTTPException as exc:  # a name is not worth failing the answer for
            log.warning("could not rename thread %s: %s", thread.id, exc)
        else:
            self._named = name

    async def finish(self, result: ChatResult) -> None:
        """The conversation is stored: map the thread to it and give it its final title."""
        thread = await self.thread()
        await self.bot.gateway.set_conversation_ref(self.bot.client_principal,
                                                    result.conversation.id, str(thread.id))
        if self._rename is not None:
            await self._rename
        self._title = result.conversation.title
        self._rename = None
        await self._retitle()

    async def failed(self, err: GatewayError) -> None:
        """Tell the member why nothing was saved: in the thread when it opened, and in the
        command's own answer."""
        message, note = failure(err)
        if self._rename is not None:
            await self._rename
        if self.task is None:
            # No thread: nothing to say was not saved, unless the reason outlasts this turn.
            content = f"{message}\n{note}" if note is SPENT else message
            await self.interaction.edit_original_response(content=content,
                                                          allowed_mentions=NO_MENTIONS)
            return
        thread = await self.task
        await thread.send(f"{message}\n{note}", allowed_mentions=NO_MENTIONS)
        if self.private:
            content = f"{message}\n{note} ({thread.mention})"
        else:
            content = prompt_echo(self.interaction.user.display_name, self.prompt,
                                  MESSAGE_LIMIT - len(message) - 1) + f"\n{message}"
        await self.interaction.edit_original_response(content=content,
                                                      allowed_mentions=NO_MENTIONS)

    def release(self) -> None:
        if self._lock is not None and self._lock.locked():
            self._lock.release()
        self._lock = None

    def abort(self) -> None:
        for task in (self.task, self._rename):
            if task is not None and not task.done():
                task.cancel()
        self.release()


class Chat(MemberCog):
    def __init__(self, bot: GatewayBot) -> None:
        super().__init__(bot)
        self.opening: set[asyncio.Task[discord.Thread]] = set()
        """Threads being opened: until one is, it does not hold its lock yet."""

    @app_commands.command(name="chat")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What you want to ask",
        tier="Which accounts answer a new conversation: free (default), plus (needs plus) "
             "or any",
        private="Open a private thread; in a thread, answer only to you",
    )
    async def chat(self, interaction: discord.Interaction[GatewayBot], prompt: str,
                   tier: Literal["free", "plus", "any"] = "free", private: bool = False) -> None:
        """Ask the model. In a channel it opens a thread; in one of my threads it follows up."""
        await interaction.response.defer(ephemeral=private, thinking=True)
        user = await self.bot.member_principal(interaction.user)
        channel: object = interaction.channel
        if channel is None and interaction.channel_id is not None:  # not cached, not sent
            channel = await self.bot.fetch_channel(interaction.channel_id)
        if isinstance(channel, discord.TextChannel):
            await self._start(interaction, channel, user, prompt, TIERS[tier], private)
        elif isinstance(channel, discord.Thread | discord.PartialMessageable):
            await self._follow_up_command(interaction, channel, user, prompt, private)
        else:
            raise Refusal("I open conversations in text channels: use /chat in one, or in one "
                          "of my threads to follow up.")

    # ----------------------------------------------------------------- new conversations

    async def _start(self, interaction: discord.Interaction[GatewayBot],
                     channel: discord.TextChannel, user: Principal, prompt: str,
                     plus: PlusChoice, private: bool) -> None:
        opener = ThreadOpener(self.bot, interaction, channel, prompt, private, self.opening)
        stream: ReplyStream[discord.Message] = ReplyStream(
            ChannelSink(opener.thread), interval=self.bot.edit_interval)
        request = ChatRequest(prompt=prompt, plus=plus, user_plus=plus == "true",
                              endpoint="discord")
        try:
            try:
                result = await self.bot.gateway.chat(user, request,
                                                     StreamListener(stream, opener))
            except GatewayError as err:
                await stream.close()
                await opener.failed(err)
                return
            await opener.finish(result)
            await stream.close(result.turn.reply)
        except BaseException:
            stream.abort()
            opener.abort()
            raise
        finally:
            opener.release()

    # ----------------------------------------------------------------- follow-ups

    async def _follow_up_command(self, interaction: discord.Interaction[GatewayBot],
                                 thread: discord.Thread | discord.PartialMessageable,
                                 user: Principal, prompt: str, private: bool) -> None:
        async with self.bot.thread_locks[thread.id]:
            conversation = await self.bot.thread_conversation(thread.id)
            if conversation is None:
                raise Refusal("This thread is not one of my conversations (or it was "
                              "forgotten): use /chat in a text channel to start one.")
            if conversation.owner_id != user.id:
                raise Refusal("This conversation belongs to another member: use /chat in a "
                              "text channel to start your own.")
            request = await self._follow_up_request(user, conversation, prompt)
            if private:
                sink: ChannelSink | EphemeralSink = EphemeralSink(interaction)
            else:
                await interaction.edit_original_response(
                    content=prompt_echo(interaction.user.display_name, prompt),
                    allowed_mentions=NO_MENTIONS)
                sink = ChannelSink(thread)
            try:
                await self._answer(user, request, sink)
            except GatewayError as err:  # said where the answer would have been
                await sink.post("\n".join(failure(err)))

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A member's plain message in their own thread is a follow-up."""
        if message.author.bot or message.webhook_id or message.guild is None:
            return
        if not isinstance(message.channel, discord.Thread | discord.PartialMessageable):
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        prompt = message.content.strip()
        if not prompt:
            return
        if self.opening:  # the thread may be one of these, about to take its lock
            await asyncio.wait(set(self.opening))
        author: discord.abc.User = message.author
        if not isinstance(author, discord.Member):  # no member data came with the message
            author = message.guild.get_member(author.id) or author
        async with self.bot.thread_locks[message.channel.id]:
            conversation = await self.bot.thread_conversation(message.channel.id)
            if conversation is None:
                return
            try:
                owner = await self.bot.known_member(author.id)
                if owner is None or owner.id != conversation.owner_id:
                    return  # others may talk in a public thread; only the owner's count
                refusal = self.bot.policy.refusal(author.id, role_ids(author))
                if refusal:
                    raise Refusal(refusal)
                user = await self.bot.member_principal(author)
                request = await self._follow_up_request(user, conversation, prompt)
                await self._answer(user, request, ChannelSink(message.channel, message))
            except (GatewayError, Refusal) as err:
                text = "\n".join(failure(err)) if isinstance(err, GatewayError) else \
                    describe(err) or str(err)
                await message.reply(text, mention_author=False, allowed_mentions=NO_MENTIONS)

    async def _follow_up_request(self, user: Principal, conversation: Conversation,
                                 prompt: str) -> ChatRequest:
        access_token = None
        if conversation.mode == "own_key":
            # The core pins such a conversation to the member's credential: send it again.
            access_token = await self.bot.gateway.own_key(user)
            if access_token is None:
                raise Refusal("This conversation runs on your own key, which you have "
                              "cleared: set it again with /ownkey set, or start a new "
                              "conversation.")
        return ChatRequest(prompt=prompt, conversation_id=conversation.id,
                           access_token=access_token, endpoint="discord")

    async def _answer(self, user: Principal, request: ChatRequest,
                      sink: ChannelSink | EphemeralSink) -> ChatResult:
        """Stream one turn into ``sink``; on a GatewayError, what arrived stays written."""
        stream: ReplyStream[Any] = ReplyStream(sink, interval=self.bot.edit_interval)
        try:
            result = await self.bot.gateway.chat(user, request, StreamListener(stream))
        except GatewayError:
            await stream.close()
            raise
        except BaseException:
            stream.abort()
            raise
        await stream.close(result.turn.reply)
        return result


async def setup(bot: GatewayBot) -> None:
    await bot.add_cog(Chat(bot))
