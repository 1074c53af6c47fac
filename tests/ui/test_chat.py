"""The chat as a member uses it, in Chromium: sign in and out, a new conversation streamed to
the end, a follow-up on the same account, the reply's JSON, removal, tiers, prefill, errors."""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import expect

from core.errors import NotFound
from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream, Reply, Status

from .conftest import OpenContext
from .support import LOOP, Ui, make_key

pytestmark = LOOP

MARKDOWN_REPLY = (
    "# Primes\n\nThe first **three** primes:\n\n1. two\n2. three\n3. five\n\n"
    "```python\ndef is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))\n```\n\n"
    "| n | prime |\n|--:|:--|\n| 2 | yes |\n"
)


async def test_sign_in_and_out(ui: Ui, gateway: Gateway, admin_key: str) -> None:
    key = await make_key(gateway, admin_key, "ann")
    page = ui.page
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login$"))

    await page.fill("#key", "gw_not-a-real-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#login-error")).to_contain_text("not valid")

    await ui.sign_in(key)
    await expect(page.locator(".who-name")).to_contain_text("ann")
    await expect(page.locator("#chat-title")).to_have_text("New conversation")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["gw_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and session["expires"] > 0
    assert key not in session["value"]

    await ui.sign_out()
    await expect(page.locator("[role=status]")).to_contain_text("signed out")
    await page.goto("/chat")
    await expect(page).to_have_url(re.compile(r"/login$"))
    assert all(key not in url for url in ui.urls)
    assert ui.csp_violations() == []


async def test_new_conversation_streams_then_follow_up(
    ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream,
) -> None:
    upstream_a.enqueue(MARKDOWN_REPLY)
    upstream_a.enqueue_title("Prime numbers")
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page

    first = await ui.send("Name three primes")
    body = first.locator(".reply-body")
    await expect(body.locator("h1")).to_have_text("Primes")
    await expect(body.locator("ol li")).to_have_count(3)
    # Code is highlighted on the server: coloured spans inside the code block.
    await expect(body.locator("pre code.language-python span.hl-k").first).to_have_text("def")
    await expect(body.locator("td.align-right")).to_have_text("2")
    assert int(await first.get_attribute("data-delta-events") or 0) >= 1  # it streamed
    await expect(page.locator("#chat-title")).to_have_text("Prime numbers")
    await expect(page).to_have_url(re.compile(r"/chat/[0-9a-f-]{36}$"))
    conversation_id = page.url.rsplit("/", 1)[1]
    item = page.locator(f'#conversation-list a[data-id="{conversation_id}"]')
    await expect(item.locator(".c-title")).to_have_text("Prime numbers")
    await expect(first.locator(".meta")).to_contain_text("model-a")

    second = await ui.send("And the next one?")
    await expect(second.locator(".reply-body")).to_have_text("reply 2 from A")
    last = upstream_a.chat_requests(titles=False)[-1]
    assert [m["content"] for m in last.messages] == [
        "Name three primes", MARKDOWN_REPLY, "And the next one?"]

    # The page as stored: both turns, rendered the same way, newest conversation first.
    await page.reload()
    await expect(ui.turns()).to_have_count(2)
    await expect(ui.turns().nth(0).locator("pre code span.hl-k").first).to_have_text("def")
    await expect(ui.turns().nth(1).locator(".reply-body")).to_have_text("reply 2 from A")
    await expect(page.locator("#conversation-list li").first).to_contain_text("Prime numbers")
    assert ui.csp_violations() == []


async def test_json_view_and_removal(ui: Ui, gateway: Gateway, admin_key: str) -> None:
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page
    turn = await ui.send("hello")

    json_view = turn.locator("pre.json")
    await expect(json_view).to_be_hidden()
    await turn.get_by_role("button", name="JSON").click()
    await expect(json_view).to_be_visible()
    await expect(turn.locator(".reply-body")).to_be_hidden()
    streamed = json.loads(await json_view.inner_text())
    assert streamed["status"] == "success" and streamed["reply"] == "reply 1 from A"
    assert streamed["api_prompt"] == "hello" and streamed["api_user"] == "ann"
    assert streamed["is_new_conversation"] is True and streamed["account"] == "A"
    conversation_id = streamed["conversation_id"]

    # The same JSON, rebuilt from the database after a reload.
    await page.reload()
    turn = ui.turns().first
    await turn.get_by_role("button", name="JSON").click()
    stored = json.loads(await turn.locator("pre.json").inner_text())
    for field in ("conversation_id", "conversation_title", "message", "reply", "model",
                  "usage", "api_prompt", "api_prompt_time_origin", "api_user"):
        assert stored[field] == streamed[field], field
    await turn.get_by_role("button", name="Reply").click()
    await expect(turn.locator(".reply-body")).to_have_text("reply 1 from A")

    await page.get_by_text("Remove", exact=True).click()
    await page.locator("#confirm-remove").click()
    await expect(page).to_have_url(re.compile(r"/chat$"))
    await expect(page.locator(".flash-ok")).to_contain_text("Removed")
    await expect(page.locator("#conversation-list li")).to_have_count(0)
    member = await gateway.authenticate(await make_key(gateway, admin_key, "probe"))
    with pytest.raises(NotFound):
        await gateway.recall(member, conversation_id)
    admin = await gateway.authenticate(admin_key)
    with pytest.raises(NotFound):
        await gateway.recall(admin, conversation_id)


async def test_prompt_prefill_survives_sign_in(ui: Ui, gateway: Gateway,
                                               admin_key: str) -> None:
    key = await make_key(gateway, admin_key, "ann")
    await ui.sign_in(key, start="/chat?prompt=Explain%20%3Cb%3Eentropy%3C%2Fb%3E",
                     lands="/chat?prompt=Explain%20%3Cb%3Eentropy%3C/b%3E")
    await expect(ui.page.locator("#prompt")).to_have_value("Explain <b>entropy</b>")
    assert ui.turns() is not None and await ui.turns().count() == 0  # nothing sent by a link


async def test_tiers_as_allowed(ui: Ui, gateway: Gateway, admin_key: str,
                                upstream_plus: FakeUpstream) -> None:
    await ui.sign_in(await make_key(gateway, admin_key, "free-member"))
    await expect(ui.page.locator("#tier")).to_have_count(0)
    await expect(ui.page.locator("#tier-fixed")).to_have_text("Tier: Free")
    await ui.sign_out()

    await ui.sign_in(await make_key(gateway, admin_key, "plus-member", plus=True))
    options = await ui.page.locator("#tier option").all_inner_texts()
    assert options == ["Free", "Plus", "Any"]
    turn = await ui.send("on the plus tier", tier="true")
    await expect(turn.locator(".reply-body")).to_have_text("reply 1 from P")
    await expect(turn.locator(".meta")).to_contain_text("model-plus")
    # A follow-up stays on its account; the tier choice is gone.
    await expect(ui.page.locator("#tier")).to_be_hidden()
    await expect(ui.page.locator("#follow-note")).to_have_text("Follow-ups stay on P.")
    follow = await ui.send("more")
    await expect(follow.locator(".reply-body")).to_have_text("reply 2 from P")


async def test_failure_is_a_readable_message_and_keeps_the_prompt(
    ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream,
    upstream_b: FakeUpstream,
) -> None:
    upstream_a.enqueue(Status(500))
    upstream_b.enqueue(Status(503))
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page
    await ui.chat_ready()
    await page.fill("#prompt", "will this work?")
    await page.press("#prompt", "Enter")
    error = page.locator("#composer-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("no upstream account can answer now")
    await expect(page.locator("#prompt")).to_have_value("will this work?")
    await expect(ui.turns()).to_have_count(0)
    await expect(page).to_have_url(re.compile(r"/chat$"))

    # Once an account recovers, the same prompt goes through, as a new conversation.
    upstream_b.enqueue(Reply("fine now"))
    account = gateway.pool.get("B")
    assert account is not None
    await gateway.pool.set_enabled(account, True)
    await page.press("#prompt", "Enter")
    await expect(page.locator("#turns .turn.done .reply-body")).to_have_text("fine now")
    await expect(error).to_be_hidden()


async def test_without_javascript_the_composer_still_works(
    open_context: OpenContext, gateway: Gateway, admin_key: str,
) -> None:
    key = await make_key(gateway, admin_key, "ann")
    page = await (await open_context(java_script_enabled=False)).new_page()
    await page.goto("/login")
    await page.fill("#key", key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/chat$"))
    await page.fill("#prompt", "no scripts here")
    await page.get_by_role("button", name="Send").click()
    await expect(page).to_have_url(re.compile(r"/chat/[0-9a-f-]{36}$"))
    await expect(page.locator(".turn .reply-body")).to_have_text("reply 1 from A")
    await page.fill("#prompt", "and again")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator(".turn .reply-body").nth(1)).to_have_text("reply 2 from A")


async def test_reply_grows_in_place_while_streaming(ui: Ui, gateway: Gateway, admin_key: str,
                                                    upstream_a: FakeUpstream) -> None:
    """The streaming reply only ever grows downwards: nothing above it moves, the line under
    it is there from the start, and the view follows the end of the reply."""
    paragraphs = [" ".join(f"word{n}-{i}" for i in range(60)) for n in range(40)]
    # Word by word, a millisecond apart, as a model writes: sent at once, the whole reply can
    # reach the gateway in one read and the page in one render.
    upstream_a.enqueue(Reply("\n\n".join(paragraphs), chunk_delay=0.001))
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page
    await ui.chat_ready()
    await page.evaluate("""() => {
        window.__layout = [];
        new MutationObserver(() => {
            const turn = document.querySelector('#turns .turn');
            if (!turn) return;
            const body = turn.querySelector('.reply-body');
            window.__layout.push({top: turn.offsetTop, body: body.offsetTop,
                                  height: body.offsetHeight,
                                  meta: turn.querySelector('.meta').offsetHeight,
                                  done: turn.classList.contains('done')});
        }).observe(document.getElementById('turns'),
                   {childList: true, subtree: true, characterData: true});
    }""")
    turn = await ui.send("a long answer, please")
    await expect(turn.locator(".reply-body p")).to_have_count(40)
    layout = await page.evaluate("window.__layout")
    growing = [entry for entry in layout if entry["height"] > 0]
    assert len(growing) >= 3, layout  # several renders reached the page before the end
    assert {entry["top"] for entry in growing} == {growing[0]["top"]}, layout
    assert {entry["body"] for entry in growing} == {growing[0]["body"]}
    assert {entry["meta"] for entry in growing} == {growing[0]["meta"]}
    heights = [entry["height"] for entry in growing]
    assert heights == sorted(heights), heights
    at_end = await page.evaluate(
        "(() => { const m = document.getElementById('messages');"
        " return m.scrollHeight - m.scrollTop - m.clientHeight; })()")
    assert at_end < 2


async def test_single_newlines_are_line_breaks(ui: Ui, gateway: Gateway, admin_key: str,
                                              upstream_a: FakeUpstream) -> None:
    """A model writes lines one under the other without blank lines between: they stay lines,
    not one run-on paragraph, and the rest is still Markdown."""
    upstream_a.enqueue("Shopping:\neggs\n**milk**\n\n- one\n- two")
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    turn = await ui.send("what do I buy?")
    body = turn.locator(".reply-body")
    await expect(body.locator("p").first).to_have_text("Shopping:\neggs\nmilk")
    await expect(body.locator("p").first.locator("br")).to_have_count(2)
    await expect(body.locator("p strong")).to_have_text("milk")
    await expect(body.locator("ul li")).to_have_count(2)
    lines = await body.locator("p").first.evaluate(
        "p => Math.round(p.getBoundingClientRect().height / "
        "parseFloat(getComputedStyle(p).lineHeight))")
    assert lines == 3
    await ui.page.reload()  # the stored reply is rendered the same way
    await expect(ui.turns().first.locator(".reply-body p br")).to_have_count(2)


async def test_header_and_list_follow_the_conversation_without_a_reload(
    ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream,
) -> None:
    upstream_a.enqueue_title("Prime numbers")
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page
    await expect(page.locator("#chat-info")).to_be_hidden()
    await expect(page.get_by_text("Remove", exact=True)).to_be_hidden()

    await ui.send("Name three primes")
    await expect(page.locator("#chat-title")).to_have_text("Prime numbers")
    await expect(page).to_have_title("Prime numbers · LLM Gateway")
    await expect(page.locator("#chat-info")).to_have_text("A · model-a")
    conversation_id = page.url.rsplit("/", 1)[1]
    item = page.locator(f'#conversation-list a[data-id="{conversation_id}"]')
    await expect(item.locator(".c-meta")).to_contain_text("1 turn")
    await ui.send("And the next?")
    await expect(item.locator(".c-meta")).to_contain_text("2 turns")
    await expect(page.locator("#conversation-list li")).to_have_count(1)

    # What the page shows now is what a reload shows.
    live = {name: await page.locator(name).inner_text()
            for name in ("#chat-title", "#chat-info", "#conversation-list")}
    await page.reload()
    for name, text in live.items():
        await expect(page.locator(name)).to_have_text(text)

    await page.goto("/chat")
    await ui.send("another one")
    # Remove, offered at once, removes the conversation the reply opened.
    await page.get_by_text("Remove", exact=True).click()
    await page.locator("#confirm-remove").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Removed")
    await expect(page.locator("#conversation-list li")).to_have_count(1)


async def test_tiers_without_an_account_are_not_offered(
    ui: Ui, gateway: Gateway, admin_key: str,
) -> None:
    admin = await gateway.authenticate(admin_key)
    await ui.sign_in(await make_key(gateway, admin_key, "plus-member", plus=True))
    assert await ui.page.locator("#tier option").all_inner_texts() == ["Free", "Plus", "Any"]
    await gateway.set_account_enabled(admin, "P", False)  # the only plus account
    await ui.page.reload()
    await expect(ui.page.locator("#tier")).to_have_count(0)
    await expect(ui.page.locator("#tier-fixed")).to_have_text("Tier: Free")
    await gateway.set_account_enabled(admin, "A", False)
    await gateway.set_account_enabled(admin, "B", False)
    await gateway.set_account_enabled(admin, "P", True)
    await ui.page.reload()
    await expect(ui.page.locator("#tier-fixed")).to_have_text("Tier: Plus")
    turn = await ui.send("only plus is left")
    await expect(turn.locator(".meta")).to_contain_text("model-plus")


async def test_stream_bytes_grow_with_the_reply_not_its_square(
    ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream,
) -> None:
    """The stream sends each piece of text once, and the rendered reply once at the end (D8:
    it used to re-send the whole rendered reply with every chunk)."""
    pieces = 60
    text = " ".join(f"{n:04d}" + "x" * 3995 for n in range(pieces))  # 240 kB in 60 chunks
    upstream_a.enqueue(Reply(text, chunk_delay=0.06))
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    await ui.chat_ready()
    sent = await ui.page.evaluate("""async (prompt) => {
        const form = document.getElementById('composer');
        const fields = new URLSearchParams(new FormData(form));
        fields.set('prompt', prompt);
        const response = await fetch('/chat/stream', {method: 'POST', body: fields,
            headers: {'X-CSRF-Token': fields.get('csrf_token'), 'Accept': 'text/event-stream'}});
        const body = await response.text();
        return {bytes: new TextEncoder().encode(body).length,
                deltas: (body.match(/^event: delta$/gm) || []).length,
                done: (body.match(/^event: done$/gm) || []).length};
    }""", "a long one")
    assert sent["done"] == 1 and sent["deltas"] >= pieces // 2, sent
    # The text once in deltas; the done event has it rendered, and twice in the JSON (reply,
    # message.content.parts) as the API gives it: about 4 times the text, whatever its length.
    assert sent["bytes"] < 5 * len(text), (sent, len(text))
