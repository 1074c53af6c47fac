"""The buttons under a bot reply: **Stop** while it is written, then **Regenerate** and
**Continue** on its last message.

They are persistent: each button's ``custom_id`` carries what it acts on (the turn, the
conversation), and ``discord.ui.DynamicItem`` templates route a click on any message, sent
before or after a restart, to the chat cog. No view is kept per message (each is stopped
before it is sent, so discord.py does not store it): the templates alone dispatch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import discord

from .replies import answer_error

if TYPE_CHECKING:
    from core.turn import StartInfo

log = logging.getLogger(__name__)

ID = r"[0-9A-Za-z_-]{1,40}"
"""A conversation or turn id as the core makes them (UUID text), in a ``custom_id``."""

STOPPED_MARK = "*(stopped)*"


class ControlsHandler(Protocol):
    """What the buttons call (the chat cog)."""

    async def stop_reply(self, interaction: discord.Interaction[Any], turn_id: str) -> None: ...
    async def regenerate_reply(self, interaction: discord.Interaction[Any],
                               conversation_id: str, turn_id: str) -> None: ...
    async def continue_reply(self, interaction: discord.Interaction[Any],
                             conversation_id: str) -> None: ...


def _handler(interaction: discord.Interaction[Any]) -> ControlsHandler:
    cog = interaction.client.get_cog("Chat")
    if cog is None:
        raise RuntimeError("the chat cog is not loaded")
    handler: ControlsHandler = cog
    return handler


class StopButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                 template=rf"gw:stop:(?P<turn>{ID})"):
    def __init__(self, turn_id: str) -> None:
        super().__init__(discord.ui.Button(label="Stop", emoji="⏹️",
                                           style=discord.ButtonStyle.danger,
                                           custom_id=f"gw:stop:{turn_id}"))
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any],
                             item: discord.ui.Item[Any], match: Any, /) -> StopButton:
        return cls(match["turn"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await _handler(interaction).stop_reply(interaction, self.turn_id)
        except Exception as error:  # noqa: BLE001 - answered, never silent (see answer_error)
            await answer_error(interaction, error)


class RegenerateButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                       template=rf"gw:regen:(?P<conversation>{ID}):(?P<turn>{ID})"):
    def __init__(self, conversation_id: str, turn_id: str) -> None:
        super().__init__(discord.ui.Button(
            label="Regenerate", emoji="🔄", style=discord.ButtonStyle.secondary,
            custom_id=f"gw:regen:{conversation_id}:{turn_id}"))
        self.conversation_id = conversation_id
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any],
                             item: discord.ui.Item[Any], match: Any, /) -> RegenerateButton:
        return cls(match["conversation"], match["turn"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await _handler(interaction).regenerate_reply(interaction, self.conversation_id,
                                                         self.turn_id)
        except Exception as error:  # noqa: BLE001 - answered, never silent (see answer_error)
            await answer_error(interaction, error)


class ContinueButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                     template=rf"gw:more:(?P<conversation>{ID})"):
    def __init__(self, conversation_id: str) -> None:
        super().__init__(discord.ui.Button(
            label="Continue", emoji="⏩", style=discord.ButtonStyle.secondary,
            custom_id=f"gw:more:{conversation_id}"))
        self.conversation_id = conversation_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any],
                             item: discord.ui.Item[Any], match: Any, /) -> ContinueButton:
        return cls(match["conversation"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await _handler(interaction).continue_reply(interaction, self.conversation_id)
        except Exception as error:  # noqa: BLE001 - answered, never silent (see answer_error)
            await answer_error(interaction, error)


BUTTONS = (StopButton, RegenerateButton, ContinueButton)


def _view(*items: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    # Stopped before it is sent, so discord.py keeps no view per message: the templates
    # registered with ``add_dynamic_items`` dispatch every click, before and after a restart.
    view.stop()
    return view


def writing_view(turn_id: str) -> discord.ui.View:
    return _view(StopButton(turn_id))


def finished_view(conversation_id: str, turn_id: str) -> discord.ui.View:
    return _view(RegenerateButton(conversation_id, turn_id), ContinueButton(conversation_id))


class ReplyControls:
    """The buttons of a reply being written into messages (by a ``ChannelSink``): Stop on
    its last message while it is written; once ``closing``, Regenerate and Continue there
    (or nothing, after a failure), and none on the others. The changes ride on the reply
    stream's own writes (``refresh``), so buttons never add a write past its interval."""

    def __init__(self) -> None:
        self.turn_id: str | None = None
        self.conversation_id: str | None = None
        self.last: discord.Message | None = None
        self._closed = False
        self._final: discord.ui.View | None = None
        self._showing: dict[int, str] = {}
        """Message id -> which buttons it shows ("writing" or "final")."""

    def started(self, info: StartInfo) -> None:
        self.turn_id = info.message_id
        self.conversation_id = info.conversation_id

    def closing(self, final: tuple[str, str] | None) -> None:
        """The reply is complete: ``final`` (conversation id, turn id) gets Regenerate and
        Continue; None (a failure) leaves no buttons."""
        self._closed = True
        self._final = finished_view(*final) if final is not None else None

    def view_for(self, message: discord.Message | None) -> discord.ui.View | None:
        """The buttons ``message`` should show (None: a new message, which will be last)."""
        if message is not None and message is not self.last:
            return None
        if self._closed:
            return self._final
        return writing_view(self.turn_id) if self.turn_id is not None else None

    def shown(self, message: discord.Message, view: discord.ui.View | None) -> None:
        """``message`` was written with ``view``. Told by the view itself, not by whether the
        reply is closed now: a write that took the Stop button may land after the reply
        closed, and its message must still get Regenerate and Continue in the last write."""
        if view is None:
            self._showing.pop(message.id, None)
        else:
            self._showing[message.id] = "final" if view is self._final else "writing"

    def refresh(self, message: discord.Message) -> bool:
        """Whether ``message``'s buttons are not yet what they should be."""
        wanted = None
        if message is self.last:
            wanted = "final" if self._final is not None else None
        return self._showing.get(message.id) != wanted
