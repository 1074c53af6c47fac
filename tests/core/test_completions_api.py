"""Accounts with ``api = "completions"`` (the packaged base model): the conversation goes to
``/v1/completions`` as a transcript to complete (preamble, worked examples, system prompt,
history, the prompt, ``Assistant:``) with stop sequences; titles have a transcript of their own;
streamed or not, the reply and its usage are stored as a chat completion's are."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.chat import ChatRequest
from core.config import Settings
from core.errors import UpstreamError
from core.gateway import Gateway
from tests.conftest import account
from tests.core.conftest import Listener, OpenGateway, new_user
from tests.fakes.upstream import COMPLETIONS_PATH, FakeUpstream, Garbage, Reply


@pytest.fixture
async def gw(open_gateway: OpenGateway, make_settings: Callable[..., Settings],
             upstream_a: FakeUpstream) -> Gateway:
    return await open_gateway(make_settings(
        [account("A", upstream_a, "KEY_A", api="completions", max_tokens=64)],
        chat={"system_prompt": "Answer in English."}))


async def test_a_conversation_is_sent_as_a_transcript_to_complete(
        gw: Gateway, upstream_a: FakeUpstream) -> None:
    ann = await new_user(gw)
    upstream_a.enqueue(" Paris is the capital of France.")
    upstream_a.enqueue_title(" Capital of France\n")
    first = await gw.chat(ann, ChatRequest(prompt="What is the capital of France?"))
    assert first.turn.reply == "Paris is the capital of France."
    assert first.conversation.title == "Capital of France"

    upstream_a.enqueue("Rome.")
    await gw.chat(ann, ChatRequest(prompt="And of Italy?", conversation_id=first.conversation.id))

    asked = upstream_a.chat_requests(titles=False)
    assert {r.path for r in asked} == {COMPLETIONS_PATH}
    prompt = asked[-1].prompt
    assert prompt.startswith("A conversation between a user and a helpful assistant.")
    assert "\nAnswer in English.\n" in prompt  # the system prompt
    assert "User: What is the capital of Spain?\nAssistant: The capital of Spain is Madrid." \
        in prompt  # a worked example
    assert prompt.endswith("User: What is the capital of France?\n"
                           "Assistant: Paris is the capital of France.\n\n"
                           "User: And of Italy?\nAssistant:")
    body = asked[-1].body or {}
    assert body["stop"] == ["\nUser:", "\nAssistant:", "\n\n"]
    assert (body["max_tokens"], body["temperature"], body["model"]) == (64, 0.2, "model-a")

    (title,) = upstream_a.chat_requests(titles=True)
    assert title.path == COMPLETIONS_PATH
    assert title.prompt.endswith("Message: What is the capital of France?\nTitle:")
    assert (title.body or {})["stop"] == ["\n"]


async def test_a_streamed_reply_is_exactly_what_is_stored(
        gw: Gateway, upstream_a: FakeUpstream) -> None:
    ann = await new_user(gw)
    upstream_a.enqueue(Reply(" Red, green and blue. \n", usage={}, chunk_delay=0.01))
    listener = Listener()
    result = await gw.chat(ann, ChatRequest(prompt="Name three colours.",
                                            options={"temperature": 0.7}), listener)
    deltas = listener.of("delta")
    assert len(deltas) > 1 and "".join(deltas) == result.turn.reply == "Red, green and blue."
    sent = upstream_a.chat_requests(titles=False)[-1]
    assert sent.stream and (sent.body or {})["temperature"] == 0.7  # the caller's, kept
    # No usage streamed (as llama.cpp): estimated, within the max_tokens asked.
    assert result.turn.input_tokens and 0 < (result.turn.output_tokens or 0) <= 64


async def test_an_answer_that_is_no_text_completion_is_the_accounts_failure(
        gw: Gateway, upstream_a: FakeUpstream) -> None:
    ann = await new_user(gw)
    upstream_a.enqueue(Garbage('{"choices": "none"}', content_type="application/json"))
    with pytest.raises(UpstreamError) as caught:
        await gw.chat(ann, ChatRequest(prompt="hi"))
    # The account's fault, as garbage from a chat upstream: cooled down, and said so.
    assert caught.value.status == 503 and "(last: invalid answer)" in str(caught.value)
