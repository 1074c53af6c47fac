"""A Chat Completions stream read the fast way (most chunks by their text alone, once their
layout is learned: core/chat_stream.py) gives exactly what reading every chunk whole gives: the
same reply, deltas, model and chunks for the /v1 front, however the upstream writes its JSON,
and the same refusal when a chunk in that layout holds something else than one string."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
import pytest

from core.upstream import Completion, Target, UpstreamFailure, complete
from core.upstream_http import UpstreamSession
from tests.fakes.upstream import FakeUpstream, Garbage

TEXTS = ["Hello", " wörld", " 🎉", ' say "hi"', " back\\slash", "\nnew line", "", " tab\t",
         " 中文", " </script>", " \u2028"]
HEAD = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "gpt-test", "system_fingerprint": "fp_1"}

Writer = Callable[[Any], str]
WRITERS: dict[str, Writer] = {
    "compact UTF-8 (orjson, OpenAI)": lambda value: orjson.dumps(value).decode(),
    "spaced ASCII escapes (json)": json.dumps,
    "spaced UTF-8 (llama.cpp-like)": lambda value: json.dumps(value, ensure_ascii=False),
    "indented, one line": lambda value: json.dumps(value, separators=(" , ", " : ")),
}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}], **extra}


def stream(texts: Sequence[str]) -> list[dict[str, Any]]:
    return [chunk({"role": "assistant", "content": "", "refusal": None}),
            *(chunk({"content": text}) for text in texts),
            chunk({}, "stop"),
            {**HEAD, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 11,
                                              "total_tokens": 20}}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("layout") as upstream:
        yield upstream


async def read(fake: FakeUpstream, session: UpstreamSession, events: list[str], *,
               compare_whole: bool = True) -> tuple[Completion, list[dict[str, Any] | str], int]:
    """The events as one upstream answer, read by ``complete`` as a /v1 stream reads them:
    the result (its text checked against the deltas), what on_raw heard (checked against
    each event read whole) and how many of those came as their text."""
    fake.enqueue(Garbage(body="".join(f"data: {event}\n\n" for event in events)
                         + "data: [DONE]\n\n", content_type="text/event-stream"))
    deltas: list[str] = []
    items: list[dict[str, Any] | str] = []

    async def on_delta(text: str) -> None:
        deltas.append(text)

    async def on_raw(objects: Sequence[dict[str, Any] | str]) -> bool:
        items.extend(objects)
        return True

    target = Target(name="layout", base_url=fake.base_url, model="asked", session=session,
                    api_key=None, timeout_s=5)
    result = await complete(target, [{"role": "user", "content": "hi"}], on_delta=on_delta,
                            on_raw=on_raw)
    assert result.text == "".join(deltas)
    return result, items, assert_same_as_whole(events, items) if compare_whole else 0


def assert_same_as_whole(events: list[str], items: list[dict[str, Any] | str]) -> int:
    """Each item is its event read whole, or that event's text when the event is a text delta
    of the first choice alone. Returns how many came as their text."""
    assert len(items) == len(events)
    texts = 0
    for event, item in zip(events, items, strict=True):
        whole = json.loads(event)
        if isinstance(item, str):
            texts += 1
            (choice,) = whole["choices"]
            assert choice["delta"] == {"content": item}
            assert (choice.get("index", 0), choice.get("finish_reason")) == (0, None)
            assert not choice.get("logprobs") and whole.get("usage") is None
        else:
            assert item == whole
    return texts


@pytest.mark.parametrize("writer", list(WRITERS), ids=list(WRITERS))
async def test_every_way_of_writing_json_gives_the_reply_read_whole(
    fake: FakeUpstream, upstream_session: UpstreamSession, writer: str,
) -> None:
    events = [WRITERS[writer](value) for value in stream(TEXTS)]
    result, _, by_text = await read(fake, upstream_session, events)
    assert result.text == "".join(TEXTS)
    assert (result.model, result.upstream_id, result.finish_reason) == (
        "gpt-test", "chatcmpl-7", "stop")
    assert (result.input_tokens, result.output_tokens) == (9, 11)
    # All but the first text (the layout is learned from it) came by their text alone.
    assert by_text == len(TEXTS) - 1


async def test_a_chunk_in_the_layout_with_more_than_one_string_is_read_whole(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    events = [orjson.dumps(value).decode() for value in stream(["one", " two", " three"])]
    # Same text before and after, but two strings where one was: JSON keeps the last.
    events[2] = events[2].replace('"content":" two"', '"content":" deux","content":" two"')
    events[3] = events[3].replace('"content":" three"', '"content":" 3" ,"refusal":null')
    result, items, by_text = await read(fake, upstream_session, events)
    assert result.text == "one two 3"
    assert isinstance(items[2], dict) and isinstance(items[3], dict)
    assert by_text == 0


@pytest.mark.parametrize("value", ["2.5", "null", "[\"x\"]", "{\"t\":1}", "\"a\" \"b\"",
                                   "\"unterminated"])
async def test_a_chunk_in_the_layout_without_a_string_is_refused_as_before(
    fake: FakeUpstream, upstream_session: UpstreamSession, value: str,
) -> None:
    events = [orjson.dumps(v).decode() for v in stream(["one", " two", " three"])]
    events[2] = events[2].replace('" two"', value)
    whole_reading_accepts = True
    try:
        json.loads(events[2])
    except ValueError:
        whole_reading_accepts = False
    try:
        result, items, _ = await read(fake, upstream_session, events)
    except UpstreamFailure as failure:
        assert failure.kind == "garbage"
        return
    # Only a null content is a valid chunk (no text), and it is taken as the whole reader does.
    assert value == "null" and whole_reading_accepts
    assert result.text == "one three"
    assert items[2] == json.loads(events[2])


async def test_the_model_of_the_last_chunk_that_names_one_wins(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    values = stream(["a", "b", "c", "d"])
    # "c" from another model, with its logprobs: read whole. "d" is in the layout again.
    values[3]["model"] = "gpt-other"
    values[3]["choices"][0]["logprobs"] = {"content": []}
    for end in values[-2:]:  # the finish and the usage name no model: "d"'s stands
        del end["model"]
    events = [orjson.dumps(value).decode() for value in values]
    result, items, _ = await read(fake, upstream_session, events)
    assert result.text == "abcd"
    assert result.model == "gpt-test"
    assert isinstance(items[4], str)
    # The usage chunk, last, names another model: it is the one the reply is stored under.
    result, _, _ = await read(fake, upstream_session, [
        *events[:-1], orjson.dumps({**values[-1], "model": "gpt-last"}).decode()])
    assert result.model == "gpt-last"


async def test_a_tool_call_between_text_chunks_goes_on_as_given(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    values = stream(["Let me", " check."])
    call = chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                  "function": {"name": "lookup", "arguments": "{}"}}]})
    values.insert(3, call)
    values.insert(4, chunk({"content": " Done"}))
    events = [orjson.dumps(value).decode() for value in values]
    result, items, _ = await read(fake, upstream_session, events)
    assert result.text == "Let me check. Done"
    assert items[3] == call and items[4] == " Done"
    assert result.message == {"tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "lookup", "arguments": "{}"}}]}


async def test_a_layout_is_learned_only_where_the_text_is(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    # The text, as orjson would write it, appears once: as the model's name. Its own place
    # holds it escaped. Taken for the text's place, a later chunk's model would be its text.
    first = orjson.dumps(chunk({"content": "gpt-test"})).decode().replace(
        '"content":"gpt-test"', '"content":"gpt\\u002dtest"')
    later = first.replace('"model":"gpt-test"', '"model":"other"')
    events = [orjson.dumps(stream([])[0]).decode(), first, later, later]
    result, _, _ = await read(fake, upstream_session, events)
    assert result.text == "gpt-test" * 3
    assert result.model == "other"


def obfuscated(values: list[dict[str, Any]]) -> list[str]:
    """OpenAI's chunks since 2025: random characters of random length in each, after the text
    (``stream_options.include_obfuscation``, on unless asked off)."""
    pads = ["Xq", "", "p9Z\\u00e9", "a\"b", "0000000000", "k"]
    return [orjson.dumps({**value, "obfuscation": pads[i % len(pads)]}).decode()
            for i, value in enumerate(values)]


async def test_openai_obfuscation_characters_change_nothing(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    events = obfuscated(stream(TEXTS))
    result, _, by_text = await read(fake, upstream_session, events)
    assert result.text == "".join(TEXTS)
    assert by_text == len(TEXTS) - 1


async def test_obfuscation_that_is_not_one_string_is_read_whole(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    events = obfuscated(stream(["one", " two", " three", " four"]))
    # Where the random characters go, something that takes the choices away (JSON keeps the
    # last of a key): that chunk has no text.
    events[2] = events[2].replace('"obfuscation":"p9Z\\\\u00e9"', '"obfuscation":"x","choices":[]')
    assert json.loads(events[2])["choices"] == []
    events[3] = events[3].replace('"obfuscation":"a\\"b"', '"obfuscation":7')
    result, _, _ = await read(fake, upstream_session, events)
    assert result.text == "one three four"


async def test_a_lone_surrogate_in_the_text_is_read_as_the_whole_reader_reads_it(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    # json reads "\ud83d" (half an emoji); orjson can neither read nor write it. Learning a
    # layout from such a chunk raised a TypeError before it was fixed.
    events = [json.dumps(value) for value in stream(["half ", "\ud83d", " and", " more"])]
    result, _, _ = await read(fake, upstream_session, events)
    assert result.text == "half \ud83d and more"


async def test_obfuscation_equal_to_the_text_is_not_taken_for_it(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    # The obfuscation comes first and holds the same text, written unescaped where the
    # text is escaped: the check must tell the two places apart.
    first = '{"obfuscation":"é","choices":[{"delta":{"content":"\\u00e9"}}]}'
    later = '{"obfuscation":"XYZ","choices":[{"delta":{"content":"hello"}}]}'
    result, _, _ = await read(fake, upstream_session, [first, later, later])
    assert result.text == "éhellohello"


async def test_a_deeply_nested_field_in_a_text_chunk_is_read_as_before(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    # orjson reads 1,000 levels; comparing them in Python ran out of stack while learning.
    deep = "[" * 1000 + "]" * 1000
    events = [orjson.dumps(value).decode() for value in stream(["deep", " text", " here"])]
    events[1] = events[1][:-1] + f',"x":{deep}}}'
    # (Not compared with json's reading: json runs out of stack on it inside pytest.)
    result, _, _ = await read(fake, upstream_session, events, compare_whole=False)
    assert result.text == "deep text here"


@pytest.mark.parametrize(("every", "by_text"), [(1, 0), (10, 35)])
async def test_a_stream_whose_chunks_change_learns_again_only_while_it_pays(
    fake: FakeUpstream, upstream_session: UpstreamSession, every: int, by_text: int,
) -> None:
    # The time of creation moves every chunk (no layout ever serves: the reader stops
    # learning after three), or every ten (llama.cpp's, each second: it learns each time).
    values = stream([f" w{i}" for i in range(40)])
    for i, value in enumerate(values):
        value["created"] += i // every
    events = [orjson.dumps(value).decode() for value in values]
    result, _, by_text = await read(fake, upstream_session, events)
    assert result.text == "".join(f" w{i}" for i in range(40))
    assert by_text == by_text
