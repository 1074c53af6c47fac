"""The throttle and the reply stream, on a fake clock and a recording sink."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from cogs.utils.stream import EMPTY_REPLY, ReplyStream
from cogs.utils.text import MESSAGE_LIMIT, open_fence
from cogs.utils.throttle import Throttle
from core.locks import KeyedLocks

T = TypeVar("T")


class Clock:
    """Virtual time: ``sleep`` waits until ``run`` has moved the clock past its deadline;
    ``run`` moves it to the next deadline whenever every task is waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._count), future))
        await future

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        task = asyncio.create_task(work)
        while not task.done():
            for _ in range(20):  # let every runnable task run until it waits
                await asyncio.sleep(0)
            if self._sleepers and not task.done():
                wake, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake)
                future.set_result(None)
        return task.result()


class RecordingSink:
    """Records each write with the fake time it happened at."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.writes: list[tuple[float, str, int, str]] = []
        self.messages: list[str] = []

    async def post(self, content: str) -> int:
        self.messages.append(content)
        self.writes.append((self.clock.now, "post", len(self.messages) - 1, content))
        return len(self.messages) - 1

    async def edit(self, handle: int, content: str) -> None:
        self.messages[handle] = content
        self.writes.append((self.clock.now, "edit", handle, content))


def test_throttle() -> None:
    clock = Clock()
    throttle = Throttle(1.0, clock)
    assert throttle.delay() == 0
    throttle.mark()
    assert throttle.delay() == 1.0
    clock.now += 0.25
    assert throttle.delay() == 0.75
    clock.now += 5
    assert throttle.delay() == 0


async def feed_slowly(stream: ReplyStream[int], clock: Clock, pieces: list[str],
                      gap: float, final: str | None = None) -> None:
    async def feed() -> None:
        for piece in pieces:
            stream.feed(piece)
            await clock.sleep(gap)
        await stream.close(final)
    await clock.run(feed())


async def test_edits_are_at_least_an_interval_apart() -> None:
    clock = Clock()
    sink = RecordingSink(clock)
    stream: ReplyStream[int] = ReplyStream(sink, interval=1.0, clock=clock, sleep=clock.sleep)
    pieces = [f"word{i} " for i in range(200)]
    await feed_slowly(stream, clock, pieces, 0.03)  # six seconds of generation
    assert sink.messages == ["".join(pieces)]
    assert sink.writes[0][1] == "post"
    assert sink.writes[0][3] == "word0 "  # the first piece shows at once
    times = [w[0] for w in sink.writes]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 1.0 for gap in gaps), gaps
    assert 5 <= len(sink.writes) <= 8  # about one a second, not one per piece


async def test_a_long_reply_moves_on_to_new_messages_without_open_fences() -> None:
    clock = Clock()
    sink = RecordingSink(clock)
    stream: ReplyStream[int] = ReplyStream(sink, interval=1.0, clock=clock, sleep=clock.sleep)
    text = "Intro\n```python\n" + "\n".join(f"x{i} = {i}" for i in range(1200)) + "\n```\nEnd."
    pieces = [text[i:i + 97] for i in range(0, len(text), 97)]
    await feed_slowly(stream, clock, pieces, 0.01, final=text)
    assert len(sink.messages) >= 5
    for _, _, _, content in sink.writes:
        assert len(content) <= MESSAGE_LIMIT
        assert open_fence(content) is None
    assert sink.messages[-1].endswith("End.")
    # Once a message is full it is left alone: edits go to the last ones only.
    last_edit_of = {}
    for at, _kind, handle, _ in sink.writes:
        last_edit_of[handle] = at
    assert sorted(last_edit_of, key=last_edit_of.get) == list(range(len(sink.messages)))


async def test_close_writes_the_final_text_and_an_empty_reply_is_said() -> None:
    clock = Clock()
    sink = RecordingSink(clock)
    stream: ReplyStream[int] = ReplyStream(sink, interval=1.0, clock=clock, sleep=clock.sleep)
    stream.feed("partial")
    await stream.close("partial and complete")
    assert sink.messages == ["partial and complete"]

    empty = RecordingSink(clock)
    stream = ReplyStream(empty, interval=1.0, clock=clock, sleep=clock.sleep)
    await stream.close("")
    assert empty.messages == [EMPTY_REPLY]

    nothing = RecordingSink(clock)
    stream = ReplyStream(nothing, interval=1.0, clock=clock, sleep=clock.sleep)
    await stream.close()  # a failure before any text: nothing to write
    assert nothing.messages == []


async def test_a_failed_write_surfaces_at_close() -> None:
    class Broken(RecordingSink):
        async def post(self, content: str) -> int:
            raise RuntimeError("discord said no")

    clock = Clock()
    stream: ReplyStream[int] = ReplyStream(Broken(clock), interval=1.0, clock=clock,
                                           sleep=clock.sleep)
    stream.feed("text")
    with pytest.raises(RuntimeError, match="discord said no"):
        await stream.close()


async def test_keyed_locks_serialise_per_key_and_are_dropped() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def work(key: int, name: str) -> None:
        async with locks[key]:
            order.append(f"{name} in")
            await asyncio.sleep(0)
            order.append(f"{name} out")

    await asyncio.gather(work(1, "a"), work(1, "b"), work(2, "c"))
    assert order.index("a out") < order.index("b in")
    assert len(locks) == 0
