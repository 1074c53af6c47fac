"""The pool of upstream accounts: health, cool-downs, round robin by tier.

An account is *healthy*, *cooling* (after a 429, 5xx, time-out or proxy failure, until a
wall-clock deadline that honours Retry-After) or *out* (its key was refused, an admin took it
out, or it has no key; only an admin brings it back, and only once it has a key). New
conversations take the next healthy account of the tiers they may use; follow-ups ask for their
own account by name and are told plainly when it cannot serve.

Health is shared: every change is saved in the storage's ``account_state`` and announced, so
every process (on PostgreSQL) sees a cool-down or a removal within moments, and a restart keeps
it. Reads stay in memory: choosing an account costs no database round trip.

Each account runs at most ``max_concurrency`` upstream calls at once (replies and titles alike),
per process. A call waits for a slot only for a bounded time and checks the account's health
again once it has one: the calls it waited behind may have cooled the account meanwhile.
``SlotRefused`` says which of the two stopped it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr

from .capabilities import can_all
from .config import AccountSettings, Settings
from .env_secrets import Secrets
from .errors import Conflict
from .models import PlusChoice
from .observer import NO_OBSERVER, Observer
from .storage.account_state import AccountState, AccountStateRepo
from .upstream import Target, UpstreamFailure, make_session
from .upstream_http import UpstreamSession

Health = Literal["healthy", "cooling", "out"]
BUSY_RETRY_AFTER_S = 5.0
"""The Retry-After given with a refusal for a busy account: slots free as calls end, which
nothing predicts, and a few seconds spreads the callers' retries."""
TIERS_FOR_CHOICE: dict[str, tuple[str, ...]] = {
    "false": ("free",),
    "true": ("plus",),
    "any": ("free", "plus"),
}


class SlotRefused(Exception):
    """No call was made on ``account``: it stayed busy past the wait, or it was cooling or out
    of service once a slot was won."""

    def __init__(self, account: Account, why: Literal["busy", "cooling", "out"]) -> None:
        super().__init__(f"account {account.name} is {why}")
        self.account = account
        self.why = why


@dataclass(slots=True)
class AccountStats:
    requests: int = 0
    failures: int = 0
    in_flight: int = 0
    waiting: int = 0
    """Calls waiting for a slot: they count against the capacity a new conversation sees."""
    input_tokens: int = 0
    output_tokens: int = 0
    last_error: str | None = None


class Account:
    def __init__(
        self,
        settings: AccountSettings,
        api_key: SecretStr | None,
        session: UpstreamSession,
        *,
        clock: Callable[[], float],
        missing_key: str | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.tier = settings.tier
        # Computed by the (frozen) settings on each access; asked for on every new turn.
        self.served_models = frozenset(settings.served_models)
        self.capabilities = settings.capabilities
        self._api_key = api_key
        self.session = session
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self.cooling_until = 0.0
        self.cooling_reason: str | None = None
        self.taken_out: str | None = None
        """Why the upstream's answer or an admin took the account out (shared, persisted)."""
        self.missing_key = missing_key
        """Why this process has no key for it (its configuration; not shared)."""
        self.state_version = 0
        self.stats = AccountStats()

    @property
    def out_reason(self) -> str | None:
        return self.missing_key or self.taken_out

    @property
    def state(self) -> AccountState:
        return AccountState(self.name, self.cooling_until, self.cooling_reason, self.taken_out,
                            self.state_version)

    def apply(self, state: AccountState) -> None:
        """Take on a state saved by this or another process, unless it is older than the one
        held (a read that started before a later change finished after it)."""
        if state.version and state.version <= self.state_version:
            return
        self.cooling_until = state.cooling_until
        self.cooling_reason = state.cooling_reason
        self.taken_out = state.out_reason
        self.state_version = state.version

    def health(self) -> Health:
        if self.out_reason:
            return "out"
        if self._clock() < self.cooling_until:
            return "cooling"
        return "healthy"

    def cooldown_left(self) -> float:
        return max(0.0, self.cooling_until - self._clock())

    @property
    def has_capacity(self) -> bool:
        """A call started now would get a slot at once: not every slot is taken, and nobody
        is queued for one (a waiter would be served first)."""
        return not self._slots.locked()

    def target(self, model: str | None = None) -> Target:
        return Target(
            name=self.name,
            base_url=self.settings.base_url,
            model=model or self.settings.model,
            session=self.session,
            api_key=self._api_key.get_secret_value() if self._api_key else None,
            timeout_s=self.settings.timeout_s,
            api=self.settings.api,
            max_tokens=self.settings.max_tokens,
        )

    def slot(self, wait_s: float, *, is_reply: bool = True) -> _Slot:
        """Hold one of the account's ``max_concurrency`` slots for the length of a call
        (``async with``), waiting at most ``wait_s`` for one (0: only a slot free at once).
        Raises ``SlotRefused`` when none came in time, or when the account is no longer
        healthy once one did: the calls waited behind may have cooled it. Title calls take
        slots too but are not counted as the account's requests (``is_reply=False``)."""
        return _Slot(self, wait_s, is_reply)

    async def _acquire(self, wait_s: float) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: taken without yielding
            return
        if wait_s <= 0:
            raise SlotRefused(self, "busy")
        self.stats.waiting += 1
        try:
            async with asyncio.timeout(wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise SlotRefused(self, "busy") from None
        finally:
            self.stats.waiting -= 1

    def record_success(self, input_tokens: int | None, output_tokens: int | None) -> None:
        self.stats.input_tokens += input_tokens or 0
        self.stats.output_tokens += output_tokens or 0

    def record_failure(self, failure: UpstreamFailure, default_cooldown: float,
                       max_cooldown: float) -> None:
        self.stats.failures += 1
        self.stats.last_error = f"{failure.kind}: {failure.detail}"[:300]
        if failure.kind == "auth":
            self.taken_out = f"the upstream refused this account's key (HTTP {failure.status})"
        elif failure.kind == "misconfigured":
            self.taken_out = (f"the upstream answered HTTP {failure.status} ({failure.detail}):"
                              " check this account's base_url and model")
        elif failure.cools_down:
            wait = failure.retry_after if failure.retry_after is not None else default_cooldown
            self.cooling_until = self._clock() + min(wait, max_cooldown)
            self.cooling_reason = failure.kind

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tier": self.tier,
            "model": self.settings.model,
            "base_url": self.settings.base_url,
            "health": self.health(),
            "cooldown_s": round(self.cooldown_left(), 1),
            "cooldown_reason": self.cooling_reason if self.health() == "cooling" else None,
            "out_reason": self.out_reason,
            "max_concurrency": self.settings.max_concurrency,
            "in_flight": self.stats.in_flight,
            "waiting": self.stats.waiting,
            "requests": self.stats.requests,
            "failures": self.stats.failures,
            "input_tokens": self.stats.input_tokens,
            "output_tokens": self.stats.output_tokens,
            "last_error": self.stats.last_error,
        }


class _Slot:
    """``Account.slot``: a class rather than a generator-based context manager, which costs
    as much again (a call each turn, issue 14)."""

    __slots__ = ("account", "is_reply", "wait_s")

    def __init__(self, account: Account, wait_s: float, is_reply: bool) -> None:
        self.account = account
        self.wait_s = wait_s
        self.is_reply = is_reply

    async def __aenter__(self) -> None:
        account = self.account
        await account._acquire(self.wait_s)
        health = account.health()
        if health != "healthy":
            account._slots.release()
            raise SlotRefused(account, health)
        account.stats.in_flight += 1
        account.stats.requests += self.is_reply

    async def __aexit__(self, *exc: object) -> None:
        self.account.stats.in_flight -= 1
        self.account._slots.release()


class AccountPool:
    def __init__(
        self,
        settings: Settings,
        states: AccountStateRepo,
        secrets: Secrets,
        *,
        clock: Callable[[], float] = time.time,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        """``clock``: wall-clock seconds (cool-downs are deadlines every process shares);
        ``observer``: told of failures and of the cool-downs and removals they cause."""
        self._settings = settings
        self._observer = observer
        self._states = states
        # Before the storage opens, so no announcement can slip past between the two.
        states.subscribe(self._changed)
        self._secrets = secrets
        self._clock = clock
        self.accounts: list[Account] = []
        self._by_name: dict[str, Account] = {}
        self._cursor: dict[str, int] = {}
        self._sessions: dict[str, UpstreamSession] = {}

    async def open(self) -> None:
        for cfg in self._settings.accounts:
            key = self._secrets.account_keys.get(cfg.name)
            missing = self._secrets.missing_key(cfg)
            session = make_session(self._settings.proxy_for(cfg.proxy),
                                   limit=cfg.max_concurrency * 2)
            self._sessions[cfg.name] = session
            account = Account(cfg, key, session, clock=self._clock, missing_key=missing)
            self.accounts.append(account)
            self._by_name[cfg.name] = account
        await self._reload()

    async def _reload(self) -> None:
        saved = await self._states.all()
        for account in self.accounts:
            account.apply(saved.get(account.name, AccountState(account.name)))

    async def _changed(self, name: str) -> None:
        """Another process (or this one) saved an account's state: take it on."""
        if name == "*":
            await self._reload()
        elif (account := self._by_name.get(name)) is not None:
            account.apply(await self._states.get(name))

    async def record_failure(self, account: Account, failure: UpstreamFailure,
                             default_cooldown: float, max_cooldown: float) -> None:
        """Count a failure; a cool-down or removal it causes is saved for every process."""
        before = account.state
        account.record_failure(failure, default_cooldown, max_cooldown)
        self._observer.upstream_failure(account.name, failure.kind)
        if account.state != before:
            self._observer.health_changed(account.name, account.health(), failure.kind)
            await self._save(account)

    async def set_enabled(self, account: Account, enabled: bool) -> None:
        """An admin's word: back in service (cool-down and removal cleared), or out."""
        if enabled and account.missing_key:
            raise Conflict(
                f"account '{account.name}' cannot be enabled: {account.missing_key}; set it"
                " and restart this gateway",
                code="account_has_no_key")
        if enabled:
            account.cooling_until, account.cooling_reason, account.taken_out = 0.0, None, None
        else:
            account.taken_out = "taken out by an admin"
        self._observer.health_changed(account.name, account.health(), "admin")
        await self._save(account)

    async def _save(self, account: Account) -> None:
        state = account.state
        version = await self._states.save(state)
        # What was saved is the newest state there is: held as such, announcements of older
        # versions still on their way are ignored (and one that came in meanwhile is undone).
        account.apply(dataclasses.replace(state, version=version))

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def get(self, name: str) -> Account | None:
        return self._by_name.get(name)

    def candidates(self, choice: PlusChoice, model: str | None = None,
                   needs: Collection[str] = ()) -> list[Account]:
        """Accounts of the tiers ``choice`` allows, serving ``model`` when one is named, with
        every capability in ``needs``."""
        tiers = TIERS_FOR_CHOICE[choice]
        return [a for a in self.accounts if a.tier in tiers
                and (model is None or model in a.served_models)
                and (not needs or can_all(a.settings.api, a.capabilities, needs))]

    def pick(self, choice: PlusChoice, exclude: set[str],
             model: str | None = None, needs: Collection[str] = ()) -> Account | None:
        """The next healthy account for a new conversation, round robin within ``choice``.
        One with a free slot is preferred, so a busy account (every slot taken, or callers
        already queued for one) does not queue work that another could start at once; a busy
        one is offered only when every healthy account is busy."""
        pool = self.candidates(choice, model, needs)
        if not pool:
            return None
        key = f"{choice}/{model or ''}/{','.join(sorted(needs))}"
        start = self._cursor.get(key, 0) % len(pool)
        ordered = pool[start:] + pool[:start]
        usable = [a for a in ordered if a.name not in exclude and a.health() == "healthy"]
        chosen = next((a for a in usable if a.has_capacity), usable[0] if usable else None)
        if chosen is not None:
            self._cursor[key] = pool.index(chosen) + 1
        return chosen

    def soonest_recovery(self, choice: PlusChoice, model: str | None = None) -> float | None:
        """Seconds until the first cooling account of ``choice`` is back, if any is cooling."""
        waits = [a.cooldown_left() for a in self.candidates(choice, model)
                 if a.health() == "cooling"]
        return min(waits) if waits else None

    def models_for(self, choice: PlusChoice) -> list[tuple[str, Account]]:
        """Each model the tiers of ``choice`` serve, with the first account serving it. Accounts
        out of service (no key, key refused) are left out: asking for them would only fail."""
        seen: dict[str, Account] = {}
        for account in self.candidates(choice):
            if account.health() == "out":
                continue
            for model in account.settings.served_models:
                seen.setdefault(model, account)
        return list(seen.items())

    def __iter__(self) -> Iterator[Account]:
        return iter(self.accounts)
