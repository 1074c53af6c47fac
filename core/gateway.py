"""The facade every front calls. It owns the core's parts and checks roles, so no front can
forget a check:

- an **admin** creates clients and users, sees and audits everything, restores accounts;
- a **client** creates, lists and removes only its own users, naming them by its ``userid``,
  and acts for them (chat, recall, removal);
- a **user** chats, recalls and removes its own conversations, and rotates its own key.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from .accounts import AccountPool
from .budgets import Budgets
from .capabilities import can
from .chat import ChatListener, ChatRequest, ChatResult, ChatService
from .clock import iso, utc_now
from .config import BUDGET_KEYS, ConfigError, Settings
from .crypto import CredentialBox
from .embeddings import EmbeddingService
from .env_secrets import Secrets
from .errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge, Unauthorized
from .exchange import Attachment
from .keys import hash_key
from .models import (
    Conversation,
    ModelChoice,
    Persona,
    PlusChoice,
    Principal,
    Role,
    Turn,
)
from .oauth import AccessToken, PasswordGrant
from .observer import NO_OBSERVER
from .stopping import StopBoard, StopSignal
from .storage import Storage, storage_for
from .storage.usage_report import GroupBy
from .upstream import make_session
from .upstream_http import UpstreamSession
from .usage import Report, UsageService
from .web_sessions import WebSessions

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

AUTH_CACHE_SIZE = 50_000
"""Keys whose check is remembered, until any principal changes in any process."""
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""last_used is refreshed at most this often, so auth stays a read on the hot path."""
MAX_PAGE = 200
MAX_PERSONA_CHARS = 4000


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage,
        pool: AccountPool,
        chat_service: ChatService,
        box: CredentialBox,
        password_grant: PasswordGrant,
        secrets: Secrets | None = None,
        http_sessions: tuple[UpstreamSession | aiohttp.ClientSession, ...] = (),
        embeddings: EmbeddingService | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """The facade over its parts, which ``build_gateway`` makes from settings (tests and
        other setups may pass their own). The gateway owns them: ``open`` and ``close``.
        ``metrics``: what its parts report, when ``[metrics]`` is on (web/metrics.py serves
        it)."""
        self.settings = settings
        self.metrics = metrics
        self.storage = storage
        self.principals = storage.principals
        self.conversations = storage.conversations
        self.pool = pool
        self.chat_service = chat_service
        self.budgets = chat_service.budgets
        self.usage_service = UsageService(settings, storage, self.budgets)
        self.embedding_service = embeddings or EmbeddingService(
            settings, pool, storage.conversations, chat_service.limiter, chat_service.budgets,
            metrics or NO_OBSERVER)
        self.box = box
        self.password_grant = password_grant
        self.secrets = secrets or Secrets()
        self._http_sessions = http_sessions
        self._authenticated: dict[bytes, tuple[int, float, Principal]] = {}
        self.web_sessions = WebSessions(storage.sessions, self.usable)
        self.stops = StopBoard(storage)
        """Replies being written in this process, which ``stop_reply`` stops."""

    async def open(self) -> None:
        await self.storage.open()
        try:
            await self.budgets.open()
            await self.pool.open()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await self.chat_service.titles.close()
        await self.pool.close()
        for session in self._http_sessions:
            await session.close()
        await self.storage.close()

    async def __aenter__(self) -> Gateway:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- bootstrap

    async def bootstrap_admin(self) -> str | None:
        """On the very first start (no principal at all), create an admin and return its key."""
        # Several processes may start at once on one database: only one makes the admin.
        async with self.storage.lock("bootstrap"):
            if await self.principals.count():
                return None
            _, key = await self.principals.create("admin", "admin", plus=True)
        return key

    async def ensure_client(self, name: str) -> Principal:
        """The in-process client principal of a front such as the Discord bot, created on its
        first start. It acts through the facade directly, so its key is never shown."""
        found = await self.principals.client_named(name)
        if found is not None:
            return found
        principal, _ = await self.principals.create("client", _name(name))
        return principal

    async def create_admin(self, name: str) -> str:
        """A new admin and its key. A second admin of one name is refused: two admins that
        the lists cannot tell apart are a mistake (a repeated command), not a wish."""
        name = _name(name)
        admins, _ = await self.principals.list_page(role="admin", search=name, limit=MAX_PAGE)
        if any(item["name"] == name for item in admins):
            raise Conflict(f"an admin named {name!r} already exists: choose another name",
                           code="admin_exists")
        _, key = await self.principals.create("admin", name, plus=True)
        return key

    # ----------------------------------------------------------------- identity

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer KEY'",
                               code="missing_key")
        digest = hash_key(key.strip())
        # Read before the key is checked: a change that lands while the check runs moves the
        # version past this one, so what the check read is never remembered as current.
        version = self.principals.version
        trusted = self.storage.db.changes_reliable
        now = time.monotonic()
        cached = self._authenticated.get(digest)
        if cached is not None and cached[0] == version and now < cached[1] and trusted:
            return cached[2]
        principal = await self._check_key(key.strip())
        await self._touch(principal)
        if not trusted:
            # Changes made by other processes may be going unheard: remember nothing.
            return principal
        if len(self._authenticated) >= AUTH_CACHE_SIZE:
            self._authenticated.clear()
        # Any change to any principal (rotation, disabling, removal, plus), in any process,
        # moves the version, so a cached answer never outlives the state it was read from; it
        # also expires with the last-used resolution, so last_used keeps being refreshed.
        self._authenticated[digest] = (
            version, now + LAST_USED_RESOLUTION.total_seconds(), principal)
        return principal

    async def _check_key(self, key: str) -> Principal:
        principal = await self.principals.by_key(key)
        if principal is None:
            raise Unauthorized("this API key is not valid", code="invalid_key")
        refusal = await self._refusal(principal)
        if refusal is not None:
            raise refusal
        return principal

    async def _refusal(self, principal: Principal) -> Unauthorized | None:
        """Why a principal's key no longer works (disabled, or its client is), if it doesn't."""
        if principal.disabled_utc:
            return Unauthorized("this API key has been disabled", code="key_disabled")
        if principal.client_id is not None:
            client = await self.principals.get(principal.client_id)
            if client is None or client.disabled_utc:
                return Unauthorized("the client that issued this key has been disabled",
                                    code="key_disabled")
        return None

    async def usable(self, principal_id: int) -> Principal | None:
        """The principal, if its key would still authenticate (for web sessions)."""
        principal = await self.principals.get(principal_id)
        if principal is None or await self._refusal(principal) is not None:
            return None
        return principal

    async def member(self, actor: Principal, principal_id: int) -> Principal | None:
        """Any principal by id, for an admin (audit views name a conversation's owner)."""
        self.require_admin(actor)
        return await self.principals.get(principal_id)

    async def _touch(self, principal: Principal) -> None:
        now = utc_now()
        if principal.last_used_utc and principal.last_used_utc > iso(now - LAST_USED_RESOLUTION):
            return
        await self.principals.touch(principal.id, iso(now))

    async def acting_as(
        self,
        actor: Principal,
        user_id: str | None,
        *,
        username: str | None = None,
        plus: bool | None = None,
    ) -> Principal:
        """The principal a request acts as: the caller itself, or (for a client or admin) the
        user named by ``user_id``, created on first use when ``username`` is given."""
        if not user_id:
            return actor
        if actor.role == "user":
            raise Forbidden("only clients and admins may act for another user",
                            code="not_allowed")
        user = await self._find_user(actor, user_id)
        if user is None:
            if not username:
                raise NotFound(f"no user with userid {user_id!r}; pass username to create it",
                               code="user_not_found")
            user, _ = await self.principals.create(
                "user", _name(username), client_id=actor.id if actor.is_client else None,
                external_id=user_id, plus=bool(plus),
            )
            log.info("principal %s created user %s on first use", actor.id, user.id)
        if user.disabled_utc:
            raise Forbidden("this user has been disabled", code="user_disabled")
        return user

    async def _find_user(self, actor: Principal, ref: str) -> Principal | None:
        """A client finds only its own users, by its own userid. An admin finds an
        admin-created user by userid, else anyone by numeric id (userids are often numeric, as
        Discord's are, so the userid is tried first)."""
        if actor.is_client:
            return await self.principals.by_external_id(actor.id, ref)
        if actor.is_admin:
            if (found := await self.principals.by_external_id(None, ref)) is not None:
                return found
            if ref.isascii() and ref.isdigit() and len(ref) <= 18:  # an id SQLite can hold
                return await self.principals.get(int(ref))
        return None

    async def _managed_user(self, actor: Principal, ref: str | None) -> Principal:
        if actor.role == "user":
            raise Forbidden("only clients and admins manage users", code="not_allowed")
        if not ref:
            raise BadRequest("userid is required", code="missing_userid")
        user = await self._find_user(actor, ref)
        if user is None or user.id == actor.id:
            raise NotFound(f"no user with userid {ref!r}", code="user_not_found")
        return user

    # ----------------------------------------------------------------- user management

    async def add_user(
        self,
        actor: Principal,
        *,
        userid: str | None,
        username: str | None,
        plus: bool = False,
        role: Role = "user",
    ) -> tuple[Principal, str]:
        if actor.role == "user":
            raise Forbidden("only clients and admins may add users", code="not_allowed")
        if role != "user" and not actor.is_admin:
            raise Forbidden("only admins may create clients or admins", code="not_allowed")
        if actor.is_client and not userid:
            raise BadRequest("userid is required: the client's own id for this user",
                             code="missing_userid")
        name = _name(username or userid or role)
        # Only userids collide: a numeric userid that equals some principal's id is no conflict.
        existing = None
        if userid:
            existing = await self.principals.by_external_id(
                actor.id if actor.is_client else None, userid)
        if existing is not None:
            raise Conflict(f"a user with userid {userid!r} already exists", code="user_exists")
        return await self.principals.create(
            role, name, client_id=actor.id if actor.is_client else None,
            external_id=userid or None, plus=plus or role == "admin",
        )

    async def remove_user(self, actor: Principal, userid: str | None) -> Principal:
        user = await self._managed_user(actor, userid)
        await self.principals.delete(user.id)
        await self.conversations.prune_attachments()  # their conversations' images went too
        log.info("principal %s removed principal %s", actor.id, user.id)
        return user

    async def update_user(self, actor: Principal, userid: str | None, *,
                          plus: bool | None = None, disabled: bool | None = None,
                          limits: Mapping[str, float | str | None] | None = None) -> Principal:
        """Change a user's plus, disabled or budgets. ``limits``: budget kind -> a number, "none"
        (no limit) or "default" (the tier's). A client's own budget caps all its users
        together: only an admin sets it, naming the client."""
        user = await self._managed_user(actor, userid)
        limits = check_limits(limits or {})
        if plus is None and disabled is None and not limits:
            raise BadRequest("nothing to change: pass plus, disabled or a budget "
                             f"({', '.join(BUDGET_KEYS)})", code="no_change")
        if plus is not None or disabled is not None:
            user = await self.principals.update(user.id, plus=plus, disabled=disabled)
        if limits:
            user = await self.principals.set_limits(user.id, limits)
            log.info("principal %s set budgets of principal %s: %s", actor.id, user.id,
                     ", ".join(f"{k}={v}" for k, v in limits.items()))
        return user

    # ----------------------------------------------------------------- usage

    async def usage(self, actor: Principal, user_id: str | None = None) -> dict[str, Any]:
        """Use today and this month against the budgets: the caller's own, or (for a client or
        an admin) a user's it manages. A client's own is all its users' together."""
        target = actor if not user_id else await self._managed_user(actor, user_id)
        return await self.usage_service.summary(target)

    async def rate_limits(self, actor: Principal) -> dict[str, tuple[float, float, float]]:
        """What OpenAI's x-ratelimit headers tell: for "requests" (per minute) and "tokens"
        (the tightest token budget), the limit, what is left and seconds until it resets."""
        found: dict[str, tuple[float, float, float]] = {}
        limiter = self.chat_service.limiter
        if limiter.per_minute:
            left, wait = await limiter.state(actor.id)
            found["requests"] = (limiter.per_minute, left, wait)
        now = utc_now().timestamp()
        tightest = None
        for state in await self.budgets.states(actor):
            if state.kind.startswith("tokens") and (
                    tightest is None or state.remaining < tightest.remaining):
                tightest = state
        if tightest is not None:
            found["tokens"] = (tightest.limit, tightest.remaining,
                               max(0.0, tightest.resets.timestamp() - now))
        return found

    async def usage_report(self, actor: Principal, group_by: GroupBy, start: str | None = None,
                           end: str | None = None, *, own_key: bool = False) -> Report:
        """Totals over a date range; a client sees its own users only."""
        if actor.role == "user":
            raise Forbidden("only clients and admins see usage reports", code="not_allowed")
        return await self.usage_service.report(
            group_by, start, end, client_id=actor.id if actor.is_client else None,
            own_key=own_key)

    async def list_users(self, actor: Principal, *, search: str = "", limit: int = 50,
                         offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        if actor.role == "user":
            raise Forbidden("only clients and admins list users", code="not_allowed")
        return await self.principals.list_page(
            client_id=actor.id if actor.is_client else None, search=search,
            limit=_page(limit), offset=max(0, offset),
        )

    async def rotate_key(self, actor: Principal, userid: str | None = None) -> tuple[Principal,
                                                                                      str]:
        """A new key for the caller, or for a user the caller manages; the old key dies now."""
        target = actor if not userid else await self._managed_user(actor, userid)
        key = await self.principals.rotate_key(target.id)
        # Read back, so the answer shows the new key's prefix rather than the old one's.
        return await self.principals.get(target.id) or target, key

    async def set_own_key(self, actor: Principal, credential: str | None) -> None:
        """Store (encrypted) or clear the member's own upstream key."""
        sealed = self.box.seal(credential) if credential else None
        await self.principals.set_own_key(actor.id, sealed)

    async def own_key(self, actor: Principal) -> str | None:
        if not actor.has_own_key:
            return None
        sealed = await self.principals.own_key(actor.id)
        return self.box.open(sealed) if sealed else None

    # ----------------------------------------------------------------- conversations

    async def chat(self, actor: Principal, request: ChatRequest,
                   listener: ChatListener | None = None) -> ChatResult:
        if request.channel_ref is not None:
            persona = await self._persona_for(actor, request.channel_ref)
            request = dataclasses.replace(request, persona=persona)
        own_key = None
        if not request.access_token:
            # Also for follow-ups: an own-key conversation started with the stored key goes
            # on with it (a pool conversation ignores it).
            own_key = await self.own_key(actor)
        return await self.chat_service.chat(actor, request, own_key=own_key, listener=listener)

    async def regenerate(self, actor: Principal, conversation_id: str, turn_id: str, *,
                         listener: ChatListener | None = None, stop: StopSignal | None = None,
                         channel_ref: str | None = None, endpoint: str = "api") -> ChatResult:
        """A new answer to the prompt of ``turn_id``, the conversation's last turn, on the
        same account; it replaces that turn. Refused (409 ``not_last_turn``) for an older one."""
        conversation = await self.conversation_for(actor, conversation_id)
        return await self.chat(actor, await self._follow_up_request(
            actor, conversation, None, stop=stop, replace_turn=turn_id,
            channel_ref=channel_ref, endpoint=endpoint), listener)

    async def continue_reply(self, actor: Principal, conversation_id: str, *,
                             listener: ChatListener | None = None,
                             stop: StopSignal | None = None,
                             channel_ref: str | None = None,
                             endpoint: str = "api") -> ChatResult:
        """A follow-up asking the model to go on where its last answer stopped
        (``[chat] continue_prompt``)."""
        conversation = await self.conversation_for(actor, conversation_id)
        return await self.chat(actor, await self._follow_up_request(
            actor, conversation, self.settings.chat.continue_prompt, stop=stop,
            channel_ref=channel_ref, endpoint=endpoint), listener)

    async def _follow_up_request(self, actor: Principal, conversation: Conversation,
                                 prompt: str | None, **fields: Any) -> ChatRequest:
        access_token = None
        if conversation.mode == "own_key":
            access_token = await self.own_key(actor)
            if access_token is None:
                raise Conflict("this conversation runs on your own key, which you have "
                               "cleared: set it again, or start a new conversation",
                               code="mode_mismatch")
        return ChatRequest(prompt=prompt, conversation_id=conversation.id,
                           access_token=access_token, **fields)

    async def stop_reply(self, actor: Principal, message_id: str) -> None:
        """Stop the actor's reply being written (registered in ``stops``), in whichever
        process writes it: what arrived is stored, marked stopped."""
        if not await self.stops.stop(actor.id, message_id):
            raise NotFound("this reply is not being written any more", code="not_writing")

    # ----------------------------------------------------------------- personas

    async def _persona_for(self, actor: Principal, channel_ref: str) -> str | None:
        client_id = actor.id if actor.is_client else actor.client_id
        if client_id is None:
            return None
        persona = await self.storage.personas.get(client_id, channel_ref)
        return persona.system_prompt if persona else None

    def _persona_client(self, actor: Principal, client_id: int | None) -> int:
        """The client whose personas ``actor`` manages: its own (a client), any (an admin)."""
        if actor.is_client:
            return actor.id
        self.require_admin(actor)
        if client_id is None:
            raise BadRequest("name the client whose channel this is", code="missing_client")
        return client_id

    async def set_persona(self, actor: Principal, channel_ref: str, system_prompt: str, *,
                          label: str | None = None, client_id: int | None = None) -> Persona:
        """The system prompt of conversations started in a client's channel, added after
        the organisation's ``[chat] system_prompt``."""
        owner = self._persona_client(actor, client_id)
        text = system_prompt.replace("\r\n", "\n").strip()  # a form's line breaks are CRLF
        if not text:
            raise BadRequest("a persona needs a system prompt; to remove it, clear it",
                             code="empty_persona")
        if len(text) > MAX_PERSONA_CHARS:
            raise TooLarge(f"a persona may have at most {MAX_PERSONA_CHARS} characters; "
                           f"this one has {len(text)}", code="persona_too_large")
        if not channel_ref.strip():
            raise BadRequest("a persona needs a channel", code="missing_channel")
        if actor.is_admin:
            client = await self.principals.get(owner)
            if client is None or not client.is_client:
                raise NotFound(f"no client with id {owner}", code="client_not_found")
        previous = await self.storage.personas.get(owner, channel_ref)
        persona = Persona(client_id=owner, channel_ref=channel_ref.strip(),
                          label=(label or (previous.label if previous else "") or
                                 channel_ref).strip()[:100],
                          system_prompt=text, updated_utc=iso(utc_now()))
        await self.storage.personas.put(persona)
        log.info("principal %s set the persona of channel %s of client %s", actor.id,
                 persona.channel_ref, owner)
        return persona

    async def clear_persona(self, actor: Principal, channel_ref: str, *,
                            client_id: int | None = None) -> None:
        owner = self._persona_client(actor, client_id)
        if not await self.storage.personas.delete(owner, channel_ref):
            raise NotFound("this channel has no persona", code="persona_not_found")
        log.info("principal %s cleared the persona of channel %s of client %s", actor.id,
                 channel_ref, owner)

    async def clients(self, actor: Principal) -> list[Principal]:
        """Every client (an admin's persona pages name them)."""
        self.require_admin(actor)
        found, _ = await self.principals.list_page(role="client", limit=MAX_PAGE)
        clients = [await self.principals.get(int(item["id"])) for item in found]
        return [client for client in clients if client is not None]

    async def personas(self, actor: Principal) -> list[Persona]:
        """A client's own personas; every client's for an admin."""
        if actor.is_client:
            return await self.storage.personas.list(actor.id)
        self.require_admin(actor)
        return await self.storage.personas.list()

    async def conversation_for(self, actor: Principal, conversation_id: str) -> Conversation:
        """A conversation the actor may see: its own, or anyone's for an admin."""
        conversation = await self.conversations.get(conversation_id)
        if conversation is None or not (
            actor.is_admin or conversation.owner_id == actor.id
        ):
            raise NotFound("no such conversation", code="conversation_not_found")
        return conversation

    async def response_turn(self, actor: Principal, response_id: str) -> tuple[Conversation,
                                                                                Turn]:
        """The conversation and turn a /v1/responses id names (ours: ``resp_`` and the turn's
        id), if the actor may continue it: its own, and not created with ``store=false``."""
        turn = None
        hex_id = response_id.removeprefix("resp_")
        if response_id.startswith("resp_") and len(hex_id) == 32 and \
                all(c in "0123456789abcdef" for c in hex_id):
            turn = await self.conversations.turn(str(uuid.UUID(hex_id)))
        conversation = await self.conversations.get(turn.conversation_id) if turn else None
        stored = turn.exchange if turn else None
        if turn is None or conversation is None or conversation.owner_id != actor.id or \
                stored is None or stored.get("store") is False:
            raise NotFound(f"Previous response with id '{response_id}' not found.",
                           code="previous_response_not_found")
        return conversation, turn

    async def list_conversations(
        self, actor: Principal, *, limit: int = 50, offset: int = 0, everyone: bool = False
    ) -> tuple[list[Conversation], int]:
        """The actor's conversations, newest first; an admin may ask for everyone's."""
        owner = None if (everyone and actor.is_admin) else actor.id
        return await self.conversations.list_page(owner_id=owner, limit=_page(limit),
                                             offset=max(0, offset))

    async def recall(self, actor: Principal, conversation_id: str, *, limit: int = -1,
                     offset: int = 0) -> tuple[Conversation, list[Turn]]:
        conversation = await self.conversation_for(actor, conversation_id)
        turns = await self.conversations.turns(conversation.id, limit=limit, offset=offset)
        return conversation, turns

    async def attachment(self, actor: Principal, conversation_id: str,
                         sha256: str) -> Attachment:
        """An attachment of a conversation the actor may see."""
        conversation = await self.conversation_for(actor, conversation_id)
        found = await self.conversations.attachment_of(conversation.id, sha256.lower())
        if found is None:
            raise NotFound("no such attachment in this conversation",
                           code="attachment_not_found")
        return found

    async def remove_conversation(self, actor: Principal, conversation_id: str) -> Conversation:
        conversation = await self.conversation_for(actor, conversation_id)
        if not await self.conversations.delete(conversation.id):
            raise NotFound("no such conversation", code="conversation_not_found")
        return conversation

    async def conversation_by_ref(self, client: Principal, ref: str) -> Conversation | None:
        return await self.conversations.by_external_ref(client.id, ref)

    async def set_conversation_ref(self, client: Principal, conversation_id: str,
                                   ref: str | None) -> None:
        conversation = await self.conversations.get(conversation_id)
        owner = await self.principals.get(conversation.owner_id) if conversation else None
        if conversation is None or owner is None or not (
            owner.id == client.id or owner.client_id == client.id
        ):
            raise NotFound("no such conversation", code="conversation_not_found")
        await self.conversations.set_external_ref(conversation_id, client.id, ref)

    # ----------------------------------------------------------------- accounts and stats

    def require_admin(self, actor: Principal) -> None:
        if not actor.is_admin:
            raise Forbidden("this needs an admin key", code="admin_only")

    def accounts(self, actor: Principal) -> list[dict[str, Any]]:
        self.require_admin(actor)
        return [account.snapshot() for account in self.pool]

    async def set_account_enabled(self, actor: Principal, name: str,
                                  enabled: bool) -> dict[str, Any]:
        self.require_admin(actor)
        account = self.pool.get(name)
        if account is None:
            raise NotFound(f"no account named {name!r}", code="account_not_found")
        await self.pool.set_enabled(account, enabled)
        log.info("admin %s %s account %s", actor.id, "enabled" if enabled else "disabled", name)
        return account.snapshot()

    def models(self, actor: Principal) -> list[tuple[str, str]]:
        """Each model the actor may ask for, with the account that serves it first."""
        choice: PlusChoice = "any" if actor.plus or actor.is_admin else "false"
        return [(model, account.name) for model, account in self.pool.models_for(choice)]

    def model_capabilities(self, actor: Principal) -> list[tuple[str, str, list[str]]]:
        """Each model the actor may ask for, the account that serves it first, and what it
        can do there (any of its accounts; a request needing more goes where it can)."""
        choice: PlusChoice = "any" if actor.plus or actor.is_admin else "false"
        entries: dict[str, tuple[str, set[str]]] = {}
        for model, account in self.pool.models_for(choice):
            have: set[str] = set()
            for other in self.pool.candidates(choice, model):
                if other.health() != "out":
                    have |= other.settings.capabilities
            entries[model] = (account.name, have)
        for model, account in self.embedding_service.models(choice):
            _, have = entries.setdefault(model, (account.name, set()))
            have.add("embeddings")
        return [(model, owner, sorted(have)) for model, (owner, have) in entries.items()]

    async def embeddings(self, actor: Principal, body: Any) -> dict[str, Any]:
        return await self.embedding_service.embed(actor, body)
    def model_menu(self, actor: Principal) -> list[ModelChoice]:
        """The models the actor may pick for a new conversation (fronts' pickers), each with
        its tier and what it can do."""
        choice: PlusChoice = "any" if actor.plus or actor.is_admin else "false"
        return [ModelChoice(model, account.tier, account.name)
                for model, account in self.pool.models_for(choice)]

    async def images_refusal(self, actor: Principal, conversation: Conversation | None = None,
                             *, plus: PlusChoice = "false",
                             model: str | None = None) -> str | None:
        """Why images attached to a prompt would not be seen, said before a front downloads
        them: the conversation's account (or every account a new one may use) cannot take
        images. None: they will be. The rest of the message goes on without them."""
        if conversation is not None:
            if conversation.mode != "pool":
                return None  # the member's own key: its upstream decides
            account = self.pool.get(conversation.account or "")
            if account is None or can(account.settings.api, account.settings.capabilities,
                                      "vision"):
                return None  # a gone account is refused for the whole turn, with its reason
            return (f"this conversation's model ({conversation.model}) does not read images; "
                    "start a new conversation on one that does")
        if await self.own_key(actor) is not None:
            return None  # a new conversation runs on the member's own key: its upstream decides
        if not (actor.plus or actor.is_admin):
            plus = "false"  # asking for plus is refused on its own, with its reason
        if self.pool.candidates(plus, model, ["vision"]):
            return None
        if plus == "false" and (actor.plus or actor.is_admin) and \
                self.pool.candidates("true", model, ["vision"]):
            return "no free-tier model reads images; ask on the plus tier for one that does"
        if model is not None:
            return f"the model {model} does not read images"
        return "no model you may use here reads images"

    def tiers_in_service(self) -> set[str]:
        """The tiers that have at least one account not out of service."""
        return {account.tier for account in self.pool if account.health() != "out"}

    @property
    def access_token_configured(self) -> bool:
        return self.password_grant.configured

    async def health(self) -> dict[str, Any]:
        """What a load balancer's health check needs; raises ``StorageUnavailable`` when the
        database does not answer."""
        await self.storage.ping()
        counts = {"healthy": 0, "cooling": 0, "out": 0}
        for account in self.pool:
            counts[account.health()] += 1
        return {"status": "ok", "database": "ok", "accounts": counts}

    async def stats(self, actor: Principal) -> dict[str, Any]:
        self.require_admin(actor)
        return await self.conversations.usage_stats()

    def account_health(self, actor: Principal) -> list[dict[str, Any]]:
        """Read-only account health for an admin, or for a client front whose own admins watch
        the pool (the Discord bot's /admin accounts). Only admins enable or disable accounts."""
        if not (actor.is_admin or actor.is_client):
            raise Forbidden("only admins and clients see account health", code="not_allowed")
        return [account.snapshot() for account in self.pool]

    async def client_stats(self, actor: Principal) -> dict[str, Any]:
        """Usage statistics of a client's own users (for an admin: everyone's)."""
        if actor.is_admin:
            return await self.conversations.usage_stats()
        if not actor.is_client:
            raise Forbidden("only admins and clients see usage statistics", code="not_allowed")
        return await self.conversations.usage_stats(client_id=actor.id)

    async def access_token(self, email: str, password: str) -> AccessToken:
        return await self.password_grant.exchange(email, password)


def check_limits(limits: Mapping[str, float | str | None]) -> dict[str, float | str | None]:
    """Budget changes as update-user takes them: a number of at least 0, "none" (no limit) or
    "default" (the tier's), for a known kind."""
    checked: dict[str, float | str | None] = {}
    for kind, value in limits.items():
        if kind not in BUDGET_KEYS:
            raise BadRequest(f"unknown budget {kind!r}; budgets are {', '.join(BUDGET_KEYS)}",
                             code="bad_budget")
        if value is None or value == "none":
            checked[kind] = None
        elif value == "default":
            checked[kind] = "default"
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = -1.0
            if not number >= 0 or number == float("inf") or (
                    kind.startswith("tokens") and number != int(number)):
                raise BadRequest(
                    f"{kind} must be a {'whole ' if kind.startswith('tokens') else ''}number of "
                    f"at least 0, 'none' or 'default'; got {value!r}", code="bad_budget")
            checked[kind] = number
    return checked


def _page(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


def _name(value: str) -> str:
    value = " ".join(value.split())
    if not value or len(value) > 100:
        raise BadRequest("a name must have 1 to 100 characters", code="bad_name")
    return value


def build_gateway(settings: Settings, *, environ: dict[str, str] | None = None,
                  clock: Callable[[], float] = time.time) -> Gateway:
    """A gateway with the parts ``settings`` describe (not yet opened), its secrets read from
    ``environ`` (default: the process's environment). ``clock``: wall-clock seconds, for
    account cool-downs and the rate limit (tests pass a fake one)."""
    secrets = Secrets.read(settings, environ)
    storage = storage_for(settings.storage, secrets.storage_password)
    metrics = None
    if settings.metrics.enabled:
        from .metrics import Metrics  # prometheus_client: imported only when metrics are on

        metrics = Metrics(settings.billing.currency)
    observer = metrics or NO_OBSERVER
    pool = AccountPool(settings, storage.accounts, secrets, clock=clock, observer=observer)
    if metrics is not None:
        metrics.watch(pool)
    own_key_session = make_session(settings.proxy_for(settings.own_key.proxy))
    # The identity provider is asked now and then: aiohttp's client, without cookies.
    oauth_session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    chat_service = ChatService(
        settings, pool, storage.conversations, own_key_session,
        limiter=storage.rate_limiter(settings.limits.user_requests_per_minute, clock),
        lock=storage.lock, budgets=Budgets(settings, storage, clock, observer),
        observer=observer)
    storage.commit_on_the_loop_when(chat_service.quiet)
    password_grant = PasswordGrant(settings.access_token, secrets.oauth_client_secret,
                                   oauth_session)
    return Gateway(settings, storage=storage, pool=pool, chat_service=chat_service,
                   box=credential_box(settings, storage, secrets), password_grant=password_grant,
                   secrets=secrets, http_sessions=(own_key_session, oauth_session),
                   metrics=metrics)


def credential_box(settings: Settings, storage: Storage, secrets: Secrets) -> CredentialBox:
    """The key that seals own keys: from the environment; on SQLite alone, else a key file
    beside the database. Processes sharing a database must share the key, so a shared
    storage without it is refused."""
    secret = secrets.credential_key
    if secret is None and storage.shared:
        raise ConfigError(
            f"${settings.secret_key_env} is not set: with {storage!r}, every gateway process "
            f"must seal members' own keys with the same key. Generate one with {_NEW_KEY} "
            "and give it to every process.")
    key_file = Path(settings.storage.sqlite_path).parent / "credentials.key"
    try:
        return CredentialBox.from_env_or_file(secret.get_secret_value() if secret else None,
                                              key_file)
    except ValueError:  # the operator's to fix: one line, not a traceback (nor the key)
        where = f"${settings.secret_key_env}" if secret else str(key_file)
        raise ConfigError(f"{where} does not hold a key that can seal members' own keys "
                          f"(32 bytes in url-safe base64: 44 characters); generate one with "
                          f"{_NEW_KEY}") from None


_NEW_KEY = ("`python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`")
