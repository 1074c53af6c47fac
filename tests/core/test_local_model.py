"""When the local model serves: only when no configured account has the key it needs."""

from __future__ import annotations

from typing import Any

from core.config import settings_from_dict
from core.local_model import needs_local_model


def _settings(enabled: str = "auto", **account: Any) -> Any:
    accounts = [{"name": "openai", "base_url": "https://api.openai.com/v1", "model": "m",
                 "api_key_env": "OPENAI_API_KEY", **account}]
    return settings_from_dict({"accounts": accounts, "local_model": {"enabled": enabled}})


def test_auto_serves_the_local_model_only_without_a_usable_key() -> None:
    assert needs_local_model(_settings(), environ={})
    assert needs_local_model(_settings(), environ={"OPENAI_API_KEY": ""})
    assert not needs_local_model(_settings(), environ={"OPENAI_API_KEY": "sk-x"})
    # A server that needs no key (llama.cpp, Ollama) is usable as it is.
    assert not needs_local_model(_settings(api_key_env=""), environ={})
    assert needs_local_model(settings_from_dict({"accounts": []}), environ={})


def test_always_and_never_override_auto() -> None:
    assert needs_local_model(_settings("always"), environ={"OPENAI_API_KEY": "sk-x"})
    assert not needs_local_model(_settings("never"), environ={})
