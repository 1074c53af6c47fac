"""Storage: the only package that speaks SQL.

    Storage                      what the gateway holds: the repositories, over one database
    ├── principals               PrincipalRepo: admins, clients, users, their key hashes
    ├── conversations            ConversationRepo: conversations, turns, the usage log
    ├── sessions                 WebSessionRepo: web UI sign-ins
    ├── accounts                 AccountStateRepo: cool-downs and removals, shared
    ├── personas                 PersonaRepo: a system prompt per channel of a client
    └── db                       Database: SqliteDatabase (one process, the default) or
                                 PostgresDatabase (any number of processes)

``storage_for(settings.storage)`` builds the one the settings name; ``await storage.open()``
connects and migrates. Repositories return the domain's records (``core.models``) and raise the
domain's errors (``Conflict`` for a duplicate or a lost race), never a driver's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic import SecretStr

from ..config import StorageSettings
from .account_state import AccountState, AccountStateRepo
from .conversation_cache import ConversationCache
from .conversations import ConversationRepo, UsageRecord
from .database import ChangeListener, Database, Leadership, StorageError, StorageUnavailable
from .limits import MemoryRateLimiter, RateLimiter, SharedRateLimiter
from .personas import PersonaRepo
from .principals import PrincipalRepo
from .sessions import WebSessionRecord, WebSessionRepo
from .sqlite import SqliteDatabase

__all__ = [
    "AccountState",
    "Database",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "UsageRecord",
    "WebSessionRecord",
    "storage_for",
]


class Storage:
    def __init__(self, db: Database) -> None:
        self.db = db
        # One process owns a SQLite file: what it wrote last is what the file holds, so the
        # conversations it answers lately are kept in memory (core/storage/conversation_cache).
        cache = None if db.shared else ConversationCache()
        self.principals = PrincipalRepo(db, conversation_cache=cache)
        self.conversations = ConversationRepo(db, cache)
        self.sessions = WebSessionRepo(db)
        self.accounts = AccountStateRepo(db)
        self.personas = PersonaRepo(db)

    def __repr__(self) -> str:
        return repr(self.db)

    @property
    def shared(self) -> bool:
        """True when several processes may share this storage (PostgreSQL)."""
        return self.db.shared

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the database answers."""
        await self.db.fetchone("SELECT 1")

    def commit_on_the_loop_when(self, quiet: Callable[[], bool]) -> None:
        """``quiet()``: True when nothing else waits for the event loop (see
        ``SqliteDatabase.commit_on_the_loop_when``)."""
        self.db.commit_on_the_loop_when(quiet)

    def lock(self, key: str) -> AbstractAsyncContextManager[Any]:
        """A lock held by one holder at a time across every process (see ``Database.lock``)."""
        return self.db.lock(key)

    def subscribe(self, channel: str, listener: ChangeListener) -> None:
        """``listener(payload)`` for every ``announce`` on ``channel``, by any process."""
        self.db.subscribe(channel, listener)

    async def announce(self, channel: str, payload: str) -> None:
        """Tell every process sharing the storage (this one included)."""
        async with self.db.transaction() as tx:
            await tx.notify(channel, payload)

    def leadership(self, name: str) -> Leadership:
        return self.db.leadership(name)

    def rate_limiter(self, per_minute: int,
                     clock: Callable[[], float] = time.time) -> RateLimiter:
        if self.db.shared:
            return SharedRateLimiter(self.db, per_minute, clock)
        return MemoryRateLimiter(per_minute, clock)


def storage_for(settings: StorageSettings, password: SecretStr | None = None) -> Storage:
    """The storage ``settings`` name (not yet opened); ``password``: PostgreSQL's."""
    if settings.backend == "sqlite":
        return Storage(SqliteDatabase(settings.sqlite_path,
                                      busy_timeout_ms=settings.busy_timeout_ms))
    from .postgres import PostgresDatabase  # asyncpg only when it is used

    return Storage(PostgresDatabase(
        settings.url, password=password.get_secret_value() if password else None,
        pool_size=settings.pool_size, connect_timeout_s=settings.connect_timeout_s))
