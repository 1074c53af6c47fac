"""Configuration: a wrong key or value stops the start with a message naming it; secrets come from
the environment and never from the file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.accounts import AccountPool
from core.config import ConfigError, load_settings, secret_from_env, settings_from_dict
from core.env_secrets import Secrets
from core.storage.account_state import AccountStateRepo
from core.storage.sqlite import SqliteDatabase

GOOD = """
[server]
host = "127.0.0.1"
port = 9000

[storage]
path = "db/gw.db"

[proxy]
default = "socks5://127.0.0.1:1080"

[[accounts]]
name = "main"
base_url = "https://api.example.com/v1/"
api_key_env = "MAIN_KEY"
model = "gpt-4o-mini"
tier = "free"

[[accounts]]
name = "big"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "BIG_KEY"
model = "gpt-4o"
tier = "plus"
proxy = ""
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _account(**extra: Any) -> dict[str, Any]:
    return {"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "m", **extra}


def test_a_good_file_loads(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, GOOD))
    assert settings.server.port == 9000
    assert settings.storage.path == "db/gw.db"
    assert [(a.name, a.tier) for a in settings.accounts] == [("main", "free"), ("big", "plus")]
    assert settings.accounts[0].base_url == "https://api.example.com/v1"  # trailing / dropped
    assert settings.proxy_for(settings.accounts[0].proxy) == "socks5://127.0.0.1:1080"
    assert settings.proxy_for(settings.accounts[1].proxy) == ""


def test_the_shipped_config_toml_is_valid() -> None:
    settings = load_settings(Path(__file__).parents[2] / "config.toml")
    assert settings.accounts


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"accounts": [_account(tier="gold")]}, "accounts.0.tier"),
        ({"accounts": [_account(), _account(name="b", base_url="ftp://x")]},
         "accounts.1.base_url"),
        ({"accounts": [_account(max_concurrency=0)]}, "accounts.0.max_concurrency"),
        ({"accounts": [_account(proxy="smtp://relay:25")]}, "accounts.0.proxy"),
        ({"accounts": [_account(api_key="sk-in-the-file")]}, "accounts.0.api_key"),
        ({"server": {"prot": 8080}}, "server.prot"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"port": "eighty"}}, "server.port"),
        ({"paths": {"chat": "api/chat"}}, "paths.chat"),
        ({"limits": {"user_requests_per_minute": -1}}, "limits.user_requests_per_minute"),
        ({"chat": {"title_timeout_s": 0}}, "chat.title_timeout_s"),
        ({"sever": {}}, "sever"),
        ({"metrics": {"path": "metrics"}}, "metrics.path"),
        ({"metrics": {"port": 70000}}, "metrics.port"),
        ({"metrics": {"enabeld": True}}, "metrics.enabeld"),
    ],
)
def test_a_wrong_key_or_value_is_named(data: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(data)
    assert f"{named}:" in str(caught.value)


def test_an_unknown_key_is_called_unknown(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nprot = 8080\n")
    with pytest.raises(ConfigError, match=r"server\.prot: unknown key") as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


def test_duplicate_account_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"accounts: .*unique: a"):
        settings_from_dict({"accounts": [_account(), _account(model="other")]})


def test_metrics_are_off_by_default_and_may_not_take_an_endpoints_path() -> None:
    assert settings_from_dict({}).metrics.enabled is False
    with pytest.raises(ConfigError, match=r"metrics\.path '/healthz' is already an endpoint"):
        settings_from_dict({"metrics": {"enabled": True, "path": "/healthz"}})
    with pytest.raises(ConfigError, match=r"metrics\.path '/v1/metrics' is already"):
        settings_from_dict({"metrics": {"enabled": True, "path": "/v1/metrics"}})
    # On a listener of its own, the path is free to be anything.
    assert settings_from_dict({"metrics": {"enabled": True, "path": "/healthz", "port": 9464}})


def test_two_endpoints_on_one_path_are_refused() -> None:
    with pytest.raises(ConfigError, match="paths"):
        settings_from_dict({"paths": {"recall": "/api/chat"}})


def test_the_openai_prefix_is_a_path_of_its_own() -> None:
    assert settings_from_dict({"paths": {"openai_prefix": "/v1/"}}).paths.openai_prefix == "/v1"
    with pytest.raises(ConfigError, match="openai_prefix must name a path below '/'"):
        settings_from_dict({"paths": {"openai_prefix": "/"}})
    # Everything under the prefix answers in OpenAI's envelope: no other endpoint may be there.
    with pytest.raises(ConfigError, match=r"paths\.chat is under paths\.openai_prefix"):
        settings_from_dict({"paths": {"openai_prefix": "/api"}})


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nport = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_settings(path)
    assert "line 2" in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_secret_from_env() -> None:
    env = {"SET": "sk-123", "EMPTY": ""}
    secret = secret_from_env("SET", env)
    assert secret is not None and secret.get_secret_value() == "sk-123"
    assert "sk-123" not in repr(secret) and "sk-123" not in str(secret)
    assert secret_from_env("EMPTY", env) is None
    assert secret_from_env("UNSET", env) is None
    assert secret_from_env("", env) is None


@pytest.fixture
async def states(tmp_path: Path) -> AsyncIterator[AccountStateRepo]:
    async with SqliteDatabase(tmp_path / "states.db") as db:
        yield AccountStateRepo(db)


async def test_account_keys_come_from_env_and_unset_ones_are_out(
        tmp_path: Path, states: AccountStateRepo) -> None:
    settings = load_settings(_write(tmp_path, GOOD))
    pool = AccountPool(settings, states, Secrets.read(settings, {"MAIN_KEY": "sk-main"}))
    await pool.open()
    try:
        main, big = pool.get("main"), pool.get("big")
        assert main is not None and big is not None
        assert main.health() == "healthy"
        assert main.target().api_key == "sk-main"
        assert big.health() == "out"
        assert "BIG_KEY" in (big.out_reason or "")
        assert "sk-main" not in repr(main.snapshot())
        # An out account is never picked for new conversations.
        assert pool.pick("true", set()) is None
        assert pool.pick("any", set()) is main
    finally:
        await pool.close()


async def test_an_account_without_api_key_env_needs_no_key(states: AccountStateRepo) -> None:
    settings = settings_from_dict({"accounts": [_account(name="local")]})
    pool = AccountPool(settings, states, Secrets.read(settings, {}))
    await pool.open()
    try:
        local = pool.get("local")
        assert local is not None and local.health() == "healthy"
        assert local.target().api_key is None
        assert "Authorization" not in local.target().headers()
    finally:
        await pool.close()


@pytest.mark.parametrize(("storage", "engine", "sqlite_path"), [
    ({}, "sqlite", "data/gateway.db"),
    ({"path": "db/gw.db"}, "sqlite", "db/gw.db"),
    ({"url": "sqlite:///data/other.db"}, "sqlite", "data/other.db"),
    ({"url": "sqlite:////var/lib/gateway/gw.db"}, "sqlite", "/var/lib/gateway/gw.db"),
    ({"url": "postgresql://gw@db:5432/gateway"}, "postgresql", "data/gateway.db"),
    ({"url": "postgres://gw@db/gateway"}, "postgresql", "data/gateway.db"),
])
def test_storage_url_names_the_backend(storage: dict[str, Any], engine: str,
                                       sqlite_path: str) -> None:
    settings = settings_from_dict({"storage": storage})
    assert settings.storage.backend == engine
    assert settings.storage.sqlite_path == sqlite_path


def test_a_storage_url_of_another_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"storage\.url: .*sqlite:/// or postgresql://"):
        settings_from_dict({"storage": {"url": "mysql://gw@db/gateway"}})
