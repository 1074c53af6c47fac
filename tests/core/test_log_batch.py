"""Log lines handed to the writing thread in batches: every line written, in order, once,
whether logged from the event loop, from another thread or with no loop; masked as ever; and
the lines of one turn of the loop reach the stream in one write."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Iterator

import pytest

import bot


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def configured() -> Iterator[tuple[CountingStream, logging.handlers.QueueListener]]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = CountingStream()
    listener = bot.configure_logging("INFO", stream)
    try:
        yield stream, listener
    finally:
        listener.stop()
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


async def test_lines_of_one_loop_turn_are_written_together_and_in_order(
        configured: tuple[CountingStream, logging.handlers.QueueListener]) -> None:
    stream, listener = configured
    log = logging.getLogger("test.batch")
    for i in range(5):
        log.info("line %d user=%s", i, "gw_secretsecretsecret")
    log.debug("not at INFO")
    await asyncio.sleep(0)  # the turn ends: the batch is handed over

    def from_a_thread() -> None:
        log.warning("from a thread")

    thread = threading.Thread(target=from_a_thread)
    thread.start()
    thread.join()
    listener.stop()  # writes out whatever is queued
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        *(f"line {i} user=***" for i in range(5)), "from a thread"]
    assert stream.writes == 2  # the five lines of one turn in one write, the thread's in one


def test_a_line_logged_with_no_loop_running_is_written(
        configured: tuple[CountingStream, logging.handlers.QueueListener]) -> None:
    stream, listener = configured
    logging.getLogger("test.batch").error("no loop here")
    listener.stop()
    assert stream.getvalue().endswith("ERROR test.batch: no loop here\n")


def test_line_formatter_writes_what_the_generic_formatter_writes() -> None:
    # Its cached date and time, and its line put together directly, give the same text as
    # logging.Formatter with the same format, second after second and with a traceback.
    from core.log_batch import LineFormatter
    fast, generic = LineFormatter(), logging.Formatter(LineFormatter.FORMAT)
    log = logging.getLogger("test.format")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        failure = sys.exc_info()
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.002, 1_700_003_600.5):
        for exc_info in (None, failure):
            record = log.makeRecord("test.format", logging.WARNING, "", 0, "n=%d %s",
                                    (7, "x"), exc_info)
            record.created = created
            record.msecs = int((created - int(created)) * 1000) + 0.0
            twin = logging.makeLogRecord(record.__dict__)
            assert fast.format(record) == generic.format(twin)
