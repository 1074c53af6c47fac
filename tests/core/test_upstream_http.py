"""The upstream HTTP/1.1 client (core/upstream_http.py) against real servers on 127.0.0.1.

Most servers here are raw TCP servers whose script writes the answer byte by byte, so that a
test can send exactly what a misbehaving upstream sends (a connection closed while idle, a body
cut short, a chunk size that is not hex); an aiohttp server stands in where a normal upstream is
enough. A server's script sees one connection at a time (``Peer``), and the server counts the
connections it accepted and how many were open at once."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from core.upstream_http import BrokenResponse, MalformedResponse, Timeouts, UpstreamSession

JSON = {"Content-Type": "application/json"}
SAFE = Timeouts(total=5)
"""Every call not about time limits has one, so that a hang fails the test in seconds."""


@dataclass
class Request:
    connection: int
    """Which accepted connection it came on, from 1."""
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class Peer:
    """One accepted connection, as a server's script drives it."""

    def __init__(self, server: RawServer, index: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server, self.index, self.reader, self.writer = server, index, reader, writer

    async def request(self) -> Request | None:
        """The next request whole (head and Content-Length body); None once the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers = [(name, value.strip()) for name, _, value in
                   (raw.partition(":") for raw in lines)]
        request = Request(self.index, line, headers, b"")
        length = request.header("content-length")
        request.body = await self.reader.readexactly(int(length[0]) if length else 0)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self) -> None:
        """Until the client closes this connection (what it sends meanwhile is ignored)."""
        while await self.reader.read(65536):
            pass


Script = Callable[[Peer], Awaitable[None]]
Serve = Callable[[Script], Awaitable["RawServer"]]


class RawServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests: list[Request] = []
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._stopping = False

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.script(Peer(self, self.connections, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: what the test looks at is on the client's side
        except asyncio.CancelledError:
            # Stopped at the end of the test: ended quietly, as asyncio's streams log a
            # connection's task that ends cancelled as an error (Python 3.11).
            if not self._stopping:
                raise
        finally:
            # Counted closed before the close reaches the client, so that a client which
            # waits for it can never find this connection still counted as open.
            self.open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[RawServer] = []

    async def start(script: Script) -> RawServer:
        server = RawServer(script)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[UpstreamSession]:
    client = UpstreamSession()
    yield client
    await client.close()


def answer(body: bytes = b"ok", *, status: str = "200 OK", head: str = "",
           version: str = "HTTP/1.1") -> bytes:
    """An answer framed by Content-Length; ``head`` adds header lines ("Name: value\\r\\n")."""
    return (f"{version} {status}\r\nContent-Length: {len(body)}\r\n{head}\r\n"
            .encode("latin-1") + body)


def chunked(*chunks: bytes, head: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{head}\r\n".encode()
            + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
            + b"0\r\n\r\n")


def replying(make: Callable[[Request], bytes]) -> Script:
    """A keep-alive server: every request on the connection gets ``make(request)``."""
    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await peer.send(make(request))
    return script


def numbered(request: Request) -> bytes:
    return answer(f"reply {request.connection}".encode())


async def call(session: UpstreamSession, url: str, *, body: bytes = b"{}",
               headers: dict[str, str] | None = None, timeout: Timeouts = SAFE) -> bytes:
    async with session.post(url, data=body, headers=JSON if headers is None else headers,
                            timeout=timeout) as resp:
        assert resp.status == 200, resp.status
        return await resp.read()


@contextlib.asynccontextmanager
async def aiohttp_upstream(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                           client_max_size: int = 1024 ** 2) -> AsyncIterator[str]:
    """A real aiohttp server on 127.0.0.1 answering ``handler``: its chat completions URL."""
    app = web.Application(client_max_size=client_max_size)
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------- bodies and framing


async def test_content_length_body_is_read_whole(serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(lambda _: answer(
        b'{"id": "x"}', head="X-Request-Id: abc\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n")))
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert (resp.status, resp.reason, resp.content_length) == (200, "OK", 11)
        assert resp.headers["x-request-id"] == "abc"
        assert resp.headers["set-cookie"] == "a=1, b=2"
        assert await resp.read() == b'{"id": "x"}'


@pytest.mark.parametrize(("first", "rest", "body"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b"defghij", b"abcdefghij"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
     b"c\r\n3\r\ndef\r\n0\r\n\r\n", b"abcdef"),
], ids=["content-length", "chunked"])
async def test_body_read_whole_when_the_rest_arrives_after_the_head(
        serve: Serve, session: UpstreamSession, first: bytes, rest: bytes, body: bytes) -> None:
    head_seen = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(first)
        await head_seen.wait()
        await peer.send(rest)
        await peer.until_closed()

    server = await serve(script)
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        head_seen.set()  # read() starts before the rest of the body can have been sent
        assert await resp.read() == body


async def test_chunked_body_in_one_write_with_extensions_and_trailers(
        serve: Serve, session: UpstreamSession) -> None:
    body = (b"5\r\nhello\r\n6;x=y\r\n world\r\nA ; name=\"v\"\r\n, goodbye!\r\n"
            b"0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n")
    server = await serve(replying(
        lambda r: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body))
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert resp.content_length is None
        assert await resp.read() == b"hello world, goodbye!"
    # The trailers were read to their end: the next answer on the same connection is whole.
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert [block async for block in resp.iter_any()] == [b"hello world, goodbye!"]
    assert server.connections == 1


async def test_chunk_sizes_in_upper_and_lower_case_hex(
        serve: Serve, session: UpstreamSession) -> None:
    """Sizes written in upper case (which servers seldom do) read as well as lower case ones,
    up to a 4 KiB chunk and past it."""
    chunks = [b"a" * 31, b"b" * 4095, b"c" * 10, b"d" * 4097, b"e" * 171]
    sizes = [b"1F", b"FFF", b"a", b"1001", b"aB"]
    body = b"".join(b"%s\r\n%s\r\n" % (size, chunk) for size, chunk in zip(sizes, chunks,
                                                                         strict=True))
    server = await serve(replying(
        lambda r: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
        + b"0\r\n\r\n"))
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert await resp.read() == b"".join(chunks)


async def test_chunked_body_split_across_writes_at_awkward_places(
        serve: Serve, session: UpstreamSession) -> None:
    """Each piece is sent only once the client got what the one before held, so the parser
    really sees a size line, a chunk's CRLF and the trailers cut in two."""
    got: asyncio.Queue[bytes] = asyncio.Queue()
    pieces = [b"5\r\nhel", b"lo\r\n6;x=y\r", b"\n world\r\n0\r\n", b"X-Trailer: t\r\n\r\n"]

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + pieces[0])
        for piece in pieces[1:]:
            await got.get()
            await peer.send(piece)
        await peer.until_closed()

    server = await serve(script)
    blocks = []
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        async for block in resp.iter_any():
            blocks.append(block)
            got.put_nowait(block)
    assert blocks == [b"hel", b"lo", b" world"]


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_body_ended_by_the_connection_close(
        serve: Serve, session: UpstreamSession, version: str) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(f"{version} 200 OK\r\nContent-Type: text/plain\r\n\r\n".encode())
        await peer.send(b"first part, ")
        await peer.send(b"second part")

    server = await serve(script)
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert resp.content_length is None
        assert await resp.read() == b"first part, second part"
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert b"".join([block async for block in resp.iter_any()]) == b"first part, second part"
    assert server.connections == 2


async def test_status_line_without_reason(serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(lambda _: b"HTTP/1.1 429\r\nContent-Length: 2\r\n\r\nno"))
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert (resp.status, resp.reason) == (429, "")
        assert await resp.read() == b"no"


async def test_a_real_aiohttp_stream_via_iter_any(session: UpstreamSession) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for n in range(5):
            await resp.write(f"data: {n}\n\n".encode())
        await resp.write_eof()
        return resp

    async with aiohttp_upstream(handler) as url:
        async with session.post(url, data=b"{}", headers=JSON, timeout=SAFE) as resp:
            assert resp.headers["content-type"] == "text/event-stream"
            text = b"".join([block async for block in resp.iter_any()])
        assert text == b"".join(f"data: {n}\n\n".encode() for n in range(5))


# ---------------------------------------------------------------------- keep-alive


async def test_sequential_calls_share_one_connection(
        serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(numbered))
    assert [await call(session, server.url()) for _ in range(3)] == [b"reply 1"] * 3
    assert server.connections == 1
    assert len(server.requests) == 3


@pytest.mark.parametrize(("version", "head"), [
    ("HTTP/1.1", "Connection: close\r\n"),
    ("HTTP/1.1", "Connection: Keep-Alive, Close\r\n"),
    ("HTTP/1.0", ""),
])
async def test_an_answer_that_ends_its_connection_is_not_reused(
        serve: Serve, session: UpstreamSession, version: str, head: str) -> None:
    # The server would go on answering on the same connection: only the client can tell.
    server = await serve(replying(
        lambda r: answer(f"reply {r.connection}".encode(), head=head, version=version)))
    assert await call(session, server.url()) == b"reply 1"
    assert await call(session, server.url()) == b"reply 2"
    assert server.connections == 2


async def test_http_1_0_keep_alive_is_reused(serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(lambda r: answer(
        f"reply {r.connection}".encode(), head="Connection: keep-alive\r\n", version="HTTP/1.0")))
    assert await call(session, server.url()) == b"reply 1"
    assert await call(session, server.url()) == b"reply 1"
    assert server.connections == 1


async def test_an_answer_left_unread_does_not_leak_into_the_next_call(
        serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(numbered))
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert resp.status == 200  # the body is not read: the connection cannot be reused
    assert await call(session, server.url()) == b"reply 2"
    assert server.connections == 2


async def test_bytes_past_the_answer_are_not_taken_for_the_next_one(
        serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await peer.send(answer(f"reply {request.connection}".encode())
                            + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")

    server = await serve(script)
    assert await call(session, server.url()) == b"reply 1"
    assert await call(session, server.url()) == b"reply 2"
    assert server.connections == 2


async def test_keep_alive_with_a_real_aiohttp_server(session: UpstreamSession) -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response({"n": len(peers)})

    async with aiohttp_upstream(handler) as url:
        assert [await call(session, url) for _ in range(3)] == \
            [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert len(set(peers)) == 1


# ---------------------------------------------------------------------- stale connections


async def test_idle_connection_closed_by_the_server_is_replaced(
        serve: Serve, session: UpstreamSession) -> None:
    """The server closes the idle connection after its first answer; the second call goes out
    on a new one and reaches the server once."""
    may_close, closed = asyncio.Event(), asyncio.Event()

    async def script(peer: Peer) -> None:
        if peer.index == 1:
            await peer.request()
            await peer.send(answer(b"reply 1"))
            await may_close.wait()
            peer.writer.close()
            closed.set()
            return
        await replying(numbered)(peer)

    server = await serve(script)
    assert await call(session, server.url(), body=b'{"n": 1}') == b"reply 1"
    may_close.set()
    await closed.wait()
    assert await call(session, server.url(), body=b'{"n": 2}') == b"reply 2"
    assert [(r.connection, r.body) for r in server.requests] == \
        [(1, b'{"n": 1}'), (2, b'{"n": 2}')]


async def test_request_on_a_connection_the_server_was_closing_is_sent_again_once(
        serve: Serve, session: UpstreamSession) -> None:
    """The race a pool cannot avoid: the server closes its idle connection just as the next
    request is sent on it. The request is dropped unanswered, so it is sent again on a new
    connection, and answered once."""
    async def script(peer: Peer) -> None:
        if peer.index == 1:
            await peer.request()
            await peer.send(answer(b"reply 1"))
            await peer.request()  # dropped: the server closes without a byte back
            return
        await replying(numbered)(peer)

    server = await serve(script)
    assert await call(session, server.url(), body=b'{"n": 1}') == b"reply 1"
    assert await call(session, server.url(), body=b'{"n": 2}') == b"reply 2"
    assert [(r.connection, r.body) for r in server.requests] == \
        [(1, b'{"n": 1}'), (1, b'{"n": 2}'), (2, b'{"n": 2}')]


async def test_a_request_dropped_again_on_the_new_connection_fails(
        serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        if peer.index == 1:
            await peer.send(answer(b"reply 1"))
            await peer.request()
        # closed without an answer

    server = await serve(script)
    assert await call(session, server.url()) == b"reply 1"
    with pytest.raises(ConnectionError):
        await call(session, server.url())
    assert server.connections == 2  # one retry, not more
    assert [r.connection for r in server.requests] == [1, 1, 2]


async def test_a_reused_connection_broken_mid_answer_is_not_retried(
        serve: Serve, session: UpstreamSession) -> None:
    """Once any byte came back the request surely reached the server: sending it again could
    do it twice."""
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"reply 1"))
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")

    server = await serve(script)
    assert await call(session, server.url()) == b"reply 1"
    with pytest.raises(BrokenResponse):
        await call(session, server.url())
    assert server.connections == 1
    assert len(server.requests) == 2


async def test_a_fresh_connection_closed_before_an_answer_fails(
        serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()  # and closed without an answer

    server = await serve(script)
    with pytest.raises(ConnectionError) as caught:
        await call(session, server.url())
    assert not isinstance(caught.value, BrokenResponse)  # no answer had begun
    assert server.connections == 1
    assert len(server.requests) == 1


async def test_nothing_listening_is_a_connection_error(
        serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(numbered))
    url = server.url()
    await server.stop()
    with pytest.raises(ConnectionError):
        await call(session, url)


# ---------------------------------------------------------------------- broken answers


CUT_SHORT = {
    "mid body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
    "chunked, before its last chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      b"5\r\nhello\r\n",
    "mid head": b"HTTP/1.1 200 OK\r\nContent-Le",
}


@pytest.mark.parametrize("raw", CUT_SHORT.values(), ids=CUT_SHORT.keys())
async def test_answers_cut_short_are_broken(serve: Serve, session: UpstreamSession,
                                            raw: bytes) -> None:
    """The server closes the connection before its answer is whole: the call fails as broken,
    and is not made again (a fresh connection is never retried)."""
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(raw)

    server = await serve(script)
    with pytest.raises(BrokenResponse):
        await call(session, server.url())
    assert server.connections == 1


async def test_chunked_stream_broken_mid_way(serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n20\r\nonly part of it")

    server = await serve(script)
    blocks = []
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        with pytest.raises(BrokenResponse):
            async for block in resp.iter_any():
                blocks.append(block)
    assert b"".join(blocks) == b"helloonly part of it"


MALFORMED = {
    "not http": b"hello\r\n\r\n",
    "no status": b"HTTP/1.1\r\n\r\n",
    "status not a number": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "status of two digits": b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    "http/2 status line": b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"
                      b"0\r\n\r\n",
    "chunk longer than its size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"3\r\nhello\r\n0\r\n\r\n",
    "unknown content encoding": answer(b"xx", head="Content-Encoding: br\r\n"),
    "unknown transfer encoding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    "content length not a number": b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\nabcdefghij",
    "negative content length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "two content lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"
                           b"abc",
    "folded header": b"HTTP/1.1 200 OK\r\nX-Long: one\r\n  two\r\nContent-Length: 2\r\n\r\nok",
    "folded with a tab": b"HTTP/1.1 200 OK\r\nX-Long: one\r\n\ttwo\r\nContent-Length: 2\r\n\r\nok",
    "gzip body that is not gzip": answer(b"plain text", head="Content-Encoding: gzip\r\n"),
    "endless head": b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"a" * 70_000,
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_answers(serve: Serve, session: UpstreamSession, raw: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(raw)
        await peer.until_closed()

    server = await serve(script)
    with pytest.raises(MalformedResponse) as caught:
        async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
            await resp.read()
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("raw", [
    "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\nab".encode("latin-1"),
    "HTTP/1.1 2\u00b20 OK\r\nContent-Length: 2\r\n\r\nab".encode("latin-1"),
], ids=["superscript content length", "superscript in status"])
async def test_non_ascii_digits_are_malformed(
        serve: Serve, session: UpstreamSession, raw: bytes) -> None:
    """Latin-1 has digits str.isdigit() accepts and int() refuses ("\u00b2"): such an answer
    is not HTTP, and must fail as MalformedResponse like any other, not as int()'s error."""
    server = await serve(replying(lambda _: raw))
    with pytest.raises(MalformedResponse):
        await call(session, server.url())


async def test_a_broken_header_line_fails_when_headers_are_read(
        serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(
        lambda _: b"HTTP/1.1 400 Bad\r\nno colon here\r\nContent-Length: 2\r\n\r\nno"))
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert resp.status == 400
        with pytest.raises(MalformedResponse):
            _ = resp.headers


async def test_a_malformed_answer_does_not_poison_the_pool(
        serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        if peer.index == 1:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
            await peer.until_closed()
        else:
            await peer.send(answer(b"good"))
            await peer.until_closed()

    server = await serve(script)
    with pytest.raises(MalformedResponse):
        await call(session, server.url())
    assert await call(session, server.url()) == b"good"
    assert server.connections == 2


# ---------------------------------------------------------------------- content encodings


TEXT = b'{"choices": [{"message": {"content": "' + b"hello " * 2000 + b'"}}]}'


async def test_gzip_body_sent_uninvited_is_decoded(serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(
        lambda _: answer(gzip.compress(TEXT), head="Content-Encoding: gzip\r\n")))
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert await resp.read() == TEXT
    assert await call(session, server.url()) == TEXT  # and the connection was reusable
    assert server.connections == 1


async def test_gzip_chunked_stream_is_decoded_piece_by_piece(
        serve: Serve, session: UpstreamSession) -> None:
    packed = gzip.compress(TEXT)
    pieces = [packed[i:i + 100] for i in range(0, len(packed), 100)]
    server = await serve(replying(
        lambda _: chunked(*pieces, head="Content-Encoding: GZIP\r\n")))
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert b"".join([block async for block in resp.iter_any()]) == TEXT


async def test_a_truncated_gzip_body_is_not_taken_for_the_whole(
        serve: Serve, session: UpstreamSession) -> None:
    """The framing is complete (Content-Length matches) but the gzip stream stops short: what
    was decoded is only part of the answer, which must not pass as the whole of it."""
    cut = gzip.compress(TEXT)[:-12]  # without the gzip trailer (CRC and size)...
    cut = cut[:len(cut) // 2]  # ...and without half of the compressed data
    server = await serve(replying(lambda _: answer(cut, head="Content-Encoding: gzip\r\n")))
    with pytest.raises(MalformedResponse):
        await call(session, server.url())


async def test_deflate_body_is_decoded(serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(
        lambda _: answer(zlib.compress(TEXT), head="Content-Encoding: deflate\r\n")))
    assert await call(session, server.url()) == TEXT


# ---------------------------------------------------------------------- the request


async def test_the_request_on_the_wire(serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(numbered))
    body = '{"model": "m", "messages": [{"role": "user", "content": "héllo"}]}'.encode()
    headers = {"Authorization": "Bearer sk-secret", "Content-Type": "application/json",
               "OpenAI-Organization": "org-1"}
    await call(session, server.url("/v1/chat/completions?api-version=2024-02-01"),
               body=body, headers=headers)
    (request,) = server.requests
    assert request.line == "POST /v1/chat/completions?api-version=2024-02-01 HTTP/1.1"
    assert request.header("host") == [f"127.0.0.1:{server.port}"]
    assert request.header("content-length") == [str(len(body))]
    assert request.header("accept-encoding") == ["identity"]
    assert request.header("authorization") == ["Bearer sk-secret"]
    assert request.header("content-type") == ["application/json"]
    assert request.header("openai-organization") == ["org-1"]
    assert request.body == body


async def test_a_url_without_a_path_posts_to_the_root(
        serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(numbered))
    await call(session, f"http://127.0.0.1:{server.port}")
    assert server.requests[0].line == "POST / HTTP/1.1"


async def test_a_big_body_arrives_whole(session: UpstreamSession) -> None:
    """3 MB, as a request with images in it is: written past what a socket takes at once."""
    body = os.urandom(3 * 1024 * 1024)

    async def handler(request: web.Request) -> web.Response:
        got = await request.read()
        return web.Response(text=f"{len(got)} {hashlib.sha256(got).hexdigest()}")

    async with aiohttp_upstream(handler, client_max_size=8 * 1024 * 1024) as url:
        got = await call(session, url, body=body,
                         headers={"Content-Type": "application/octet-stream"})
    assert got == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


@pytest.mark.parametrize("headers", [
    {"X-Evil": "a\r\nX-Injected: 1"},
    {"X-Evil": "a\nX-Injected: 1"},
    {"X-Evil": "a\rX-Injected: 1"},
    {"X-Evil\r\nX-Injected": "1"},
], ids=["crlf in value", "lf in value", "cr in value", "crlf in name"])
async def test_header_injection_is_refused_and_nothing_is_sent(
        serve: Serve, session: UpstreamSession, headers: dict[str, str]) -> None:
    server = await serve(replying(numbered))
    assert await call(session, server.url(), body=b'{"n": 1}') == b"reply 1"
    with pytest.raises(ValueError, match="line break"):
        await call(session, server.url(), body=b'{"n": 2}', headers={**JSON, **headers})
    # Had anything gone out on the pooled connection, the server would have read it first.
    assert await call(session, server.url(), body=b'{"n": 3}') == b"reply 1"
    assert [r.body for r in server.requests] == [b'{"n": 1}', b'{"n": 3}']
    assert not any(r.header("x-injected") for r in server.requests)


async def test_a_url_that_is_not_http_is_refused(session: UpstreamSession) -> None:
    with pytest.raises(ValueError, match="not an http"):
        await call(session, "ftp://127.0.0.1/v1")


# ---------------------------------------------------------------------- time limits


async def test_total_timeout_when_the_server_never_answers(
        serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.until_closed()

    server = await serve(script)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await call(session, server.url(), timeout=Timeouts(total=0.3))
    assert 0.25 <= loop.time() - started < 1.0


async def test_total_timeout_covers_the_body(serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await peer.until_closed()

    server = await serve(script)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with session.post(server.url(), data=b"{}", headers=JSON,
                            timeout=Timeouts(total=0.3)) as resp:
        with pytest.raises(TimeoutError):
            await resp.read()
    assert loop.time() - started < 1.0


async def test_read_timeout_on_a_stalled_stream(serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"c\r\ndata: first\n\r\n")
        await peer.until_closed()

    server = await serve(script)
    blocks = []
    loop = asyncio.get_running_loop()
    async with session.post(server.url(), data=b"{}", headers=JSON,
                            timeout=Timeouts(read=0.3)) as resp:
        started = loop.time()
        with pytest.raises(TimeoutError):
            async for block in resp.iter_any():
                blocks.append(block)
        assert loop.time() - started < 1.0
    assert blocks == [b"data: first\n"]


async def test_read_timeout_waiting_for_the_head(serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.until_closed()

    server = await serve(script)
    with pytest.raises(TimeoutError):
        await call(session, server.url(), timeout=Timeouts(read=0.3))


async def test_read_timeout_is_per_wait_not_for_the_whole_stream(
        serve: Serve, session: UpstreamSession) -> None:
    """A chunk every 0.1 s for 0.8 s: each wait is well within 0.3 s, the stream is not."""
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n in range(8):
            await asyncio.sleep(0.1)
            await peer.send(b"%x\r\n%s\r\n" % (len(b"data: %d\n" % n), b"data: %d\n" % n))
        await peer.send(b"0\r\n\r\n")
        await peer.until_closed()

    server = await serve(script)
    async with session.post(server.url(), data=b"{}", headers=JSON,
                            timeout=Timeouts(connect=5, read=0.3)) as resp:
        text = b"".join([block async for block in resp.iter_any()])
    assert text == b"".join(b"data: %d\n" % n for n in range(8))


async def test_a_timed_out_call_leaves_the_session_usable(serve: Serve) -> None:
    async def script(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        if request.body == b"stall":
            await peer.until_closed()
        else:  # a new connection: the stalled one was given up
            await peer.send(answer(b"answer " + request.body))
            await peer.until_closed()

    server = await serve(script)
    session = UpstreamSession(limit=1)
    try:
        with pytest.raises(TimeoutError):
            await call(session, server.url(), body=b"stall", timeout=Timeouts(total=0.3))
        assert await call(session, server.url(), body=b"next") == b"answer next"
    finally:
        await session.close()
    assert server.connections == 2


# ---------------------------------------------------------------------- the connection limit


async def test_limit_one_makes_the_second_call_wait(serve: Serve) -> None:
    first_in, release, second_in = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == b"1":
                first_in.set()
                await release.wait()
            else:
                second_in.set()
            await peer.send(answer(b"answer " + request.body))

    server = await serve(script)
    session = UpstreamSession(limit=1)
    try:
        first = asyncio.create_task(call(session, server.url(), body=b"1"))
        await first_in.wait()
        second = asyncio.create_task(call(session, server.url(), body=b"2"))
        # Without the limit the second call would open a connection of its own and be
        # answered at once; with it, it waits (bounded: nothing is due meanwhile).
        done, _ = await asyncio.wait({second}, timeout=0.3)
        assert not done
        assert not second_in.is_set()
        assert server.connections == 1
        release.set()
        assert await first == b"answer 1"
        assert await second == b"answer 2"
    finally:
        await session.close()
    assert server.max_open == 1
    assert [r.body for r in server.requests] == [b"1", b"2"]


async def test_limit_one_with_answers_that_close_their_connection(serve: Serve) -> None:
    async def script(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        await peer.send(answer(b"answer " + request.body, head="Connection: close\r\n"))
        # and the server closes its side

    server = await serve(script)
    session = UpstreamSession(limit=1)
    try:
        results = await asyncio.gather(*(call(session, server.url(), body=b"%d" % n)
                                         for n in range(4)))
    finally:
        await session.close()
    assert results == [b"answer %d" % n for n in range(4)]
    assert server.connections == 4
    assert server.max_open == 1


async def test_waiting_for_a_free_connection_counts_against_the_total_timeout(serve: Serve) -> None:
    first_in, release = asyncio.Event(), asyncio.Event()

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == b"1":
                first_in.set()
                await release.wait()
            await peer.send(answer(b"answer " + request.body))

    server = await serve(script)
    session = UpstreamSession(limit=1)
    try:
        first = asyncio.create_task(call(session, server.url(), body=b"1"))
        await first_in.wait()
        with pytest.raises(TimeoutError):
            await call(session, server.url(), body=b"2", timeout=Timeouts(total=0.3))
        release.set()
        assert await first == b"answer 1"
        # The slot the timed-out call waited for is not lost.
        assert await call(session, server.url(), body=b"3") == b"answer 3"
    finally:
        await session.close()
    assert [r.body for r in server.requests] == [b"1", b"3"]


async def test_failed_calls_give_their_slot_back(serve: Serve) -> None:
    async def script(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        if request.body == b"broken":
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
        elif request.body == b"malformed":
            await peer.send(b"nonsense\r\n\r\n")
            await peer.until_closed()
        elif request.body == b"dropped":
            pass
        else:
            await peer.send(answer(b"fine"))
            await peer.until_closed()

    server = await serve(script)
    session = UpstreamSession(limit=1)
    try:
        for body, error in [(b"broken", BrokenResponse), (b"malformed", MalformedResponse),
                            (b"dropped", ConnectionError)]:
            with pytest.raises(error):
                await call(session, server.url(), body=body)
        assert await asyncio.wait_for(call(session, server.url(), body=b"ok"), 2) == b"fine"
    finally:
        await session.close()


# ---------------------------------------------------------------------- informational answers


@pytest.mark.parametrize("informational", [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
], ids=["100", "103 with headers", "two of them"])
async def test_informational_answers_are_skipped(
        serve: Serve, session: UpstreamSession, informational: bytes) -> None:
    server = await serve(replying(
        lambda _: informational + answer(b"real", head="X-Real: yes\r\n")))
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert resp.status == 200
        assert resp.headers.get("x-real") == "yes"
        assert "link" not in resp.headers
        assert await resp.read() == b"real"
    assert await call(session, server.url()) == b"real"
    assert server.connections == 1


async def test_100_continue_in_a_write_of_its_own(serve: Serve, session: UpstreamSession) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await peer.send(answer(b"real"))
        await peer.until_closed()

    server = await serve(script)
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert (resp.status, await resp.read()) == (200, b"real")


# ---------------------------------------------------------------------- closing the session


async def test_close_closes_idle_connections_and_refuses_new_calls(serve: Serve) -> None:
    closed_by_client = asyncio.Event()

    async def script(peer: Peer) -> None:
        await replying(numbered)(peer)
        closed_by_client.set()

    server = await serve(script)
    session = UpstreamSession()
    assert await call(session, server.url()) == b"reply 1"
    await session.close()
    await asyncio.wait_for(closed_by_client.wait(), 5)
    with pytest.raises(ConnectionError):
        await call(session, server.url())
    assert server.connections == 1
    assert len(server.requests) == 1


async def test_a_call_in_progress_at_close_finishes_then_its_connection_closes(
        serve: Serve) -> None:
    first_in, release, closed_by_client = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        first_in.set()
        await release.wait()
        await peer.send(answer(b"late"))
        assert await peer.request() is None
        closed_by_client.set()

    server = await serve(script)
    session = UpstreamSession()
    running = asyncio.create_task(call(session, server.url()))
    await first_in.wait()
    await session.close()
    release.set()
    assert await running == b"late"
    await asyncio.wait_for(closed_by_client.wait(), 5)


async def test_a_call_waiting_for_a_slot_at_close_fails(serve: Serve) -> None:
    first_in, release = asyncio.Event(), asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        first_in.set()
        await release.wait()
        await peer.send(answer(b"late"))
        await peer.until_closed()

    server = await serve(script)
    session = UpstreamSession(limit=1)
    first = asyncio.create_task(call(session, server.url()))
    await first_in.wait()
    waiting = asyncio.create_task(call(session, server.url()))
    done, _ = await asyncio.wait({waiting}, timeout=0.1)
    assert not done
    await session.close()
    with pytest.raises(ConnectionError):
        await waiting
    release.set()
    assert await first == b"late"
    assert server.connections == 1


# ---------------------------------------------------------------------- answers without a body


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
async def test_answer_without_body_and_the_connection_is_reused(
        serve: Serve, session: UpstreamSession, status: str) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        # A Content-Length on a 204/304 describes what the body would be, not a body.
        await peer.send(f"HTTP/1.1 {status}\r\nContent-Length: 7\r\n\r\n".encode())
        while (request := await peer.request()) is not None:
            await peer.send(answer(b"after " + request.body))

    server = await serve(script)
    async with session.post(server.url(), data=b"{}", headers=JSON, timeout=SAFE) as resp:
        assert resp.status == int(status[:3])
        assert await resp.read() == b""
    assert await call(session, server.url(), body=b"2") == b"after 2"
    assert server.connections == 1


async def test_empty_content_length_body_and_the_connection_is_reused(
        serve: Serve, session: UpstreamSession) -> None:
    server = await serve(replying(lambda r: answer(b"" if r.body == b"1" else b"second")))
    assert await call(session, server.url(), body=b"1") == b""
    assert await call(session, server.url(), body=b"2") == b"second"
    assert server.connections == 1
