"""Web UI sign-ins, kept in the database so that every process serves every session.

Only a hash of the session id is kept. A session holds the hash of the key it was opened with:
when that key is rotated or removed, ``get`` reports the session as signed with another key.
"""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database


@dataclass(frozen=True, slots=True)
class WebSessionRecord:
    principal_id: int
    csrf_token: str
    flash_json: str | None
    created_utc: str
    expires_utc: str
    same_key: bool
    """False when the principal's key changed since the session was opened."""


class WebSessionRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, id_hash: bytes, principal_id: int, key_hash: bytes, csrf_token: str,
                     created_utc: str, expires_utc: str) -> None:
        async with self.db.transaction() as tx:
            # Sign-ins are rare: a good moment to forget sessions that ran out.
            await tx.execute("DELETE FROM web_sessions WHERE expires_utc < ?", (created_utc,))
            await tx.execute(
                "INSERT INTO web_sessions (id_hash, principal_id, key_hash, csrf_token,"
                " created_utc, expires_utc) VALUES (?, ?, ?, ?, ?, ?)",
                (id_hash, principal_id, key_hash, csrf_token, created_utc, expires_utc),
            )

    async def get(self, id_hash: bytes) -> WebSessionRecord | None:
        row = await self.db.fetchone(
            "SELECT s.principal_id, s.csrf_token, s.flash_json, s.created_utc, s.expires_utc,"
            " s.key_hash = p.key_hash AS same_key FROM web_sessions s"
            " JOIN principals p ON p.id = s.principal_id WHERE s.id_hash = ?",
            (id_hash,),
        )
        if row is None:
            return None
        return WebSessionRecord(int(row["principal_id"]), row["csrf_token"], row["flash_json"],
                                row["created_utc"], row["expires_utc"], bool(row["same_key"]))

    async def extend(self, id_hash: bytes, expires_utc: str) -> None:
        await self._update("expires_utc", expires_utc, id_hash)

    async def rebind(self, id_hash: bytes, key_hash: bytes) -> None:
        await self._update("key_hash", key_hash, id_hash)

    async def set_flash(self, id_hash: bytes, flash_json: str | None) -> None:
        await self._update("flash_json", flash_json, id_hash)

    async def _update(self, column: str, value: object, id_hash: bytes) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(f"UPDATE web_sessions SET {column} = ? WHERE id_hash = ?",
                             (value, id_hash))

    async def delete(self, id_hash: bytes) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM web_sessions WHERE id_hash = ?", (id_hash,))
