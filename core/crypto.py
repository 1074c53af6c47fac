"""Encryption of user credentials kept at rest (a member's own upstream key).

Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) rather than our own construction. The
key comes from the environment variable named by ``secret_key_env``; without it, a key file is
created beside the database with mode 0600, so a copied database alone reveals nothing.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

log = logging.getLogger(__name__)


class CredentialBox:
    """The key is checked when the box is made (a wrong one stops the start); ``cryptography``
    is imported at the first seal or open, which few gateways ever make (about 16 ms of every
    start otherwise, issue 14)."""

    def __init__(self, key: bytes) -> None:
        try:
            raw = base64.urlsafe_b64decode(key)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:  # as Fernet checks it
            raise ValueError("Fernet key must be 32 url-safe base64-encoded bytes.")
        self._key = key
        self._made: Fernet | None = None

    @property
    def _fernet(self) -> Fernet:
        if self._made is None:
            from cryptography.fernet import Fernet

            self._made = Fernet(self._key)
        return self._made

    @classmethod
    def from_env_or_file(cls, env_value: str | None, key_file: Path) -> CredentialBox:
        if env_value:
            return cls(env_value.encode("ascii"))
        if key_file.exists():
            return cls(key_file.read_bytes().strip())
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key = base64.urlsafe_b64encode(os.urandom(32))  # as Fernet.generate_key()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        log.info("created credential encryption key file %s", key_file)
        return cls(key)

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode("utf-8"))

    def open(self, sealed: bytes) -> str | None:
        """The secret, or None when it was sealed with another key (the key was changed)."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed).decode("utf-8")
        except InvalidToken:
            return None
