"""Well-formed JSON of the wrong shape from an upstream: every field of a valid answer, in turn,
replaced by a value of every other type. Each must give either a completion whose fields have
their proper types or the ``garbage`` failure (which cools the account), never another
exception: before, usage as a list or a chunk's choices as a string escaped as a TypeError or
AttributeError, the caller got a 500 and the account was neither cooled nor skipped."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from core.upstream import Completion, Target, UpstreamFailure, complete
from core.upstream_http import UpstreamSession
from tests.fakes.upstream import FakeUpstream, Garbage

WRONG_VALUES: list[Any] = [None, True, -3, 2.5, 1 << 70, "text", [], [1, "x"], {}, {"k": [1]}]

CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CHUNKS = [
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"},
                  "finish_reason": None}]},
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
     "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}],
     "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
]
RESPONSE = {
    "id": "resp_1", "object": "response", "status": "completed", "model": "m",
    "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                "content": [{"type": "output_text", "text": "hello"}]}],
    "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value, the value itself included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copied = copy.deepcopy(value)
    holder = copied
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = new
    return copied


def variants(value: Any) -> list[tuple[str, Any]]:
    return [(f"{'.'.join(map(str, path)) or '(top)'}={wrong!r}", replaced(value, path, wrong))
            for path in paths(value) for wrong in WRONG_VALUES]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("shapes") as upstream:
        yield upstream


def target(fake: FakeUpstream, session: UpstreamSession, api: str = "chat") -> Target:
    return Target(name="shapes", base_url=fake.base_url, model="m", session=session,
                  api_key=None, timeout_s=5, api=api)  # type: ignore[arg-type]


def assert_well_typed(result: Completion, deltas: list[str]) -> None:
    assert isinstance(result.text, str) and isinstance(result.model, str)
    assert result.upstream_id is None or isinstance(result.upstream_id, str)
    assert result.finish_reason is None or isinstance(result.finish_reason, str)
    for count in (result.input_tokens, result.output_tokens):
        assert count is None or (type(count) is int and 0 <= count < 1 << 31)
    assert all(isinstance(d, str) for d in deltas)


async def outcome(fake: FakeUpstream, session: UpstreamSession, api: str,
                  body: Garbage, stream: bool) -> str:
    fake.enqueue(body)
    deltas: list[str] = []

    async def on_delta(text: str) -> None:
        deltas.append(text)

    try:
        result = await complete(target(fake, session, api), [{"role": "user", "content": "hi"}],
                                on_delta=on_delta if stream else None)
    except UpstreamFailure as failure:
        assert failure.kind in ("garbage", "server"), failure.kind
        return failure.kind
    assert_well_typed(result, deltas)
    return "ok"


async def test_a_chat_completion_of_any_wrong_shape_is_garbage_or_well_typed(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    seen = {name: await outcome(fake, upstream_session, "chat", Garbage.json(body), False)
            for name, body in variants(CHAT)}
    # The fields the gateway reads, each of a wrong type, are refused as garbage.
    for name in ("usage=[]", "choices='text'", "choices=[1, 'x']", "choices=[]",
                 "choices.0.message.content=2.5", "choices.0.message.content=[1, 'x']",
                 "choices.0.message='text'", "usage.prompt_tokens='text'",
                 "usage.completion_tokens=-3", "usage.prompt_tokens=1180591620717411303424",
                 "model=-3", "id={}", "choices.0.finish_reason=True", "(top)=[]"):
        assert seen[name] == "garbage", name
    # A valid answer, and one with only null where null is allowed, still passes.
    assert seen["usage=None"] == seen["choices.0.finish_reason=None"] == "ok"


async def test_a_streamed_chunk_of_any_wrong_shape_is_garbage_or_well_typed(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    seen = {}
    for index, chunk in enumerate(CHUNKS):
        for name, wrong in variants(chunk):
            chunks = [*CHUNKS[:index], wrong, *CHUNKS[index + 1:]]
            seen[f"{index}:{name}"] = await outcome(fake, upstream_session, "chat",
                                                    Garbage.sse(*chunks), True)
    for name in ("0:choices='text'", "0:choices.0.delta.content=2.5", "0:choices.0.delta=[]",
                 "1:usage=[]", "1:usage.prompt_tokens='text'", "0:(top)=-3", "0:choices=[1, 'x']"):
        assert seen[name] == "garbage", name
    assert seen["1:usage=None"] == "ok"


async def test_a_chunk_of_any_wrong_shape_after_the_layout_is_learned_is_garbage_or_well_typed(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    # Text chunks after the first are read by their text alone (core/chat_stream.py): one of
    # any wrong shape among them must be read whole and judged as before.
    text = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]}
    seen = {name: await outcome(fake, upstream_session, "chat",
                                Garbage.sse(CHUNKS[0], text, wrong, text, CHUNKS[1]), True)
            for name, wrong in variants({**text, "choices": [
                {**text["choices"][0], "delta": {"content": "!"}}]})}
    for name in ("choices='text'", "choices.0.delta.content=2.5", "choices.0.delta=[]",
                 "choices.0.delta.content=[1, 'x']", "choices.0.delta.content={}",
                 "(top)=-3", "choices=[1, 'x']", "model=-3"):
        assert seen[name] == "garbage", name
    assert seen["choices.0.delta.content=None"] == seen["choices.0.finish_reason=None"] == "ok"


async def test_a_responses_answer_of_any_wrong_shape_is_garbage_or_well_typed(
    fake: FakeUpstream, upstream_session: UpstreamSession,
) -> None:
    seen = {name: await outcome(fake, upstream_session, "responses", Garbage.json(body), False)
            for name, body in variants(RESPONSE)}
    events = {}
    for name, body in variants(RESPONSE):
        stream = Garbage.sse({"type": "response.output_text.delta", "delta": "hello"},
                             {"type": "response.completed", "response": body})
        events[name] = await outcome(fake, upstream_session, "responses", stream, True)
    for name in ("usage=[]", "output.0.content.0.text=2.5", "output=[1, 'x']",
                 "output.0.content='text'", "usage.input_tokens='text'", "model=-3"):
        assert seen[name] == events[name] == "garbage", name
    assert seen["usage=None"] == events["usage=None"] == "ok"
    wrong_delta = Garbage.sse({"type": "response.output_text.delta", "delta": 5},
                              {"type": "response.completed", "response": RESPONSE})
    assert await outcome(fake, upstream_session, "responses", wrong_delta, True) == "garbage"
