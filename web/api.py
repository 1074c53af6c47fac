"""The original project's HTTP API, improved: every endpoint by GET (query) or POST (JSON body or
form), keys by ``Authorization: Bearer`` or the original's ``user=``/``client=``/``admin=``.

Handlers only parse, call the ``Gateway`` facade and format; roles are checked in the core.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from aiohttp import web

from core import fastjson
from core.chat import ChatRequest, ChatResult
from core.config import BUDGET_KEYS
from core.errors import BadRequest, Forbidden
from core.gateway import Gateway
from core.models import PlusChoice, Principal
from core.storage.usage_report import GROUPS

from .guard import authenticate, exchange_access_token
from .keys import GATEWAY
from .params import Params, bearer_key, read_params
from .render import markdown_to_safe_html
from .sse import EventStream

log = logging.getLogger(__name__)

PLUS_CHOICES: tuple[PlusChoice, ...] = ("false", "true", "any")
MAX_ID_CHARS = 200
PRETTY_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def success(payload: dict[str, Any], *, pretty: bool = False, status: int = 200) -> web.Response:
    body = {"status": "success", **payload}
    return web.Response(body=fastjson.dumps(body, indent=pretty), status=status,
                        content_type="application/json", charset="utf-8")


async def _caller(request: web.Request) -> tuple[Gateway, Params, Principal]:
    gateway = request.app[GATEWAY]
    params = await read_params(request)
    principal = await authenticate(request, bearer_key(request, params))
    return gateway, params, principal


async def _acting(gateway: Gateway, params: Params, actor: Principal,
                  *, create: bool = False) -> Principal:
    return await gateway.acting_as(
        actor,
        params.text("user_id", max_chars=MAX_ID_CHARS) or params.text("userid",
                                                                     max_chars=MAX_ID_CHARS),
        username=params.text("username", max_chars=100) if create else None,
        plus=params.flag("user_id_plus") if create else None,
    )


# --------------------------------------------------------------------------------- chat


def chat_request(params: Params, endpoint: str = "api",
                 titles: Literal["beside", "batched", "prompt"] = "beside") -> ChatRequest:
    """``titles``: how a new conversation's title is made ([chat] api_titles)."""
    return ChatRequest(
        prompt=params.text("prompt"),
        conversation_id=params.text("conversation_id", max_chars=MAX_ID_CHARS) or None,
        plus=params.choice("plus", PLUS_CHOICES, "false"),
        access_token=params.text("access_token") or None,
        user_plus=params.flag("user_plus"),
        external_ref=params.text("external_ref", max_chars=MAX_ID_CHARS) or None,
        endpoint=endpoint,
        options=_sampling(params),
        generate_title=titles == "beside",
        later_title=titles == "batched",
    )


def _sampling(params: Params) -> dict[str, Any]:
    """Optional ``temperature`` and ``max_tokens``, passed upstream when given."""
    options: dict[str, Any] = {}
    if "temperature" in params:
        options["temperature"] = params.number("temperature", minimum=0, maximum=2)
    if "max_tokens" in params:
        options["max_tokens"] = params.integer("max_tokens", 0, minimum=1, maximum=1_000_000)
    return options


def enriched(result: ChatResult, acting: Principal) -> dict[str, Any]:
    """The original's reply, enriched as it was, plus the gateway's own fields."""
    turn, conversation = result.turn, result.conversation
    payload: dict[str, Any] = {
        "conversation_id": conversation.id,
        "conversation_title": conversation.title,
        "message": {
            "id": turn.id,
            "author": {"role": "assistant"},
            "content": {"content_type": "text", "parts": [turn.reply]},
            "create_time": turn.reply_utc,
            "model": turn.model,
        },
        "parent_id": turn.parent_id,
        "reply": turn.reply,
        "model": turn.model,
        "account": conversation.account,
        "mode": conversation.mode,
        "usage": {
            "prompt_tokens": turn.input_tokens,
            "completion_tokens": turn.output_tokens,
            "total_tokens": (turn.input_tokens or 0) + (turn.output_tokens or 0)
            if turn.input_tokens is not None or turn.output_tokens is not None else None,
        },
        "api_user": acting.name,
        "api_user_id": acting.external_id or str(acting.id),
        "api_client_id": acting.client_id,
        "api_prompt": turn.prompt,
        "api_prompt_time_origin": turn.prompt_utc,
        "api_prompt_time_origin_readable": result.prompt_time.strftime("%Y-%m-%d | %H:%M:%S"),
        "api_response_time_taken": round(result.elapsed_s, 3),
        "is_new_conversation": result.is_new,
    }
    if result.previous is not None:
        payload["last_message_prompt"] = result.previous.prompt
        payload["last_message_reply"] = result.previous.reply
    return payload


async def chat(request: web.Request) -> web.StreamResponse:
    gateway, params, actor = await _caller(request)
    # Every parameter is checked before anything happens: a bad flag must not cost an upstream
    # call, a stored turn or a user created on first use, and then still answer 400.
    chat_req = chat_request(params, titles=gateway.settings.chat.api_titles)
    if chat_req.external_ref and not actor.is_client:
        # A reference names a conversation in a client's namespace (the bot's thread ids):
        # a user setting one could squat the id the client will map next (a 409 for it).
        raise Forbidden("only a client may set external_ref: it names the client's own "
                        "references, such as its thread ids", code="external_ref_not_allowed")
    stream, reply_only = params.flag("stream"), params.flag("reply_only")
    pretty = params.flag("pretty")
    acting = await _acting(gateway, params, actor, create=True)
    if stream:
        return await _chat_stream(request, gateway, acting, chat_req)
    result = await gateway.chat(acting, chat_req)
    if reply_only:
        if pretty:
            return web.Response(text=markdown_to_safe_html(result.turn.reply),
                                content_type="text/html",
                                headers={"Content-Security-Policy": PRETTY_CSP})
        return web.Response(text=result.turn.reply, content_type="text/plain")
    return success(enriched(result, acting), pretty=pretty)


async def _chat_stream(request: web.Request, gateway: Gateway, acting: Principal,
                       chat_req: ChatRequest) -> web.StreamResponse:
    stream = EventStream(request)
    result = await stream.run(gateway.chat(acting, chat_req, stream))
    if result is not None:
        await stream.send("done", {"status": "success", **enriched(result, acting)})
    return stream.response


# --------------------------------------------------------------------------------- recall


async def recall(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    acting = await _acting(gateway, params, actor)
    limit = params.integer("limit", 50, minimum=1, maximum=200)
    offset = params.integer("offset", 0)
    conversation_id = params.text("conversation_id", max_chars=MAX_ID_CHARS)
    if conversation_id:
        conversation, turns = await gateway.recall(acting, conversation_id)
        return success({
            "conversation_id": conversation.id,
            "conversation_title": conversation.title,
            "conversation": conversation.public(),
            "messages": [turn.public() for turn in turns],
        }, pretty=params.flag("pretty"))
    everyone = acting.is_admin and acting.id == actor.id and params.flag("all", True)
    conversations, total = await gateway.list_conversations(acting, limit=limit, offset=offset,
                                                            everyone=everyone)
    return success({
        "conversations": [c.public() for c in conversations],
        "total": total, "limit": limit, "offset": offset,
    }, pretty=params.flag("pretty"))


async def remove_conversation(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    acting = await _acting(gateway, params, actor)
    conversation_id = params.text("conversation_id", max_chars=MAX_ID_CHARS)
    if not conversation_id:
        raise BadRequest("conversation_id is required", code="missing_conversation_id")
    removed = await gateway.remove_conversation(acting, conversation_id)
    return success({"conversation_id": removed.id, "removed": True})


# --------------------------------------------------------------------------------- users


async def add_user(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    user, key = await gateway.add_user(
        actor,
        userid=params.text("userid", max_chars=MAX_ID_CHARS)
        or params.text("user_id", max_chars=MAX_ID_CHARS),
        username=params.text("username", max_chars=100),
        plus=params.flag("plus"),
        role=params.choice("role", ("user", "client", "admin"), "user"),
    )
    return success({"api_key": key, "user": user.public()})


async def remove_user(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    user = await gateway.remove_user(actor, _userid(params))
    return success({"removed": True, "user": user.public()})


async def update_user(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    # A budget is a number, "none" (no limit) or "default" (the tier's); JSON null is "none".
    limits = {kind: "none" if params.data[kind] is None else params.text(kind, max_chars=40)
              for kind in BUDGET_KEYS if kind in params.data}
    user = await gateway.update_user(actor, _userid(params), plus=params.optional_flag("plus"),
                                     disabled=params.optional_flag("disabled"), limits=limits)
    return success({"user": user.public()})


async def list_users(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    limit = params.integer("limit", 50, minimum=1, maximum=200)
    offset = params.integer("offset", 0)
    users, total = await gateway.list_users(actor, search=params.text("search") or "",
                                            limit=limit, offset=offset)
    return success({"users": users, "total": total, "limit": limit, "offset": offset})


async def rotate_key(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    user, key = await gateway.rotate_key(actor, _userid(params))
    return success({"api_key": key, "user": user.public()})


def _userid(params: Params) -> str | None:
    return params.text("userid", max_chars=MAX_ID_CHARS) or params.text(
        "user_id", max_chars=MAX_ID_CHARS)


# --------------------------------------------------------------------------------- usage


async def usage(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    summary = await gateway.usage(actor, _userid(params))
    return success(summary, pretty=params.flag("pretty"))


async def admin_usage(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    report = await gateway.usage_report(
        actor, params.choice("group_by", GROUPS, "user"),
        params.text("from", max_chars=10), params.text("to", max_chars=10),
        own_key=params.flag("own_key"))
    if params.choice("format", ("json", "csv"), "json") == "csv":
        name = f"usage-{report.group_by}-{report.start}-{report.end}.csv"
        return web.Response(text=report.csv(), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return success(report.public(), pretty=params.flag("pretty"))


# --------------------------------------------------------------------------------- admin


async def admin_accounts(request: web.Request) -> web.Response:
    gateway, params, actor = await _caller(request)
    action = params.choice("action", ("list", "enable", "disable"), "list")
    if action != "list":
        name = params.text("name", max_chars=100)
        if not name:
            raise BadRequest("name is required to enable or disable an account",
                             code="missing_name")
        await gateway.set_account_enabled(actor, name, action == "enable")
    accounts = gateway.accounts(actor)
    return success({"accounts": accounts, "stats": await gateway.stats(actor)},
                   pretty=params.flag("pretty"))


# --------------------------------------------------------------------------------- other


async def access_token(request: web.Request) -> web.Response:
    params = await read_params(request)
    if request.app[GATEWAY].settings.access_token.require_key:
        await authenticate(request, bearer_key(request, params))
    token = await exchange_access_token(request, params.text("email", max_chars=320) or "",
                                        params.text("password", max_chars=1024) or "")
    return success(token.public())


async def health(request: web.Request) -> web.Response:
    return web.json_response(await request.app[GATEWAY].health())


def add_routes(app: web.Application, paths: Any) -> None:
    routes = {
        paths.chat: chat,
        paths.recall: recall,
        paths.access_token: access_token,
        paths.add_user: add_user,
        paths.remove_user: remove_user,
        paths.update_user: update_user,
        paths.list_users: list_users,
        paths.remove_conversation: remove_conversation,
        paths.rotate_key: rotate_key,
        paths.admin_accounts: admin_accounts,
        paths.usage: usage,
        paths.admin_usage: admin_usage,
        paths.health: health,
    }
    for path, handler in routes.items():
        app.router.add_route("GET", path, handler)
        app.router.add_route("POST", path, handler)
