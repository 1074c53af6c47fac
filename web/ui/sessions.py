"""Web UI sessions, kept on the server in SQLite (migration ``0002_web_sessions``).

The browser holds only a random session id (256 bits) in an HttpOnly, SameSite=Lax cookie; the
database keeps its SHA-256, so a copy of the database opens no session. A session is tied to the
principal *and to the key it was opened with*: rotating, disabling or removing that key ends it
at the next request. Sessions end after ``IDLE_TIMEOUT`` without use and after ``MAX_AGE`` in all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

from core.clock import iso, utc_now
from core.gateway import Gateway
from core.keys import hash_key
from core.models import Principal

log = logging.getLogger(__name__)

COOKIE = "gw_session"
IDLE_TIMEOUT = timedelta(hours=12)
MAX_AGE = timedelta(days=7)
REFRESH_EVERY = timedelta(minutes=10)
"""A used session's expiry moves forward at most this often, so most requests only read."""


@dataclass(frozen=True, slots=True)
class Flash:
    """A one-time notice shown on the next page (``kind``: ``ok`` or ``error``)."""

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: bytes
    principal: Principal
    csrf_token: str
    flash: Flash | None


def _hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8")).digest()


class SessionStore:
    def __init__(self, gateway: Gateway, clock: Callable[[], datetime] = utc_now) -> None:
        self.gateway = gateway
        self.store = gateway.store
        self._clock = clock

    async def create(self, principal: Principal, key: str) -> str:
        """A new session for ``principal``, signed in with ``key``; returns the id to set in
        the cookie (the only place it exists in clear)."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        async with self.store.transaction() as tx:
            # Sign-ins are rare: a good moment to forget sessions that ran out.
            await tx.execute("DELETE FROM web_sessions WHERE expires_utc < ?", (iso(now),))
            await tx.execute(
                "INSERT INTO web_sessions (id_hash, principal_id, key_hash, csrf_token,"
                " created_utc, expires_utc) VALUES (?, ?, ?, ?, ?, ?)",
                (_hash(session_id), principal.id, hash_key(key), secrets.token_urlsafe(32),
                 iso(now), iso(now + IDLE_TIMEOUT)),
            )
        log.info("principal %s signed in to the web UI", principal.id)
        return session_id

    async def load(self, session_id: str | None) -> Session | None:
        """The live session behind a cookie value, or None (unknown, expired, key changed,
        principal disabled or removed)."""
        if not session_id or len(session_id) > 200:
            return None
        id_hash = _hash(session_id)
        row = await self.store.fetchone(
            "SELECT s.principal_id, s.csrf_token, s.flash_json, s.created_utc, s.expires_utc,"
            " s.key_hash = p.key_hash AS same_key FROM web_sessions s"
            " JOIN principals p ON p.id = s.principal_id WHERE s.id_hash = ?",
            (id_hash,),
        )
        if row is None:
            return None
        now = self._clock()
        if row["expires_utc"] <= iso(now) or not row["same_key"]:
            await self.end(id_hash)
            return None
        principal = await self._usable(int(row["principal_id"]))
        if principal is None:
            await self.end(id_hash)
            return None
        new_expiry = min(now + IDLE_TIMEOUT, _parse(row["created_utc"]) + MAX_AGE)
        if iso(new_expiry) > iso(_parse(row["expires_utc"]) + REFRESH_EVERY):
            async with self.store.transaction() as tx:
                await tx.execute("UPDATE web_sessions SET expires_utc = ? WHERE id_hash = ?",
                                 (iso(new_expiry), id_hash))
        flash = None
        if row["flash_json"]:
            data = json.loads(row["flash_json"])
            flash = Flash(str(data.get("kind", "ok")), str(data.get("text", "")))
        return Session(id_hash, principal, row["csrf_token"], flash)

    async def _usable(self, principal_id: int) -> Principal | None:
        """The principal, if its key would still authenticate (the same rules as
        ``Gateway.authenticate``: not disabled, nor issued by a disabled client)."""
        principals = self.gateway.principals
        principal = await principals.get(principal_id)
        if principal is None or principal.disabled_utc:
            return None
        if principal.client_id is not None:
            client = await principals.get(principal.client_id)
            if client is None or client.disabled_utc:
                return None
        return principal

    async def end(self, id_hash: bytes) -> None:
        async with self.store.transaction() as tx:
            await tx.execute("DELETE FROM web_sessions WHERE id_hash = ?", (id_hash,))

    async def rebind(self, id_hash: bytes, new_key: str) -> None:
        """Keep this session alive across its own principal's key rotation (others end)."""
        async with self.store.transaction() as tx:
            await tx.execute("UPDATE web_sessions SET key_hash = ? WHERE id_hash = ?",
                             (hash_key(new_key), id_hash))

    async def set_flash(self, id_hash: bytes, flash: Flash | None) -> None:
        value = json.dumps({"kind": flash.kind, "text": flash.text}) if flash else None
        async with self.store.transaction() as tx:
            await tx.execute("UPDATE web_sessions SET flash_json = ? WHERE id_hash = ?",
                             (value, id_hash))


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def set_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    response.set_cookie(
        COOKIE, session_id, max_age=int(MAX_AGE.total_seconds()), path="/", httponly=True,
        samesite="Lax", secure=is_https(request),
    )


def clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Lax",
                        secure=is_https(request))


def is_https(request: web.Request) -> bool:
    """Behind a TLS-terminating proxy the cookie is still marked Secure."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
