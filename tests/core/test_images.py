"""Images a member attaches in Discord or the web UI, in the core: sent to an account that sees
images as image parts after the prompt, stored once by hash, sent again with the follow-ups and
a regenerated answer; refused with a reason where the account cannot see them."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from core.chat import ChatRequest
from core.config import Settings
from core.errors import TooLarge
from core.gateway import Gateway
from core.images import ImageFile, sniff
from core.models import Principal
from tests.conftest import account
from tests.core.conftest import OpenGateway, new_user
from tests.fakes.upstream import FakeUpstream

PNG = b"\x89PNG\r\n\x1a\n" + b"a small picture" * 20
JPEG = b"\xff\xd8\xff\xe0" + b"a photo" * 30


def url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def images_sent(message: dict[str, Any]) -> list[str]:
    content = message["content"]
    assert isinstance(content, list), content
    return [p["image_url"]["url"] for p in content if p["type"] == "image_url"]


@pytest.fixture
def settings(make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
             upstream_b: FakeUpstream) -> Settings:
    """A reads text only; B sees images."""
    return make_settings([account("A", upstream_a, "KEY_A", vision=False),
                          account("B", upstream_b, "KEY_B")])


def test_types_are_read_from_the_bytes() -> None:
    assert sniff(PNG) == "image/png" and sniff(JPEG) == "image/jpeg"
    assert sniff(b"GIF89a...") == "image/gif"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"BM\x00\x00 a bitmap") is None
    assert sniff(b"\x00\x00\x00\x18ftypheic") is None  # an iPhone photo named .jpg


async def test_an_image_goes_to_an_account_that_sees_it_as_an_image_part(
        gw: Gateway, user: Principal, upstream_a: FakeUpstream,
        upstream_b: FakeUpstream) -> None:
    upstream_b.enqueue("A red square.", "Still red.")
    for _ in range(2):  # round robin would give A one of them: it cannot see images
        result = await gw.chat(user, ChatRequest(
            prompt="What colour?", images=(ImageFile("shot.png", "image/png", PNG),)))
        assert result.conversation.account == "B"
        assert result.turn.reply in ("A red square.", "Still red.")
    assert upstream_a.chat_requests(titles=False) == []
    sent = upstream_b.chat_requests(titles=False)[0].messages[-1]
    assert sent["role"] == "user"
    assert sent["content"][0] == {"type": "text", "text": "What colour?"}
    assert images_sent(sent) == [url("image/png", PNG)]

    # Stored once, by hash, shown with the turn; the bytes come back as they were.
    turn = (await gw.recall(user, result.conversation.id))[1][0]
    public = turn.public()
    assert [a["mime_type"] for a in public["attachments"]] == ["image/png"]
    found = await gw.attachment(user, result.conversation.id, public["attachments"][0]["sha256"])
    assert found is not None and found.data == PNG


async def test_follow_ups_and_a_regenerated_answer_see_the_image_again(
        gw: Gateway, user: Principal, upstream_b: FakeUpstream) -> None:
    upstream_b.enqueue("A cat.", "Grey.", "A grey cat, again.")
    first = await gw.chat(user, ChatRequest(
        prompt="", images=(ImageFile("cat.jpg", "image/jpeg", JPEG),
                           ImageFile("dog.png", "image/png", PNG))))
    cid = first.conversation.id
    assert first.turn.prompt == "What is in these images?"  # no words: a question for them
    second = await gw.chat(user, ChatRequest(prompt="What colour is the cat?",
                                             conversation_id=cid))
    sent = upstream_b.chat_requests(titles=False)[1].messages
    assert images_sent(sent[0]) == [url("image/jpeg", JPEG), url("image/png", PNG)]
    assert sent[-1] == {"role": "user", "content": "What colour is the cat?"}

    upstream_b.requests.clear()
    await gw.regenerate(user, cid, second.turn.id)
    assert images_sent(upstream_b.chat_requests(titles=False)[0].messages[0]) == [
        url("image/jpeg", JPEG), url("image/png", PNG)]
    # A regenerated turn that brought images asks again with them, and keeps them.
    upstream_b.enqueue("A red square.", "A square, red.")
    alone = await gw.chat(user, ChatRequest(
        prompt="and this?", images=(ImageFile("shot.png", "image/png", PNG),)))
    again = await gw.regenerate(user, alone.conversation.id, alone.turn.id)
    assert again.turn.reply == "A square, red."
    assert images_sent(upstream_b.chat_requests(titles=False)[-1].messages[-1]) == [
        url("image/png", PNG)]
    turns = (await gw.recall(user, alone.conversation.id))[1]
    assert [t.id for t in turns] == [again.turn.id]
    [kept] = turns[0].public()["attachments"]
    assert (await gw.attachment(user, alone.conversation.id, kept["sha256"])).data == PNG


async def test_where_images_are_not_seen_the_front_is_told_why(
        gw: Gateway, user: Principal, make_settings: Callable[..., Settings],
        upstream_a: FakeUpstream, upstream_b: FakeUpstream,
        open_gateway: OpenGateway) -> None:
    upstream_a.enqueue("text only")
    on_a = await gw.chat(user, ChatRequest(prompt="hello", model="model-a"))
    conversation = await gw.conversation_for(user, on_a.conversation.id)
    assert gw.images_refusal(user, conversation) == (
        "this conversation's model (model-a) does not read images; start a new conversation "
        "on one that does")
    assert gw.images_refusal(user) is None  # B sees them
    assert gw.images_refusal(user, model="model-a") == "the model model-a does not read images"

    # Sent anyway (an API caller), the request is refused naming the reason, not sent blind.
    with pytest.raises(Exception, match="vision"):
        await gw.chat(user, ChatRequest(prompt="and this?", conversation_id=on_a.conversation.id,
                                        images=(ImageFile("x.png", "image/png", PNG),)))
    assert len(upstream_a.chat_requests(titles=False)) == 1

    text_only = await open_gateway(make_settings([account("A", upstream_a, "KEY_A",
                                                          vision=False)]))
    assert text_only.images_refusal(user) == "no model you may use here reads images"

    seeing_plus = await open_gateway(make_settings([
        account("A", upstream_a, "KEY_A", vision=False),
        account("B", upstream_b, "KEY_B", tier="plus")]))
    plus_user = await new_user(seeing_plus, "pat", plus=True)
    assert seeing_plus.images_refusal(plus_user) == (
        "no free-tier model reads images; ask on the plus tier for one that does")
    assert seeing_plus.images_refusal(plus_user, plus="any") is None
    assert seeing_plus.images_refusal(user, plus="any") == \
        "no model you may use here reads images"  # plus not theirs


async def test_images_past_the_limit_are_refused_before_any_call(
        make_settings: Callable[..., Settings], upstream_b: FakeUpstream,
        open_gateway: OpenGateway) -> None:
    gw = await open_gateway(make_settings([account("B", upstream_b, "KEY_B")],
                                          chat={"max_attachment_bytes": 300}))
    user = await new_user(gw)
    with pytest.raises(TooLarge, match=r"max_attachment_bytes") as refused:
        await gw.chat(user, ChatRequest(prompt="look", images=(
            ImageFile("a.png", "image/png", PNG), ImageFile("b.png", "image/png", PNG))))
    assert refused.value.status == 413
    assert upstream_b.requests == []


async def test_on_a_responses_account_images_go_as_input_images(
        make_settings: Callable[..., Settings], upstream_plus: FakeUpstream,
        open_gateway: OpenGateway) -> None:
    gw = await open_gateway(make_settings([account("R", upstream_plus, "KEY_P",
                                                   api="responses")]))
    user = await new_user(gw)
    first = await gw.chat(user, ChatRequest(
        prompt="What is it?", images=(ImageFile("a.png", "image/png", PNG),)))
    await gw.chat(user, ChatRequest(prompt="And this one?", conversation_id=first.conversation.id,
                                    images=(ImageFile("b.jpg", "image/jpeg", JPEG),)))
    sent = [r.messages[-1]["content"] for r in upstream_plus.chat_requests(titles=False)]
    assert [[p["type"] for p in content] for content in sent] == [
        ["input_text", "input_image"], ["input_text", "input_image"]]
    assert sent[1][1]["image_url"] == url("image/jpeg", JPEG)  # the upstream keeps the rest
