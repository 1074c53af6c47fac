"""The HTTP/1.1 client of upstream calls: keep-alive connections per account, nothing else.

Why not aiohttp's client, which the rest of the gateway uses (OAuth, the local model's
health checks): a gateway's whole job is this one call, and aiohttp's ``ClientSession`` is
general-purpose. It handles cookies, redirects, tracing, auth, decompression, multipart and
per-request settings, and it writes the body from a task of its own. That costs about
370,000 instructions a call, measured under callgrind against the benchmark's stub
(``bench/README.md``, issue 14). This client costs about 55,000 a call, and the aiohttp
forwarder we measure against costs 600,000 a request in all.

It does what an OpenAI-compatible upstream needs and no more:
- a POST with a body we already encoded;
- bodies framed by Content-Length, chunked or ended by the connection's close;
- gzip or deflate only if a server sends them uninvited: we ask for ``identity``;
- TLS with the system's certificate authorities;
- SOCKS4/5 or HTTP CONNECT proxies, through ``python_socks`` as aiohttp-socks does.

Failures use Python's own types, which ``core/upstream.py`` turns into failure kinds:
- ``OSError`` (``ConnectionError``, ``ssl.SSLError``, resolution failures) before an answer;
- ``TimeoutError`` when a deadline passes;
- ``BrokenResponse`` when the connection breaks once an answer has begun;
- ``MalformedResponse`` (a ``ValueError``) when what came back is not HTTP.

A connection goes back to its pool only once its answer was read to the end. One that
breaks before sending a byte back, after sitting idle in the pool (the server closed it
meanwhile), is replaced once by a new connection, as browsers do: the request never
reached that server."""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from python_socks.async_.asyncio import Proxy

__all__ = [
    "BrokenResponse", "MalformedResponse", "ProxyFailure", "Response", "Timeouts",
    "UpstreamSession",
]

MAX_HEAD_BYTES = 64 * 1024
"""A status line and headers larger than this are no upstream's answer."""
KEEPALIVE_S = 15.0
"""An idle connection is not reused after this long (aiohttp's default): servers close theirs
after 5 to 75 seconds, and a connection they closed can only be found out by using it."""
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CHUNK_SIZES = {f"{n:x}".encode(): n for n in range(1, 1 << 12)}
"""The size lines of chunks up to 4 KiB (a streamed event's), read by one lookup. Others, and
the last chunk (0), take the general path; so do upper-case hex digits, which servers seldom
write (aiohttp, h11, Go, Node and nginx write lower case): the table for both cost every start
6.5 ms and 0.77 MB, 110 ns a chunk saved."""
_NO_BODY = frozenset({204, 304})


class BrokenResponse(ConnectionError):
    """The connection ended in the middle of an answer."""


class ProxyFailure(ConnectionError):
    """The proxy refused, could not be reached, or did not answer in time (python_socks's
    errors, which only a proxied account imports)."""


class MalformedResponse(ValueError):
    """What the server sent is not an HTTP/1.x answer."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``total``: the whole call, answer read included; ``connect``: opening a connection
    (through the proxy too); ``read``: the longest wait for the next bytes (a stream's)."""

    total: float | None = None
    connect: float | None = None
    read: float | None = None


@dataclass(frozen=True, slots=True)
class _Address:
    secure: bool
    host: str
    port: int
    request_line: str
    """The request line, Host and the headers every call sends."""


@functools.lru_cache(maxsize=256)
def _address(url: str) -> _Address:
    """A URL taken apart once: an account's few addresses are asked for on every call."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == (443 if secure else 80) else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Address(secure, host, port,
                    f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\n"
                    "Accept-Encoding: identity\r\nUser-Agent: llm-gateway\r\n")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: what arrived, and whoever waits for more."""

    __slots__ = ("buffer", "deadline", "ended", "error", "expired", "idle_since", "last_read",
                 "loop", "read_timeout", "received", "transport", "waiter")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.ended = False  # the server closed its side, or the connection was lost
        self.error: BaseException | None = None
        self.received = False  # any byte at all, since it was taken for this request
        self.idle_since = 0.0
        self.deadline: float | None = None
        self.read_timeout: float | None = None
        self.last_read = 0.0
        self.expired = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.received = True
        if self.read_timeout is not None:
            self.last_read = self.loop.time()
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ time limits

    def arm(self, deadline: float | None, read_timeout: float | None) -> None:
        """The limits of the call this connection now carries: ``deadline`` for all of it
        (the loop's clock), ``read_timeout`` for each wait for more bytes. Its session's
        timer holds them (``_Deadlines``)."""
        self.deadline, self.read_timeout, self.expired = deadline, read_timeout, False
        if read_timeout is not None:
            self.last_read = self.loop.time()

    def due(self) -> float | None:
        if self.read_timeout is None:
            return self.deadline
        due = self.last_read + self.read_timeout
        return due if self.deadline is None else min(due, self.deadline)

    def expire(self) -> None:
        self.expired = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError("the upstream did not answer in time"))

    async def more(self) -> None:
        """Until more bytes arrive or the connection ends; ``TimeoutError`` once the call's
        time is up."""
        if self.expired:
            raise TimeoutError("the upstream did not answer in time")
        if self.ended:
            return
        waiter = self.waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def usable(self, now: float) -> bool:
        return (not self.ended and not self.buffer and self.transport is not None
                and not self.transport.is_closing() and now - self.idle_since < KEEPALIVE_S)

    def close(self) -> None:
        self.ended = True
        if self.transport is not None:
            self.transport.close()


class _Deadlines:
    """The time limits of a session's calls in progress, kept by one timer that wakes at the
    earliest of them and is moved on only when it wakes: a call costs an entry in a set, not
    a timer of its own (which cost about a tenth of a call)."""

    __slots__ = ("_at", "_calls", "_timer")

    def __init__(self) -> None:
        self._calls: set[_Connection] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0

    def watch(self, conn: _Connection) -> None:
        self._calls.add(conn)
        due = conn.due()
        if due is not None and (self._timer is None or due < self._at):
            self._schedule(conn.loop, due)

    def forget(self, conn: _Connection) -> None:
        self._calls.discard(conn)

    def _schedule(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._at = loop.call_at(at, self._wake, loop), at

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now, earliest = loop.time(), None
        for conn in list(self._calls):
            due = conn.due()
            if due is None:
                continue
            if due <= now:
                self._calls.discard(conn)
                conn.expire()
            elif earliest is None or due < earliest:
                earliest = due
        if earliest is not None:
            self._schedule(loop, earliest)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._calls.clear()


class Head:
    """An answer's status line and headers. The framing headers are looked up in the text
    as it came; all of them are taken apart only when asked for (error answers)."""

    __slots__ = ("_headers", "_lower", "_text", "reason", "status", "version")

    def __init__(self, text: str) -> None:
        status_line, _, rest = text.partition("\r\n")
        version, _, status_reason = status_line.partition(" ")
        code, _, reason = status_reason.partition(" ")
        digits = len(code) == 3 and code.isascii() and code.isdigit()
        if not version.startswith("HTTP/1.") or not digits:
            raise MalformedResponse("the upstream's answer is not HTTP")
        self.version = version
        self.status = int(code)
        self.reason = reason
        self._text = "\r\n" + rest if rest else ""  # every header line after a line break
        if "\r\n " in self._text or "\r\n\t" in self._text:
            raise MalformedResponse("the upstream folded a header over lines")
        self._lower = self._text.lower()
        self._headers: dict[str, str] | None = None

    def value(self, key: str) -> str | None:
        """The header ``key`` ("\\r\\nname:", the name in lower case), repeated ones joined with
        ", "; None without."""
        start = self._lower.find(key)
        if start < 0:
            return None
        values = []
        while start >= 0:
            begin = start + len(key)
            end = self._lower.find("\r\n", begin)
            end = len(self._text) if end < 0 else end
            values.append(self._text[begin:end].strip(" \t"))
            start = self._lower.find(key, end)
        return values[0] if len(values) == 1 else ", ".join(values)

    @property
    def headers(self) -> dict[str, str]:
        """Every header, its name in lower case; repeated ones joined with ", "."""
        if self._headers is None:
            headers: dict[str, str] = {}
            for line in self._text.split("\r\n")[1:]:
                name, colon, value = line.partition(":")
                if not colon or not name or name != name.strip(" \t"):
                    raise MalformedResponse("the upstream sent a broken header line")
                name, value = name.lower(), value.strip(" \t")
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            self._headers = headers
        return self._headers


class Response:
    """An answer's status and headers, and its body read as it comes (``read``,
    ``iter_any``). Used inside ``async with session.post(...)``: leaving it hands the
    connection back to its pool when the body was read to the end, and closes it otherwise."""

    __slots__ = ("_chunk_state", "_chunked", "_conn", "_done", "_head", "_inflate", "_key",
                 "_released", "_remaining", "_reusable", "_session", "_until_close",
                 "content_length", "reason", "status")

    def __init__(self, session: UpstreamSession, key: tuple[str, int, bool], conn: _Connection,
                 head: Head) -> None:
        self.status = head.status
        self.reason = head.reason
        self._head = head
        self._session = session
        self._key = key
        self._conn = conn
        self._remaining = 0  # bytes of the body (Content-Length) or of the current chunk
        self._chunked = False
        self._until_close = False
        self._chunk_state = 0  # 0: size line next; 1: in a chunk's data; 2: its CRLF; 3: trailers
        self._done = False
        self._released = False
        connection = (head.value("\r\nconnection:") or "").lower()
        self._reusable = ("close" not in connection if head.version == "HTTP/1.1"
                          else "keep-alive" in connection)
        encoding = (head.value("\r\ncontent-encoding:") or "identity").lower()
        if encoding not in ("identity", "gzip", "deflate"):
            raise MalformedResponse(f"the upstream sent an unknown content encoding: {encoding}")
        self._inflate = (zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip"
                         else zlib.decompressobj() if encoding == "deflate" else None)
        self.content_length: int | None = None
        transfer = head.value("\r\ntransfer-encoding:")
        length = head.value("\r\ncontent-length:")
        if self.status in _NO_BODY:
            self._done = True
        elif transfer is not None:
            if transfer.rsplit(",", 1)[-1].strip().lower() != "chunked":
                raise MalformedResponse(f"unsupported transfer encoding: {transfer}")
            self._chunked = True
        elif length is not None:
            if not (length.isascii() and length.isdigit()):
                raise MalformedResponse(f"a broken Content-Length: {length[:40]!r}")
            self.content_length = self._remaining = int(length)
            self._done = self._remaining == 0
        else:
            self._until_close = True
            self._reusable = False

    @property
    def headers(self) -> dict[str, str]:
        """Header names in lower case; repeated headers joined with ", "."""
        return self._head.headers

    # ------------------------------------------------------------------ the body

    async def read(self) -> bytes:
        """The rest of the body."""
        if self._inflate is None and not self._chunked:
            whole = self._take()  # nearly always there already, with the headers
            if self._done:
                return whole or b""
            if whole:
                blocks = [whole]
                while (block := await self.next_block()) is not None:
                    blocks.append(block)
                return b"".join(blocks)
        first = await self.next_block()
        if first is None:
            return b""
        blocks = [first]
        while (block := await self.next_block()) is not None:
            blocks.append(block)
        return first if len(blocks) == 1 else b"".join(blocks)

    def iter_any(self) -> AsyncIterator[bytes]:
        """The body in blocks, each as much as had arrived."""
        return _Blocks(self)

    async def next_block(self) -> bytes | None:
        """The body's next block, as much as had arrived (it may be empty); None at its end."""
        conn = self._conn
        while not self._done:
            block = self._take()
            if block is not None:
                return self._inflated(block)
            if self._done:
                break
            if conn.ended:
                if self._until_close:
                    self._done = True
                    break
                raise BrokenResponse("the upstream broke the connection mid-answer")
            await conn.more()
        if self._inflate is not None:
            inflate, self._inflate = self._inflate, None
            tail = inflate.flush()
            if not inflate.eof:  # a compressed body cut short is not the whole answer
                raise MalformedResponse("the upstream's compressed body ends before its end")
            if tail:
                return tail
        return None

    def _inflated(self, block: bytes) -> bytes:
        if self._inflate is None:
            return block
        try:
            return self._inflate.decompress(block)
        except zlib.error:
            raise MalformedResponse("the upstream's compressed body is broken") from None

    def _take(self) -> bytes | None:
        """What the buffer holds of the body, or None when it holds nothing yet."""
        buffer = self._conn.buffer
        if self._chunked:
            return self._take_chunks(buffer)
        if not buffer:
            return None
        if self._until_close:
            block = bytes(buffer)
            buffer.clear()
            return block
        if len(buffer) <= self._remaining:
            block = bytes(buffer)
            buffer.clear()
        else:
            block = bytes(buffer[:self._remaining])
            del buffer[:self._remaining]
        self._remaining -= len(block)
        self._done = self._remaining == 0
        return block

    def _take_chunks(self, buffer: bytearray) -> bytes | None:
        """Every chunk's data the buffer holds, as one block (chunked transfer coding). The
        buffer is copied once and read by position, then cut once: a stream's reads hold
        many small chunks, and slices of bytes are one copy each and can be looked up."""
        data = bytes(buffer)
        out: list[bytes] = []
        pos, size = 0, len(data)
        sizes = _CHUNK_SIZES
        while True:
            if self._chunk_state == 0:
                # Whole chunks in the buffer, their size line, data and CRLF (a stream's
                # reads are many small ones), each taken in one step rather than three.
                while 0 < (end := data.find(b"\r\n", pos)) - pos < 4:
                    length = sizes.get(data[pos:end])
                    if length is None:
                        break
                    stop = end + 2 + length
                    if data[stop:stop + 2] != b"\r\n":
                        break
                    out.append(data[end + 2:stop])
                    pos = stop + 2
            if self._chunk_state == 1:
                if pos == size:
                    break
                take = min(size - pos, self._remaining)
                out.append(data[pos:pos + take])
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                self._chunk_state = 2
            end = data.find(b"\r\n", pos)
            if end < 0:
                if size - pos > MAX_HEAD_BYTES:
                    raise MalformedResponse("a chunk's size line is too long")
                break
            line, pos = data[pos:end], end + 2
            if self._chunk_state == 2:
                if line:
                    raise MalformedResponse("a chunk does not end where its size said")
                self._chunk_state = 0
            elif self._chunk_state == 3:
                if not line:  # the blank line after the trailers
                    self._done = True
                    break
            else:
                digits = line.split(b";", 1)[0].strip()
                if not _HEX.fullmatch(digits):
                    raise MalformedResponse("a broken chunk size")
                self._remaining = int(digits, 16)
                self._chunk_state = 1 if self._remaining else 3
        del buffer[:pos]
        if out:
            return out[0] if len(out) == 1 else b"".join(out)
        return b"" if self._done else None

    # ------------------------------------------------------------------ the connection

    def release(self) -> None:
        """Back to the pool when the answer was read whole; closed otherwise."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        self._session._deadlines.forget(conn)
        if self._done and self._reusable and not conn.buffer and not conn.ended:
            self._session._put_back(self._key, conn)
        else:
            conn.close()
            self._session._slot_freed()


class _Blocks:
    """``Response.iter_any``: an iterator object, not an async generator. A stream's reader
    stops at its ``[DONE]``, before the body's end, and an async generator left unfinished is
    closed by a task its loop schedules for it (through the loop's self-pipe: a system call
    and a task each streamed request)."""

    __slots__ = ("_response",)

    def __init__(self, response: Response) -> None:
        self._response = response

    def __aiter__(self) -> _Blocks:
        return self

    async def __anext__(self) -> bytes:
        while (block := await self._response.next_block()) is not None:
            if block:
                return block
        raise StopAsyncIteration


class _Call:
    """``async with session.post(...) as response``."""

    __slots__ = ("_args", "_response")

    def __init__(self, args: tuple[UpstreamSession, str, bytes, Mapping[str, str], Timeouts]
                 ) -> None:
        self._args = args
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        session, url, body, headers, timeouts = self._args
        self._response = await session._request(url, body, headers, timeouts)
        return self._response

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._response is not None:
            self._response.release()


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """One for the process, made on the first TLS connection: loading the system's CA
    certificates takes OpenSSL 3 about 60 ms here, and a context serves any number of
    connections. (One a session made each account's first call wait that long.)"""
    return ssl.create_default_context()


class UpstreamSession:
    """The connections to one account's upstream (or one proxy's), at most ``limit`` open at
    once; a call past the limit waits for one to come free."""

    def __init__(self, proxy_url: str = "", *, limit: int = 100) -> None:
        # socks5h: names resolved by the proxy, which every SOCKS proxy here does (rdns).
        self.proxy_url = re.sub(r"^socks5h://", "socks5://", proxy_url)
        if self.proxy_url:
            # Imported only for a proxy: python_socks costs every start 20 ms otherwise.
            from python_socks import parse_proxy_url
            parse_proxy_url(self.proxy_url)  # a URL it cannot use fails here, at start
        self._proxy: Proxy | None = None
        self.limit = limit
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._open = 0
        self._queue: list[asyncio.Future[None]] = []
        self._deadlines = _Deadlines()
        self.closed = False

    def post(self, url: str, *, data: bytes, headers: Mapping[str, str],
             timeout: Timeouts) -> _Call:
        return _Call((self, url, data, headers, timeout))

    async def close(self) -> None:
        self.closed = True
        self._deadlines.close()
        for connections in self._idle.values():
            for conn in connections:
                conn.close()
        self._idle.clear()
        for waiter in self._queue:
            if not waiter.done():
                waiter.set_exception(ConnectionError("the gateway is shutting down"))

    async def _request(self, url: str, body: bytes, headers: Mapping[str, str],
                       timeouts: Timeouts) -> Response:
        address = _address(url)
        loop = asyncio.get_running_loop()
        deadline = None if timeouts.total is None else loop.time() + timeouts.total
        request_head = _request_head(address, len(body), headers)
        key = (address.host, address.port, address.secure)
        if self._open < self.limit and not self.closed:
            self._open += 1
        else:
            await self._take_slot(deadline)
        try:
            for attempt in range(2):
                conn = self._idle_connection(key) if attempt == 0 else None
                reused = conn is not None
                if conn is None:
                    limit = _earliest(deadline, timeouts.connect)
                    async with asyncio.timeout_at(limit):
                        conn = await self._connect(address, limit)
                if len(body) < 65536:
                    conn.transport.write(request_head + body)  # type: ignore[union-attr]
                else:
                    conn.transport.writelines((request_head, body))  # type: ignore[union-attr]
                conn.arm(deadline, timeouts.read)
                self._deadlines.watch(conn)
                try:
                    head = await _read_head(conn)
                except ConnectionError:
                    self._deadlines.forget(conn)
                    conn.close()
                    if reused and not conn.received:
                        continue  # the server had closed it while it was idle: once more
                    raise
                except BaseException:
                    self._deadlines.forget(conn)
                    conn.close()
                    raise
                try:
                    return Response(self, key, conn, head)
                except BaseException:
                    self._deadlines.forget(conn)
                    conn.close()
                    raise
            raise ConnectionResetError("the upstream closed the connection")  # not reached
        except BaseException:
            self._slot_freed()
            raise

    def _idle_connection(self, key: tuple[str, int, bool]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now):
                conn.received = False
                return conn
            conn.close()
        return None

    async def _connect(self, address: _Address, limit: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        context = _default_ssl_context() if address.secure else None
        server_hostname = address.host if address.secure else None
        if self.proxy_url:
            # Its own time limit, so that a slow proxy fails as the proxy's fault.
            if self._proxy is None:
                from python_socks.async_.asyncio import Proxy
                self._proxy = Proxy.from_url(self.proxy_url, rdns=True)
            sock = await self._connect_through_proxy(self._proxy, address, limit)
            _, conn = await loop.create_connection(_Connection, sock=sock, ssl=context,
                                                   server_hostname=server_hostname)
        else:
            _, conn = await loop.create_connection(_Connection, address.host, address.port,
                                                   ssl=context, server_hostname=server_hostname)
        return conn

    @staticmethod
    async def _connect_through_proxy(proxy: Proxy, address: _Address,
                                     limit: float | None) -> socket.socket:
        from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

        try:
            return await proxy.connect(
                address.host, address.port,
                timeout=None if limit is None else limit - asyncio.get_running_loop().time())
        except (ProxyError, ProxyConnectionError, ProxyTimeoutError) as exc:
            raise ProxyFailure(str(exc)) from exc

    async def _take_slot(self, deadline: float | None) -> None:
        if self.closed:
            raise ConnectionError("the gateway is shutting down")
        if self._open < self.limit:
            self._open += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter  # the slot is handed over: _open stays as it is
        except BaseException:
            if waiter in self._queue:
                self._queue.remove(waiter)
            elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._slot_freed()  # handed to us just as we gave up: pass it on
            raise

    def _slot_freed(self) -> None:
        while self._queue:
            waiter = self._queue.pop(0)
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the next caller
                return
        self._open -= 1

    def _put_back(self, key: tuple[str, int, bool], conn: _Connection) -> None:
        if self.closed:
            conn.close()
        else:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(key, []).append(conn)
        self._slot_freed()


def _earliest(deadline: float | None, timeout: float | None) -> float | None:
    if timeout is None:
        return deadline
    limit = asyncio.get_running_loop().time() + timeout
    return limit if deadline is None else min(limit, deadline)


def _request_head(address: _Address, length: int, headers: Mapping[str, str]) -> bytes:
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
        # A header (from the configuration) with a line break of its own would smuggle
        # another header in: refused, as aiohttp refuses it.
        raise ValueError("a header name or value contains a line break")
    return f"{address.request_line}Content-Length: {length}\r\n{lines}\r\n".encode("latin-1")


async def _read_head(conn: _Connection) -> Head:
    """The status line and headers of the answer (informational 1xx answers skipped)."""
    buffer = conn.buffer
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise MalformedResponse("the upstream's answer has no end of headers")
            if conn.ended:
                if buffer:
                    raise BrokenResponse("the upstream broke the connection mid-answer")
                raise conn.error if isinstance(conn.error, ConnectionError) else \
                    ConnectionResetError("the upstream closed the connection")
            await conn.more()
            continue
        head = Head(bytes(buffer[:end]).decode("latin-1"))
        del buffer[:end + 4]
        if not 100 <= head.status < 200:
            return head  # past 100 Continue, 103 Early Hints: the answer follows them
