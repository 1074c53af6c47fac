"""Web UI sign-in sessions, kept in the storage (so every gateway process serves them).

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .clock import iso, utc_now
from .keys import hash_key
from .models import Principal
from .storage.sessions import WebSessionRepo

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


class WebSessions:
    def __init__(self, repo: WebSessionRepo,
                 usable: Callable[[int], Awaitable[Principal | None]],
                 clock: Callable[[], datetime] = utc_now) -> None:
        """``usable(principal_id)``: the principal if its key would still authenticate."""
        self._repo = repo
        self._usable = usable
        self._clock = clock

    async def create(self, principal: Principal, key: str) -> str:
        """A new session for ``principal``, signed in with ``key``; returns the id to set in
        the cookie (the only place it exists in clear)."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        await self._repo.create(_hash(session_id), principal.id, hash_key(key),
                                secrets.token_urlsafe(32), iso(now), iso(now + IDLE_TIMEOUT))
        log.info("principal %s signed in to the web UI", principal.id)
        return session_id

    async def load(self, session_id: str | None) -> Session | None:
        """The live session behind a cookie value, or None (unknown, expired, key changed,
        principal disabled or removed)."""
        if not session_id or len(session_id) > 200:
            return None
        id_hash = _hash(session_id)
        record = await self._repo.get(id_hash)
        if record is None:
            return None
        now = self._clock()
        if record.expires_utc <= iso(now) or not record.same_key:
            await self.end(id_hash)
            return None
        principal = await self._usable(record.principal_id)
        if principal is None:
            await self.end(id_hash)
            return None
        new_expiry = min(now + IDLE_TIMEOUT, _parse(record.created_utc) + MAX_AGE)
        if iso(new_expiry) > iso(_parse(record.expires_utc) + REFRESH_EVERY):
            await self._repo.extend(id_hash, iso(new_expiry))
        flash = None
        if record.flash_json:
            data = json.loads(record.flash_json)
            flash = Flash(str(data.get("kind", "ok")), str(data.get("text", "")))
        return Session(id_hash, principal, record.csrf_token, flash)

    async def end(self, id_hash: bytes) -> None:
        await self._repo.delete(id_hash)

    async def rebind(self, id_hash: bytes, new_key: str) -> None:
        """Keep this session alive across its own principal's key rotation (others end)."""
        await self._repo.rebind(id_hash, hash_key(new_key))

    async def set_flash(self, id_hash: bytes, flash: Flash | None) -> None:
        value = json.dumps({"kind": flash.kind, "text": flash.text}) if flash else None
        await self._repo.set_flash(id_hash, value)


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
