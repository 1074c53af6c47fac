"""Principals (admins, clients, users) and their keys. No permission checks here: the
``Gateway`` facade decides who may call what.

Every change to a principal is announced on ``CHANGES`` (to every process, on PostgreSQL), and
``version`` moves on each one, here or elsewhere: a cache of principals (the gateway's
authentication cache) compares versions to know when it is stale.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from ..clock import iso, utc_now
from ..errors import Conflict, NotFound
from ..keys import hash_key, new_key, shown_prefix
from ..models import Principal, Role
from .conversation_cache import ConversationCache
from .database import Database, IntegrityError, Row, Transaction

CHANGES = "gateway_principals"

_COLUMNS = (
    "id, role, name, client_id, external_id, plus, key_prefix, created_utc, disabled_utc,"
    " last_used_utc, own_key_enc IS NOT NULL AS has_own_key, limits_json"
)


def _principal(row: Row) -> Principal:
    return Principal(
        id=row["id"],
        role=row["role"],
        name=row["name"],
        client_id=row["client_id"],
        external_id=row["external_id"],
        plus=bool(row["plus"]),
        key_prefix=row["key_prefix"],
        created_utc=row["created_utc"],
        disabled_utc=row["disabled_utc"],
        last_used_utc=row["last_used_utc"],
        has_own_key=bool(row["has_own_key"]),
        limits=_limits(row["limits_json"]),
    )


def _number(kind: str, value: float | str) -> float:
    number = float(value)
    # Token budgets are whole numbers: kept as int, so they read back as they were set.
    return int(number) if kind.startswith("tokens") else number


def _limits(text: str | None) -> tuple[tuple[str, float | None], ...]:
    return tuple(sorted(json.loads(text).items())) if text else ()


class PrincipalRepo:
    def __init__(self, db: Database, *,
                 conversation_cache: ConversationCache | None = None) -> None:
        self.db = db
        self._conversation_cache = conversation_cache
        """Removing a member or a client removes their conversations with them."""
        self.version = 0
        """Bumped around every write, here or in another process, so a cache of principals
        knows when it is stale."""
        db.subscribe(CHANGES, self._changed_elsewhere)

    def _changed_elsewhere(self, payload: str) -> None:
        self.version += 1

    @asynccontextmanager
    async def _changing(self) -> AsyncIterator[Transaction]:
        # Bumped before and after: a reader that started before the change and finishes after
        # it sees a version that moved, and caches nothing it read.
        self.version += 1
        try:
            async with self.db.transaction() as tx:
                yield tx
                await tx.notify(CHANGES)
        finally:
            self.version += 1

    async def create(
        self,
        role: Role,
        name: str,
        *,
        client_id: int | None = None,
        external_id: str | None = None,
        plus: bool = False,
    ) -> tuple[Principal, str]:
        """A new principal and its key, which exists in clear only in this return value."""
        key = new_key()
        try:
            async with self._changing() as tx:
                row = await tx.fetchone(
                    "INSERT INTO principals (role, name, client_id, external_id, plus, key_hash,"
                    " key_prefix, created_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (role, name, client_id, external_id, plus, hash_key(key),
                     shown_prefix(key), iso(utc_now())),
                )
                new_id = row[0] if row else 0
        except IntegrityError:
            raise Conflict(
                f"a user with userid {external_id!r} already exists", code="user_exists"
            ) from None
        principal = await self.get(int(new_id or 0))
        assert principal is not None
        return principal, key

    async def get(self, principal_id: int) -> Principal | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM principals WHERE id = ?",
                                     (principal_id,), quick=True)
        return _principal(row) if row else None

    async def by_key(self, key: str) -> Principal | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM principals WHERE key_hash = ?",
                                     (hash_key(key),), quick=True)
        return _principal(row) if row else None

    async def by_external_id(self, client_id: int | None, external_id: str) -> Principal | None:
        """A user by its creator's own id for it; ``client_id`` None: the users admins made."""
        params: tuple[Any, ...]
        if client_id is None:
            where, params = "client_id IS NULL AND external_id = ?", (external_id,)
        else:
            where, params = "client_id = ? AND external_id = ?", (client_id, external_id)
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM principals WHERE {where}",
                                        params)
        return _principal(row) if row else None

    async def client_named(self, name: str) -> Principal | None:
        """The first top-level client with this name (a front's own client principal)."""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM principals WHERE role = 'client' AND name = ?"
            " AND client_id IS NULL ORDER BY id LIMIT 1", (name,),
        )
        return _principal(row) if row else None

    async def count(self) -> int:
        row = await self.db.fetchone("SELECT count(*) FROM principals")
        return int(row[0]) if row else 0

    async def list_page(
        self,
        *,
        client_id: int | None = None,
        role: Role | None = None,
        search: str = "",
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Principals with their usage counts, newest first, and the total that matched."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if client_id is not None:
            where.append("p.client_id = ?")
            params.append(client_id)
        if role is not None:
            where.append("p.role = ?")
            params.append(role)
        if search:
            # Case-insensitive on both engines (SQLite's LIKE is, for ASCII).
            like = "LIKE" if self.db.dialect == "sqlite" else "ILIKE"
            where.append(f"(p.name {like} ? ESCAPE '\\' OR p.external_id {like} ? ESCAPE '\\')")
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            params += [pattern, pattern]
        clause = " AND ".join(where)
        total_row = await self.db.fetchone(
            f"SELECT count(*) FROM principals p WHERE {clause}", params
        )
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS.replace('own_key_enc', 'p.own_key_enc')},"
            " (SELECT count(*) FROM conversations c WHERE c.owner_id = p.id) AS conversations,"
            " (SELECT count(*) FROM usage u WHERE u.principal_id = p.id AND u.purpose <> 'title')"
            " AS requests,"
            " (SELECT coalesce(sum(coalesce(u.input_tokens, 0) + coalesce(u.output_tokens, 0)), 0)"
            "  FROM usage u WHERE u.principal_id = p.id) AS tokens"
            f" FROM principals p WHERE {clause} ORDER BY p.id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        items = []
        for row in rows:
            item = _principal(row).public()
            item.update(conversations=row["conversations"], requests=row["requests"],
                        tokens=row["tokens"])
            items.append(item)
        return items, int(total_row[0]) if total_row else 0

    async def delete(self, principal_id: int) -> None:
        try:
            async with self._changing() as tx:
                if not await tx.execute("DELETE FROM principals WHERE id = ?", (principal_id,)):
                    raise NotFound("no such user")
        finally:
            if self._conversation_cache is not None:
                self._conversation_cache.clear()

    async def update(
        self, principal_id: int, *, plus: bool | None = None, disabled: bool | None = None
    ) -> Principal:
        async with self._changing() as tx:
            if plus is not None:
                await tx.execute("UPDATE principals SET plus = ? WHERE id = ?",
                                 (plus, principal_id))
            if disabled is not None:
                await tx.execute(
                    "UPDATE principals SET disabled_utc = ? WHERE id = ?",
                    (iso(utc_now()) if disabled else None, principal_id),
                )
        principal = await self.get(principal_id)
        if principal is None:
            raise NotFound("no such user")
        return principal

    async def set_limits(self, principal_id: int,
                         changes: Mapping[str, float | str | None]) -> Principal:
        """Apply budget changes: a number sets the kind, None lifts it ("none"), "default"
        returns it to the tier default."""
        async with self._changing() as tx:
            row = await tx.fetchone("SELECT limits_json FROM principals WHERE id = ?",
                                    (principal_id,))
            if row is None:
                raise NotFound("no such user")
            limits: dict[str, float | None] = dict(_limits(row[0]))
            for kind, value in changes.items():
                if value == "default":
                    limits.pop(kind, None)
                else:
                    limits[kind] = None if value is None else _number(kind, value)
            await tx.execute("UPDATE principals SET limits_json = ? WHERE id = ?",
                             (json.dumps(limits, sort_keys=True) if limits else None,
                              principal_id))
        principal = await self.get(principal_id)
        assert principal is not None
        return principal

    async def rotate_key(self, principal_id: int) -> str:
        """A new key for the principal; the old one stops working when this returns."""
        key = new_key()
        async with self._changing() as tx:
            if not await tx.execute(
                "UPDATE principals SET key_hash = ?, key_prefix = ? WHERE id = ?",
                (hash_key(key), shown_prefix(key), principal_id),
            ):
                raise NotFound("no such user")
        return key

    async def touch(self, principal_id: int, when: str) -> None:
        """Record a use. Not a change that any cache must hear of: no announcement."""
        await self.db.write([("UPDATE principals SET last_used_utc = ? WHERE id = ?",
                              (when, principal_id))], quick=True)

    async def set_own_key(self, principal_id: int, sealed: bytes | None) -> None:
        async with self._changing() as tx:
            await tx.execute("UPDATE principals SET own_key_enc = ? WHERE id = ?",
                             (sealed, principal_id))

    async def own_key(self, principal_id: int) -> bytes | None:
        row = await self.db.fetchone("SELECT own_key_enc FROM principals WHERE id = ?",
                                        (principal_id,))
        return row[0] if row else None
