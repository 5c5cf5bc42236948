"""Byte transports under the link: any pyserial URL, a pseudo-terminal we own, a listening socket.

Every transport is an open non-blocking file descriptor watched by the asyncio loop
(``add_reader``), except pyserial URLs without one (``loop://``, ``spy://``), which get a
reader thread. Writes never block the loop: what the kernel does not take is buffered, and
urgent bytes (emergency stop) are placed ahead of everything not yet started on the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import tty
from collections import deque
from collections.abc import Callable
from typing import Protocol

import serial

from firmware_bridge.errors import PortError

log = logging.getLogger(__name__)

OnData = Callable[[bytes], None]
OnLost = Callable[[str], None]
READ_CHUNK = 65536


class Transport(Protocol):
    name: str

    def attach(self, loop: asyncio.AbstractEventLoop, on_data: OnData, on_lost: OnLost) -> None:
        """Start delivering received bytes to ``on_data`` (in the loop's thread)."""
        ...

    def write(self, data: bytes, *, urgent: bool = False) -> None: ...

    @property
    def write_backlog(self) -> int:
        """Bytes accepted by :meth:`write` and not yet handed to the kernel."""
        ...

    def close(self) -> None: ...


class FdTransport:
    """A non-blocking file descriptor (serial device, pty, socket) driven by the event loop."""

    def __init__(self, fd: int, name: str, closer: Callable[[], None]) -> None:
        self.name = name
        self._fd = fd
        self._closer = closer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_lost: OnLost | None = None
        self._on_data: OnData | None = None
        self._chunks: deque[memoryview] = deque()
        self._started = False  # the head chunk is partly written
        self._backlog = 0
        self._writing = False
        self._closed = False
        os.set_blocking(fd, False)

    def attach(self, loop: asyncio.AbstractEventLoop, on_data: OnData, on_lost: OnLost) -> None:
        self._loop = loop
        self._on_data = on_data
        self._on_lost = on_lost
        loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"{self.name}: read failed: {exc}")
            return
        if not data:
            self._lost(f"{self.name}: closed by the other end")
            return
        assert self._on_data is not None
        self._on_data(data)

    @property
    def write_backlog(self) -> int:
        return self._backlog

    def write(self, data: bytes, *, urgent: bool = False) -> None:
        if self._closed or not data:
            return
        view = memoryview(data)
        if not self._chunks:
            try:
                n = os.write(self._fd, view)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._lost(f"{self.name}: write failed: {exc}")
                return
            if n == len(view):
                return
            self._started = n > 0
            view = view[n:]
            self._chunks.append(view)
        elif urgent:
            self._chunks.insert(1 if self._started else 0, view)
        else:
            self._chunks.append(view)
        self._backlog += len(view)
        if not self._writing and self._loop is not None:
            self._writing = True
            self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        while self._chunks:
            head = self._chunks[0]
            try:
                n = os.write(self._fd, head)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(f"{self.name}: write failed: {exc}")
                return
            self._backlog -= n
            if n < len(head):
                self._chunks[0] = head[n:]
                self._started = True
                return
            self._chunks.popleft()
            self._started = False
        self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing and self._loop is not None:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _lost(self, reason: str) -> None:
        if self._closed:
            return
        on_lost = self._on_lost
        self.close()
        if on_lost is not None:
            on_lost(reason)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._stop_writing()
        self._chunks.clear()
        self._backlog = 0
        with contextlib.suppress(OSError):
            self._closer()


class ThreadTransport:
    """A pyserial port without a file descriptor: a reader thread feeds the loop."""

    def __init__(self, port: serial.SerialBase, name: str) -> None:
        self.name = name
        self._port = port
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, on_data: OnData, on_lost: OnLost) -> None:
        self._loop = loop

        def run() -> None:
            while not self._stop.is_set():
                try:
                    data = self._port.read(max(1, self._port.in_waiting))
                except (serial.SerialException, OSError) as exc:
                    if not self._stop.is_set():
                        loop.call_soon_threadsafe(on_lost, f"{self.name}: read failed: {exc}")
                    return
                if data:
                    loop.call_soon_threadsafe(on_data, bytes(data))

        self._thread = threading.Thread(target=run, name=f"serial-reader {self.name}", daemon=True)
        self._thread.start()

    @property
    def write_backlog(self) -> int:
        return 0

    def write(self, data: bytes, *, urgent: bool = False) -> None:
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            log.warning("%s: write failed: %s", self.name, exc)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)


def open_serial_url(url: str) -> Transport:
    """Open any pyserial URL or device path (``/dev/ttyUSB0``, ``/dev/pts/3``, ``socket://h:p``,
    ``loop://``, ``rfc2217://…``) as a transport. Blocking: call it in an executor."""
    try:
        port = serial.serial_for_url(url, baudrate=115200, timeout=0.1, write_timeout=1.0)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise PortError(f"cannot open serial port {url!r}: {exc}") from exc
    fd = getattr(port, "fd", None)
    if isinstance(fd, int):
        return FdTransport(fd, url, port.close)
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return FdTransport(sock.fileno(), url, port.close)
    return ThreadTransport(port, url)


class PtyPair:
    """A pseudo-terminal we own: the VCU keeps the master; a bridge opens :attr:`slave_path`.

    Our own slave descriptor stays open so that the master never sees a hang-up when a bridge
    closes and reopens the slave.
    """

    def __init__(self) -> None:
        self.master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        self.slave_path = os.ttyname(self._slave_fd)

    def transport(self) -> Transport:
        return FdTransport(os.dup(self.master_fd), f"pty {self.slave_path}", lambda: None)

    def close(self) -> None:
        for fd in (self.master_fd, self._slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Listener:
    """The serving end of ``socket://host:port``: accepts one peer at a time."""

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise PortError(f"cannot listen on {host}:{port}: {exc}") from exc
        self._sock.listen(1)
        self._sock.setblocking(False)
        self.host, self.port = self._sock.getsockname()[:2]

    async def accept(self) -> Transport:
        loop = asyncio.get_running_loop()
        conn, addr = await loop.sock_accept(self._sock)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("serial peer connected from %s:%s", *addr[:2])
        return FdTransport(conn.fileno(), f"socket peer {addr[0]}:{addr[1]}", conn.close)

    def close(self) -> None:
        self._sock.close()
