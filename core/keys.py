"""Gateway API keys: random, shown once, stored only as a hash.

A key is ``gw_`` followed by 43 URL-safe characters (256 random bits). Because keys are
high-entropy, a single SHA-256 is the right hash: it cannot be brute-forced, and being
deterministic it lets us find a key's row with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "gw_"
SHOWN_PREFIX_CHARS = 10
"""How much of a key is kept in clear (``gw_AbC1234``), so people can tell their keys apart."""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_CHARS]
