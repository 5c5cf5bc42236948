"""A van's cellular link in the full stack: a TCP relay between its bridge and the broker
that the simulator can cut and restore.

While cut, every open connection is reset (the broker notices at once and publishes the
van's last will, CONNECTION_BROKEN) and new connections are refused; the bridge keeps
retrying on its own schedule and gets through once the link is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

log = logging.getLogger(__name__)

CHUNK = 65536


class CuttableLink:
    """``127.0.0.1:<port>`` → ``target_host:target_port``, with :meth:`cut` and :meth:`restore`."""

    def __init__(self, target_host: str, target_port: int, name: str = "") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.name = name
        self.cut_now = False
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "the link is not started"
        sock: socket.socket = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def cut(self) -> None:
        """Drop the link: reset what is open, refuse what comes."""
        self.cut_now = True
        self.cuts += 1
        self._reset_all()
        log.info("link %s cut", self.name)

    def restore(self) -> None:
        self.cut_now = False
        log.info("link %s restored", self.name)

    def _reset_all(self) -> None:
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_now:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError as exc:
            log.warning("link %s: broker unreachable: %s", self.name, exc)
            _reset(writer)
            return
        self._open.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        for task in pumps:
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            self._open.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly (RST), as a dropped radio link looks to the far end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
