"""Numbered, forward-only schema migrations of the SQLite backend (PostgreSQL has its own, of
the same names, in ``migrations_postgresql``).

Each migration is applied once, in order, inside a transaction, and recorded in ``_migrations``.
Never edit or reorder a migration that has shipped: add a new one at the end.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE principals (
            id              INTEGER PRIMARY KEY,
            role            TEXT NOT NULL CHECK (role IN ('admin', 'client', 'user')),
            name            TEXT NOT NULL,
            client_id       INTEGER REFERENCES principals(id) ON DELETE CASCADE,
            external_id     TEXT,
            plus            INTEGER NOT NULL DEFAULT 0,
            key_hash        BLOB NOT NULL UNIQUE,
            key_prefix      TEXT NOT NULL,
            own_key_enc     BLOB,
            created_utc     TEXT NOT NULL,
            disabled_utc    TEXT,
            last_used_utc   TEXT,
            UNIQUE (client_id, external_id)
        );
        CREATE INDEX principals_client ON principals(client_id);
        -- NULLs are distinct in UNIQUE, so users an admin made (no client) need their own index.
        CREATE UNIQUE INDEX principals_admin_external ON principals(external_id)
            WHERE client_id IS NULL AND external_id IS NOT NULL;

        CREATE TABLE conversations (
            id              TEXT PRIMARY KEY,
            owner_id        INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
            title           TEXT NOT NULL,
            mode            TEXT NOT NULL CHECK (mode IN ('pool', 'own_key')),
            account         TEXT,
            model           TEXT NOT NULL,
            client_id       INTEGER REFERENCES principals(id) ON DELETE CASCADE,
            external_ref    TEXT,
            turn_count      INTEGER NOT NULL DEFAULT 0,
            created_utc     TEXT NOT NULL,
            updated_utc     TEXT NOT NULL,
            UNIQUE (client_id, external_ref)
        );
        CREATE INDEX conversations_owner_updated ON conversations(owner_id, updated_utc DESC);
        CREATE INDEX conversations_updated ON conversations(updated_utc DESC);

        CREATE TABLE turns (
            id              TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            parent_id       TEXT,
            position        INTEGER NOT NULL,
            prompt          TEXT NOT NULL,
            reply           TEXT NOT NULL,
            model           TEXT NOT NULL,
            upstream_id     TEXT,
            prompt_utc      TEXT NOT NULL,
            reply_utc       TEXT NOT NULL,
            duration_ms     INTEGER NOT NULL,
            input_tokens    INTEGER,
            output_tokens   INTEGER,
            UNIQUE (conversation_id, position)
        );

        CREATE TABLE usage (
            id              INTEGER PRIMARY KEY,
            principal_id    INTEGER REFERENCES principals(id) ON DELETE SET NULL,
            client_id       INTEGER,
            conversation_id TEXT,
            account         TEXT,
            model           TEXT,
            endpoint        TEXT NOT NULL,
            outcome         TEXT NOT NULL,
            created_utc     TEXT NOT NULL,
            duration_ms     INTEGER NOT NULL,
            input_tokens    INTEGER,
            output_tokens   INTEGER
        );
        CREATE INDEX usage_principal ON usage(principal_id, created_utc);
        """,
    ),
    (
        # Web UI sign-ins. Only a hash of the session id is kept; the session holds the hash of
        # the key it was opened with, so rotating or removing that key ends it.
        "0002_web_sessions",
        """
        CREATE TABLE web_sessions (
            id_hash         BLOB PRIMARY KEY,
            principal_id    INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
            key_hash        BLOB NOT NULL,
            csrf_token      TEXT NOT NULL,
            flash_json      TEXT,
            created_utc     TEXT NOT NULL,
            expires_utc     TEXT NOT NULL
        );
        CREATE INDEX web_sessions_principal ON web_sessions(principal_id);
        CREATE INDEX web_sessions_expires ON web_sessions(expires_utc);
        """,
    ),
    (
        # Account health that outlives a restart: a cool-down (until a wall-clock time, in
        # seconds since the epoch) or a removal from service, by the upstream's answer or an
        # admin. No row: healthy.
        "0003_shared_state",
        """
        CREATE TABLE account_state (
            name            TEXT PRIMARY KEY,
            cooling_until   REAL NOT NULL DEFAULT 0,
            cooling_reason  TEXT,
            out_reason      TEXT,
            updated_utc     TEXT NOT NULL,
            version         INTEGER NOT NULL DEFAULT 1
        );
        """,
    ),
    (
        # Issue 13. personas: a system prompt per channel of a client (the Discord bot's
        # channels), added after the organisation's own for conversations there. A turn whose
        # reply the member stopped keeps what arrived, marked ``stopped``.
        "0006_personas",
        """
        CREATE TABLE personas (
            client_id       INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
            channel_ref     TEXT NOT NULL,
            label           TEXT NOT NULL,
            system_prompt   TEXT NOT NULL,
            updated_utc     TEXT NOT NULL,
            PRIMARY KEY (client_id, channel_ref)
        );
        ALTER TABLE turns ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
        """,
    ),
]
