"""A fake Discord on 127.0.0.1: the REST routes and the websocket gateway the bot uses.

The real, unmodified discord.py logs in, receives READY and GUILD_CREATE, syncs its commands and
answers interactions; every REST call is recorded (``calls``), messages, threads and interaction
responses are kept as Discord would keep them, and tests drive the bot as members would:
``slash``, ``autocomplete``, ``click`` (a button of a message sent before or after a bot
restart: its ``custom_id`` is all the bot gets), ``submit_modal`` and ``user_says``.
``wait_for`` waits on a condition over that state (it never sleeps); ``barrier`` returns once
the bot has read every event sent before it.

The payloads follow Discord's API documentation (v10), not discord.py's parser, so a drift shows
when discord.py is upgraded. Like Discord, the fake refuses messages over 2,000 characters, a
second response to one interaction, and edits of unknown messages; an unknown route answers 404
``fake: unhandled METHOD /path``. See ../shared/notes/discord-offline-testing.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

API = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
# Options: 1 subcommand, 2 group, 3 string, 4 integer, 5 boolean, 6 user, 7 channel, 8 role.
USER_OPTION = 6
CHANNEL_OPTION = 7
ATTACHMENT_OPTION = 11


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _json(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": with "; charset=utf-8" discord.py reads the body as text.
    return web.Response(status=status, body=json.dumps(data).encode(),
                        content_type="application/json")


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status)


@dataclass
class Call:
    """One REST request as the fake received it."""

    method: str
    path: str
    json: Any
    query: dict[str, str]
    at: float


@dataclass
class Interaction:
    """An interaction the fake sent, and what the bot answered."""

    id: int
    token: str
    type: int
    channel_id: int
    user_id: int
    payload: dict[str, Any]
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    @property
    def responded(self) -> bool:
        return bool(self.callbacks)


class FakeDiscord:
    APP_ID = 900000000000000001
    BOT_ID = 900000000000000002
    GUILD_ID = 900000000000000010
    GENERAL_ID = 900000000000000020
    ADMIN_CHANNEL_ID = 900000000000000021
    VOICE_ID = 900000000000000022

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.thread_members: dict[int, set[int]] = {}
        self.members: dict[int, dict[str, Any]] = {}
        self.roles: dict[int, dict[str, Any]] = {}
        self.interactions: dict[str, Interaction] = {}
        self.files: dict[str, bytes] = {}
        """Attachments' bytes by id (``upload``)."""
        self.downloads: list[str] = []
        """Ids of the attachments the bot downloaded, in order."""
        self.synced: list[tuple[str, list[dict[str, Any]]]] = []
        self.commands: list[dict[str, Any]] = []
        self.identifies = 0
        self.sockets_open = 0
        self.most_sockets_open = 0
        """How many bots were ever connected at once (a deployment must never run two)."""
        self.token: str | None = None
        """When set, the only bot token accepted (others get 401, as Discord answers)."""
        self._ids = itertools.count((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22)
        self._seq = 0
        self._heartbeats = 0
        self._ws: web.WebSocketResponse | None = None
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.bot_user = {"id": str(self.BOT_ID), "username": "gateway-bot", "discriminator": "0",
                         "global_name": None, "avatar": None, "bot": True}
        self.add_role(self.GUILD_ID, "@everyone")
        self.add_channel(self.GENERAL_ID, "general")
        self.add_channel(self.ADMIN_CHANNEL_ID, "bot-admin")
        self.add_channel(self.VOICE_ID, "voice", type=2)
        self._member_payload(self.bot_user, [])

    # ------------------------------------------------------------------ lifecycle

    async def start(self, port: int = 0) -> None:
        """Serve on ``port`` of 127.0.0.1 (0: a free one); a stopped fake may start again on
        its old port, as Discord coming back after an outage."""
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{id}/{filename}", self._attachment)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def connected(self) -> bool:
        """True while a bot holds the gateway websocket open."""
        return self._ws is not None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------------ the guild

    def new_id(self) -> int:
        return next(self._ids)

    def add_role(self, role_id: int, name: str) -> dict[str, Any]:
        role = {"id": str(role_id), "name": name, "color": 0, "hoist": False, "icon": None,
                "unicode_emoji": None, "position": len(self.roles), "permissions": "0",
                "managed": False, "mentionable": False, "flags": 0}
        self.roles[role_id] = role
        return role

    def add_channel(self, channel_id: int, name: str, *, type: int = 0) -> dict[str, Any]:
        channel = {"id": str(channel_id), "type": type, "guild_id": str(self.GUILD_ID),
                   "name": name, "position": len(self.channels), "permission_overwrites": [],
                   "nsfw": False, "parent_id": None, "topic": None, "last_message_id": None,
                   "rate_limit_per_user": 0, "default_auto_archive_duration": 1440}
        if type == 2:
            channel |= {"bitrate": 64000, "user_limit": 0, "rtc_region": None}
        self.channels[channel_id] = channel
        return channel

    def add_member(self, user_id: int, name: str, roles: tuple[int, ...] = ()) -> int:
        user = {"id": str(user_id), "username": name, "discriminator": "0",
                "global_name": name.title(), "avatar": None, "bot": False}
        self._member_payload(user, list(roles))
        return user_id

    def set_roles(self, user_id: int, roles: tuple[int, ...]) -> None:
        """Change a member's roles (sent with their next interaction or message)."""
        self.members[user_id]["roles"] = [str(r) for r in roles]

    def _member_payload(self, user: dict[str, Any], roles: list[int]) -> None:
        self.members[int(user["id"])] = {
            "user": user, "roles": [str(r) for r in roles], "nick": None, "avatar": None,
            "joined_at": _now(), "deaf": False, "mute": False, "flags": 0, "pending": False,
            "premium_since": None, "communication_disabled_until": None,
        }

    def threads(self) -> list[dict[str, Any]]:
        return [c for c in self.channels.values() if c["type"] in (11, 12)]

    def thread(self, thread_id: int | str) -> dict[str, Any]:
        return self.channels[int(thread_id)]

    def channel_messages(self, channel_id: int | str) -> list[dict[str, Any]]:
        """Messages of a channel (or thread), oldest first."""
        return [m for m in self.messages.values() if m["channel_id"] == str(channel_id)]

    def _guild_payload(self) -> dict[str, Any]:
        members = list(self.members.values())
        return {
            "id": str(self.GUILD_ID), "name": "Test server", "icon": None, "splash": None,
            "discovery_splash": None, "owner_id": str(next(iter(self.members))),
            "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0,
            "roles": list(self.roles.values()), "emojis": [], "stickers": [], "features": [],
            "mfa_level": 0, "system_channel_id": None, "system_channel_flags": 0,
            "rules_channel_id": None, "vanity_url_code": None, "description": None,
            "banner": None, "premium_tier": 0, "preferred_locale": "en-US",
            "public_updates_channel_id": None, "nsfw_level": 0, "premium_progress_bar_enabled":
            False, "joined_at": _now(), "large": False, "unavailable": False,
            "member_count": len(members), "members": members, "voice_states": [],
            "presences": [], "channels": [c for c in self.channels.values()
                                          if c["type"] not in (11, 12)],
            "threads": [t for t in self.threads() if not t["thread_metadata"]["archived"]],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        }

    # ------------------------------------------------------------------ waiting

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate()`` is truthy (checked after every change); return it."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)
        return predicate()

    async def barrier(self, timeout: float = 5.0) -> None:
        """Return once the bot has read every gateway event sent before this call: Discord may
        ask for a heartbeat (op 1), which the client answers at once, in order."""
        seen = self._heartbeats
        await self._send_ws({"op": 1, "d": self._seq})
        await self.wait_for(lambda: self._heartbeats > seen, timeout)

    # ------------------------------------------------------------------ the gateway

    async def _send_ws(self, payload: dict[str, Any]) -> None:
        assert self._ws is not None, "the bot is not connected"
        # Text frames: discord.py only inflates binary ones, whatever compress= it asked for.
        await self._ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        if self._ws is None:
            # As Discord does: no session connected, no event (a bot posting from its
            # setup, before it has connected, must not make the post fail and be retried:
            # posted twice).
            return
        self._seq += 1
        await self._send_ws({"op": 0, "t": event, "s": self._seq, "d": data})

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        self.sockets_open += 1
        self.most_sockets_open = max(self.most_sockets_open, self.sockets_open)
        try:
            await self._serve_socket(ws)
        finally:
            self.sockets_open -= 1
        if self._ws is ws:
            self._ws = None
            await self._notify()
        return ws

    async def _serve_socket(self, ws: web.WebSocketResponse) -> None:
        await self._send_ws({"op": 10, "d": {"heartbeat_interval": 41250}})
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data["op"] == 1:
                self._heartbeats += 1
                await self._send_ws({"op": 11})
            elif data["op"] == 2:
                self.identifies += 1
                await self.send_ready()
            await self._notify()

    async def send_ready(self) -> None:
        """READY then GUILD_CREATE, as after an IDENTIFY (a new session)."""
        await self.dispatch("READY", {
            "v": 10, "user": self.bot_user, "guilds": [
                {"id": str(self.GUILD_ID), "unavailable": True}],
            "session_id": secrets.token_hex(16), "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.APP_ID), "flags": 0},
            "private_channels": [], "relationships": [],
        })
        await self.dispatch("GUILD_CREATE", self._guild_payload())

    # ------------------------------------------------------------------ driving the bot

    def _user_payload(self, user_id: int) -> dict[str, Any]:
        return dict(self.members[user_id]["user"])

    def _interaction(self, kind: int, user_id: int, channel_id: int,
                     data: dict[str, Any], message: dict[str, Any] | None = None
                     ) -> tuple[Interaction, dict[str, Any]]:
        interaction_id = self.new_id()
        token = secrets.token_urlsafe(24)
        member = dict(self.members[user_id], permissions="2251799813685247")
        channel = self.channels[channel_id]
        payload: dict[str, Any] = {
            "id": str(interaction_id), "application_id": str(self.APP_ID), "type": kind,
            "token": token, "version": 1, "guild_id": str(self.GUILD_ID),
            "channel_id": str(channel_id), "channel": channel, "member": member,
            "app_permissions": "2251799813685247", "attachment_size_limit": 8388608,
            "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.GUILD_ID)}, "context": 0,
            "data": data,
        }
        if message is not None:
            payload["message"] = message
        record = Interaction(interaction_id, token, kind, channel_id, user_id, payload)
        self.interactions[token] = record
        return record, payload

    def _command(self, name: str) -> dict[str, Any]:
        for command in self.commands:
            if command["name"] == name:
                return command
        raise KeyError(f"the bot synced no command {name!r}")

    def _options(self, schema: list[dict[str, Any]], values: dict[str, Any],
                 resolved: dict[str, Any], focused: str | None) -> list[dict[str, Any]]:
        types = {o["name"]: o["type"] for o in schema}
        options = []
        for name, value in values.items():
            if name not in types:
                raise KeyError(f"no option {name!r}; the schema has {sorted(types)}")
            option: dict[str, Any] = {"name": name, "type": types[name], "value": value}
            if types[name] == ATTACHMENT_OPTION:  # ``value``: what ``upload`` gave
                option["value"] = value["id"]
                resolved.setdefault("attachments", {})[value["id"]] = value
            if types[name] == CHANNEL_OPTION:
                option["value"] = str(value)
                channel = self.channels[int(value)]
                resolved.setdefault("channels", {})[str(value)] = {
                    k: channel[k] for k in ("id", "name", "type", "parent_id")
                    if k in channel} | {"permissions": "2251799813685247"}
            if types[name] == USER_OPTION:
                option["value"] = str(value)
                member = self.members[int(value)]
                resolved.setdefault("users", {})[str(value)] = member["user"]
                resolved.setdefault("members", {})[str(value)] = {
                    k: v for k, v in member.items() if k != "user"} | {"permissions": "0"}
            if name == focused:
                option["focused"] = True
            options.append(option)
        return options

    def _command_data(self, name: str, sub: str | None, values: dict[str, Any],
                      focused: str | None = None) -> dict[str, Any]:
        command = self._command(name)
        resolved: dict[str, Any] = {}
        schema = command.get("options", [])
        if sub is not None and " " in sub:  # a subcommand of a group: "persona set"
            group, leaf = sub.split(" ", 1)
            group_schema = next(o for o in schema if o["name"] == group)
            leaf_schema = next(o for o in group_schema["options"] if o["name"] == leaf)
            options = [{"name": group, "type": 2, "options": [
                {"name": leaf, "type": 1, "options": self._options(
                    leaf_schema.get("options", []), values, resolved, focused)}]}]
        elif sub is not None:
            sub_schema = next(o for o in schema if o["name"] == sub)
            options = [{"name": sub, "type": 1, "options": self._options(
                sub_schema.get("options", []), values, resolved, focused)}]
        else:
            options = self._options(schema, values, resolved, focused)
        data = {"id": command["id"], "name": name, "type": 1, "options": options,
                "guild_id": str(self.GUILD_ID)}
        if resolved:
            data["resolved"] = resolved
        return data

    async def slash(self, name: str, sub: str | None = None, *, user: int,
                    channel: int | None = None, options: dict[str, Any] | None = None,
                    **more: Any) -> Interaction:
        """Send ``/name [sub] option:value…`` as ``user``; return once the bot answered it.
        Options come as keywords, or in ``options`` (for names such as ``channel``)."""
        options = {**(options or {}), **more}
        record, payload = self._interaction(
            2, user, channel or self.GENERAL_ID, self._command_data(name, sub, options))
        await self.dispatch("INTERACTION_CREATE", payload)
        await self.wait_for(lambda: record.responded)
        return record

    async def autocomplete(self, name: str, sub: str | None = None, *, user: int, focused: str,
                           channel: int | None = None, **options: Any) -> list[dict[str, Any]]:
        """The suggestions the bot gives while ``user`` types into option ``focused``."""
        record, payload = self._interaction(
            4, user, channel or self.GENERAL_ID,
            self._command_data(name, sub, options, focused))
        await self.dispatch("INTERACTION_CREATE", payload)
        await self.wait_for(lambda: record.responded)
        body = record.callbacks[0]
        assert body["type"] == 8, body
        choices: list[dict[str, Any]] = body["data"]["choices"]
        return choices

    def buttons(self, message_id: int) -> Iterator[dict[str, Any]]:
        for row in self.messages[message_id].get("components", []):
            yield from row.get("components", [])

    async def click(self, message_id: int, label: str, *, user: int) -> Interaction:
        """Click the button labelled ``label`` under a message."""
        message = self.messages[message_id]
        button = next((b for b in self.buttons(message_id) if b.get("label") == label), None)
        if button is None:
            raise KeyError(f"no button {label!r} under message {message_id}")
        record, payload = self._interaction(
            3, user, int(message["channel_id"]),
            {"custom_id": button["custom_id"], "component_type": 2}, message)
        await self.dispatch("INTERACTION_CREATE", payload)
        await self.wait_for(lambda: record.responded)
        return record

    async def submit_modal(self, opened_by: Interaction, values: dict[str, str], *,
                           user: int | None = None) -> Interaction:
        """Fill in the modal the bot opened in answer to ``opened_by``, inputs by label."""
        modal = next(c["data"] for c in opened_by.callbacks if c["type"] == 9)
        rows = []
        for row in modal["components"]:
            inputs = row["components"] if row["type"] == 1 else [row["component"]]
            answered = [{"type": 4, "custom_id": i["custom_id"], "value": values[i["label"]]}
                        for i in inputs]
            rows.append({"type": 1, "components": answered})
        record, payload = self._interaction(
            5, user or opened_by.user_id, opened_by.channel_id,
            {"custom_id": modal["custom_id"], "components": rows})
        await self.dispatch("INTERACTION_CREATE", payload)
        await self.wait_for(lambda: record.responded)
        return record

    def upload(self, filename: str, data: bytes,
               content_type: str | None = None) -> dict[str, Any]:
        """A file as Discord keeps an attachment: its payload (for ``user_says(files=…)`` or
        an attachment option), its bytes served at its ``url`` on this fake."""
        attachment_id = str(self.new_id())
        self.files[attachment_id] = data
        url = f"http://127.0.0.1:{self.port}/attachments/{attachment_id}/{filename}"
        payload = {"id": attachment_id, "filename": filename, "size": len(data), "url": url,
                   "proxy_url": url}
        if content_type is not None:
            payload["content_type"] = content_type
        return payload

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        self.downloads.append(request.match_info["id"])
        data = self.files.get(request.match_info["id"])
        if data is None:
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=data, content_type="application/octet-stream")

    async def user_says(self, channel_id: int, content: str, *, user: int,
                        files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A member posts a message (MESSAGE_CREATE carries ``member`` without ``user``),
        with ``files`` from ``upload`` attached."""
        message = self._message(channel_id, self._user_payload(user), {"content": content},
                                attachments=files or [])
        member = {k: v for k, v in self.members[user].items() if k != "user"}
        await self.dispatch("MESSAGE_CREATE", message | {"member": member})
        return message

    # ------------------------------------------------------------------ state helpers

    def _message(self, channel_id: int | str, author: dict[str, Any], body: dict[str, Any],
                 **extra: Any) -> dict[str, Any]:
        message_id = self.new_id()
        message = {
            "id": str(message_id), "channel_id": str(channel_id),
            "guild_id": str(self.GUILD_ID), "author": author,
            "content": body.get("content") or "", "timestamp": _now(),
            "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": [],
            "embeds": body.get("embeds") or [], "pinned": False, "type": 0,
            "flags": body.get("flags") or 0, "components": body.get("components") or [],
            **extra,
        }
        reference = body.get("message_reference")
        if reference:
            message["type"] = 19
            message["message_reference"] = {
                k: str(v) if k.endswith("_id") else v for k, v in reference.items()}
        self.messages[message_id] = message
        channel = self.channels.get(int(channel_id))
        if channel is not None:
            channel["last_message_id"] = str(message_id)
            if "message_count" in channel:
                channel["message_count"] += 1
        return message

    def _edit(self, message: dict[str, Any], body: dict[str, Any]) -> None:
        for key in ("content", "embeds", "components"):
            if key in body and body[key] is not None:
                message[key] = body[key]
        if "flags" in body and body["flags"] is not None:
            message["flags"] = body["flags"] | (message["flags"] & EPHEMERAL)
        message["flags"] &= ~LOADING
        message["edited_timestamp"] = _now()

    def _bot_message(self, channel_id: int | str, body: dict[str, Any],
                     **extra: Any) -> dict[str, Any]:
        return self._message(channel_id, self.bot_user, body, **extra)

    def _thread_payload(self, thread_id: int, parent_id: int, name: str, type: int,
                        archive_minutes: int) -> dict[str, Any]:
        return {
            "id": str(thread_id), "guild_id": str(self.GUILD_ID), "parent_id": str(parent_id),
            "owner_id": str(self.BOT_ID), "name": name, "type": type,
            "last_message_id": None, "message_count": 0, "member_count": 1,
            "rate_limit_per_user": 0, "flags": 0, "total_message_sent": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": archive_minutes,
                                "archive_timestamp": _now(), "locked": False,
                                "invitable": True, "create_timestamp": _now()},
        }

    # ------------------------------------------------------------------ REST

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            if request.content_type.startswith("multipart/"):
                form = await request.post()
                body = json.loads(str(form["payload_json"]))
            else:
                raw = await request.read()
                body = json.loads(raw) if raw else None
        path = request.path[len(API):]
        self.calls.append(Call(request.method, path, body, dict(request.query),
                               time.monotonic()))
        if self.token is not None and path == "/users/@me" and (
                request.headers.get("Authorization") != f"Bot {self.token}"):
            await self._notify()
            return _error(401, 0, "401: Unauthorized")
        try:
            response = await self._route(request.method, path.strip("/").split("/"), body,
                                         request)
        finally:
            await self._notify()
        return response

    async def _route(self, method: str, parts: list[str], body: Any,
                     request: web.Request) -> web.Response:
        route = (method, *parts)
        match route:
            case ("GET", "users", "@me"):
                return _json(self.bot_user)
            case ("GET", "oauth2", "applications", "@me"):
                return _json(self._application())
            case ("PUT", "applications", _, "commands"):
                return self._sync("global", body)
            case ("PUT", "applications", _, "guilds", guild_id, "commands"):
                return self._sync(guild_id, body)
            case ("POST", "interactions", _, token, "callback"):
                return await self._callback(token, body)
            case (_, "webhooks", _, token, "messages", message_id):
                return await self._webhook_message(method, token, message_id, body)
            case ("POST", "webhooks", _, token):
                return await self._followup(token, body)
            case ("POST", "channels", channel_id, "messages"):
                return await self._post_message(int(channel_id), body)
            case ("PATCH", "channels", channel_id, "messages", message_id):
                return await self._patch_message(int(channel_id), int(message_id), body)
            case ("POST", "channels", channel_id, "messages", message_id, "threads"):
                return await self._start_thread(int(channel_id), body, int(message_id))
            case ("POST", "channels", channel_id, "threads"):
                return await self._start_thread(int(channel_id), body, None)
            case ("PUT", "channels", thread_id, "thread-members", user_id):
                self.thread_members.setdefault(int(thread_id), set()).add(int(user_id))
                return web.Response(status=204)
            case ("GET", "channels", channel_id):
                channel = self.channels.get(int(channel_id))
                if channel is None:
                    return _error(404, 10003, "Unknown Channel")
                return _json(channel)
            case ("PATCH", "channels", channel_id):
                return await self._patch_channel(int(channel_id), body)
            case ("POST", "channels", _, "typing"):
                return web.Response(status=204)
        return _error(404, 0, f"fake: unhandled {method} /{'/'.join(parts)}")

    def _application(self) -> dict[str, Any]:
        return {"id": str(self.APP_ID), "name": "gateway-bot", "description": "",
                "icon": None, "bot_public": False, "bot_require_code_grant": False,
                "owner": self._user_payload(next(iter(self.members))),
                "verify_key": "00" * 32, "flags": 0, "team": None, "summary": "",
                "rpc_origins": [], "bot": self.bot_user}

    def _sync(self, scope: str, body: list[dict[str, Any]]) -> web.Response:
        self.synced.append((scope, body))
        self.commands = [dict(c, id=str(self.new_id()), application_id=str(self.APP_ID),
                              version=str(self.new_id()))
                         | ({"guild_id": scope} if scope != "global" else {})
                         for c in body]
        return _json(self.commands)

    def _check_content(self, body: dict[str, Any] | None) -> web.Response | None:
        if (bad := self._check_components((body or {}).get("components"))) is not None:
            return bad
        content = (body or {}).get("content") or ""
        if len(content) > 2000:
            return _json({"code": 50035, "message": "Invalid Form Body", "errors": {
                "content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                         "message": "Must be 2000 or fewer in length."}]}}},
                         400)
        return None

    @staticmethod
    def _check_components(rows: list[dict[str, Any]] | None) -> web.Response | None:
        """Discord's limits on buttons: at most 5 rows of 5, a custom_id of 1 to 100
        characters unique in the message, a label of at most 80."""
        if not rows:
            return None
        seen: set[str] = set()
        problems = []
        if len(rows) > 5:
            problems.append("more than 5 action rows")
        for row in rows:
            items = row.get("components") or []
            if row.get("type") != 1 or not 1 <= len(items) <= 5:
                problems.append("an action row needs 1 to 5 components")
            for item in items:
                custom_id = item.get("custom_id")
                if item.get("type") == 2 and item.get("style") != 5:
                    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                        problems.append(f"bad custom_id {custom_id!r}")
                    elif custom_id in seen:
                        problems.append(f"duplicate custom_id {custom_id!r}")
                    seen.add(str(custom_id))
                if len(item.get("label") or "") > 80:
                    problems.append("a label over 80 characters")
        if problems:
            return _json({"code": 50035, "message": "Invalid Form Body",
                          "errors": {"components": {"_errors": [
                              {"code": "COMPONENT_INVALID", "message": p}
                              for p in problems]}}}, 400)
        return None

    async def _callback(self, token: str, body: dict[str, Any]) -> web.Response:
        record = self.interactions.get(token)
        if record is None:
            return _error(404, 10062, "Unknown interaction")
        if record.callbacks:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        if (bad := self._check_content(body.get("data"))) is not None:
            return bad
        record.callbacks.append(body)
        kind, data = body["type"], body.get("data") or {}
        ephemeral = bool(data.get("flags", 0) & EPHEMERAL)
        answer: dict[str, Any] = {"interaction": {
            "id": str(record.id), "type": record.type,
            "response_message_loading": kind == 5, "response_message_ephemeral": ephemeral}}
        message = None
        if kind in (4, 5):
            flags = data.get("flags", 0) | (LOADING if kind == 5 else 0)
            message = self._bot_message(record.channel_id, data | {"flags": flags})
            record.original_id = int(message["id"])
            if not ephemeral:
                await self.dispatch("MESSAGE_CREATE", message)
        elif kind in (6, 7):
            record.original_id = int(record.payload["message"]["id"])
            if kind == 7:
                message = self.messages[record.original_id]
                self._edit(message, data)
        if message is not None:
            answer["interaction"]["response_message_id"] = message["id"]
            answer["resource"] = {"type": kind, "message": message}
        return _json(answer)

    async def _webhook_message(self, method: str, token: str, message_id: str,
                               body: Any) -> web.Response:
        record = self.interactions.get(token)
        if record is None:
            return _error(404, 10015, "Unknown Webhook")
        if message_id == "@original":
            if record.original_id is None:
                return _error(404, 10008, "Unknown Message")
            target = record.original_id
        else:
            target = int(message_id)
            if target not in record.followup_ids:
                return _error(404, 10008, "Unknown Message")
        message = self.messages[target]
        if method == "GET":
            return _json(message)
        if method == "DELETE":
            del self.messages[target]
            return web.Response(status=204)
        if (bad := self._check_content(body)) is not None:
            return bad
        self._edit(message, body)
        if not message["flags"] & EPHEMERAL:
            await self.dispatch("MESSAGE_UPDATE", message)
        return _json(message)

    async def _followup(self, token: str, body: dict[str, Any]) -> web.Response:
        record = self.interactions.get(token)
        if record is None:
            return _error(404, 10015, "Unknown Webhook")
        if not record.callbacks:
            return _error(404, 10015, "Unknown Webhook")
        if (bad := self._check_content(body)) is not None:
            return bad
        message = self._bot_message(record.channel_id, body, webhook_id=str(self.APP_ID))
        record.followup_ids.append(int(message["id"]))
        if not message["flags"] & EPHEMERAL:
            await self.dispatch("MESSAGE_CREATE", message)
        return _json(message)

    async def _post_message(self, channel_id: int, body: dict[str, Any]) -> web.Response:
        channel = self.channels.get(channel_id)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        if (bad := self._check_content(body)) is not None:
            return bad
        if not (body.get("content") or body.get("embeds") or body.get("components")):
            return _error(400, 50006, "Cannot send an empty message")
        metadata = channel.get("thread_metadata")
        if metadata is not None:
            if metadata["locked"]:
                return _error(403, 50083, "Thread is locked")
            if metadata["archived"]:  # a message unarchives a thread that is not locked
                metadata["archived"] = False
                await self.dispatch("THREAD_UPDATE", channel)
        message = self._bot_message(channel_id, body)
        await self.dispatch("MESSAGE_CREATE", message)
        return _json(message)

    async def _patch_message(self, channel_id: int, message_id: int,
                             body: dict[str, Any]) -> web.Response:
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != str(channel_id):
            return _error(404, 10008, "Unknown Message")
        if message["author"]["id"] != str(self.BOT_ID):
            return _error(403, 50005, "Cannot edit a message authored by another user")
        if (bad := self._check_content(body)) is not None:
            return bad
        self._edit(message, body)
        await self.dispatch("MESSAGE_UPDATE", message)
        return _json(message)

    async def _start_thread(self, channel_id: int, body: dict[str, Any],
                            message_id: int | None) -> web.Response:
        parent = self.channels.get(channel_id)
        if parent is None or parent["type"] != 0:
            return _error(400, 50024, "Cannot execute action on this channel type")
        name = body.get("name") or ""
        if not 1 <= len(name) <= 100:
            return _error(400, 50035, "Invalid Form Body (name)")
        if message_id is not None:
            message = self.messages.get(message_id)
            if message is None or message["channel_id"] != str(channel_id):
                return _error(404, 10008, "Unknown Message")
            if message["flags"] & EPHEMERAL:
                return _error(400, 50035, "Cannot start a thread from an ephemeral message")
            thread_id, kind = message_id, 11
        else:
            thread_id, kind = self.new_id(), int(body.get("type") or 12)
        if thread_id in self.channels:
            return _error(400, 160004, "A thread has already been created for this message")
        thread = self._thread_payload(thread_id, channel_id, name, kind,
                                      int(body.get("auto_archive_duration") or 1440))
        thread["thread_metadata"]["invitable"] = bool(body.get("invitable", True))
        self.channels[thread_id] = thread
        self.thread_members[thread_id] = {self.BOT_ID}
        await self.dispatch("THREAD_CREATE", thread | {"newly_created": True})
        return _json(thread, 201)

    async def _patch_channel(self, channel_id: int, body: dict[str, Any]) -> web.Response:
        channel = self.channels.get(channel_id)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        if "name" in body:
            if not 1 <= len(body["name"]) <= 100:
                return _error(400, 50035, "Invalid Form Body (name)")
            channel["name"] = body["name"]
        metadata = channel.get("thread_metadata")
        if metadata is not None:
            for key in ("archived", "locked"):
                if key in body:
                    metadata[key] = bool(body[key])
            await self.dispatch("THREAD_UPDATE", channel)
        else:
            await self.dispatch("CHANNEL_UPDATE", channel)
        return _json(channel)
