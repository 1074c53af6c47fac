"""Controls on replies in Chromium: Stop while a reply streams (the upstream call is cut, what
arrived is kept and marked), Regenerate (a new answer in the old one's place, the old one back
if the new one fails), Continue, and the model picker of a new conversation."""

from __future__ import annotations

import asyncio
import base64
import re
import struct
import zlib

from playwright.async_api import Locator, expect

from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream, Pause, Status

from .support import LOOP, Ui, make_key

pytestmark = LOOP


async def sending(ui: Ui, text: str) -> Locator:
    """Send a prompt without waiting for its reply: the turn being written."""
    await ui.chat_ready()
    await ui.page.fill("#prompt", text)
    await ui.page.press("#prompt", "Enter")
    return ui.page.locator("#turns .turn").last


async def stored(gateway: Gateway, key: str) -> list[tuple[str, str, bool]]:
    user = await gateway.authenticate(key)
    (conversation,), _ = await gateway.list_conversations(user)
    return [(t.prompt, t.reply, t.stopped)
            for t in (await gateway.recall(user, conversation.id))[1]]


async def test_stop_keeps_what_arrived(ui: Ui, gateway: Gateway, admin_key: str,
                                       upstream_a: FakeUpstream) -> None:
    gate = asyncio.Event()
    upstream_a.enqueue(Pause("one two three four five six", gate, after_chunks=3))
    key = await make_key(gateway, admin_key, "ann")
    await ui.sign_in(key)
    page = ui.page
    turn = await sending(ui, "count")
    await expect(turn.locator(".reply-body")).to_have_text("one two three")
    await expect(turn.get_by_role("button", name="Regenerate")).to_be_hidden()

    await turn.get_by_role("button", name="Stop").click()

    await expect(turn).to_have_class("turn done")
    await expect(turn.locator(".reply-body")).to_have_text("one two three")
    await expect(turn.locator(".meta")).to_contain_text("stopped")
    await expect(turn.get_by_role("button", name="Stop")).to_be_hidden()
    await expect(turn.get_by_role("button", name="Regenerate")).to_be_visible()
    assert await stored(gateway, key) == [("count", "one two three", True)]
    gate.set()
    await upstream_a.wait_in_flight(0)
    assert upstream_a.hung_up == 1
    await page.reload()  # the mark is stored
    await expect(page.locator("#turns .turn .meta")).to_contain_text("stopped")


async def test_regenerate_and_continue(ui: Ui, gateway: Gateway, admin_key: str,
                                       upstream_a: FakeUpstream) -> None:
    upstream_a.enqueue("first answer", "second answer", Status(400), "and the rest")
    key = await make_key(gateway, admin_key, "ann")
    await ui.sign_in(key)
    page = ui.page
    first = await ui.send("tell me")
    await expect(first.locator(".reply-body")).to_have_text("first answer")

    await first.get_by_role("button", name="Regenerate").click()
    await expect(first.locator(".reply-body")).to_have_text("second answer")
    await expect(first).to_have_class("turn done")
    await expect(page.locator("#turns .turn")).to_have_count(1)
    assert await stored(gateway, key) == [("tell me", "second answer", False)]

    await first.get_by_role("button", name="Regenerate").click()  # the upstream refuses
    await expect(page.locator("#composer-error")).to_be_visible()
    await expect(first.locator(".reply-body")).to_have_text("second answer")
    assert await stored(gateway, key) == [("tell me", "second answer", False)]

    await first.get_by_role("button", name="Continue").click()
    turns = page.locator("#turns .turn")
    await expect(turns).to_have_count(2)
    await expect(turns.last.locator(".reply-body")).to_have_text("and the rest")
    await expect(turns.last).to_have_class("turn done")
    await expect(first.get_by_role("button", name="Continue")).to_be_hidden()  # the last only
    prompts = [p for p, _, _ in await stored(gateway, key)]
    assert prompts == ["tell me", gateway.settings.chat.continue_prompt]
    await expect(turns.last.locator(".bubble")).to_have_text(
        gateway.settings.chat.continue_prompt)
    assert ui.csp_violations() == []


async def test_a_stranger_cannot_stop_a_reply(ui: Ui, gateway: Gateway, admin_key: str,
                                              upstream_a: FakeUpstream) -> None:
    gate = asyncio.Event()
    upstream_a.enqueue(Pause("mine all mine", gate, after_chunks=1))
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    turn = await sending(ui, "hello")
    await expect(turn.locator(".reply-body")).to_have_text("mine")
    message_id = await turn.get_attribute("data-message-id")
    assert message_id

    other = await ui.page.context.browser.new_context(base_url=ui.base_url)  # type: ignore[union-attr]
    try:
        bob = Ui(await other.new_page(), ui.base_url, gateway)
        await bob.sign_in(await make_key(gateway, admin_key, "bob"))
        token = await bob.page.locator('input[name="csrf_token"]').first.input_value()
        status, body = await bob.post("/chat/stop", {"message_id": message_id,
                                                     "csrf_token": token},
                                      headers={"X-CSRF-Token": token})
        assert status == 404 and "not_writing" in body
    finally:
        await other.close()
    gate.set()
    await expect(turn.locator(".reply-body")).to_have_text("mine all mine")
    await expect(turn.locator(".meta")).not_to_contain_text("stopped")


async def test_the_model_picker_starts_a_conversation_on_the_chosen_model(
        ui: Ui, gateway: Gateway, admin_key: str, upstream_plus: FakeUpstream) -> None:
    await ui.sign_in(await make_key(gateway, admin_key, "pat", plus=True))
    page = ui.page
    await ui.chat_ready()
    picker = page.locator("#model")
    options = await picker.locator("option").all_text_contents()
    assert options[0] == "Default" and f"{upstream_plus.model} (plus; text)" in options
    await page.select_option("#model", upstream_plus.model)
    turn = await ui.send("hello plus")
    await expect(turn.locator(".reply-body")).to_have_text("reply 1 from P")
    await expect(page.locator("#chat-info")).to_have_text(f"P · {upstream_plus.model}")
    await expect(page.locator("#model")).to_be_hidden()  # follow-ups stay on it
    await ui.send("and again")
    assert [r.model for r in upstream_plus.chat_requests(titles=False)] == [
        upstream_plus.model] * 2


async def test_bad_control_requests_get_clear_errors(ui: Ui, gateway: Gateway,
                                                     admin_key: str) -> None:
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    token = await ui.page.locator('input[name="csrf_token"]').first.input_value()
    headers = {"X-CSRF-Token": token}
    status, body = await ui.post("/chat/stop", {"csrf_token": token}, headers)
    assert status == 400 and '"missing_parameter"' in body
    status, body = await ui.post("/chat/stop", {"csrf_token": token, "message_id": "gone"},
                                 headers)
    assert status == 404 and '"not_writing"' in body
    status, _ = await ui.post("/chat/stop", {"message_id": "x"})  # no CSRF token
    assert status == 403
    status, body = await ui.post("/chat/stream", {"csrf_token": token, "regenerate": "t"},
                                 headers)
    assert status == 400 and '"missing_parameter"' in body
    status, body = await ui.post("/chat/stream", {"csrf_token": token, "continue": "1",
                                                  "conversation_id": "nope"}, headers)
    assert status == 404 and '"conversation_not_found"' in body


DROP_FILE = """([name, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, {type: "text/plain"}));
  const form = document.getElementById("composer");
  form.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true,
                                                cancelable: true}));
  form.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true,
                                            cancelable: true}));
}"""
PASTE_FILE = """([name, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, {type: "text/plain"}));
  document.getElementById("prompt").dispatchEvent(
    new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true}));
}"""


DRAWN = "image => image.decode().then(() => image.naturalWidth)"
"""The width of an image once the browser has drawn it (rejected if it cannot)."""


def png(width: int, height: int) -> bytes:
    """A real PNG (one red pixel repeated), which Chromium draws."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


async def test_files_attached_by_button_drop_and_paste_reach_the_model(
        ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream,
        upstream_b: FakeUpstream) -> None:
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page
    await ui.chat_ready()
    picture = png(40, 30)
    await page.set_input_files("#attach", files=[
        {"name": "notes.md", "mimeType": "text/markdown", "buffer": b"# Plan\nship it\n"},
        {"name": "cat.png", "mimeType": "image/png", "buffer": picture},
        {"name": "oops.txt", "mimeType": "text/plain", "buffer": b"drop me"},
        {"name": "photo.heic", "mimeType": "image/heic", "buffer": b"\x00\x00\x00\x18ftypheic"},
    ])
    await page.evaluate(DROP_FILE, ["dropped.log", "ERROR disk full"])
    await page.evaluate(PASTE_FILE, ["pasted.csv", "a,b\n1,2"])
    chips = page.locator("#attachments .chip")
    await expect(chips).to_have_count(6)
    await page.get_by_role("button", name="Remove oops.txt").click()
    await expect(chips).to_have_count(5)
    await expect(page.locator("#attachments")).to_contain_text("dropped.log")
    # The image's chip shows it, from the browser's own copy.
    await expect(page.locator("#attachments .chip-thumb")).to_have_count(1)
    thumb = page.locator("#attachments .chip-thumb")
    assert await thumb.evaluate(DRAWN) == 40

    await page.fill("#prompt", "Read these")
    await page.press("#prompt", "Enter")
    turn = page.locator("#turns .turn.done").first
    await expect(turn.locator(".reply-body")).to_have_text(re.compile(r"reply 1 from [AB]"))
    await expect(page.locator("#attachments")).to_be_hidden()  # sent with the message
    await expect(turn.locator(".bubble")).to_have_text(
        "Read these\nAttached: notes.md\nAttached: photo.heic\nAttached: dropped.log\n"
        "Attached: pasted.csv")
    await expect(turn.locator(".prompt .attachment img")).to_have_count(1)
    await expect(page.locator("#composer-error")).to_have_text(
        "photo.heic was not read: only PNG, JPEG, GIF and WebP images are sent to the model")
    (sent,) = [r for u in (upstream_a, upstream_b) for r in u.chat_requests(titles=False)]
    text, image = sent.messages[-1]["content"]
    assert text["text"] == ("Read these\n\nFile: notes.md\n```\n# Plan\nship it\n```\n\n"
                            "File: dropped.log\n```\nERROR disk full\n```\n\n"
                            "File: pasted.csv\n```\na,b\n1,2\n```")
    assert image["image_url"]["url"] == \
        "data:image/png;base64," + base64.b64encode(picture).decode()

    # Stored with the turn: shown again, as a thumbnail, once the page is reloaded.
    await page.reload()
    shown = page.locator("#turns .turn .prompt .attachment img")
    await expect(shown).to_have_count(1)
    assert await shown.evaluate(DRAWN) == 40


async def test_without_javascript_files_go_with_the_form(
        ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream) -> None:
    key = await make_key(gateway, admin_key, "ann")
    await ui.sign_in(key)
    page = ui.page
    token = await page.locator('input[name="csrf_token"]').first.input_value()
    response = await page.request.post(ui.base_url + "/chat", multipart={
        "csrf_token": token, "prompt": "Check this", "plus": "false",
        "file": {"name": "a.txt", "mimeType": "text/plain", "buffer": b"hello file"},
    })
    assert response.ok
    assert upstream_a.chat_requests(titles=False)[-1].messages[-1]["content"] == (
        "Check this\n\nFile: a.txt\n```\nhello file\n```")
    response = await page.request.post(ui.base_url + "/chat", multipart={
        "csrf_token": token, "prompt": "And this", "plus": "false",
        "file": {"name": "b.bin", "mimeType": "application/octet-stream", "buffer": b"\x00"},
    })
    assert response.ok and "b.bin was not read" in await response.text()  # the flash
    user = await gateway.authenticate(key)
    newest = (await gateway.list_conversations(user))[0][0]  # on A or B, round robin
    assert [t.prompt for t in (await gateway.recall(user, newest.id))[1]] == ["And this"]
