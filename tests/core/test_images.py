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
    assert await gw.images_refusal(user, conversation) == (
        "this conversation's model (model-a) does not read images; start a new conversation "
        "on one that does")
    assert await gw.images_refusal(user) is None  # B sees them
    assert await gw.images_refusal(user, model="model-a") == \
        "the model model-a does not read images"

    # Sent anyway (an API caller), the request is refused naming the reason, not sent blind.
    with pytest.raises(Exception, match="vision"):
        await gw.chat(user, ChatRequest(prompt="and this?", conversation_id=on_a.conversation.id,
                                        images=(ImageFile("x.png", "image/png", PNG),)))
    assert len(upstream_a.chat_requests(titles=False)) == 1

    text_only = await open_gateway(make_settings([account("A", upstream_a, "KEY_A",
                                                          vision=False)]))
    assert await text_only.images_refusal(user) == "no model you may use here reads images"

    seeing_plus = await open_gateway(make_settings([
        account("A", upstream_a, "KEY_A", vision=False),
        account("B", upstream_b, "KEY_B", tier="plus")]))
    plus_user = await new_user(seeing_plus, "pat", plus=True)
    assert await seeing_plus.images_refusal(plus_user) == (
        "no free-tier model reads images; ask on the plus tier for one that does")
    assert await seeing_plus.images_refusal(plus_user, plus="any") is None
    assert await seeing_plus.images_refusal(user, plus="any") == \
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


async def test_text_naming_another_members_image_gets_nothing_of_it(
        gw: Gateway, admin: Principal, upstream_b: FakeUpstream) -> None:
    ann, bob = await new_user(gw, "ann"), await new_user(gw, "bob")
    secret = b"\x89PNG\r\n\x1a\n" + b"ann's private picture" * 10
    anns = await gw.chat(ann, ChatRequest(prompt="mine",
                                          images=(ImageFile("s.png", "image/png", secret),)))
    sha = (await gw.recall(ann, anns.conversation.id))[1][0].public()["attachments"][0]["sha256"]
    anns_calls = len(upstream_b.requests)

    # Bob's words name Ann's image, beside a picture of his own.
    bobs = await gw.chat(bob, ChatRequest(prompt=f"attachment:{sha}",
                                          images=(ImageFile("b.png", "image/png", PNG),)))
    await gw.chat(bob, ChatRequest(prompt="and?", conversation_id=bobs.conversation.id))
    again = await gw.regenerate(bob, bobs.conversation.id,
                                (await gw.recall(bob, bobs.conversation.id))[1][-1].id)
    await gw.regenerate(bob, bobs.conversation.id, again.turn.id)
    regenerated_first = await gw.chat(bob, ChatRequest(
        prompt=f"attachment:{sha}", images=(ImageFile("b.png", "image/png", PNG),)))
    await gw.regenerate(bob, regenerated_first.conversation.id, regenerated_first.turn.id)

    encoded = base64.b64encode(secret).decode()
    assert len(upstream_b.requests) > anns_calls + 4
    for request in upstream_b.requests[anns_calls:]:
        assert encoded not in request.raw_body.decode()
    for conversation in (bobs, regenerated_first):
        turns = (await gw.recall(bob, conversation.conversation.id))[1]
        assert all(a["sha256"] != sha for t in turns for a in t.public().get("attachments", []))
        with pytest.raises(Exception, match="no such attachment"):
            await gw.attachment(bob, conversation.conversation.id, sha)


async def test_the_images_sent_again_are_the_newest_up_to_the_limit(
        make_settings: Callable[..., Settings], upstream_b: FakeUpstream,
        open_gateway: OpenGateway) -> None:
    gw = await open_gateway(make_settings([account("B", upstream_b, "KEY_B")],
                                          chat={"max_attachment_bytes": 2 * len(PNG) + 10}))
    user = await new_user(gw)
    pictures = [b"\x89PNG\r\n\x1a\n" + bytes([i]) * (len(PNG) - 8) for i in range(4)]
    first = await gw.chat(user, ChatRequest(prompt="picture 0", images=(
        ImageFile("0.png", "image/png", pictures[0]),)))
    cid = first.conversation.id
    for i in (1, 2, 3):
        await gw.chat(user, ChatRequest(prompt=f"picture {i}", conversation_id=cid, images=(
            ImageFile(f"{i}.png", "image/png", pictures[i]),)))
    await gw.chat(user, ChatRequest(prompt="which was brightest?", conversation_id=cid))

    sent = upstream_b.chat_requests(titles=False)[-1].messages
    shown = [[p.get("image_url", {}).get("url") or p["text"] for p in m["content"]]
             for m in sent if m["role"] == "user" and isinstance(m["content"], list)]
    assert shown == [["picture 0", "[an earlier image, not sent again]"],
                     ["picture 1", "[an earlier image, not sent again]"],
                     ["picture 2", url("image/png", pictures[2])],
                     ["picture 3", url("image/png", pictures[3])]]


async def test_a_new_conversation_on_the_members_own_key_takes_images(
        make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
        open_gateway: OpenGateway) -> None:
    gw = await open_gateway(make_settings([account("A", upstream_a, "KEY_A", vision=False)]))
    user = await new_user(gw)
    assert await gw.images_refusal(user) == "no model you may use here reads images"
    await gw.set_own_key(user, "sk-my-own")
    me = await gw.principals.get(user.id)
    assert me is not None
    assert await gw.images_refusal(me) is None
    result = await gw.chat(me, ChatRequest(prompt="look",
                                           images=(ImageFile("a.png", "image/png", PNG),)))
    assert result.conversation.mode == "own_key"
    assert images_sent(upstream_a.chat_requests(titles=False)[-1].messages[-1]) == [
        url("image/png", PNG)]


async def test_regenerated_where_images_are_no_longer_seen_they_are_kept(
        make_settings: Callable[..., Settings], upstream_b: FakeUpstream,
        open_gateway: OpenGateway) -> None:
    gw = await open_gateway(make_settings([account("B", upstream_b, "KEY_B")]))
    user = await new_user(gw)
    first = await gw.chat(user, ChatRequest(prompt="what is it?",
                                            images=(ImageFile("a.png", "image/png", PNG),)))
    await gw.close()
    # An admin says B cannot see images after all: the turn is answered from its words.
    gw = await open_gateway(make_settings([account("B", upstream_b, "KEY_B", vision=False)]))
    again = await gw.regenerate(user, first.conversation.id, first.turn.id)
    assert upstream_b.chat_requests(titles=False)[-1].messages[-1] == {
        "role": "user", "content": "what is it?"}
    [kept] = again.turn.public()["attachments"]
    assert (await gw.attachment(user, first.conversation.id, kept["sha256"])).data == PNG
