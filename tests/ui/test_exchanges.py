"""A /v1 exchange in the web UI, in Chromium: the image a program sent is shown (served from the
attachment stored by its hash, to the owner and to an auditing admin only), and the tools the
reply called are listed as calls."""

from __future__ import annotations

import aiohttp
import openai
from playwright.async_api import expect

from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream, ToolCalls

from .support import LOOP, Ui, make_key

pytestmark = LOOP

# A real 1x1 PNG, so the browser decodes it.
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
         "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


async def test_attachments_and_tool_calls_are_shown(
    ui: Ui, gateway: Gateway, admin_key: str, server: str, upstream_a: FakeUpstream,
) -> None:
    key = await make_key(gateway, admin_key, "ann")
    upstream_a.enqueue(ToolCalls((("get_weather", {"city": "Paris"}),)))
    async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="model-a", messages=[{"role": "user", "content": [
                {"type": "text", "text": "Weather where this was taken?"},
                {"type": "image_url", "image_url": {"url": PIXEL}}]}],
            tools=[{"type": "function", "function": {"name": "get_weather",
                                                     "parameters": {"type": "object"}}}])
    conversation_id = raw.headers["x-conversation-id"]

    await ui.sign_in(key)
    await ui.page.goto(f"/chat/{conversation_id}")
    turn = ui.turns().first
    image = turn.locator(".prompt .attachment img")
    await expect(image).to_be_visible()
    assert await image.evaluate("img => img.naturalWidth") == 1
    await expect(turn.locator(".tool-calls")).to_contain_text('get_weather({"city": "Paris"})')
    assert ui.csp_violations() == []

    href = await turn.locator(".prompt .attachment").get_attribute("href")
    assert href is not None
    async with aiohttp.ClientSession() as anonymous, anonymous.get(
            f"{server}{href}", allow_redirects=False) as resp:
        assert resp.status in (302, 303, 401)  # signed out: no picture
