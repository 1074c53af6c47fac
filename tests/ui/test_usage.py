"""The usage pages in Chromium, after real requests through fake upstreams that report usage: a
member's month with budgets and a chart per day, the admins' dashboard (charts by model, top
users, accounts, a date range and the CSV), a client's view of its own users, budgets set from
the users page, and a member kept out of the dashboard."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openai import AsyncOpenAI
from playwright.async_api import Download, Page, expect

from core.config import Settings
from core.gateway import Gateway, build_gateway
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import FakeUpstream, Reply

from .conftest import OpenContext, session_loop
from .support import LOOP, Ui, make_key

pytestmark = LOOP

PRICES_A = {"price_input_per_mtok": 2.0, "price_output_per_mtok": 8.0}
PRICES_B = {"price_input_per_mtok": 1.0, "price_output_per_mtok": 4.0}


def cost(prices: dict[str, float], prompt: int, completion: int) -> float:
    return (prompt * prices["price_input_per_mtok"]
            + completion * prices["price_output_per_mtok"]) / 1_000_000


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class Clock:
    """The gateway's wall clock (budget periods): real time unless a test sets a moment."""

    def __init__(self) -> None:
        self.moment: float | None = None

    def __call__(self) -> float:
        return time.time() if self.moment is None else self.moment

    def set(self, year: int, month: int, day: int, hour: int) -> None:
        self.moment = datetime(year, month, day, hour, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
             upstream_b: FakeUpstream) -> Settings:
    return make_settings([account("A", upstream_a, "KEY_A", **PRICES_A),
                          account("B", upstream_b, "KEY_B", **PRICES_B)])


@session_loop
async def gateway(settings: Settings, clock: Clock) -> AsyncIterator[Gateway]:
    async with build_gateway(settings, environ=ENVIRON, clock=clock) as gw:
        yield gw


async def ask(server: str, key: str, model: str, prompt: str) -> None:
    """One request through the OpenAI-compatible API, as any SDK user makes it."""
    async with AsyncOpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0) as client:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}])


async def downloaded(download: Download) -> str:
    """The text of a file the browser downloaded."""
    path = await download.path()
    return await asyncio.to_thread(Path(path).read_text, encoding="utf-8")


async def numbers(page: Page, selector: str) -> dict[str, str]:
    """A ``dl.stats`` as {label: value}."""
    pairs = await page.locator(f"{selector} div").evaluate_all(
        "divs => divs.map(d => [d.querySelector('dt').textContent,"
        " d.querySelector('dd').textContent])")
    return dict(pairs)


# --------------------------------------------------------------------------------- members


async def test_a_member_sees_the_month_budgets_and_a_bar_per_day_of_use(
        ui: Ui, gateway: Gateway, admin_key: str, clock: Clock, upstream_a: FakeUpstream,
        upstream_b: FakeUpstream) -> None:
    key = await make_key(gateway, admin_key, "ann")
    ann = await gateway.authenticate(key)
    admin = await gateway.authenticate(admin_key)
    await gateway.update_user(admin, str(ann.id),
                              limits={"tokens_per_day": 1000, "cost_per_month": 1})
    page = ui.page
    await ui.sign_in(key)

    # Day 3: a new conversation (its reply and its title are both ann's); day 5: a follow-up.
    clock.set(2026, 3, 3, 10)
    for fake in (upstream_a, upstream_b):
        fake.enqueue(Reply("first answer", usage=usage(100, 20)),
                     Reply("second answer", usage=usage(200, 40)))
        fake.enqueue_title(Reply("A title", usage=usage(30, 5)))
    await ui.send("hello")
    clock.set(2026, 3, 5, 9)
    await ui.send("and more")
    served = upstream_a if upstream_a.chat_requests() else upstream_b
    prices = PRICES_A if served is upstream_a else PRICES_B
    month_cost = cost(prices, 330, 65)

    await page.get_by_role("link", name="Usage").click()
    await expect(page).to_have_url(re.compile(r"/usage$"))
    await expect(page.locator("#usage-month h2")).to_have_text("March 2026")
    stats = await numbers(page, "#usage-stats")
    assert stats["Tokens this month"] == "395"  # 120 + 35 (title) + 240
    assert stats["Requests this month"] == "2"
    assert stats["Tokens today"] == "240"
    assert stats["Cost this month (USD)"] == f"{month_cost:.4f} USD"
    # The page and /api/usage tell the same.
    summary = await gateway.usage(ann)
    assert summary["tokens_this_month"] == 395 and summary["tokens_today"] == 240

    day = page.locator("#budget-tokens_per_day")
    await expect(day).to_contain_text("1,000 tokens")
    await expect(day.locator("[data-label=Used]")).to_have_text("240 tokens")
    await expect(day.locator(".budget-left")).to_have_text("760 tokens")
    await expect(day.locator("time")).to_have_attribute("datetime", "2026-03-06T00:00:00.000Z")
    await expect(day.locator("progress")).to_have_attribute("value", "24")
    month = page.locator("#budget-cost_per_month")
    await expect(month.locator(".budget-left")).to_have_text(f"{1 - month_cost:.4f} USD")
    await expect(month.locator("time")).to_have_attribute("datetime",
                                                          "2026-04-01T00:00:00.000Z")
    await expect(page.locator("#budget-tokens_per_month")).to_have_count(0)  # none set

    chart = page.locator("svg#daily-tokens")
    await expect(chart).to_have_attribute("role", "img")
    await expect(chart.locator("title").first).to_have_text("Your tokens per day, March 2026")
    await expect(chart.locator("g.day")).to_have_count(2)
    assert await chart.locator("g.day").evaluate_all(
        "gs => gs.map(g => g.dataset.day)") == ["2026-03-03", "2026-03-05"]
    await expect(chart.locator("g.day rect title")).to_have_text(
        ["2026-03-03: 155 tokens", "2026-03-05: 240 tokens"])
    # The taller bar is the busier day; no bar on a day without use.
    heights = await chart.locator("g.day rect").evaluate_all(
        "rs => rs.map(r => r.getBBox().height)")
    assert heights[1] > heights[0] > 0
    assert ui.csp_violations() == []


async def test_a_spent_budget_shows_as_spent_and_no_budget_says_so(
        ui: Ui, gateway: Gateway, admin_key: str, server: str) -> None:
    key = await make_key(gateway, admin_key, "bea")
    await ui.sign_in(key)
    await ui.page.goto("/usage")
    await expect(ui.page.locator("#no-budgets")).to_contain_text("No budget applies to you")
    await expect(ui.page.locator("svg#daily-tokens g.day")).to_have_count(0)
    await expect(ui.page.locator("svg#daily-tokens .empty")).to_be_visible()

    await ask(server, key, "model-a", "spend it")  # the fake reports its own count
    admin = await gateway.authenticate(admin_key)
    bea = await gateway.authenticate(key)
    await gateway.update_user(admin, str(bea.id), limits={"tokens_per_day": 1})
    await ui.page.reload()
    row = ui.page.locator("#budget-tokens_per_day")
    await expect(row.locator(".badge-bad")).to_have_text("spent")
    await expect(row.locator(".budget-left")).to_contain_text("0 tokens")
    await expect(row.locator("progress.spent")).to_have_attribute("value", "100")
    await expect(ui.page.locator("svg#daily-tokens g.day")).to_have_count(1)


async def test_a_member_does_not_get_the_dashboard_or_its_csv(
        ui: Ui, gateway: Gateway, admin_key: str) -> None:
    key = await make_key(gateway, admin_key, "dan")
    await ui.sign_in(key)
    await expect(ui.page.get_by_role("link", name="Admin")).to_have_count(0)
    response = await ui.page.goto("/admin/usage")
    assert response is not None and response.status == 403
    await expect(ui.page.locator("main")).to_contain_text("admin pages are for admins")
    csv_answer = await ui.page.request.get(ui.base_url + "/admin/usage.csv")
    assert csv_answer.status == 403
    assert "csv" not in csv_answer.headers["content-type"]


# --------------------------------------------------------------------------------- dashboard


async def traffic(gateway: Gateway, admin_key: str, server: str, upstream_a: FakeUpstream,
                  upstream_b: FakeUpstream) -> dict[str, str]:
    """ann: two calls on model-a, bob: one on model-b, carl (a client's user): one on model-a."""
    keys = {name: await make_key(gateway, admin_key, name) for name in ("ann", "bob")}
    client_key = await make_key(gateway, admin_key, "discord", role="client")
    client = await gateway.authenticate(client_key)
    _, keys["carl"] = await gateway.add_user(client, userid="c-1", username="carl")
    keys["discord"] = client_key
    upstream_a.enqueue(Reply("a1", usage=usage(100, 20)), Reply("a2", usage=usage(100, 20)),
                       Reply("c1", usage=usage(10, 5)))
    upstream_b.enqueue(Reply("b1", usage=usage(1000, 500)))
    await ask(server, keys["ann"], "model-a", "one")
    await ask(server, keys["ann"], "model-a", "two")
    await ask(server, keys["bob"], "model-b", "three")
    await ask(server, keys["carl"], "model-a", "four")
    return keys


EXPECTED_TOKENS = {"bob": 1500, "ann": 240, "carl": 15}
EXPECTED_COST = {"bob": cost(PRICES_B, 1000, 500), "ann": 2 * cost(PRICES_A, 100, 20),
                 "carl": cost(PRICES_A, 10, 5)}


async def test_the_admin_dashboard_charts_ranks_and_downloads_the_real_use(
        ui: Ui, gateway: Gateway, admin_key: str, server: str, upstream_a: FakeUpstream,
        upstream_b: FakeUpstream) -> None:
    await traffic(gateway, admin_key, server, upstream_a, upstream_b)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    page = ui.page
    await ui.sign_in(admin_key, start="/login?next=/admin/users", lands="/admin/users")
    await page.locator("nav.tabs").get_by_role("link", name="Usage").click()
    await expect(page).to_have_url(re.compile(r"/admin/usage$"))
    await expect(page.locator("#range-title")).to_have_text(f"{today[:8]}01 to {today}")

    total_cost = sum(EXPECTED_COST.values())
    stats = await numbers(page, "#usage-totals")
    assert stats == {"Requests": "4", "Tokens": "1,755", "Cost (USD)": f"{total_cost:.4f} USD",
                     "Failed calls": "0"}

    rows = page.locator("#top-users tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.nth(0)).to_contain_text("bob")
    await expect(rows.nth(0)).to_contain_text("1,500")
    await expect(rows.nth(1)).to_contain_text("ann")
    await expect(rows.nth(2)).to_contain_text("carl")
    await expect(rows.nth(2)).to_contain_text("id c-1")
    accounts = page.locator("#by-account table").first.locator("tbody tr")
    await expect(accounts).to_have_text([re.compile(r"^B\s*1\s*0\s*1,500"),
                                         re.compile(r"^A\s*3\s*0\s*255")])

    tokens_chart = page.locator("svg#chart-tokens")
    await expect(tokens_chart.locator("g.day")).to_have_count(1)
    await expect(tokens_chart.locator("g.day")).to_have_attribute("data-day", today)
    await expect(tokens_chart.locator("rect title")).to_have_text(
        [f"{today} · model-b: 1,500 tokens", f"{today} · model-a: 255 tokens"])
    await expect(page.locator("svg#chart-cost g.day rect")).to_have_count(2)
    await expect(page.locator(".legend li")).to_have_text(["model-b", "model-a"])
    # The bars are coloured by the theme, not left black: each model its own fill.
    fills = await tokens_chart.locator("rect").evaluate_all(
        "rs => rs.map(r => getComputedStyle(r).fill)")
    assert len(set(fills)) == 2 and "rgb(0, 0, 0)" not in fills

    # The CSV of the same range, downloaded through the session, adds up.
    async with page.expect_download() as info:
        await page.click("#csv-download")
    download = await info.value
    assert download.suggested_filename == f"usage-user-{today[:8]}01-{today}.csv"
    table = list(csv.DictReader(io.StringIO(await downloaded(download))))
    assert {r["name"]: int(r["tokens"]) for r in table} == EXPECTED_TOKENS
    assert sum(int(r["tokens"]) for r in table) == 1755
    assert sum(int(r["requests"]) for r in table) == 4
    assert sum(float(r["cost"]) for r in table) == pytest.approx(total_cost)
    assert {r["currency"] for r in table} == {"USD"}

    await page.select_option("#csv-group", "model")
    async with page.expect_download() as info:
        await page.click("#csv-download")
    lines = list(csv.DictReader(io.StringIO(await downloaded(await info.value))))
    assert {r["model"]: int(r["tokens"]) for r in lines} == {"model-b": 1500, "model-a": 255}
    assert ui.csp_violations() == []


async def test_the_date_range_picker_narrows_and_refuses_a_bad_range(
        ui: Ui, gateway: Gateway, admin_key: str, server: str, upstream_a: FakeUpstream,
        upstream_b: FakeUpstream) -> None:
    await traffic(gateway, admin_key, server, upstream_a, upstream_b)
    page = ui.page
    await ui.sign_in(admin_key, start="/login?next=/admin/usage", lands="/admin/usage")
    await page.fill("#range-from", "2025-02-01")
    await page.fill("#range-to", "2025-02-28")
    await page.click("#range-show")
    await expect(page).to_have_url(re.compile(r"from=2025-02-01&to=2025-02-28$"))
    await expect(page.locator("#range-title")).to_have_text("2025-02-01 to 2025-02-28")
    assert (await numbers(page, "#usage-totals"))["Tokens"] == "0"
    chart = page.locator("svg#chart-tokens")
    await expect(chart.locator("g.day")).to_have_count(0)
    await expect(chart.locator(".empty")).to_have_text("No use in this period")
    # 28 days on the axis, every third one labelled by its day of the month: 1, 4, …, 28.
    labels = chart.locator("text.axis[text-anchor=middle]")
    await expect(labels).to_have_text([str(d) for d in range(1, 29, 3)])
    await expect(page.locator("#top-users")).to_contain_text("Nobody used the gateway")

    response = await page.goto("/admin/usage?from=2026-02-30&to=2026-03-01")
    assert response is not None and response.status == 400
    await expect(page.locator("#range-error")).to_contain_text("from must be a date")
    response = await page.goto("/admin/usage?from=2026-03-02&to=2026-03-01")
    assert response is not None and response.status == 400
    await expect(page.locator("#range-error")).to_contain_text("is after to")
    answer = await page.request.get(ui.base_url + "/admin/usage.csv?group_by=planet")
    assert answer.status == 400 and "group_by must be one of" in await answer.text()


async def test_a_client_sees_only_its_own_users(
        ui: Ui, gateway: Gateway, admin_key: str, server: str, upstream_a: FakeUpstream,
        upstream_b: FakeUpstream) -> None:
    keys = await traffic(gateway, admin_key, server, upstream_a, upstream_b)
    page = ui.page
    await ui.sign_in(keys["discord"], start="/login?next=/admin/usage", lands="/admin/usage")
    await expect(page.locator("#range-title")).to_contain_text("your users")
    assert (await numbers(page, "#usage-totals"))["Tokens"] == "15"
    await expect(page.locator("#top-users tbody tr")).to_have_text([re.compile(r"^carl")])
    await expect(page.locator("svg#chart-tokens rect title")).to_have_count(1)
    async with page.expect_download() as info:
        await page.click("#csv-download")
    table = list(csv.DictReader(io.StringIO(await downloaded(await info.value))))
    assert [r["name"] for r in table] == ["carl"]


# --------------------------------------------------------------------------------- budgets


async def test_an_admin_sets_a_members_budgets_on_the_users_page(
        ui: Ui, gateway: Gateway, admin_key: str, server: str) -> None:
    key = await make_key(gateway, admin_key, "eve")
    page = ui.page
    await ui.sign_in(admin_key, start="/login?next=/admin/users", lands="/admin/users")
    row = page.locator("tr", has_text="eve")
    await row.locator("summary", has_text="Budgets").click()
    panel = row.locator(".budgets-panel .confirm-panel")
    await panel.get_by_label("Tokens per day (tokens)").fill("5000")
    await panel.get_by_label("Cost per month (USD)").fill("2.5")
    await panel.get_by_label("Tokens per month (tokens)").fill("none")
    await panel.get_by_role("button", name="Save budgets").click()
    await expect(page.locator(".flash-ok")).to_have_text(
        "Budgets of eve: tokens per day 5000, no tokens per month limit, cost per month 2.5.")
    await expect(row.locator(".budgets-set")).to_have_text(
        "budgets: 5000 tokens/day · no limit on tokens/month · 2.5 USD/month")
    eve = await gateway.authenticate(key)
    assert dict(eve.limits) == {"tokens_per_day": 5000, "tokens_per_month": None,
                                "cost_per_month": 2.5}

    # A word instead of a number: the reason, and nothing changed.
    await row.locator("summary", has_text="Budgets").click()
    await panel.get_by_label("Tokens per day (tokens)").fill("lots")
    await panel.get_by_role("button", name="Save budgets").click()
    await expect(page.locator(".flash-error")).to_contain_text(
        "tokens_per_day must be a whole number")
    assert dict((await gateway.authenticate(key)).limits)["tokens_per_day"] == 5000

    # Emptied boxes go back to the tier default.
    await row.locator("summary", has_text="Budgets").click()
    for label in ("Tokens per day (tokens)", "Tokens per month (tokens)",
                  "Cost per month (USD)"):
        await panel.get_by_label(label).fill("")
    await panel.get_by_role("button", name="Save budgets").click()
    await expect(page.locator(".flash-ok")).to_contain_text("tokens per day as the tier default")
    assert dict((await gateway.authenticate(key)).limits) == {}

    # The member sees it on their page.
    await gateway.update_user(await gateway.authenticate(admin_key), str(eve.id),
                              limits={"tokens_per_month": 12345})
    await ui.sign_out()
    await ui.sign_in(key)
    await page.goto("/usage")
    await expect(page.locator("#budget-tokens_per_month")).to_contain_text("12,345 tokens")


async def test_managers_open_a_members_usage_and_a_client_ceiling_shows_on_it(
        ui: Ui, gateway: Gateway, admin_key: str, server: str, upstream_a: FakeUpstream,
        upstream_b: FakeUpstream, open_context: OpenContext) -> None:
    keys = await traffic(gateway, admin_key, server, upstream_a, upstream_b)
    admin = await gateway.authenticate(admin_key)
    client = await gateway.authenticate(keys["discord"])
    await gateway.update_user(admin, str(client.id), limits={"tokens_per_month": 100})
    page = ui.page
    await ui.sign_in(admin_key, start="/login?next=/admin/users", lands="/admin/users")
    await page.locator("tr", has_text="ann").get_by_role("link", name="Usage").click()
    await expect(page.locator("#usage-owner")).to_contain_text("Usage of ann")
    assert (await numbers(page, "#usage-stats"))["Tokens this month"] == "240"
    await expect(page.locator("#no-budgets")).to_contain_text("No budget applies to ann")
    await expect(page.locator("svg#daily-tokens title").first).to_contain_text(
        "ann's tokens per day")

    # carl falls under his client's ceiling: 100 tokens a month for all its users, 15 used.
    await page.get_by_role("link", name="← Users").click()
    carl = page.locator("tr", has_text="carl")
    await carl.get_by_role("link", name="Usage").click()
    row = page.locator("#budget-tokens_per_month")
    await expect(row.locator("[data-label=Limit]")).to_contain_text(
        "100 tokens" + "the client's ceiling for all its users")
    await expect(row.locator(".budget-left")).to_have_text("85 tokens")

    # The client opens its own user by its own id, and no one else's.
    bot = await (await open_context()).new_page()
    bot_ui = Ui(bot, ui.base_url, gateway)
    await bot_ui.sign_in(keys["discord"], start="/login?next=/usage%3Fuser%3Dc-1",
                         lands="/usage?user=c-1")
    await expect(bot.locator("#usage-owner")).to_contain_text("Usage of carl")
    ann = await gateway.authenticate(keys["ann"])
    response = await bot.goto(f"/usage?user={ann.id}")
    assert response is not None and response.status == 404

    # A member may not look at anyone else's.
    member = await (await open_context()).new_page()
    member_ui = Ui(member, ui.base_url, gateway)
    await member_ui.sign_in(keys["bob"])
    response = await member.goto(f"/usage?user={ann.id}")
    assert response is not None and response.status == 403
