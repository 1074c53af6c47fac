"""A minimal SOCKS5 proxy (RFC 1928: no authentication, CONNECT only) on 127.0.0.1.

Enough to prove that an account's traffic really goes through its configured proxy: it records
every destination it was asked to reach, then relays bytes both ways. With ``refuse=True`` it
answers every CONNECT with "connection refused" (reply 5), as a proxy that cannot reach the
destination does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


class FakeSocks5:
    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.destinations: list[tuple[str, int]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"socks5://127.0.0.1:{port}"

    async def __aenter__(self) -> FakeSocks5:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handshake_and_relay(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handshake_and_relay(self, reader: asyncio.StreamReader,
                                   writer: asyncio.StreamWriter) -> None:
        _version, n_methods = await reader.readexactly(2)
        await reader.readexactly(n_methods)
        writer.write(b"\x05\x00")  # version 5, no authentication
        _ver, _cmd, _rsv, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif atyp == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        self.destinations.append((host, port))
        if self.refuse:
            writer.write(b"\x05\x05\x00\x01" + socket.inet_aton("0.0.0.0") + struct.pack("!H", 0))
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", 0))
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
