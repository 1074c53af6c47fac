"""/chat, and follow-ups by plain message: every conversation is a thread.

``/chat`` in a text channel opens a thread (a private one if asked) as soon as an account takes
the request, streams the reply into it and names it after the generated title. Inside one of the
bot's threads, ``/chat`` and the owner's plain messages are follow-ups, one at a time per thread.
Replies are written into the thread, not through interaction follow-ups (which expire after 15
minutes), except private answers to ``/chat private:True`` in a thread, which stay ephemeral to
the last message. Every reply in a thread carries its buttons (``cogs.utils.controls``): Stop
while it is written, then Regenerate and Continue, handled here for the conversation's owner.
Files attached to ``/chat`` or to a follow-up are downloaded at once (Discord's links expire):
text files are read into the prompt, images go with it to an account that sees images
(``core.attachments``, ``core.images``). The writing itself (threads, sinks) is in
``cogs.utils.threads``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils.controls import (
    BUTTONS,
    STOPPED_MARK,
    ReplyControls,
    finished_view,
)
from cogs.utils.format import escape
from cogs.utils.replies import NO_MENTIONS, Refusal, describe, role_ids
from cogs.utils.stream import ReplyStream
from cogs.utils.text import shorten
from cogs.utils.threads import (
    Asked,
    ChannelSink,
    EphemeralSink,
    StreamListener,
    ThreadOpener,
    failure,
    prompt_echo,
)
from core.attachments import Attached, Limits
from core.chat import ChatRequest, ChatResult, StartInfo
from core.errors import GatewayError
from core.models import Conversation, PlusChoice, Principal
from core.stopping import StopSignal
from discord_bot import GatewayBot, MemberCog

log = logging.getLogger(__name__)

TIERS: dict[str, PlusChoice] = {"free": "false", "plus": "true", "any": "any"}
LATEST_REMEMBERED = 1000
NOT_YOURS = "Only the member who started this conversation can use its buttons."


@dataclass(frozen=True, slots=True)
class Writing:
    """A reply being written: how to stop it, and who may."""

    stop: StopSignal
    member_id: int


Thread = discord.Thread | discord.PartialMessageable
"""A bot thread, as discord.py gives it (cached or not)."""
Ask = Callable[[StreamListener, StopSignal], Awaitable[ChatResult]]
"""One turn asked of the gateway, streamed to the listener, stoppable by the signal."""


def final_text(result: ChatResult) -> str:
    """The reply as the thread shows it at the end: marked when its member stopped it."""
    if not result.turn.stopped:
        return result.turn.reply
    return f"{result.turn.reply}\n\n{STOPPED_MARK}" if result.turn.reply.strip() \
        else STOPPED_MARK


class Chat(MemberCog):
    def __init__(self, bot: GatewayBot) -> None:
        super().__init__(bot)
        self.opening: set[asyncio.Task[discord.Thread]] = set()
        """Threads being opened: until one is, it does not hold its lock yet."""
        self.writing: dict[str, Writing] = {}
        """Replies being written now, by turn id: what their Stop button stops."""
        self.latest: dict[int, discord.Message] = {}
        """The latest answer of each thread (the last ones only), whose buttons go when the
        thread's next answer starts."""

    @app_commands.command(name="chat")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What you want to ask",
        tier="Which accounts answer a new conversation: free (default), plus (needs plus) "
             "or any",
        private="Open a private thread; in a thread, answer only to you",
        model="The model of a new conversation, which stays on it (start typing to see "
              "those you may use)",
        attachment="An image, or a text file (text, Markdown, code, JSON, CSV, a log), the "
                   "model reads",
        attachment2="Another image or text file",
        attachment3="Another image or text file",
    )
    async def chat(self, interaction: discord.Interaction[GatewayBot], prompt: str,
                   tier: Literal["free", "plus", "any"] = "free", private: bool = False,
                   model: app_commands.Range[str, 1, 100] | None = None,
                   attachment: discord.Attachment | None = None,
                   attachment2: discord.Attachment | None = None,
                   attachment3: discord.Attachment | None = None) -> None:
        """Ask the model. In a channel it opens a thread; in one of my threads it follows up."""
        await interaction.response.defer(ephemeral=private, thinking=True)
        user = await self.bot.member_principal(interaction.user)
        files = [a for a in (attachment, attachment2, attachment3) if a is not None]
        channel: object = interaction.channel
        if channel is None and interaction.channel_id is not None:  # not cached, not sent
            channel = await self.bot.fetch_channel(interaction.channel_id)
        if isinstance(channel, discord.TextChannel):
            plus = TIERS[tier]
            if model is not None and tier == "free":
                # The model decides the account: look in every tier the member may use.
                plus = "any" if user.plus else "false"
            model = model.strip() if model else None
            asked = await self._asked(prompt, files, await self.bot.gateway.images_refusal(
                user, plus=plus, model=model) if files else None)
            await self._start(interaction, channel, user, asked, plus, private, model)
        elif isinstance(channel, discord.Thread | discord.PartialMessageable):
            await self._follow_up_command(interaction, channel, user, prompt, files, private,
                                          model)
        else:
            raise Refusal("I open conversations in text channels: use /chat in one, or in one "
                          "of my threads to follow up.")

    @chat.autocomplete("model")
    async def model_choices(self, interaction: discord.Interaction[GatewayBot],
                            typed: str) -> list[app_commands.Choice[str]]:
        """The models the member may use, with their tier and what each can do."""
        user = await self.bot.member_principal(interaction.user)  # plus as their roles say
        typed = typed.strip().casefold()
        return [app_commands.Choice(name=shorten(item.label(), 100), value=item.model)
                for item in self.bot.gateway.model_menu(user)
                if typed in item.model.casefold()][:25]

    # ----------------------------------------------------------------- new conversations

    async def _start(self, interaction: discord.Interaction[GatewayBot],
                     channel: discord.TextChannel, user: Principal, asked: Asked,
                     plus: PlusChoice, private: bool, model: str | None) -> None:
        opener = ThreadOpener(self.bot, interaction, channel, asked.words, private,
                              self.opening, asked.notes)
        controls = ReplyControls()
        stream: ReplyStream[discord.Message] = ReplyStream(
            ChannelSink(opener.thread, controls=controls), interval=self.bot.edit_interval)
        stop = StopSignal()
        request = ChatRequest(prompt=asked.prompt, plus=plus, user_plus=plus == "true",
                              endpoint="discord", stop=stop, channel_ref=str(channel.id),
                              model=model, images=asked.images)
        listener = StreamListener(stream, opener, controls=controls,
                                  on_start=self._writing(interaction.user.id, stop))
        try:
            try:
                result = await self.bot.gateway.chat(user, request, listener)
            except GatewayError as err:
                controls.closing(None)
                await stream.close(refresh=controls.refresh)
                await opener.failed(err)
                return
            finally:
                self.writing.pop(listener.turn_id or "", None)
            await opener.finish(result)
            controls.closing((result.conversation.id, result.turn.id))
            await stream.close(final_text(result), refresh=controls.refresh)
            self._has_buttons((await opener.thread()).id, controls)
        except BaseException:
            stream.abort()
            opener.abort()
            raise
        finally:
            opener.release()

    def _writing(self, member_id: int, stop: StopSignal) -> Callable[[StartInfo], None]:
        """Registers a reply, once its turn has an id, as one its member may stop."""
        def started(info: StartInfo) -> None:
            self.writing[info.message_id] = Writing(stop, member_id)
        return started

    # ----------------------------------------------------------------- follow-ups

    async def _follow_up_command(self, interaction: discord.Interaction[GatewayBot],
                                 thread: discord.Thread | discord.PartialMessageable,
                                 user: Principal, words: str, files: list[discord.Attachment],
                                 private: bool, model: str | None) -> None:
        async with self.bot.thread_locks[thread.id]:
            conversation = await self.bot.thread_conversation(thread.id)
            if conversation is None:
                raise Refusal("This thread is not one of my conversations (or it was "
                              "forgotten): use /chat in a text channel to start one.")
            if conversation.owner_id != user.id:
                raise Refusal("This conversation belongs to another member: use /chat in a "
                              "text channel to start your own.")
            if model is not None and model.strip() != conversation.model:
                raise Refusal(f"This conversation stays on {conversation.model}: use /chat "
                              "in a text channel to start one on another model.")
            asked = await self._asked(words, files, await self.bot.gateway.images_refusal(
                user, conversation) if files else None)
            request = await self._follow_up_request(user, conversation, asked,
                                                    await self._parent_ref(thread))
            controls = None
            if private:
                sink: ChannelSink | EphemeralSink = EphemeralSink(interaction)
            else:
                await interaction.edit_original_response(
                    content=prompt_echo(interaction.user.display_name, asked.words,
                                        notes=asked.notes),
                    allowed_mentions=NO_MENTIONS)
                controls = ReplyControls()
                sink = ChannelSink(thread, controls=controls)
            try:
                await self._answer(interaction.user.id, self._asking(user, request), sink,
                                   controls, thread.id)
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
        if not message.content.strip() and not message.attachments:
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
                attachments = message.attachments
                refused = await self.bot.gateway.images_refusal(user, conversation) \
                    if attachments else None
                asked = await self._asked(message.content, attachments, refused)
                if asked.refused:
                    await message.reply("\n".join(asked.refused), mention_author=False,
                                        allowed_mentions=NO_MENTIONS)
                if not asked.prompt and not asked.images:
                    return  # nothing left to ask
                request = await self._follow_up_request(
                    user, conversation, asked, await self._parent_ref(message.channel))
                controls = ReplyControls()
                await self._answer(author.id, self._asking(user, request),
                                   ChannelSink(message.channel, message, controls), controls,
                                   message.channel.id)
            except (GatewayError, Refusal) as err:
                text = "\n".join(failure(err)) if isinstance(err, GatewayError) else \
                    describe(err) or str(err)
                await message.reply(text, mention_author=False, allowed_mentions=NO_MENTIONS)

    async def _follow_up_request(self, user: Principal, conversation: Conversation,
                                 asked: Asked, channel_ref: str | None) -> ChatRequest:
        access_token = None
        if conversation.mode == "own_key":
            # The core pins such a conversation to the member's credential: send it again.
            access_token = await self.bot.gateway.own_key(user)
            if access_token is None:
                raise Refusal("This conversation runs on your own key, which you have "
                              "cleared: set it again with /ownkey set, or start a new "
                              "conversation.")
        return ChatRequest(prompt=asked.prompt, conversation_id=conversation.id,
                           access_token=access_token, endpoint="discord",
                           channel_ref=channel_ref, images=asked.images)

    async def _asked(self, words: str, attachments: list[discord.Attachment],
                     images_refused: str | None) -> Asked:
        """The member's words with their files: text files read in, images downloaded, the
        others refused, each with a note saying why (the rest goes on). ``images_refused``:
        why images would not be seen in this conversation."""
        chat = self.bot.gateway.settings.chat
        attached = Attached(Limits(chat.max_text_file_bytes, chat.max_attachment_bytes,
                                   images_refused))
        for attachment in attachments:
            name = attachment.filename
            if not attached.wanted(name, attachment.content_type, attachment.size):
                continue
            try:
                # Now: Discord's attachment links expire.
                attached.add(name, attachment.content_type, await attachment.read())
            except discord.HTTPException as exc:
                log.warning("could not download attachment %s: %s", attachment.id, exc)
                attached.refuse(name, "it could not be downloaded from Discord")
        refused = tuple(f"⚠️ {escape(str(r))}" for r in attached.refused)
        notes = tuple(f"📎 {escape(name)}" for name in attached.read) + refused
        return Asked(words.strip(), attached.prompt(words), notes, refused,
                     tuple(attached.images))

    def _asking(self, user: Principal, request: ChatRequest) -> Ask:
        async def ask(listener: StreamListener, stop: StopSignal) -> ChatResult:
            return await self.bot.gateway.chat(user, dataclasses.replace(request, stop=stop),
                                               listener)
        return ask

    async def _parent_ref(self, thread: discord.abc.Messageable) -> str | None:
        """The channel a thread was opened in: its persona applies to the thread's turns."""
        parent = getattr(thread, "parent_id", None)
        if parent is None and isinstance(thread, discord.PartialMessageable):
            try:  # not cached: Discord says
                parent = getattr(await self.bot.fetch_channel(thread.id), "parent_id", None)
            except discord.HTTPException as exc:
                log.warning("could not read thread %s: %s", thread.id, exc)
        return str(parent) if parent else None

    async def _answer(self, member_id: int, ask: Ask, sink: ChannelSink | EphemeralSink,
                      controls: ReplyControls | None, thread_id: int) -> ChatResult:
        """Stream one turn into ``sink``, with the reply's buttons when ``controls`` are
        given; on a GatewayError, what arrived stays written."""
        if controls is not None:
            await self._retire_buttons(thread_id)
        stream: ReplyStream[Any] = ReplyStream(sink, interval=self.bot.edit_interval)
        stop = StopSignal()
        listener = StreamListener(stream, controls=controls,
                                  on_start=self._writing(member_id, stop))
        try:
            result = await ask(listener, stop)
        except GatewayError:
            if controls is not None:
                controls.closing(None)
            await stream.close(refresh=controls.refresh if controls is not None else None)
            raise
        except BaseException:
            stream.abort()
            raise
        finally:
            self.writing.pop(listener.turn_id or "", None)
        if controls is not None:
            controls.closing((result.conversation.id, result.turn.id))
        await stream.close(final_text(result),
                           refresh=controls.refresh if controls is not None else None)
        if controls is not None:
            self._has_buttons(thread_id, controls)
        return result

    def _has_buttons(self, thread_id: int, controls: ReplyControls) -> None:
        """Remember the thread's latest answer: its buttons go when the next one starts."""
        if controls.last is None:
            return
        self.latest.pop(thread_id, None)
        self.latest[thread_id] = controls.last
        if len(self.latest) > LATEST_REMEMBERED:
            del self.latest[next(iter(self.latest))]

    async def _retire_buttons(self, thread_id: int) -> None:
        """The thread's previous answer is no longer its latest: its buttons no longer apply
        (after a restart it keeps them; a press then says why)."""
        previous = self.latest.pop(thread_id, None)
        if previous is None:
            return
        try:
            await previous.edit(view=None)
        except discord.HTTPException as exc:  # a stale button explains itself when pressed
            log.warning("could not take the buttons off message %s: %s", previous.id, exc)

    # ----------------------------------------------------------------- the reply's buttons

    async def stop_reply(self, interaction: discord.Interaction[GatewayBot],
                         turn_id: str) -> None:
        writing = self.writing.get(turn_id)
        if writing is None:
            raise Refusal("This answer is no longer being written.")
        if writing.member_id != interaction.user.id:
            raise Refusal(NOT_YOURS)
        writing.stop.stop()
        await interaction.response.defer()  # the reply's own edits show the stop

    async def regenerate_reply(self, interaction: discord.Interaction[GatewayBot],
                               conversation_id: str, turn_id: str) -> None:
        user, thread = await self._owner_pressed(interaction, conversation_id)

        async def ask(listener: StreamListener, stop: StopSignal) -> ChatResult:
            return await self.bot.gateway.regenerate(
                user, conversation_id, turn_id, listener=listener, stop=stop,
                channel_ref=await self._parent_ref(thread), endpoint="discord")
        await self._again(interaction, thread, ask, finished_view(conversation_id, turn_id))

    async def continue_reply(self, interaction: discord.Interaction[GatewayBot],
                             conversation_id: str) -> None:
        user, thread = await self._owner_pressed(interaction, conversation_id)

        async def ask(listener: StreamListener, stop: StopSignal) -> ChatResult:
            return await self.bot.gateway.continue_reply(
                user, conversation_id, listener=listener, stop=stop,
                channel_ref=await self._parent_ref(thread), endpoint="discord")
        await self._again(interaction, thread, ask, None)

    async def _owner_pressed(self, interaction: discord.Interaction[GatewayBot],
                             conversation_id: str) -> tuple[Principal, Thread]:
        """The member who pressed a button, if they own the conversation it belongs to."""
        refusal = self.bot.policy.refusal(interaction.user.id, role_ids(interaction.user))
        if refusal:
            raise Refusal(refusal)
        thread = interaction.channel
        if not isinstance(thread, discord.Thread | discord.PartialMessageable):
            raise Refusal("These buttons work in my conversation threads only.")
        conversation = await self.bot.thread_conversation(thread.id)
        if conversation is None or conversation.id != conversation_id:
            raise Refusal("This conversation is gone (it was forgotten).")
        owner = await self.bot.known_member(interaction.user.id)
        if owner is None or owner.id != conversation.owner_id:
            raise Refusal(NOT_YOURS)
        return await self.bot.member_principal(interaction.user), thread

    async def _again(self, interaction: discord.Interaction[GatewayBot],
                     thread: Thread, ask: Ask,
                     restore: discord.ui.View | None) -> None:
        """A new answer below the pressed one, whose buttons go (and come back if the new
        answer fails, when they still apply)."""
        await interaction.response.edit_message(view=None)
        pressed = interaction.message
        if pressed is not None and (latest := self.latest.get(thread.id)) is not None \
                and latest.id == pressed.id:
            del self.latest[thread.id]  # its buttons just went
        async with self.bot.thread_locks[thread.id]:
            controls = ReplyControls()
            try:
                await self._answer(interaction.user.id, ask,
                                   ChannelSink(thread, pressed, controls), controls, thread.id)
            except GatewayError as err:
                if restore is not None and err.code != "not_last_turn" and pressed is not None:
                    await pressed.edit(view=restore)
                await thread.send(f"⚠️ {err.message}\nThe earlier answer stays as it was.",
                                  allowed_mentions=NO_MENTIONS)


async def setup(bot: GatewayBot) -> None:
    bot.add_dynamic_items(*BUTTONS)
    await bot.add_cog(Chat(bot))
