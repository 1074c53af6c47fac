"""Images in Discord: attached to /chat or to a message in a bot thread, downloaded at once and
sent to an account that sees images as image parts; where the conversation's account cannot
see them, or a file is too large or not an image it can take, a short note says which file and
why, and the rest goes on."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import account
from tests.fakes.upstream import FakeUpstream

from .conftest import ANN, Harness, MakeHarness

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + b"\x10JFIF" * 50


def url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def parts(upstream: FakeUpstream, index: int = -1) -> list[dict[str, Any]]:
    """The content parts of the last user message of a reply request."""
    content = upstream.chat_requests(titles=False)[index].messages[-1]["content"]
    assert isinstance(content, list), content
    return content


@pytest.fixture
async def h(make_harness: MakeHarness, upstream_a: FakeUpstream,
            upstream_b: FakeUpstream) -> AsyncIterator[Harness]:
    """A reads text only (model-a); B sees images (model-b)."""
    async with make_harness(accounts=[account("A", upstream_a, "KEY_A", vision=False),
                                      account("B", upstream_b, "KEY_B")],
                            chat={"max_attachment_bytes": 3000}) as harness:
        yield harness


async def test_chat_with_an_image_and_a_text_file(h: Harness) -> None:
    photo = h.fake.upload("screen.png", PNG, "image/png")
    notes = h.fake.upload("notes.md", b"# Plan\n- ship it\n", "text/markdown")
    interaction = await h.chat("What does this show?", attachment=photo, attachment2=notes)

    assert h.answer(interaction) == ("**Ann** asked:\nWhat does this show?\n📎 screen.png\n"
                                     "📎 notes.md")
    # To B, the account that sees images, though A's turn came in the round robin.
    assert h.upstreams["A"].chat_requests(titles=False) == []
    assert parts(h.upstreams["B"]) == [
        {"type": "text",
         "text": "What does this show?\n\nFile: notes.md\n```\n# Plan\n- ship it\n```"},
        {"type": "image_url", "image_url": {"url": url("image/png", PNG)}}]
    assert h.fake.downloads == [photo["id"], notes["id"]]

    # A follow-up in the thread: the model still sees the picture, then the new question.
    thread_id = int(interaction.original_id or 0)
    await h.fake.user_says(thread_id, "And the colours?", user=ANN)
    await h.settle()
    sent = h.upstreams["B"].chat_requests(titles=False)[-1].messages
    assert sent[0]["content"][1]["image_url"]["url"] == url("image/png", PNG)
    assert sent[-1] == {"role": "user", "content": "And the colours?"}
    assert h.thread_text(thread_id)[-1] == "reply 2 from B"


async def test_several_images_in_a_thread_message_and_the_ones_refused(h: Harness) -> None:
    thread_id = int((await h.chat("Start", model="model-b")).original_id or 0)
    one = h.fake.upload("one.jpg", JPEG, "image/jpeg")
    two = h.fake.upload("two.png", PNG, "image/png")
    heic = h.fake.upload("three.jpg", b"\x00\x00\x00\x18ftypheic" + b"x" * 40, "image/jpeg")
    big = h.fake.upload("huge.png", PNG * 3, "image/png")  # past the 3,000 bytes of a message

    said = await h.fake.user_says(thread_id, "Which is brighter?", user=ANN,
                                  files=[one, heic, big, two])
    await h.settle()

    assert [p.get("image_url", {}).get("url") for p in parts(h.upstreams["B"])] == [
        None, url("image/jpeg", JPEG), url("image/png", PNG)]
    note, answer = h.bot_messages(thread_id)[-2:]
    assert note["message_reference"]["message_id"] == said["id"]
    assert note["content"].splitlines() == [
        "⚠️ three.jpg was not read: only PNG, JPEG, GIF and WebP images are sent to the model",
        "⚠️ huge.png was not read: with the images before it, it would pass the 3,000 bytes "
        "one message may carry",
    ]
    assert answer["content"] == "reply 2 from B"
    assert big["id"] not in h.fake.downloads  # its size said so before


async def test_a_conversation_whose_model_cannot_see_images_says_so(h: Harness) -> None:
    thread_id = int((await h.chat("Start", model="model-a")).original_id or 0)
    photo = h.fake.upload("cat.jpg", JPEG, "image/jpeg")

    await h.fake.user_says(thread_id, "", user=ANN, files=[photo])  # nothing else to ask
    await h.settle()
    assert h.thread_text(thread_id)[-1] == (
        "⚠️ cat.jpg was not read: this conversation's model (model-a) does not read images; "
        "start a new conversation on one that does")
    assert len(h.upstreams["A"].chat_requests(titles=False)) == 1
    assert h.fake.downloads == []

    # With words, the words are answered and the note says what was left out.
    await h.fake.user_says(thread_id, "Is it cute?", user=ANN, files=[photo])
    await h.settle()
    note, answer = h.thread_text(thread_id)[-2:]
    assert note.startswith("⚠️ cat.jpg was not read: this conversation's model (model-a)")
    assert answer == "reply 2 from A"
    assert h.upstreams["A"].chat_requests(titles=False)[-1].messages[-1] == {
        "role": "user", "content": "Is it cute?"}


async def test_chat_with_an_image_where_no_model_sees_images(
        make_harness: MakeHarness, upstream_a: FakeUpstream) -> None:
    async with make_harness(accounts=[account("A", upstream_a, "KEY_A",
                                              vision=False)]) as h:
        photo = h.fake.upload("cat.jpg", JPEG, "image/jpeg")
        interaction = await h.chat("Describe it", attachment=photo)
        assert h.answer(interaction) == ("**Ann** asked:\nDescribe it\n⚠️ cat.jpg was not "
                                         "read: no model you may use here reads images")
        assert upstream_a.chat_requests(titles=False)[-1].messages[-1]["content"] == \
            "Describe it"
