"""An image attached in the web UI where the chosen model cannot see it: the note says which
file and why, and the words are answered."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from playwright.async_api import expect

from core.config import Settings
from core.gateway import Gateway
from tests.conftest import account
from tests.fakes.upstream import FakeUpstream

from .support import LOOP, Ui, make_key
from .test_controls import png

pytestmark = LOOP


@pytest.fixture
def settings(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
             upstream_b: FakeUpstream) -> Settings:
    """A reads text only; B sees images."""
    return make_settings([account("A", upstream_a, "KEY_A", vision=False),
                          account("B", upstream_b, "KEY_B")],
                         chat={"max_attachment_bytes": 2_000_000})


async def test_an_image_where_the_model_cannot_see_it_is_said_and_kept(
        ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream) -> None:
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page
    await ui.chat_ready()
    await page.select_option("#model", "model-a")
    await page.set_input_files("#attach", files=[
        {"name": "cat.png", "mimeType": "image/png", "buffer": png(4, 4)}])
    await page.fill("#prompt", "What is it?")
    await page.press("#prompt", "Enter")
    turn = page.locator("#turns .turn.done").first
    await expect(turn.locator(".reply-body")).not_to_be_empty()
    await expect(page.locator("#composer-error")).to_have_text(
        "cat.png was not read: the model model-a does not read images")
    assert upstream_a.chat_requests(titles=False)[-1].messages[-1]["content"] == "What is it?"
    # The picture the model did not get is not shown with the prompt.
    await expect(turn.locator(".prompt .attachment")).to_have_count(0)

    # An image alone, and not read: nothing is sent, the file is put back to try elsewhere.
    await page.set_input_files("#attach", files=[
        {"name": "dog.png", "mimeType": "image/png", "buffer": png(4, 4)}])
    await page.press("#prompt", "Enter")
    await expect(page.locator("#composer-error")).to_have_text(
        "dog.png was not read: this conversation's model (model-a) does not read images; "
        "start a new conversation on one that does")
    await expect(page.locator("#attachments .chip")).to_have_count(1)
    await expect(page.locator("#turns .turn")).to_have_count(1)
    assert len(upstream_a.chat_requests(titles=False)) == 1


async def test_a_message_may_carry_its_images_beyond_the_body_limit(
        ui: Ui, gateway: Gateway, admin_key: str, upstream_b: FakeUpstream) -> None:
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page
    token = await page.locator('input[name="csrf_token"]').first.input_value()
    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 6000  # 1.5 MB: past 1 MiB
    response = await page.request.post(ui.base_url + "/chat/stream", multipart={
        "csrf_token": token, "prompt": "Big one", "plus": "false",
        "file": {"name": "big.png", "mimeType": "image/png", "buffer": photo}},
        headers={"Accept": "text/event-stream"})
    assert response.ok and "event: done" in await response.text(), await response.text()
    image = upstream_b.chat_requests(titles=False)[-1].messages[-1]["content"][1]
    assert image["image_url"]["url"] == "data:image/png;base64," + \
        base64.b64encode(photo).decode()

    too_big = await page.request.post(ui.base_url + "/chat/stream", multipart={
        "csrf_token": token, "prompt": "Bigger", "plus": "false",
        "file": {"name": "huge.png", "mimeType": "image/png", "buffer": photo * 2}},
        headers={"Accept": "text/event-stream"})
    assert too_big.status == 413
    assert (await too_big.json())["message"] == (
        "The message and its files are larger than the 3,048,576 bytes one message may carry "
        "([server] max_body_bytes plus [chat] max_attachment_bytes); nothing was sent.")
    # Elsewhere the body limit is the server's own.
    stop = await page.request.post(ui.base_url + "/chat/stop", multipart={
        "csrf_token": token, "message_id": "x" * 1_100_000})
    assert stop.status == 413
    assert (await stop.json())["message"] == (
        "This request is larger than the 1,048,576 bytes allowed ([server] max_body_bytes).")


async def test_without_javascript_a_message_of_refused_files_keeps_its_words(
        ui: Ui, gateway: Gateway, admin_key: str, upstream_a: FakeUpstream) -> None:
    await ui.sign_in(await make_key(gateway, admin_key, "ann"))
    page = ui.page
    token = await page.locator('input[name="csrf_token"]').first.input_value()
    response = await page.request.post(ui.base_url + "/chat", multipart={
        "csrf_token": token, "prompt": "  ", "plus": "false",
        "file": {"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ"}})
    assert response.status == 400
    assert "tool.exe was not read: only text files (text, Markdown, code, JSON, CSV, logs) " \
           "and images are read" in await response.text()
    assert upstream_a.requests == []
