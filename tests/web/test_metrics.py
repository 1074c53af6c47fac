"""/metrics (issue 11, operations): scraped over HTTP after real requests through the app to the
fake upstream, and read with prometheus_client's own text parser."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import ConfigError
from core.metrics import HTTP_BUCKETS, MAX_MODELS, Metrics
from core.storage.conversations import UsageRecord
from tests.fakes.upstream import FakeUpstream, Hold, Reply, Status
from web.metrics import METRICS_SERVER, MetricsServer

from .support import Api, MakeApi, assert_error

PRICES = {"price_input_per_mtok": 1000.0, "price_output_per_mtok": 2000.0}
"""Dear enough that a few tokens make a cost far from rounding noise."""


class Scrape:
    """One scrape's samples, looked up by name and labels (0 when absent, as Prometheus
    reads a counter that has not moved yet)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text)
                        for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def label_values(self, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if label in s.labels}


async def scrape(api: Api, admin: str) -> Scrape:
    resp = await api.client.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
    async with resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        return Scrape(await resp.text())


async def v1_chat(api: Api, key: str, model: str, **extra: Any) -> aiohttp.ClientResponse:
    resp = await api.client.post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hello"}], **extra})
    await resp.read()
    return resp


async def metrics_api(custom_api: MakeApi, **tables: Any) -> tuple[Api, str]:
    api, gateway = await custom_api(account_extra=PRICES,
                                    metrics={"enabled": True, **tables.pop("metrics", {})},
                                    **tables)
    admin = await gateway.bootstrap_admin()
    assert admin is not None
    return api, admin


async def test_requests_tokens_cost_and_failures_are_counted(
        custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    api, admin = await metrics_api(custom_api)
    key, _ = await api.add_user(admin, "ann")
    before = await scrape(api, admin)
    route = {"route": "/v1/chat/completions", "method": "POST"}

    upstream_a.enqueue(
        Reply("one", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}),
        Reply("two", usage={"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}))
    for _ in range(2):
        assert (await v1_chat(api, key, "model-a")).status == 200
    assert (await v1_chat(api, key, "no-such-model")).status == 404
    after = await scrape(api, admin)

    assert after.value("gateway_http_requests_total", status="200", **route) - \
        before.value("gateway_http_requests_total", status="200", **route) == 2
    assert after.value("gateway_http_requests_total", status="404", **route) == 1
    assert after.value("gateway_http_errors_total", code="model_not_found", **route) == 1
    assert after.value("gateway_http_request_duration_seconds_count", **route) == 3
    assert after.value("gateway_upstream_requests_total", account="A", purpose="reply",
                       outcome="ok") == 2
    assert after.value("gateway_turn_duration_seconds_count", account="A") == 2
    assert after.value("gateway_tokens_total", account="A", model="model-a",
                       direction="input") == 12
    assert after.value("gateway_tokens_total", account="A", model="model-a",
                       direction="output") == 7
    # 12 input tokens at 1000 a million, 7 output tokens at 2000 a million.
    assert after.value("gateway_cost_total", account="A", model="model-a",
                       currency="USD") == pytest.approx(0.012 + 0.014)
    assert after.value("gateway_account_health", account="A", state="healthy") == 1

    # A 429 cools the account down: the failure, the event and the state are all seen.
    upstream_a.enqueue(Status(429, headers={"Retry-After": "20"}))
    resp = await v1_chat(api, key, "model-a")
    assert resp.status == 503
    cooled = await scrape(api, admin)
    assert cooled.value("gateway_upstream_failures_total", account="A",
                        kind="rate_limited") == 1
    assert cooled.value("gateway_account_health_changes_total", account="A", state="cooling",
                        reason="rate_limited") == 1
    assert cooled.value("gateway_account_health", account="A", state="cooling") == 1
    assert cooled.value("gateway_account_health", account="A", state="healthy") == 0
    assert 0 < cooled.value("gateway_account_cooldown_seconds", account="A") <= 20
    assert cooled.value("gateway_account_health", account="B", state="healthy") == 1


async def test_routes_are_patterns_and_no_key_shows(custom_api: MakeApi) -> None:
    api, admin = await metrics_api(custom_api)
    key, _ = await api.add_user(admin, "ann")
    for path in ("/v1/models/model-a", "/v1/models/secret-looking-id", "/no/such/thing/42",
                 "/v1/no-such-endpoint/42"):
        resp = await api.client.get(path, headers={"Authorization": f"Bearer {key}"})
        async with resp:
            assert resp.status in (200, 404)
    found = await scrape(api, admin)
    routes = found.label_values("route")
    assert "/v1/models/{model}" in routes and "unmatched" in routes
    assert not any("model-a" in r or "secret" in r or "42" in r for r in routes), routes
    assert found.value("gateway_http_requests_total", method="GET", route="/v1/models/{model}",
                       status="200") == 1
    assert found.value("gateway_http_requests_total", method="GET", route="unmatched",
                       status="404") == 2
    assert key not in found.text and admin not in found.text
    # Each gateway has its own registry: nothing lands in prometheus_client's global one.
    assert not any(name.startswith("gateway_")
                   for name in prometheus_client.REGISTRY._names_to_collectors)


async def test_in_flight_requests(custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    api, admin = await metrics_api(custom_api)
    key, _ = await api.add_user(admin, "ann")
    gate = asyncio.Event()
    upstream_a.enqueue(Hold(gate, then="late"))
    pending = asyncio.create_task(v1_chat(api, key, "model-a"))
    await upstream_a.wait_in_flight(1)
    during = await scrape(api, admin)
    assert during.value("gateway_http_requests_in_flight", route="/v1/chat/completions") == 1
    assert during.value("gateway_account_in_flight", account="A") == 1
    gate.set()
    assert (await pending).status == 200
    after = await scrape(api, admin)
    assert after.value("gateway_http_requests_in_flight", route="/v1/chat/completions") == 0
    assert after.value("gateway_account_in_flight", account="A") == 0


async def test_a_budget_refusal_is_counted(custom_api: MakeApi,
                                           upstream_a: FakeUpstream) -> None:
    api, admin = await metrics_api(custom_api, limits={"free": {"tokens_per_day": 5}})
    key, _ = await api.add_user(admin, "ann")
    upstream_a.enqueue(Reply("spent", usage={"prompt_tokens": 4, "completion_tokens": 4,
                                             "total_tokens": 8}))
    assert (await v1_chat(api, key, "model-a")).status == 200
    refused = await v1_chat(api, key, "model-a")
    assert refused.status == 429
    found = await scrape(api, admin)
    assert found.value("gateway_budget_refusals_total", budget="tokens_per_day",
                       scope="member") == 1
    assert found.value("gateway_http_errors_total", route="/v1/chat/completions",
                       code="quota_exceeded") == 1
    assert found.value("gateway_tokens_total", account="A", direction="input") == 4


@pytest.mark.sqlite_only
async def test_only_an_admin_key_may_scrape(custom_api: MakeApi) -> None:
    api, admin = await metrics_api(custom_api)
    user, _ = await api.add_user(admin, "ann")
    assert_error(await api.call("/metrics", via="get"), 401, "missing_key")
    assert_error(await api.call("/metrics", key="gw_not-a-real-key", via="get"), 401,
                 "invalid_key")
    assert_error(await api.call("/metrics", key=user, via="get"), 403, "admin_only")
    # Only the header: a key in a scrape URL would sit in the scraper's config and logs.
    assert_error(await api.call("/metrics", key=admin, via="get", key_as="admin"), 401,
                 "missing_key")
    assert (await scrape(api, admin)).value("gateway_http_requests_total", route="/metrics",
                                            status="403") == 1


@pytest.mark.sqlite_only
async def test_off_by_default(custom_api: MakeApi) -> None:
    api, gateway = await custom_api()
    admin = await gateway.bootstrap_admin()
    assert gateway.metrics is None
    assert_error(await api.call("/metrics", key=admin, via="get"), 404, "not_found")


@pytest.mark.sqlite_only
async def test_its_own_address_needs_no_key(custom_api: MakeApi,
                                            upstream_a: FakeUpstream) -> None:
    api, admin = await metrics_api(custom_api, metrics={"port": 0, "path": "/prom"})
    key, _ = await api.add_user(admin, "ann")
    assert (await v1_chat(api, key, "model-a")).status == 200
    # Not on the gateway's own server, even for an admin.
    assert_error(await api.call("/prom", key=admin, via="get"), 404, "not_found")
    server = api.client.app[METRICS_SERVER]
    assert server.addresses and all(host == "127.0.0.1" for host, _ in server.addresses)
    host, port = server.addresses[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{host}:{port}/prom") as resp:
            assert resp.status == 200
            found = Scrape(await resp.text())
        async with session.get(f"http://{host}:{port}/api/chat") as resp:
            assert resp.status == 404  # nothing else is served there
    assert found.value("gateway_http_requests_total", method="POST",
                       route="/v1/chat/completions", status="200") == 1
    assert found.value("gateway_upstream_requests_total", account="A", outcome="ok") == 1


@pytest.mark.sqlite_only
async def test_a_path_of_the_web_ui_is_refused(custom_api: MakeApi) -> None:
    with pytest.raises(ConfigError, match=r"\[metrics\] path = '/admin/metrics' collides"):
        await custom_api(metrics={"enabled": True, "path": "/admin/metrics"})


def test_histograms_read_as_the_librarys_own() -> None:
    """Metrics keeps plain numbers (cheaper on the hot path); a scraper must not see the
    difference from prometheus_client's own Histogram, bucket edges included."""
    ours = Metrics("USD")
    registry = prometheus_client.CollectorRegistry()
    theirs = prometheus_client.Histogram(
        "gateway_http_request_duration_seconds", "d", ["method", "route"],
        buckets=HTTP_BUCKETS, registry=registry)
    for seconds in (0, 0.005, 0.0050001, 1, 7, 300, 301):
        ours.http_duration.observe(("GET", "/x"), seconds)
        theirs.labels("GET", "/x").observe(seconds)

    def samples(source: prometheus_client.CollectorRegistry) -> set[tuple[Any, ...]]:
        text = prometheus_client.generate_latest(source).decode()
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for family in text_string_to_metric_families(text)
                if family.name == "gateway_http_request_duration_seconds"
                for s in family.samples if not s.name.endswith("_created")}

    assert samples(ours.registry) == samples(registry)
    assert len(samples(registry)) == len(HTTP_BUCKETS) + 3  # the buckets, +Inf, count, sum


async def test_a_taken_metrics_port_stops_the_start_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MetricsServer(Metrics("USD"), "/metrics", "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(ConfigError, match=r"\[metrics\] cannot listen on 127\.0\.0\.1:"):
            await server.start()


def test_models_past_the_cap_count_as_other() -> None:
    """An upstream echoing a new model name in every answer cannot add series without end."""
    metrics = Metrics("USD")
    for n in range(MAX_MODELS + 5):
        metrics.usage(UsageRecord(
            principal_id=1, client_id=None, conversation_id="c", account="A",
            model=f"snapshot-{n}", endpoint="v1", outcome="ok", created_utc="",
            duration_ms=10, input_tokens=1, output_tokens=1, cost=0.5))
    found = Scrape(prometheus_client.generate_latest(metrics.registry).decode())
    models = {s.labels["model"] for s in found.samples if s.name == "gateway_tokens_total"}
    assert len(models) == MAX_MODELS + 1 and "other" in models
    assert found.value("gateway_tokens_total", model="other", direction="input") == 5
    assert found.value("gateway_cost_total", model="other") == 2.5


@pytest.mark.sqlite_only
async def test_an_admin_taking_an_account_out_and_back(custom_api: MakeApi) -> None:
    api, admin = await metrics_api(custom_api)
    await api.ok("/api/admin/accounts", {"action": "disable", "name": "B"}, key=admin)
    out = await scrape(api, admin)
    assert out.value("gateway_account_health_changes_total", account="B", state="out",
                     reason="admin") == 1
    assert out.value("gateway_account_health", account="B", state="out") == 1
    await api.ok("/api/admin/accounts", {"action": "enable", "name": "B"}, key=admin)
    back = await scrape(api, admin)
    assert back.value("gateway_account_health_changes_total", account="B", state="healthy",
                      reason="admin") == 1
    assert back.value("gateway_account_health", account="B", state="healthy") == 1


async def test_a_streamed_reply_is_counted_to_its_end(custom_api: MakeApi,
                                                      upstream_a: FakeUpstream) -> None:
    api, admin = await metrics_api(custom_api)
    key, _ = await api.add_user(admin, "ann")
    upstream_a.enqueue(Reply("streamed words", usage={"prompt_tokens": 6,
                                                      "completion_tokens": 2,
                                                      "total_tokens": 8}))
    resp = await v1_chat(api, key, "model-a", stream=True)
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    found = await scrape(api, admin)
    assert found.value("gateway_http_requests_total", method="POST",
                       route="/v1/chat/completions", status="200") == 1
    assert found.value("gateway_http_requests_in_flight", route="/v1/chat/completions") == 0
    assert found.value("gateway_tokens_total", account="A", model="model-a",
                       direction="output") == 2


@pytest.mark.sqlite_only
async def test_embeddings_are_counted_with_their_tokens_and_cost(custom_api: MakeApi) -> None:
    api, gateway = await custom_api(account_extra={**PRICES, "embedding_models": ["embed-small"]},
                                    metrics={"enabled": True})
    admin = await gateway.bootstrap_admin()
    assert admin is not None
    key, _ = await api.add_user(admin, "ann")
    resp = await api.client.post("/v1/embeddings", headers={"Authorization": f"Bearer {key}"},
                                 json={"model": "embed-small", "input": ["first text", "second"]})
    async with resp:
        assert resp.status == 200, await resp.text()
    found = await scrape(api, admin)
    assert found.value("gateway_upstream_requests_total", purpose="embedding", outcome="ok") == 1
    # The fake counts words: three input tokens, at 1000 a million.
    assert found.value("gateway_tokens_total", model="embed-small", direction="input") == 3
    assert found.value("gateway_cost_total", model="embed-small") == pytest.approx(0.003)
