"""Writing a conversation into Discord: the thread a new one opens in (``ThreadOpener``), the
sinks a reply streams into (a thread, or an ephemeral answer), the listener that feeds them, and
the question shown above an answer.

Used by the chat cog; kept apart so that the cog holds only the commands and their order.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from core.budgets import QuotaExceeded
from core.chat import ChatResult, StartInfo
from core.errors import GatewayError
from core.images import ImageFile
from core.locks import KeyLock
from core.titles import fallback_title

from .controls import ReplyControls
from .format import escape
from .replies import NO_MENTIONS
from .stream import ReplyStream
from .text import MESSAGE_LIMIT, clip, open_fence, shorten

if TYPE_CHECKING:
    from discord_bot import GatewayBot

log = logging.getLogger(__name__)

THREAD_NAME_LIMIT = 100
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


def prompt_echo(author: str, prompt: str, limit: int = MESSAGE_LIMIT,
                notes: tuple[str, ...] = ()) -> str:
    """The message that shows the question above its answer (and its files under it)."""
    head = f"**{escape(author)}** asked:\n"
    tail = "".join(f"\n{clip(note, 300)}" for note in notes)
    body = clip(prompt, limit - len(head) - len(tail) - 4)
    return head + body + ("\n```" if open_fence(body) else "") + tail


@dataclass(frozen=True, slots=True)
class Asked:
    """What a member sent: their words, the prompt the model gets (their text files added),
    their images, and notes on the files (read, or refused and why)."""

    words: str
    prompt: str
    notes: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    images: tuple[ImageFile, ...] = ()
    """The images the model gets with the prompt."""


class ChannelSink:
    """Writes a reply as messages in a channel (a thread); the first one may reply to the
    member's message. ``channel`` may be a coroutine function that gives the thread once it
    is open."""

    def __init__(
        self,
        channel: discord.abc.Messageable | Callable[[], Awaitable[discord.abc.Messageable]],
        reply_to: discord.Message | None = None,
        controls: ReplyControls | None = None,
    ) -> None:
        self._channel = channel
        self._reply_to = reply_to
        self.controls = controls

    async def post(self, content: str) -> discord.Message:
        channel = self._channel
        if not isinstance(channel, discord.abc.Messageable):
            channel = await channel()
        extra: dict[str, Any] = {}
        if self._reply_to is not None:
            extra["reference"] = self._reply_to.to_reference(fail_if_not_exists=False)
            self._reply_to = None
        controls = self.controls
        view = controls.view_for(None) if controls is not None else None
        if view is not None:
            extra["view"] = view
        message = await channel.send(content, allowed_mentions=NO_MENTIONS, **extra)
        if controls is not None:
            controls.last = message
            controls.shown(message, view)
        return message

    async def edit(self, handle: discord.Message, content: str) -> None:
        if self.controls is None:
            await handle.edit(content=content, allowed_mentions=NO_MENTIONS)
            return
        view = self.controls.view_for(handle)
        await handle.edit(content=content, allowed_mentions=NO_MENTIONS, view=view)
        self.controls.shown(handle, view)


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
    """The core's ``ChatListener``: text goes to the stream, the title to the opener; the
    turn's ids, once known, to the reply's buttons and to ``on_start``."""

    def __init__(self, stream: ReplyStream[Any], opener: ThreadOpener | None = None, *,
                 controls: ReplyControls | None = None,
                 on_start: Callable[[StartInfo], None] | None = None) -> None:
        self.stream = stream
        self.opener = opener
        self.controls = controls
        self.on_start = on_start
        self.turn_id: str | None = None

    async def started(self, info: StartInfo) -> None:
        self.turn_id = info.message_id
        if self.controls is not None:
            self.controls.started(info)
        if self.on_start is not None:
            self.on_start(info)

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
                 opening: set[asyncio.Task[discord.Thread]], notes: tuple[str, ...] = ()
                 ) -> None:
        self.bot = bot
        self.opening = opening
        self.interaction = interaction
        self.channel = channel
        self.prompt = prompt
        self.notes = notes
        self.private = private
        self.task: asyncio.Task[discord.Thread] | None = None
        self._title: str | None = None
        self._named: str | None = None
        self._rename: asyncio.Task[None] | None = None
        self._lock: KeyLock | None = None

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
        echo = prompt_echo(member.display_name, self.prompt, notes=self.notes)
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
