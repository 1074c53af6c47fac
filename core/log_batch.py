"""Log records handed to the writing thread in batches, and written in one call a batch.

A record put on a queue one at a time wakes the writing thread for each (a futex call or two
a record, issue 14's profile: 6 to 30 a request), and a stream handler writes and flushes
each line on its own. Here the event loop only appends a record to a list; the list goes to
the thread once per turn of the loop (or when it is full), and the thread formats, filters and
writes all of it at once. Records from other threads, or logged with no loop running, are
handed over at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import queue
import threading
import time
from typing import Any

MAX_BATCH = 256
"""Records held before they are handed over without waiting for the loop's turn to end."""


class BatchingHandler(logging.Handler):
    """The root logger's handler: collects records and puts them on ``records`` as lists.
    Formatting is left to the writing thread (log arguments here are strings and numbers)."""

    def __init__(self, records: queue.SimpleQueue[Any]) -> None:
        super().__init__()
        self.records = records
        self._batch: list[logging.LogRecord] = []
        self._batch_lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        # As logging.Handler.handle, without its lock (an RLock taken and freed a record):
        # emit holds its own, all it needs.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        with self._batch_lock:
            self._batch.append(record)
            first, full = len(self._batch) == 1, len(self._batch) >= MAX_BATCH
        if full:
            self.flush()
            return
        if first:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()  # not on the event loop: no turn of it will come to hand it over
                return
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._batch_lock:
            batch, self._batch = self._batch, []
        if batch:
            self.records.put(batch)


class LineFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s``, the line bot.py writes, made
    without the generic machinery: the date and time of a second are made once for all its
    lines (time.localtime and strftime were a fifth of a line's cost, issue 14), and the
    line is put together directly rather than by %-formatting the record's dictionary."""

    FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

    def __init__(self) -> None:
        super().__init__(self.FORMAT)
        self._second: tuple[int, str] = (-1, "")

    def usesTime(self) -> bool:
        return True

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, stamp = self._second
        if int(record.created) != second:
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (int(record.created), stamp)
        return f"{stamp},{int(record.msecs):03d}"  # default_msec_format, '%s,%03d'

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"{record.asctime} {record.levelname} {record.name}: {record.message}"

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        # logging.Formatter.format's steps for a record with no traceback, without its calls.
        record.message = message = record.getMessage()
        record.asctime = stamp = self.formatTime(record)
        return f"{stamp} {record.levelname} {record.name}: {message}"


class BatchWriter(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes a batch of records in one write and one flush; its filters (the SecretFilter)
    run on each record, on the writing thread."""

    def handle_batch(self, records: list[logging.LogRecord]) -> None:
        lines = []
        for record in records:
            if record.levelno < self.level or not self.filter(record):
                continue
            try:
                lines.append(self.format(record) + self.terminator)
            except Exception:  # noqa: BLE001 - as logging does: report, go on with the rest
                self.handleError(record)
        if not lines:
            return
        self.acquire()
        try:
            self.stream.write("".join(lines))
            self.flush()
        except Exception:  # noqa: BLE001 - a failed write must not stop the thread
            self.handleError(records[-1])
        finally:
            self.release()


class BatchListener(logging.handlers.QueueListener):
    """The writing thread: takes batches off the queue and writes each with ``writer``.
    ``stop()`` hands over what the handler still holds first, so no line is lost."""

    def __init__(self, records: queue.SimpleQueue[Any], handler: BatchingHandler,
                 writer: BatchWriter) -> None:
        super().__init__(records, writer)
        self.handler = handler
        self.writer = writer

    def handle(self, record: Any) -> None:
        self.writer.handle_batch(record if isinstance(record, list) else [record])

    def stop(self) -> None:
        self.handler.flush()
        if self._thread is not None:  # stopping twice is harmless
            super().stop()
