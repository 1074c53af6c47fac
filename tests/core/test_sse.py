"""Server-sent events read from an upstream: the data of each event, however it is written."""

from __future__ import annotations

from core.wire import sse_batches


class _Response:
    """An upstream answer's body as it arrived, read by read (``Response.next_block``)."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = iter(reads)

    async def next_block(self) -> bytes | None:
        return next(self.reads, None)


async def _batches(reads: list[bytes]) -> list[list[str]]:
    return [batch async for batch in sse_batches(_Response(reads))]  # type: ignore[arg-type]


async def test_each_events_data_whatever_its_form() -> None:
    # The common one-line event (taken without splitting), and the forms the SSE format
    # allows beside it: no space after the colon, several data lines, comments and other
    # fields, CR LF line ends, an event split across reads, non-ASCII text.
    reads = [
        b'data: {"a": 1}\n\ndata:{"b": 2}\n\n: a comment\ndata: x\n\n',
        b"event: message\ndata: one\ndata: two\n\ndata:  spaced\r\n\r\ndata: caf",
        "é\n\n".encode(),
        b"data: last",
    ]
    assert await _batches(reads) == [
        ['{"a": 1}', '{"b": 2}', "x"],
        ["one\ntwo", " spaced"],
        ["café"],
        ["last"],
    ]


async def test_a_cr_lf_cut_between_two_reads_still_ends_its_line() -> None:
    # Before, CR LF was made LF in each read alone: a CR at the end of one read and its LF at
    # the start of the next stayed apart, so "[DONE]\r" was not the end of the stream, and two
    # events ran together as one.
    assert await _batches([b"data: [DONE]\r", b"\n\r\n"]) == [["[DONE]"]]
    assert await _batches([b"data: {}\r\n\r", b"\n", b"data: [DONE]\r\n\r\n"]) == [
        ["{}"], ["[DONE]"]]
