"""The admin pages in Chromium, by role: an admin creates a user whose key then signs in, manages
users and accounts and audits conversations; a client sees only its own users; a member is
refused."""

from __future__ import annotations

import re

from playwright.async_api import expect

from core.chat import ChatRequest
from core.errors import Unauthorized
from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream

from .support import KEY_RE, LOOP, Ui, make_key

pytestmark = LOOP


async def test_admin_creates_a_user_whose_key_then_signs_in(ui: Ui, gateway: Gateway,
                                                            admin_key: str) -> None:
    page = ui.page
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await ui.sign_in(admin_key)
    await page.get_by_role("link", name="Admin").click()
    await expect(page).to_have_url(re.compile(r"/admin/users$"))

    await page.fill("#new-username", "Ann Example")
    await page.fill("#new-userid", "s1234")
    await page.check("#new-plus")
    await page.click("#create-submit")
    secret = page.locator("#revealed-secret")
    await expect(secret).to_be_visible()
    key = await secret.input_value()
    assert KEY_RE.fullmatch(key), key
    await expect(page.locator("#revealed")).to_contain_text("shown only this once")
    await page.get_by_role("button", name="Copy", exact=True).click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == key
    row = page.locator("tr", has_text="Ann Example")
    await expect(row).to_contain_text("plus")
    await expect(row).to_contain_text("s1234")

    # The key is not on the list page itself: once shown, gone.
    await page.goto("/admin/users")
    await expect(page.locator("#revealed")).to_have_count(0)
    assert key not in await page.content()

    await ui.sign_out()
    await ui.sign_in(key)
    await expect(page.locator(".who-name")).to_contain_text("Ann Example")
    turn = await ui.send("hi, I am new")
    await expect(turn.locator(".reply-body")).to_have_text("reply 1 from A")
    # Not once in an address: neither the admin's key nor the new one.
    assert all(admin_key not in url and key not in url for url in ui.urls)
    assert ui.csp_violations() == []


async def test_admin_manages_users(ui: Ui, gateway: Gateway, admin_key: str) -> None:
    bob_key = await make_key(gateway, admin_key, "bob", userid="b-1")
    await make_key(gateway, admin_key, "carol")
    page = ui.page
    await ui.sign_in(admin_key, start="/login?next=/admin/users", lands="/admin/users")

    await page.fill("#user-search", "bob")
    await page.press("#user-search", "Enter")
    await expect(page.locator("table.users tbody tr")).to_have_count(1)
    row = page.locator("tr", has_text="bob")

    await row.get_by_role("button", name="Grant plus").click()
    await expect(page.locator(".flash-ok")).to_contain_text("bob can now use the plus tier")
    await expect(page).to_have_url(re.compile(r"/admin/users\?q=bob$"))  # back to the search
    await row.get_by_role("button", name="Revoke plus").click()
    await expect(page.locator(".flash-ok")).to_contain_text("no longer has the plus tier")

    await row.get_by_role("button", name="Disable").click()
    await expect(row.locator(".badge-bad")).to_have_text("disabled")
    try:
        await gateway.authenticate(bob_key)
        raise AssertionError("a disabled key authenticated")
    except Unauthorized:
        pass
    await row.get_by_role("button", name="Enable").click()
    await expect(row.locator(".badge-ok")).to_have_text("active")

    await row.get_by_text("Rotate key…").click()
    await row.get_by_role("button", name="Rotate now").click()
    new_key = await page.locator("#revealed-secret").input_value()
    assert KEY_RE.fullmatch(new_key) and new_key != bob_key
    assert (await gateway.authenticate(new_key)).name == "bob"

    await page.goto("/admin/users")
    row = page.locator("tr", has_text="bob")
    await row.get_by_text("Remove…").click()
    await row.get_by_role("button", name="Remove for good").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Removed bob")
    await expect(page.locator("tr", has_text="bob")).to_have_count(0)
    await expect(page.locator("tr", has_text="carol")).to_have_count(1)


async def test_member_is_refused_the_admin_pages(ui: Ui, gateway: Gateway,
                                                 admin_key: str) -> None:
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page
    await expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    for path in ("/admin", "/admin/users", "/admin/accounts",
                 "/admin/users/conversations?user=1"):
        response = await page.goto(path)
        assert response is not None and response.status == 403, path
        await expect(page.locator("h1")).to_have_text("Not allowed")
        await expect(page.locator(".error-message")).to_contain_text("admins")
    status, _ = await ui.post("/admin/users", {"username": "mallory",
                                               "csrf_token": "irrelevant"})
    assert status == 403


async def test_client_manages_only_its_own_users(ui: Ui, gateway: Gateway,
                                                 admin_key: str) -> None:
    client_key = await make_key(gateway, admin_key, "discord-bot", role="client")
    await make_key(gateway, admin_key, "admins-own-user")
    page = ui.page
    await ui.sign_in(client_key)
    await page.get_by_role("link", name="Admin").click()
    await expect(page.get_by_role("link", name="Accounts")).to_have_count(0)
    await expect(page.locator("#new-role")).to_have_count(0)  # clients make users only

    await page.fill("#new-username", "dana")
    await page.fill("#new-userid", "4242")
    await page.click("#create-submit")
    dana_key = await page.locator("#revealed-secret").input_value()
    assert KEY_RE.fullmatch(dana_key)
    await expect(page.locator("table.users tbody tr")).to_have_count(1)
    await expect(page.locator("tr", has_text="dana")).to_contain_text("4242")
    await expect(page.locator("tr", has_text="admins-own-user")).to_have_count(0)

    await page.fill("#new-username", "dana again")
    await page.fill("#new-userid", "4242")
    await page.click("#create-submit")
    await expect(page.locator("#create-error")).to_contain_text("already exists")
    await expect(page.locator("#new-username")).to_have_value("dana again")  # kept

    response = await page.goto("/admin/accounts")
    assert response is not None and response.status == 403


async def test_admin_opens_a_members_conversation(ui: Ui, gateway: Gateway,
                                                  admin_key: str, upstream_a: FakeUpstream,
                                                  upstream_b: FakeUpstream) -> None:
    ann_key = await make_key(gateway, admin_key, "ann")
    ann = await gateway.authenticate(ann_key)
    admin = await gateway.authenticate(admin_key)
    # Round robin: A, B, then A again.
    for who, fake, title in ((ann, upstream_a, "Essay question"),
                             (ann, upstream_b, "Second thoughts"),
                             (admin, upstream_a, "The admin's own")):
        fake.enqueue_title(title)
        await gateway.chat(who, ChatRequest(prompt=title.lower()))
    page = ui.page
    await ui.sign_in(admin_key, start="/login?next=/admin/users", lands="/admin/users")
    await page.locator("tr", has_text="ann").get_by_role("link", name="Conversations").click()
    await expect(page.locator("h2")).to_contain_text("ann's conversations")
    await page.get_by_role("link", name=re.compile("Essay question")).click()

    await expect(page.locator(".banner")).to_contain_text("ann's conversation")
    await expect(ui.turns()).to_have_count(1)
    await expect(ui.turns().first.locator(".bubble")).to_have_text("essay question")
    await expect(page.locator("#composer")).to_have_count(0)  # audit is read-only
    await expect(page.get_by_text("Remove", exact=True)).to_have_count(0)
    # The page is ann's: her conversations beside it, each opening as an audit too; and it
    # is an admin page, not the admin's own chat.
    titles = page.locator("#conversation-list .c-title")
    await expect(titles).to_have_text(["Second thoughts", "Essay question"])
    await expect(page.locator(".mainnav [aria-current=page]")).to_have_text("Admin")
    await expect(page.locator("#new-chat")).to_have_count(0)
    await page.locator("#conversation-list a", has_text="Second thoughts").click()
    await expect(page.locator(".banner")).to_contain_text("ann's conversation")
    await expect(ui.turns().first.locator(".bubble")).to_have_text("second thoughts")
    await page.locator("#audit-back").click()
    await expect(page.locator("h2")).to_contain_text("ann's conversations")

    # Opened by its address alone (no ?user=), an audit looks the same.
    conversation_id = (await gateway.list_conversations(ann))[0][0].id
    await page.goto(f"/chat/{conversation_id}")
    await expect(titles).to_have_text(["Second thoughts", "Essay question"])
    await expect(page.get_by_text("Remove", exact=True)).to_have_count(0)
    # And the admin's own chat is still the admin's own.
    await page.goto("/chat")
    await expect(titles).to_have_text(["The admin's own"])
    await expect(page.locator(".mainnav [aria-current=page]")).to_have_text("Chat")


async def test_admin_row_actions_stay_on_one_line(ui: Ui, gateway: Gateway,
                                                  admin_key: str) -> None:
    await make_key(gateway, admin_key, "Bea Example With A Long Name", userid="s-1234567")
    await ui.sign_in(admin_key, start="/login?next=/admin/users", lands="/admin/users")
    row = ui.page.locator("tr", has_text="Bea Example")
    tops = await row.locator(".row-actions").evaluate(
        "cell => Array.from(cell.querySelectorAll('.btn'))"
        ".filter(b => !b.closest('.confirm-panel'))"  # those open only on a click
        ".map(b => Math.round(b.getBoundingClientRect().top))")
    assert len(tops) >= 4 and len(set(tops)) == 1, tops
    width = await ui.page.evaluate("document.documentElement.scrollWidth")
    assert width <= await ui.page.evaluate("window.innerWidth")


async def test_accounts_show_health_and_can_be_taken_out(
    ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream,
) -> None:
    page = ui.page
    await ui.sign_in(admin_key, start="/login?next=/admin/accounts", lands="/admin/accounts")
    for name in ("A", "B", "P"):
        await expect(page.locator(f"#account-{name} .badge.health-healthy")).to_have_text(
            "healthy")
    await page.locator("#account-A").get_by_role("button", name="Take out").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Account A disabled")
    await expect(page.locator("#account-A .health-out")).to_have_text("out")
    await expect(page.locator("#account-A")).to_contain_text("taken out by an admin")
    await page.locator("#account-A").get_by_role("button", name="Enable").click()
    await expect(page.locator("#account-A .health-healthy")).to_have_text("healthy")


async def test_admin_sees_and_edits_channel_personas(ui: Ui, gateway: Gateway,
                                                     admin_key: str) -> None:
    bot = await gateway.ensure_client("discord-bot")
    await gateway.set_persona(bot, "777", "You are a pirate.", label="#sea")
    page = ui.page
    await ui.sign_in(admin_key, start="/login?next=/admin/personas", lands="/admin/personas")

    row = page.locator("tr", has_text="#sea")
    await expect(row).to_contain_text("discord-bot")
    await expect(row.locator(".persona-text")).to_have_text("You are a pirate.")
    await row.get_by_text("Edit…").click()
    await row.locator("textarea").fill("You are a polite pirate.\nSay arr.")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Saved the persona of #sea")
    (stored,) = await gateway.personas(bot)
    assert stored.system_prompt == "You are a polite pirate.\nSay arr."

    await page.select_option("#persona-client", label="discord-bot")
    await page.fill("#persona-channel", "888")
    await page.fill("#persona-label", "#help")
    await page.fill("#persona-text", "   ")
    await page.click("#persona-submit")
    await expect(page.locator("#persona-error")).to_contain_text("needs a system prompt")
    await expect(page.locator("#persona-channel")).to_have_value("888")  # kept
    await page.fill("#persona-text", "Answer help questions.")
    await page.click("#persona-submit")
    await expect(page.locator("tr", has_text="#help")).to_have_count(1)

    await page.locator("tr", has_text="#sea").get_by_role("button", name="Clear").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Cleared the persona")
    assert [p.channel_ref for p in await gateway.personas(bot)] == ["888"]
    assert ui.csp_violations() == []


async def test_a_client_sees_only_its_own_personas(ui: Ui, gateway: Gateway,
                                                   admin_key: str) -> None:
    other = await gateway.ensure_client("other-bot")
    await gateway.set_persona(other, "1", "Not yours.", label="#elsewhere")
    client_key = await make_key(gateway, admin_key, "discord-bot", role="client")
    page = ui.page
    await ui.sign_in(client_key, start="/login?next=/admin/personas", lands="/admin/personas")
    await expect(page.locator("#persona-client")).to_have_count(0)
    await expect(page.locator("tr", has_text="#elsewhere")).to_have_count(0)
    await page.fill("#persona-channel", "42")
    await page.fill("#persona-text", "Mine.")
    await page.click("#persona-submit")
    await expect(page.locator("tr", has_text="42")).to_contain_text("Mine.")
    client = await gateway.authenticate(client_key)
    assert [(p.client_id, p.label) for p in await gateway.personas(client)] == [
        (client.id, "42")]
