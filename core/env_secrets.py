"""Every secret the settings name, read from the environment once, in one place.

The configuration file holds no secret: an ``*_env`` key names the variable that does. ``Secrets``
reads them all when the gateway is assembled, into ``SecretStr`` values whose repr hides them;
the parts that need one are handed it, and nothing else reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import SecretStr

from .config import AccountSettings, Settings, secret_from_env


@dataclass(frozen=True, slots=True)
class Secrets:
    account_keys: Mapping[str, SecretStr | None] = field(default_factory=dict)
    """Each account's key by account name; None where it needs none or its variable is unset."""
    storage_password: SecretStr | None = None
    credential_key: SecretStr | None = None
    """The Fernet key that seals members' own keys (``secret_key_env``)."""
    oauth_client_secret: SecretStr | None = None
    discord_token: SecretStr | None = None

    @classmethod
    def read(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Secrets:
        env = dict(environ) if environ is not None else None
        return cls(
            account_keys={a.name: secret_from_env(a.api_key_env, env) for a in settings.accounts},
            storage_password=secret_from_env(settings.storage.password_env, env),
            credential_key=secret_from_env(settings.secret_key_env, env),
            oauth_client_secret=secret_from_env(settings.access_token.client_secret_env, env),
            discord_token=secret_from_env(settings.discord.token_env, env),
        )

    def missing_key(self, account: AccountSettings) -> str | None:
        """Why an account cannot be used for want of its key, or None."""
        if account.api_key_env and self.account_keys.get(account.name) is None:
            return f"environment variable {account.api_key_env} is not set"
        return None
