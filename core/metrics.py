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
counts, and is the collector of a ``CollectorRegistry`` of its own, one per gateway (never
prometheus_client's global one, so tests and several gateways in one process keep apart),
which web/metrics.py serves as ``/metrics``; the fronts' request counters live here too.

Why the numbers are plain dicts rather than prometheus_client's ``Counter`` and ``Histogram``:
those take a lock and validate labels on every update, built for threads. Here every update
and every scrape runs on the one event loop, so a dict update is all an update needs. The
updates of one /v1 turn (about ten) took 130 to 210 µs with the library's metrics and 22 to 38
µs this way, on a 2-core machine busy with other work (the same loop, interleaved runs). The
library still does everything a scraper sees: the metric families, the text and OpenMetrics
formats, the negotiation; a test checks these histograms read as the library's own.
Current account state (health, cool-down left, calls in flight) is read from the pool at
scrape time, not kept up to date on the hot path.

Labels are bounded and hold no secret: account names and models come from the configuration
and the upstream's answers, routes are patterns (``/api/conversations/{id}``), never raw paths.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .observer import Observer

if TYPE_CHECKING:
    from .accounts import AccountPool
    from .storage.conversations import UsageRecord

Key = tuple[str, ...]
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
MAX_MODELS = 200
"""Distinct model labels kept; past it a new model counts as ``other``. Models are what the
upstreams echo, and one that named a new snapshot in every answer would otherwise add series
without end."""
OTHER_MODEL = "other"


class _Family:
    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)


class Count(_Family):
    """A counter per label values (``name`` without ``_total``, which the format adds)."""

    kind: type[CounterMetricFamily | GaugeMetricFamily] = CounterMetricFamily

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels)
        self.values: dict[Key, float] = {}

    def inc(self, key: Key, amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def family(self) -> Metric:
        family = self.kind(self.name, self.documentation, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(key, value)
        return family


class Level(Count):
    """A gauge per label values, moved up and down (``inc`` by a negative amount)."""

    kind = GaugeMetricFamily


class Spread(_Family):
    """A histogram per label values: a count per bucket (not cumulative until scraped) and
    the sum."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 buckets: Sequence[float]) -> None:
        super().__init__(name, documentation, labels)
        self.bounds = tuple(buckets)
        self._les = [repr(float(b)) for b in self.bounds] + ["+Inf"]  # as the library writes le
        self.values: dict[Key, tuple[list[int], list[float]]] = {}

    def observe(self, key: Key, value: float) -> None:
        found = self.values.get(key)
        if found is None:
            found = self.values[key] = ([0] * (len(self.bounds) + 1), [0.0])
        found[0][bisect_left(self.bounds, value)] += 1  # le: the first bound >= value
        found[1][0] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, (counts, total) in self.values.items():
            cumulative, buckets = 0, []
            for le, count in zip(self._les, counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(key, buckets, total[0])
        return family


class Metrics(Observer):
    """The gateway's metrics, in a registry of their own (``registry``)."""

    def __init__(self, currency: str) -> None:
        self._currency = currency
        self._models: set[str] = set()
        # The fronts (web/metrics.py counts the HTTP requests).
        self.http_requests = Count(
            "gateway_http_requests", "HTTP requests answered, by route pattern and status.",
            ["method", "route", "status"])
        self.http_errors = Count(
            "gateway_http_errors", "HTTP requests answered with an error, by the error's code "
            "(the `code` of the JSON error body).", ["method", "route", "code"])
        self.http_duration = Spread(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request (to its last byte for a stream).",
            ["method", "route"], HTTP_BUCKETS)
        self.http_in_flight = Level(
            "gateway_http_requests_in_flight", "HTTP requests being answered now.", ["route"])
        # The core.
        self.upstream_requests = Count(
            "gateway_upstream_requests", "Upstream calls recorded in the usage table: replies "
            "and titles answered, and turns that failed (outcome).",
            ["account", "purpose", "outcome"])
        self.upstream_failures = Count(
            "gateway_upstream_failures", "Failed calls of a pool account, also those a new "
            "conversation then retried on another account.", ["account", "kind"])
        self.turn_duration = Spread(
            "gateway_turn_duration_seconds", "Time from prompt to stored reply of answered "
            "turns, by the account that answered.", ["account"], TURN_BUCKETS)
        self.tokens = Count(
            "gateway_tokens", "Tokens used (as the upstream reported them, or estimated), by "
            "account, model and direction (input, output).", ["account", "model", "direction"])
        self.cost = Count(
            "gateway_cost", "What the calls cost at the accounts' prices, in the billing "
            "currency.", ["account", "model", "currency"])
        self.quota_refusals = Count(
            "gateway_budget_refusals", "Requests refused because a budget was spent (429 "
            "quota_exceeded), by budget and whose it is (member, client).", ["budget", "scope"])
        self.health_changes = Count(
            "gateway_account_health_changes", "Accounts starting a cool-down or going out of "
            "service (and restored by an admin), as seen by this process.",
            ["account", "state", "reason"])
        self._families: list[Count | Spread] = [
            value for value in vars(self).values() if isinstance(value, Count | Spread)]
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def watch(self, pool: AccountPool) -> None:
        """Report the pool's accounts as they are at each scrape."""
        self.registry.register(_AccountState(pool))

    def collect(self) -> Iterable[Metric]:
        return [family.family() for family in self._families]

    # -- Observer ---------------------------------------------------------------------------

    def usage(self, record: UsageRecord) -> None:
        account = record.account or (OWN_KEY if record.own_key else NO_ACCOUNT)
        self.upstream_requests.inc((account, record.purpose, record.outcome))
        if record.outcome != "ok":
            return
        model = self._model(record.model or "")
        if record.purpose == "reply":
            self.turn_duration.observe((account,), record.duration_ms / 1000)
        if record.input_tokens:
            self.tokens.inc((account, model, "input"), record.input_tokens)
        if record.output_tokens:
            self.tokens.inc((account, model, "output"), record.output_tokens)
        if record.cost:
            self.cost.inc((account, model, self._currency), record.cost)

    def _model(self, model: str) -> str:
        if model not in self._models:
            if len(self._models) >= MAX_MODELS:
                return OTHER_MODEL
            self._models.add(model)
        return model

    def upstream_failure(self, account: str, kind: str) -> None:
        self.upstream_failures.inc((account, kind))

    def health_changed(self, account: str, state: str, reason: str) -> None:
        self.health_changes.inc((account, state, reason))

    def quota_refused(self, budget: str, scope: str) -> None:
        self.quota_refusals.inc((budget, scope))


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
