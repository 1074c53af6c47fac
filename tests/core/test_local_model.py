"""When the local model serves: only when no configured account has the key it needs."""

from __future__ import annotations

from typing import Any

from core.config import Settings, settings_from_dict
from core.env_secrets import Secrets
from core.local_model import needs_local_model


def _settings(enabled: str = "auto", **account: Any) -> Any:
    accounts = [{"name": "openai", "base_url": "https://api.openai.com/v1", "model": "m",
                 "api_key_env": "OPENAI_API_KEY", **account}]
    return settings_from_dict({"accounts": accounts, "local_model": {"enabled": enabled}})


def _needs(settings: Settings, environ: dict[str, str]) -> bool:
    return needs_local_model(settings, Secrets.read(settings, environ))


def test_auto_serves_the_local_model_only_without_a_usable_key() -> None:
    assert _needs(_settings(), {})
    assert _needs(_settings(), {"OPENAI_API_KEY": ""})
    assert not _needs(_settings(), {"OPENAI_API_KEY": "sk-x"})
    # A server that needs no key (llama.cpp, Ollama) is usable as it is.
    assert not _needs(_settings(api_key_env=""), {})
    assert _needs(settings_from_dict({"accounts": []}), {})


def test_always_and_never_override_auto() -> None:
    assert _needs(_settings("always"), {"OPENAI_API_KEY": "sk-x"})
    assert not _needs(_settings("never"), {})
