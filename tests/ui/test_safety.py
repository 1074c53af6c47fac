"""Safety in Chromium: model output that tries to run script or load remote content stays inert
(streamed and stored), every state-changing request needs the CSRF token, the pages carry a
Content-Security-Policy without inline script, keys never travel in a URL, and sessions are
stored hashed and end with their key."""

from __future__ import annotations

import hashlib
import re

from playwright.async_api import expect

from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream
from web.ui import ROUTES

from .conftest import OpenContext
from .support import LOOP, Ui, make_key

pytestmark = LOOP

HOSTILE_REPLY = (
    "Here you go:\n\n<script>window.__pwned = 1; alert('script')</script>\n\n"
    '<img src="http://127.0.0.9:9/track.png" onerror="window.__pwned = 2; alert(\'img\')">\n\n'
    "[click me](javascript:alert('link')) and ![remote](http://127.0.0.9:9/x.png)\n\n"
    '<iframe src="http://127.0.0.9:9/"></iframe> <svg onload="alert(\'svg\')"></svg>\n\n'
    "```html\n<script>alert('in code')</script>\n```\n"
)
HOSTILE_TITLE = '<img src=x onerror="alert(\'title\')">'


async def test_injected_script_and_handlers_stay_inert(
    ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream,
) -> None:
    upstream_a.enqueue(HOSTILE_REPLY)
    upstream_a.enqueue_title(HOSTILE_TITLE)
    page = ui.page
    remote: list[str] = []
    page.on("request", lambda r: remote.append(r.url) if "127.0.0.9:9" in r.url else None)
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))

    for phase in ("streamed", "stored"):
        if phase == "streamed":
            turn = await ui.send("show me some html")
        else:
            await page.reload()
            turn = ui.turns().first
            await expect(turn.locator(".reply-body")).to_contain_text("Here you go")
        body = turn.locator(".reply-body")
        tags = await ui.reply_tags(turn)
        assert not {"script", "img", "iframe", "svg"} & set(tags), (phase, tags)
        handlers = await body.evaluate(
            "b => Array.from(b.querySelectorAll('*')).flatMap("
            "el => el.getAttributeNames().filter(n => n.startsWith('on')))")
        assert handlers == [], (phase, handlers)
        hrefs = await body.locator("a").evaluate_all("as => as.map(a => a.href)")
        assert not any(h.lower().startswith("javascript") for h in hrefs), (phase, hrefs)
        # The would-be markup is shown as text, including inside the code block.
        await expect(body).to_contain_text("<script>window.__pwned = 1")
        await expect(body.locator("pre code")).to_contain_text("<script>alert('in code')")
        await expect(page.locator("#chat-title")).to_have_text(HOSTILE_TITLE)
        await expect(page.locator("#conversation-list .c-title").first).to_have_text(
            HOSTILE_TITLE)
        assert await page.evaluate("window.__pwned") is None, phase
        # Clicking the javascript: link does nothing either.
        await body.get_by_text("click me").click()
    assert ui.dialogs == []
    assert remote == []


async def test_pages_carry_a_strict_content_security_policy(ui: Ui, gateway: Gateway,
                                                            admin_key: str) -> None:
    page = ui.page
    for path in ("/login", "/no-such-page"):
        response = await page.goto(path)
        assert response is not None
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    assert (await page.goto("/no-such-page")).status == 404  # type: ignore[union-attr]
    await expect(page.locator("h1")).to_have_text("Not found")
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    # No inline script anywhere: every <script> has a src on this site.
    inline = await page.evaluate(
        "Array.from(document.scripts).filter(s => !s.src).length")
    assert inline == 0
    response = await page.goto("/chat")
    assert response is not None and response.headers["cache-control"] == "no-store"
    assert ui.csp_violations() == []


async def test_csrf_token_is_required_on_every_change(
    ui: Ui, open_context: OpenContext, admin_key: str, upstream_a: FakeUpstream,
) -> None:
    page = ui.page
    await ui.sign_in(admin_key)
    token = await page.locator("#composer input[name=csrf_token]").input_value()
    assert len(token) >= 32

    for form in ({"prompt": "forged"}, {"prompt": "forged", "csrf_token": "wrong-" + token}):
        status, text = await ui.post("/chat/stream", form)
        assert status == 403 and "did not come from this site" in text, (status, text)
        status, _ = await ui.post("/chat", form)
        assert status == 403
    status, _ = await ui.post("/chat/stream", {"prompt": "forged"},
                              headers={"X-CSRF-Token": token[:-1]})
    assert status == 403
    # Every state-changing route of the UI refuses a request without the token.
    for method, path, _handler in ROUTES:
        if method != "POST":
            continue
        status, _ = await ui.post(path.replace("{conversation_id}", "x"), {"userid": "x"})
        assert status == 403, path
    assert upstream_a.requests == []

    # Signing in needs the sign-in form's own token (no one can sign a browser in from outside).
    fresh = await open_context()
    response = await fresh.request.post("/login", form={"key": admin_key}, max_redirects=0)
    assert response.status == 403
    assert not [c for c in await fresh.cookies() if c["name"] == "gw_session"]

    # With the page's token, the same request goes through.
    status, text = await ui.post("/chat/stream", {"prompt": "real", "csrf_token": token})
    assert status == 200 and "event: done" in text


async def test_key_never_in_a_url_and_sessions_are_stored_hashed(
    ui: Ui, gateway: Gateway, admin_key: str,
) -> None:
    key = await make_key(gateway, admin_key, "ann")
    page = ui.page
    # A key offered in the address opens nothing.
    await page.goto(f"/login?key={key}&user={key}")
    await expect(page.locator("#key")).to_have_value("")
    await page.goto("/chat")
    await expect(page).to_have_url(re.compile(r"/login$"))

    ui.urls.clear()
    await ui.sign_in(key)
    assert ui.urls and all(key not in url for url in ui.urls)
    form = page.locator("form[action='/login']")
    await page.goto("/login?next=/chat")  # signed in: straight back to the chat
    await expect(page).to_have_url(re.compile(r"/chat$"))
    assert await form.count() == 0

    cookie = next(c for c in await page.context.cookies() if c["name"] == "gw_session")
    rows = await gateway.storage.db.fetchall("SELECT id_hash, key_hash FROM web_sessions")
    assert [bytes(r["id_hash"]) for r in rows] == [
        hashlib.sha256(cookie["value"].encode()).digest()]
    dump = "\n".join(str(tuple(r)) for r in await gateway.storage.db.fetchall(
        "SELECT * FROM web_sessions"))
    assert cookie["value"] not in dump and key not in dump

    # Rotating the key (here by the admin, through the API's facade) ends the session.
    admin = await gateway.authenticate(admin_key)
    await gateway.rotate_key(admin, str((await gateway.authenticate(key)).id))
    await page.goto("/chat")
    await expect(page).to_have_url(re.compile(r"/login$"))
