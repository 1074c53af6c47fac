"""Fixtures of the browser suite: the real gateway app served on 127.0.0.1 (an aiohttp
``AppRunner`` on port 0) over the fake upstreams, and Debian's Chromium driven by Playwright.

One Chromium serves the whole session (each test gets a fresh browser context: no cookies, no
storage), so the suite's tests and fixtures run on the session's event loop: every module
here sets ``pytestmark = LOOP`` (support.py), and the async fixtures of ``tests/conftest.py``
they use are redefined below for that loop (same behaviour, same names).

Chromium comes from Debian (``apt-get install chromium``; ``.ci/run`` installs it when missing),
never from ``playwright install``. Every page a test opens is screenshotted into a temporary
folder when the test fails; the folder is printed with the failure (``UI_SCREENSHOTS=DIR`` to
choose it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from core.config import Settings
from core.gateway import Gateway, build_gateway
from tests.conftest import ENVIRON
from tests.fakes.upstream import FakeUpstream
from web.app import create_app

from .support import Ui

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
CHROMIUM = os.environ.get("UI_CHROMIUM", CHROMIUM)
"""``UI_CHROMIUM`` names another binary (the test of a missing browser names none)."""
INSTALL_CHROMIUM = "sudo apt-get install chromium"
_NO_BROWSER = pytest.StashKey[bool]()
LAPTOP = {"width": 1280, "height": 800}
EXPECT_TIMEOUT_MS = 10_000
session_loop = pytest_asyncio.fixture(loop_scope="session")

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()

expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the item, so a fixture's teardown knows the test failed."""
    report: pytest.TestReport = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    chosen = os.environ.get("UI_SCREENSHOTS")
    folder = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="ui-screenshots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@session_loop
async def upstream_a() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("A", model="model-a") as fake:
        yield fake


@session_loop
async def upstream_b() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("B", model="model-b") as fake:
        yield fake


@session_loop
async def upstream_plus() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("P", model="model-plus") as fake:
        yield fake


@session_loop
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with build_gateway(settings, environ=ENVIRON) as gw:
        yield gw


@session_loop
async def admin_key(gateway: Gateway) -> str:
    return await gateway.create_admin("root")


@session_loop
async def server(gateway: Gateway) -> AsyncIterator[str]:
    """The whole gateway app (API and UI) on a free port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(create_app(gateway), handle_signals=False, access_log=None,
                           shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session")
def chromium(request: pytest.FixtureRequest) -> str:
    """Debian's Chromium. Missing: CI fails (``.ci/run`` installs it, so its absence is a
    fault); elsewhere the browser tests are skipped, each one, and the summary says so loudly
    with the command that brings it (``make test`` installs it itself when run as root)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: {INSTALL_CHROMIUM}", pytrace=False)
        request.config.stash[_NO_BROWSER] = True
        pytest.skip(f"no browser: {CHROMIUM} is missing; run `{INSTALL_CHROMIUM}`")
    return CHROMIUM


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """A skipped browser test is a test that did not run: say it where nobody can miss it."""
    if not config.stash.get(_NO_BROWSER, False):
        return
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if "tests/ui/" in r.nodeid]
    terminalreporter.write_sep("!", f"{len(skipped)} BROWSER TESTS DID NOT RUN", red=True,
                               bold=True)
    terminalreporter.write_line(f"{CHROMIUM} is missing. To run them: {INSTALL_CHROMIUM}",
                                red=True, bold=True)
    terminalreporter.write_line("(`make test` run as root installs it by itself; never "
                                "`playwright install`)", red=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


OpenContext = Callable[..., Awaitable[BrowserContext]]


@session_loop
async def open_context(browser: Browser, server: str, request: pytest.FixtureRequest,
                       screenshot_dir: Path) -> AsyncIterator[OpenContext]:
    """Opens fresh browser profiles (no cookies, no storage) on this test's server, laptop-sized
    unless told otherwise; if the test fails, every page they hold is screenshotted."""
    opened: list[BrowserContext] = []

    async def open_one(**options: Any) -> BrowserContext:
        ctx = await browser.new_context(**{"base_url": server, "viewport": LAPTOP, **options})
        opened.append(ctx)
        return ctx

    try:
        yield open_one
    finally:
        reports = request.node.stash.get(_REPORTS, {})
        failed = any(report.failed for report in reports.values())
        shots = [p for ctx in opened for p in ctx.pages] if failed else []
        for number, open_page in enumerate(shots):
            path = screenshot_dir / f"{request.node.name}-{number}.png"
            try:
                await open_page.screenshot(path=str(path), full_page=True)
                print(f"screenshot of the failed test: {path}")
            except Exception as exc:  # noqa: BLE001 - a screenshot must not hide the failure
                print(f"no screenshot of page {number}: {exc}")
        for ctx in opened:
            await ctx.close()


@session_loop
async def context(open_context: OpenContext) -> BrowserContext:
    return await open_context()


@session_loop
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest.fixture
def ui(page: Page, server: str, gateway: Gateway) -> Ui:
    return Ui(page, server, gateway)
