"""Budgets and usage over HTTP (issue 11), as an admin, a client and their members use them:
budgets through update-user, 429 quota_exceeded on /api/chat, insufficient_quota and the
x-ratelimit headers on /v1 (through the official SDK), /api/usage and /api/admin/usage in
JSON and CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream, Reply

from .support import MakeApi, assert_error, serving


def used(prompt: int, reply: int) -> Reply:
    return Reply("ok", usage={"prompt_tokens": prompt, "completion_tokens": reply,
                              "total_tokens": prompt + reply})


@pytest.fixture
async def setup(custom_api: MakeApi) -> Any:
    api, gateway = await custom_api(account_extra={"price_input_per_mtok": 1.0,
                                                   "price_output_per_mtok": 4.0},
                                    limits={"free": {"tokens_per_day": 1000},
                                            "user_requests_per_minute": 100})
    admin_key = await gateway.create_admin("root")
    return api, gateway, admin_key


async def test_update_user_sets_budgets_and_chat_is_refused_once_spent(
    setup: Any, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    api, gateway, admin_key = setup
    client_key, _ = await api.add_user(admin_key, "bot", role="client")
    ann_key, ann = await api.add_user(client_key, "ann", userid="ann")
    bob_key, _ = await api.add_user(client_key, "bob", userid="bob")
    body = await api.ok("/api/client/update-user", {"userid": "ann", "tokens_per_day": "50"},
                        key=client_key)
    assert body["user"]["limits"] == {"tokens_per_day": 50}
    # Every form the original accepts: GET query, form; "none" and "default" too.
    body = await api.ok("/api/client/update-user",
                        {"userid": "bob", "cost_per_month": "none"}, key=client_key, via="get")
    assert body["user"]["limits"] == {"cost_per_month": "none"}
    await api.error("/api/client/update-user", {"userid": "ann", "tokens_per_day": "lots"},
                    key=client_key, status=400, code="bad_budget")
    await api.error("/api/client/update-user", {"userid": "ann", "tokens_per_day": 5},
                    key=ann_key, status=403)

    for fake in (upstream_a, upstream_b):
        fake.enqueue(*[used(30, 30) for _ in range(3)])
    first = await api.chat(ann_key, "one")
    result = await api.call("/api/chat", {"prompt": "two",
                                          "conversation_id": first["conversation_id"]},
                            key=ann_key)
    assert_error(result, 429, "quota_exceeded")
    assert "tokens_per_day budget of 50 tokens is spent" in result.body["message"]
    assert int(result.headers["Retry-After"]) > 0
    await api.chat(bob_key, "bob is still served")

    usage = await api.ok("/api/usage", key=ann_key)
    title = await gateway.storage.db.fetchone(
        "SELECT input_tokens + output_tokens, cost FROM usage WHERE purpose = 'title'"
        " AND principal_id = ?", (ann["id"],))
    # The reply's 60 and the title's call: both the member's use.
    assert (usage["tokens_today"], usage["requests_today"]) == (60 + title[0], 1)
    assert usage["limits"] == {"tokens_per_day": 50, "tokens_per_month": None,
                               "cost_per_month": None}
    assert usage["remaining"]["tokens_per_day"] == 0
    assert usage["cost_this_month"] == pytest.approx((30 * 1.0 + 30 * 4.0) / 1e6 + title[1])
    # A client reads its user's; the user's own key cannot read another's.
    assert (await api.ok("/api/usage", {"user_id": "ann"}, key=client_key))["tokens_today"] \
        == 60 + title[0]
    await api.error("/api/usage", {"user_id": "bob"}, key=ann_key, status=403)


async def test_the_admin_report_adds_up_in_json_and_csv(
    setup: Any, upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    api, _gateway, admin_key = setup
    client_key, _ = await api.add_user(admin_key, "bot", role="client")
    other_key, _ = await api.add_user(admin_key, "other-bot", role="client")
    keys = [(await api.add_user(client_key, f"m{n}", userid=f"m{n}"))[0] for n in range(3)]
    outsider_key, _ = await api.add_user(other_key, "x", userid="x")
    for fake in (upstream_a, upstream_b):
        fake.enqueue(*[used(10 * n, n) for n in range(1, 6)])
    for n, key in enumerate(keys):
        for _ in range(n + 1):
            await api.chat(key, f"question from {n}")
    await api.chat(outsider_key, "not the bot's")

    report = await api.ok("/api/admin/usage", {"group_by": "user"}, key=admin_key)
    rows = report["rows"]
    assert sum(r["requests"] for r in rows) == report["totals"]["requests"] == 7
    assert sum(r["tokens"] for r in rows) == report["totals"]["tokens"]
    assert sum(r["cost"] for r in rows) == pytest.approx(report["totals"]["cost"])
    assert {r["name"] for r in rows} == {"m0", "m1", "m2", "x"}

    result = await api.call("/api/admin/usage", {"group_by": "model", "format": "csv"},
                            key=admin_key, via="get")
    assert result.status == 200 and result.content_type == "text/csv"
    table = list(csv.DictReader(io.StringIO(result.text)))
    assert sum(int(r["tokens"]) for r in table) == report["totals"]["tokens"]
    assert sum(float(r["cost"]) for r in table) == pytest.approx(report["totals"]["cost"])
    assert {r["currency"] for r in table} == {"USD"}

    by_day = await api.ok("/api/admin/usage", {"group_by": "day"}, key=admin_key)
    assert [r["tokens"] for r in by_day["rows"]] == [report["totals"]["tokens"]]
    # A client sees its own users only.
    own = await api.ok("/api/admin/usage", {"group_by": "user"}, key=client_key)
    assert {r["name"] for r in own["rows"]} == {"m0", "m1", "m2"}
    await api.error("/api/admin/usage", {}, key=keys[0], status=403)
    await api.error("/api/admin/usage", {"group_by": "week"}, key=admin_key, status=400)
    await api.error("/api/admin/usage", {"from": "2026-13-01"}, key=admin_key, status=400,
                    code="bad_date")


@pytest.fixture
async def v1(setup: Any) -> AsyncIterator[tuple[str, Gateway, str]]:
    _api, gateway, admin_key = setup
    admin = await gateway.authenticate(admin_key)
    _, key = await gateway.add_user(admin, userid="dev", username="dev")
    async with serving(gateway) as root:
        yield f"{root}/v1", gateway, key


async def test_v1_says_insufficient_quota_and_sends_rate_limit_headers(
    v1: tuple[str, Gateway, str], upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    base_url, _gateway, key = v1
    for fake in (upstream_a, upstream_b):
        fake.enqueue(*[used(300, 300) for _ in range(3)])
    messages = [{"role": "user", "content": "hi"}]
    async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(model="model-a",
                                                                  messages=messages)
        assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
        assert raw.headers["x-ratelimit-remaining-tokens"] == "400"
        assert raw.headers["x-ratelimit-reset-tokens"].endswith("s")
        # The requests trio follows user_requests_per_minute, this one counted.
        assert (raw.headers["x-ratelimit-limit-requests"],
                raw.headers["x-ratelimit-remaining-requests"]) == ("100", "99")
        stream = await sdk.chat.completions.create(model="model-a", messages=messages,
                                                   stream=True)
        async for _ in stream:
            pass
        with pytest.raises(openai.RateLimitError) as caught:
            await sdk.chat.completions.create(model="model-a", messages=messages)
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["type"]) == ("insufficient_quota", "insufficient_quota")
    assert "tokens_per_day budget" in error["message"]
    assert caught.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(caught.value.response.headers["retry-after"]) > 0


async def test_ten_at_once_after_the_budget_is_spent_are_all_refused(
    v1: tuple[str, Gateway, str], upstream_a: FakeUpstream, upstream_b: FakeUpstream,
) -> None:
    base_url, _gateway, key = v1
    for fake in (upstream_a, upstream_b):
        fake.enqueue(used(600, 500))
    messages = [{"role": "user", "content": "hi"}]
    async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as sdk:
        await sdk.chat.completions.create(model="model-a", messages=messages)
        outcomes = await asyncio.gather(
            *[sdk.chat.completions.create(model="model-a", messages=messages)
              for _ in range(10)], return_exceptions=True)
    assert all(isinstance(o, openai.RateLimitError) for o in outcomes), outcomes
    assert len(upstream_a.chat_requests()) + len(upstream_b.chat_requests()) == 1
