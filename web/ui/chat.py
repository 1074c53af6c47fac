"""The chat pages: the conversation list, one conversation, a prompt sent (streamed to chat.js as
server-sent events, or as a plain form post when JavaScript is off) and removal.

Model text is only ever turned into HTML here, on the server, by ``markdown_to_safe_html``. While
a reply streams, only its new text is sent (``delta`` events, which chat.js shows as plain text,
never as HTML); the rendered reply is sent once, in ``done``. So the bytes sent grow with the
reply (4 times its text, the JSON view's two copies included), where re-sending the whole
rendered reply with every chunk grew with its square (47 MB to the browser for a 1 MB reply).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.web_request import FileField

from core.attachments import Attached, Limits
from core.chat import ChatRequest, ChatResult, StartInfo
from core.errors import BadRequest, GatewayError
from core.exchange import Summary, summary
from core.gateway import Gateway
from core.models import Conversation, Principal, Turn
from core.stopping import StopSignal

from ..api import MAX_ID_CHARS, chat_request, enriched
from ..inputs import read_form
from ..keys import GATEWAY
from ..params import Params
from ..render import markdown_to_safe_html
from ..sse import EventStream
from .admin import member
from .pages import SECURITY_HEADERS, flash, page, render, see_other, signed_in

log = logging.getLogger(__name__)

LIST_LIMIT = 200
"""Conversations listed beside the chat (the most recent ones)."""
TIERS = {"false": "Free", "true": "Plus", "any": "Any"}


@dataclass(frozen=True, slots=True)
class TurnView:
    turn: Turn
    html: str
    json: str
    extras: Summary | None = None
    """Attachments, tool calls and tool results of a /v1 exchange."""


def tiers_for(principal: Principal, gateway: Gateway) -> list[tuple[str, str]]:
    """The tiers a new conversation may ask for: those the principal may use that have an
    account in service (*Any* only when both do; with one tier it would be that tier again).
    With none, *Free*, whose answer then says why nothing can serve."""
    serving = gateway.tiers_in_service()
    may_plus = principal.plus or principal.is_admin
    allowed = [value for value, tier in (("false", "free"), ("true", "plus"))
               if tier in serving and (tier == "free" or may_plus)]
    if len(allowed) == 2:
        allowed.append("any")
    return [(value, TIERS[value]) for value in allowed or ["false"]]


def render_reply(text: str) -> str:
    return markdown_to_safe_html(text, highlight=True, breaks=True)


def reply_json(result: ChatResult, owner: Principal) -> dict[str, Any]:
    """The enriched JSON the API gives for this turn (and whether its member stopped it)."""
    return {"status": "success", **enriched(result, owner), "stopped": result.turn.stopped}


def turn_views(conversation: Conversation, turns: list[Turn], owner: Principal) -> list[TurnView]:
    """Stored turns as the page shows them, each with the enriched JSON of its reply rebuilt
    from what was stored."""
    views, previous = [], None
    for turn in turns:
        result = ChatResult(conversation, turn, previous, turn.position == 0,
                            _parse(turn.prompt_utc), turn.duration_ms / 1000)
        views.append(TurnView(turn, render_reply(turn.reply),
                              json.dumps(reply_json(result, owner), ensure_ascii=False,
                                         indent=2), summary(turn.exchange)))
        previous = turn
    return views


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------- pages


@page()
async def index(request: web.Request) -> web.StreamResponse:
    return await chat_page(request, None)


@page()
async def conversation(request: web.Request) -> web.StreamResponse:
    return await chat_page(request, request.match_info["conversation_id"])


async def chat_page(request: web.Request, conversation_id: str | None, *,
                    error: str | None = None, prompt: str | None = None,
                    status: int = 200) -> web.Response:
    viewer = signed_in(request).principal
    gateway = request.app[GATEWAY]
    search = request.query.get("q", "").strip()[:200]
    user_ref = request.query.get("user", "").strip()[:MAX_ID_CHARS] or None
    current, views, owner = None, [], viewer
    if conversation_id:
        current, turns, owner = await _open(gateway, viewer, conversation_id, user_ref)
        views = turn_views(current, turns, owner)
    audit = owner.id != viewer.id
    if audit and user_ref is None:
        user_ref = str(owner.id)  # an admin names members by id (admin.member_ref)
    # An audit lists the member's conversations, not the viewer's own: the page is theirs.
    conversations, total = await gateway.list_conversations(owner, limit=LIST_LIMIT)
    if search:
        conversations = [c for c in conversations if search.casefold() in c.title.casefold()]
    return await render(request, "chat.html", {
        "section": "admin" if audit else "chat",
        "conversations": conversations,
        "total": total,
        "list_limit": LIST_LIMIT,
        "q": search,
        "current": current,
        "turns": views,
        "owner": owner,
        "audit": audit,
        "user_ref": user_ref if audit else None,
        "tiers": tiers_for(viewer, gateway),
        "models": gateway.model_menu(viewer),
        "continue_prompt": gateway.settings.chat.continue_prompt,
        "prompt": prompt if prompt is not None else request.query.get("prompt", ""),
        "error": error,
    }, status=status)


async def _open(gateway: Gateway, viewer: Principal, conversation_id: str,
                user_ref: str | None) -> tuple[Conversation, list[Turn], Principal]:
    """A conversation the viewer may see, its turns, and its owner: the viewer's own, any for
    an admin (audit), or a client's user's when the client names them with ``?user=``."""
    if user_ref and viewer.role != "user":
        owner = await member(gateway, viewer, user_ref)
        found, turns = await gateway.recall(owner, conversation_id)
        return found, turns, owner
    found, turns = await gateway.recall(viewer, conversation_id)
    if found.owner_id == viewer.id:
        return found, turns, viewer
    # Only an admin gets here (the facade answers 404 to anyone else): name the owner.
    owner_principal = await gateway.member(viewer, found.owner_id)
    return found, turns, owner_principal or viewer


@page()
async def attachment(request: web.Request) -> web.StreamResponse:
    """An attachment of a conversation the viewer may see. Images are shown inline; anything
    else is only downloaded, and nothing is sniffed into another type."""
    viewer = signed_in(request).principal
    gateway = request.app[GATEWAY]
    user_ref = request.query.get("user", "").strip()[:MAX_ID_CHARS] or None
    owner = await member(gateway, viewer, user_ref) if user_ref and viewer.role != "user" \
        else viewer
    found = await gateway.attachment(owner, request.match_info["conversation_id"],
                                     request.match_info["sha256"])
    mime = found.mime_type.split(";")[0].strip().lower()
    inline = mime in INLINE_TYPES
    response = web.Response(body=found.data,
                            content_type=mime if inline else "application/octet-stream")
    response.headers["Content-Disposition"] = (
        "inline" if inline else f'attachment; filename="{found.sha256[:16]}"')
    response.headers["Cache-Control"] = "private, max-age=86400"
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Shown in the page; SVG is not among them (it can carry script)."""


# --------------------------------------------------------------------------------- sending


@dataclass(frozen=True, slots=True)
class Refused:
    """The files of a message that were not read: a note on each (which, and why)."""

    notes: list[str]
    files: list[str]


async def _request(request: web.Request, viewer: Principal) -> tuple[ChatRequest, Refused]:
    """The chat request of a form, with its attached text files read into the prompt and its
    images taken; and the files that were not (refused with 400 when nothing is left to
    ask: the page puts the text and files back)."""
    gateway = request.app[GATEWAY]
    form = await read_form(request)
    params = Params({name: value for name, value in form.items() if isinstance(value, str)
                     and name in ("prompt", "conversation_id", "plus")})
    chat_req = chat_request(params, endpoint="web")
    model = form.get("model")
    if isinstance(model, str) and model.strip() and not chat_req.conversation_id:
        # The model decides the account: look in every tier the member may use.
        chat_req = dataclasses.replace(
            chat_req, model=model.strip()[:200],
            plus="any" if viewer.plus or viewer.is_admin else chat_req.plus)
    conversation = None
    if chat_req.conversation_id:
        conversation = await gateway.conversation_for(viewer, chat_req.conversation_id)
        if conversation.mode == "own_key":
            # A conversation on the member's own key follows up with that same key.
            token = await gateway.own_key(viewer)
            if token:
                chat_req = dataclasses.replace(chat_req, access_token=token)
    files = [f for f in form.getall("file", []) if isinstance(f, FileField) and f.filename]
    if not files:
        return chat_req, Refused([], [])
    limits = gateway.settings.chat
    unseen = await gateway.images_refusal(viewer, conversation, plus=chat_req.plus,
                                          model=chat_req.model)
    attached = Attached(Limits(limits.max_text_file_bytes, limits.max_attachment_bytes, unseen))
    for field in files:
        size = field.file.seek(0, 2)
        field.file.seek(0)
        if attached.wanted(field.filename, field.content_type, size):
            attached.add(field.filename, field.content_type, field.file.read())
    refused = Refused([str(r) for r in attached.refused], [r.name for r in attached.refused])
    if not (chat_req.prompt or "").strip() and not attached.read:
        raise BadRequest(" ".join(refused.notes), code="nothing_read")
    if attached.texts:
        chat_req = dataclasses.replace(chat_req, prompt=attached.prompt(chat_req.prompt or ""))
    chat_req = dataclasses.replace(chat_req, images=tuple(attached.images))
    return chat_req, refused


@page(uploads=True)
async def send_form(request: web.Request) -> web.StreamResponse:
    """Without JavaScript: the whole reply, then the conversation page."""
    viewer = signed_in(request).principal
    try:
        chat_req, refused = await _request(request, viewer)
    except GatewayError as err:  # the page again, with the words typed
        form = await read_form(request)
        words, cid = form.get("prompt"), form.get("conversation_id")
        return await chat_page(request, cid if isinstance(cid, str) and cid else None,
                               error=err.message, status=err.status,
                               prompt=words if isinstance(words, str) else None)
    if refused.notes:
        await flash(request, "error", " ".join(refused.notes))
    try:
        result = await request.app[GATEWAY].chat(viewer, chat_req)
    except GatewayError as err:
        return await chat_page(request, chat_req.conversation_id, error=err.message,
                               prompt=chat_req.prompt, status=err.status)
    raise see_other(f"/chat/{quote(result.conversation.id)}")


class StoppableStream(EventStream):
    """The turn's events, and its entry in ``WRITING`` while it is written, so that its
    Stop button (``POST /chat/stop``) finds it."""

    def __init__(self, request: web.Request, viewer: Principal) -> None:
        super().__init__(request, SECURITY_HEADERS)
        self.viewer = viewer
        self.stop = StopSignal()
        self.message_id: str | None = None
        self.refused = Refused([], [])
        """Notes on the attached files that were not read, sent with ``start``."""

    async def started(self, info: StartInfo) -> None:
        await super().started(info)
        if self.refused.notes:
            self.start["refused"] = self.refused.notes
            self.start["refused_files"] = self.refused.files
        stops = self.request.app[GATEWAY].stops
        if self.message_id is not None:
            stops.done(self.message_id)  # a retry on another account
        self.message_id = info.message_id
        stops.writing(info.message_id, self.viewer.id, self.stop)

    def done(self) -> None:
        if self.message_id is not None:
            self.request.app[GATEWAY].stops.done(self.message_id)


@page(json_errors=True, uploads=True)
async def stream(request: web.Request) -> web.StreamResponse:
    viewer = signed_in(request).principal
    gateway = request.app[GATEWAY]
    # The turn as server-sent events for chat.js: ``start``, ``delta`` (new text), ``title``,
    # then ``done`` (with the rendered reply) or ``error``. ``regenerate`` (a turn id) asks the
    # last prompt again in that turn's place; ``continue`` asks the model to go on.
    form = await read_form(request)
    again, more = form.get("regenerate"), form.get("continue")
    listener = StoppableStream(request, viewer)
    cid = form.get("conversation_id")
    if (again or more) and not (isinstance(cid, str) and cid):
        raise BadRequest("conversation_id is required", code="missing_parameter")
    try:
        if isinstance(again, str) and again:
            assert isinstance(cid, str)
            turn = gateway.regenerate(viewer, cid, again[:MAX_ID_CHARS], listener=listener,
                                      stop=listener.stop, endpoint="web")
        elif more:
            assert isinstance(cid, str)
            turn = gateway.continue_reply(viewer, cid, listener=listener, stop=listener.stop,
                                          endpoint="web")
        else:
            chat_req, listener.refused = await _request(request, viewer)
            chat_req = dataclasses.replace(chat_req, stop=listener.stop)
            turn = gateway.chat(viewer, chat_req, listener)
        result = await listener.run(turn)
    finally:
        listener.done()
    if result is not None:
        await listener.send("done", {
            "json": reply_json(result, viewer),
            "html": render_reply(result.turn.reply),
            "title": result.conversation.title,
        })
    return listener.response


@page(json_errors=True)
async def stop(request: web.Request) -> web.StreamResponse:
    """Stop one of the member's replies being written (by any process): what arrived is
    stored, marked stopped, and its stream ends with ``done`` as usual."""
    viewer = signed_in(request).principal
    form = await read_form(request)
    message_id = form.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise BadRequest("message_id is required", code="missing_parameter")
    await request.app[GATEWAY].stop_reply(viewer, message_id[:MAX_ID_CHARS])
    return web.json_response({"status": "success", "stopped": message_id})


# --------------------------------------------------------------------------------- removal


@page()
async def remove(request: web.Request) -> web.StreamResponse:
    viewer = signed_in(request).principal
    gateway = request.app[GATEWAY]
    conversation_id = request.match_info["conversation_id"]
    form = await read_form(request)
    user_ref = form.get("user")
    if isinstance(user_ref, str) and user_ref and viewer.role != "user":
        owner = await member(gateway, viewer, user_ref)
        removed = await gateway.remove_conversation(owner, conversation_id)
        back = f"/admin/users/conversations?user={quote(user_ref, safe='')}"
    else:
        removed = await gateway.remove_conversation(viewer, conversation_id)
        back = "/chat"
    await flash(request, "ok", f"Removed “{removed.title}”.")
    raise see_other(back)
