"""Personas: a system prompt per channel of a client (a Discord channel of the bot), kept in
the database so that every process answers with it."""

from __future__ import annotations

from ..models import Persona
from .database import Database, Row

_COLUMNS = "client_id, channel_ref, label, system_prompt, updated_utc"


def _persona(row: Row) -> Persona:
    return Persona(client_id=row["client_id"], channel_ref=row["channel_ref"],
                   label=row["label"], system_prompt=row["system_prompt"],
                   updated_utc=row["updated_utc"])


class PersonaRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, client_id: int, channel_ref: str) -> Persona | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM personas WHERE client_id = ? AND channel_ref = ?",
            (client_id, channel_ref))
        return _persona(row) if row else None

    async def put(self, persona: Persona) -> None:
        p = persona
        await self.db.write([(
            f"INSERT INTO personas ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (client_id, channel_ref) DO UPDATE SET label = excluded.label,"
            " system_prompt = excluded.system_prompt, updated_utc = excluded.updated_utc",
            (p.client_id, p.channel_ref, p.label, p.system_prompt, p.updated_utc))])

    async def delete(self, client_id: int, channel_ref: str) -> bool:
        return await self.db.write([(
            "DELETE FROM personas WHERE client_id = ? AND channel_ref = ?",
            (client_id, channel_ref))], guarded=True)

    async def list(self, client_id: int | None = None) -> list[Persona]:
        """Every persona, or one client's, by client then label."""
        where, params = ("WHERE client_id = ?", (client_id,)) if client_id is not None \
            else ("", ())
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM personas {where} ORDER BY client_id, label, channel_ref",
            params)
        return [_persona(r) for r in rows]
