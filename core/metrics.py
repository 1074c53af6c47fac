"""What the gateway reports for monitoring, and its Prometheus form (issue 11, operations).

The core tells an ``Observer`` what happens at the few places where it is decided:

- ``usage``: every usage row the recorder makes (a reply, a title, a failed turn), with its
  account, model, outcome, tokens, cost and duration: requests, failures, latency, tokens and
  cost per account and model all come from it, so they agree with ``/api/admin/usage``;
- ``upstream_failure``: every failed call of a pool account, also one a new conversation then
  retried on another account (its turn's row names the account that answered);
- ``health_changed``: an account starts cooling down or goes out (or an admin restores it);
- ``quota_refused``: a request is refused because a budget is spent (429 quota_exceeded).

``Observer`` itself does nothing: with metrics off the core pays a method call. ``Metrics``
counts into a ``CollectorRegistry`` of its own, one per gateway (never prometheus_client's
global one, so tests and several gateways in one process keep apart), which web/metrics.py
serves as ``/metrics``; the fronts' request counters live here too, beside the rest. Current
account state (health, cool-down left, calls in flight) is read from the pool at scrape time,
not kept up to date on the hot path.

Labels are bounded and hold no secret: account names and models come from the configuration
and the upstream's answers, routes are patterns (``/api/conversations/{id}``), never raw paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .accounts import AccountPool
    from .storage.conversations import UsageRecord

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                120.0, 300.0)
"""Seconds. Wide: an API call may take milliseconds, a streamed reply minutes."""
TURN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds an answered turn took, prompt to stored reply: upstream models take seconds."""
HEALTHS = ("healthy", "cooling", "out")
NO_ACCOUNT = "none"
"""The account label of a row no pool account answered (none could, or the member's own key
failed)."""
OWN_KEY = "own_key"


class Observer:
    """Told by the core what happened; this one does nothing (metrics off)."""

    def usage(self, record: UsageRecord) -> None:
        """A usage row was made: a reply, a title, or a turn that failed."""

    def upstream_failure(self, account: str, kind: str) -> None:
        """A pool account's call failed (``UpstreamFailure.kind``)."""

    def health_changed(self, account: str, state: str, reason: str) -> None:
        """An account went ``cooling`` or ``out`` (``reason``: the failure's kind, or "admin"),
        or an admin put it back (``healthy``)."""

    def quota_refused(self, budget: str, scope: str) -> None:
        """A request was refused: ``budget`` (e.g. tokens_per_day) of a ``member`` or of its
        ``client`` is spent."""


NO_OBSERVER = Observer()


class Metrics(Observer):
    """The gateway's metrics, in a registry of their own (``registry``)."""

    def __init__(self, currency: str) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._currency = currency
        # The fronts (web/metrics.py counts the HTTP requests).
        self.http_requests = Counter(
            "gateway_http_requests", "HTTP requests answered, by route pattern and status.",
            ["method", "route", "status"], registry=r)
        self.http_errors = Counter(
            "gateway_http_errors", "HTTP requests answered with an error, by the error's code "
            "(the `code` of the JSON error body).", ["method", "route", "code"], registry=r)
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request (to its last byte for a stream).",
            ["method", "route"], buckets=HTTP_BUCKETS, registry=r)
        self.http_in_flight = Gauge(
            "gateway_http_requests_in_flight", "HTTP requests being answered now.",
            ["route"], registry=r)
        # The core.
        self.upstream_requests = Counter(
            "gateway_upstream_requests", "Upstream calls recorded in the usage table: replies "
            "and titles answered, and turns that failed (outcome).",
            ["account", "purpose", "outcome"], registry=r)
        self.upstream_failures = Counter(
            "gateway_upstream_failures", "Failed calls of a pool account, also those a new "
            "conversation then retried on another account.", ["account", "kind"], registry=r)
        self.turn_duration = Histogram(
            "gateway_turn_duration_seconds", "Time from prompt to stored reply of answered "
            "turns, by the account that answered.", ["account"], buckets=TURN_BUCKETS,
            registry=r)
        self.tokens = Counter(
            "gateway_tokens", "Tokens used (as the upstream reported them, or estimated), by "
            "account, model and direction (input, output).",
            ["account", "model", "direction"], registry=r)
        self.cost = Counter(
            "gateway_cost", "What the calls cost at the accounts' prices, in the billing "
            "currency.", ["account", "model", "currency"], registry=r)
        self.quota_refusals = Counter(
            "gateway_budget_refusals", "Requests refused because a budget was spent (429 "
            "quota_exceeded), by budget and whose it is (member, client).",
            ["budget", "scope"], registry=r)
        self.health_changes = Counter(
            "gateway_account_health_changes", "Accounts starting a cool-down or going out of "
            "service (and restored by an admin), as seen by this process.",
            ["account", "state", "reason"], registry=r)

    def watch(self, pool: AccountPool) -> None:
        """Report the pool's accounts as they are at each scrape."""
        self.registry.register(_AccountState(pool))

    # -- Observer ---------------------------------------------------------------------------

    def usage(self, record: UsageRecord) -> None:
        account = record.account or (OWN_KEY if record.own_key else NO_ACCOUNT)
        self.upstream_requests.labels(account, record.purpose, record.outcome).inc()
        if record.outcome != "ok":
            return
        model = record.model or ""
        if record.purpose == "reply":
            self.turn_duration.labels(account).observe(record.duration_ms / 1000)
        if record.input_tokens:
            self.tokens.labels(account, model, "input").inc(record.input_tokens)
        if record.output_tokens:
            self.tokens.labels(account, model, "output").inc(record.output_tokens)
        if record.cost:
            self.cost.labels(account, model, self._currency).inc(record.cost)

    def upstream_failure(self, account: str, kind: str) -> None:
        self.upstream_failures.labels(account, kind).inc()

    def health_changed(self, account: str, state: str, reason: str) -> None:
        self.health_changes.labels(account, state, reason).inc()

    def quota_refused(self, budget: str, scope: str) -> None:
        self.quota_refusals.labels(budget, scope).inc()


class _AccountState(Collector):
    """Each account's health, cool-down left and calls, read when scraped."""

    def __init__(self, pool: AccountPool) -> None:
        self._pool = pool

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families(read=True)

    def _families(self, read: bool = False) -> list[Metric]:
        health = GaugeMetricFamily(
            "gateway_account_health", "1 for the state each account is in now (healthy, "
            "cooling, out), 0 for the others.", labels=["account", "state"])
        cooldown = GaugeMetricFamily(
            "gateway_account_cooldown_seconds", "Seconds until a cooling account is back.",
            labels=["account"])
        in_flight = GaugeMetricFamily(
            "gateway_account_in_flight", "Upstream calls running on the account in this "
            "process.", labels=["account"])
        waiting = GaugeMetricFamily(
            "gateway_account_waiting", "Calls waiting for one of the account's slots.",
            labels=["account"])
        for account in self._pool if read else ():
            now = account.health()
            for state in HEALTHS:
                health.add_metric([account.name, state], float(now == state))
            cooldown.add_metric([account.name], account.cooldown_left())
            in_flight.add_metric([account.name], account.stats.in_flight)
            waiting.add_metric([account.name], account.stats.waiting)
        return [health, cooldown, in_flight, waiting]
