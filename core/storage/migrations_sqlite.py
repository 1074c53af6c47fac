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
        # Budgets and costs. Each usage row says what it cost, whether its tokens were
        # estimated (the upstream reported none), what it was for (a reply, a title) and
        # whether it ran on the member's own key (never counted against budgets). ``spend``
        # holds running totals per principal and period ('d:2026-12-01', 'm:2026-12'): a
        # user's own, a client's for all its users together, so a budget check reads one row
        # rather than summing the log. ``budget_alerts``: the 80% and 100% crossings, each
        # recorded once per period, for the admin channel.
        "0004_budgets",
        """
        ALTER TABLE principals ADD COLUMN limits_json TEXT;
        ALTER TABLE usage ADD COLUMN cost REAL;
        ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE usage ADD COLUMN purpose TEXT NOT NULL DEFAULT 'reply';
        ALTER TABLE usage ADD COLUMN own_key INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX usage_created ON usage(created_utc);
        CREATE INDEX usage_client ON usage(client_id, created_utc);

        CREATE TABLE spend (
            scope_id        INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
            period          TEXT NOT NULL,
            requests        INTEGER NOT NULL DEFAULT 0,
            tokens          INTEGER NOT NULL DEFAULT 0,
            cost            REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (scope_id, period)
        );

        CREATE TABLE budget_alerts (
            scope_id        INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
            budget          TEXT NOT NULL,
            period          TEXT NOT NULL,
            threshold       INTEGER NOT NULL,
            used            REAL NOT NULL,
            budget_limit    REAL NOT NULL,
            created_utc     TEXT NOT NULL,
            delivered_utc   TEXT,
            PRIMARY KEY (scope_id, budget, period, threshold)
        );
        """,
    ),
    (
        # The exchange as it was (/v1): the new messages with their content parts and tool
        # results, and the reply with its tool calls, as JSON on the turn. Inline images,
        # audio and files are kept once each, by the SHA-256 of their bytes; turn_attachments
        # says which turns refer to which (who may fetch one, what a removal frees).
        "0005_exchanges",
        """
        ALTER TABLE turns ADD COLUMN exchange_json TEXT;
        CREATE TABLE attachments (
            sha256          TEXT PRIMARY KEY,
            mime_type       TEXT NOT NULL,
            size_bytes      INTEGER NOT NULL,
            data            BLOB NOT NULL,
            created_utc     TEXT NOT NULL
        );
        CREATE TABLE turn_attachments (
            turn_id         TEXT NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
            sha256          TEXT NOT NULL REFERENCES attachments(sha256),
            PRIMARY KEY (turn_id, sha256)
        );
        CREATE INDEX turn_attachments_sha256 ON turn_attachments(sha256);
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
    (
        # The fingerprint (128 bits) of the /v1 context a turn ends (core/context_digest.py):
        # a history sent again without X-Conversation-Id continues the conversation whose
        # last turn has it. Only /v1 turns have one, so only they are indexed.
        "0007_context_digests",
        """
        ALTER TABLE turns ADD COLUMN context_digest BLOB;
        CREATE INDEX turns_context_digest ON turns(context_digest)
            WHERE context_digest IS NOT NULL;
        """,
    ),
]
