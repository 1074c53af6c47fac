"""An image attached in the web UI where the chosen model cannot see it: the note says which
file and why, and the words are answered."""

from __future__ import annotations

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
                          account("B", upstream_b, "KEY_B")])


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
