"""The asyncio adapter around :class:`LinkCore`: a transport, timers, reopening, pacing.

``async with SerialLink(opener, config=..., clock=..., on_event=...) as link:`` opens the port
(retrying every ``reopen_s`` while it is missing), runs the handshake, and from then on
delivers every :mod:`link event <firmware_bridge.link.core>` to ``on_event`` synchronously in
the loop's thread — so an emergency stop is acted on within the read callback. When the port
vanishes (device unplugged, peer closed the socket, pty gone) it is reopened and a new session
starts. With ``baud`` > 0 the bytes are paced both ways at that line rate (10 bits a byte,
8N1), as a real UART would, urgent bytes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from firmware_bridge.errors import LinkError, PortError
from firmware_bridge.link.core import (
    Delivered,
    Discarded,
    LinkConfig,
    LinkCore,
    LinkEvent,
    Rejected,
)
from firmware_bridge.link.transport import Transport, open_serial_url
from firmware_bridge.wire import Message
from fleet.protocol.clock import Clock

log = logging.getLogger(__name__)

Opener = Callable[[], Awaitable[Transport]]
LineFilter = Callable[[bytes], bytes]
BITS_PER_BYTE = 10  # start + 8 data + stop
PACE_SLICE_S = 0.002  # paced writes go out in slices of this much line time


def url_opener(url: str) -> Opener:
    """An opener for any pyserial URL (run in a worker thread: opening may block)."""

    async def open_() -> Transport:
        return await asyncio.get_running_loop().run_in_executor(None, open_serial_url, url)

    return open_


class SerialLink:
    def __init__(
        self,
        opener: Opener,
        *,
        config: LinkConfig,
        clock: Clock,
        on_event: Callable[[LinkEvent], None],
        baud: int = 0,
        tx_filter: LineFilter | None = None,
        rx_filter: LineFilter | None = None,
        reopen_s: float = 0.5,
        name: str = "serial",
    ) -> None:
        self.core = LinkCore(config)
        self.name = name
        self._opener = opener
        self._clock = clock
        self._on_event = on_event
        self._baud = baud
        self._tx_filter = tx_filter
        self._rx_filter = rx_filter
        self._reopen_s = reopen_s
        self._transport: Transport | None = None
        self._lost = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._stalled_until = float("-inf")
        self.port_opened = asyncio.Event()
        # pacing
        self._pace_urgent: deque[bytes] = deque()
        self._pace_normal: deque[bytes] = deque()
        self._pace_wake = asyncio.Event()
        self._rx_pending: deque[tuple[float, bytes]] = deque()
        self._rx_free_at = 0.0
        self._rx_handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Self:
        self._tasks.append(asyncio.create_task(self._run(), name=f"{self.name} port"))
        self._tasks.append(asyncio.create_task(self._timers(), name=f"{self.name} timers"))
        if self._baud > 0:
            self._tasks.append(asyncio.create_task(self._pacer(), name=f"{self.name} pacer"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._rx_handle is not None:
            self._rx_handle.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(LinkError(f"{self.name}: link closed"))
        self._waiters.clear()

    # ---- sending ------------------------------------------------------------------------

    def send(self, message: Message) -> int:
        """Queue a sequenced message; returns its ticket. LinkError when the queue is full."""
        ticket = self.core.send(message, self._clock.monotonic())
        self._flush()
        return ticket

    async def deliver(self, message: Message) -> None:
        """Send a sequenced message and wait until the peer acknowledged it."""
        ticket = self.send(message)
        fut = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = fut
        await fut

    def send_now(self, message: Message) -> None:
        """Send an unsequenced message (telemetry) once."""
        if self._stalled():
            return
        self.core.send_now(message, self._clock.monotonic())
        self._flush()

    def emergency_stop(self, reason: int = 0) -> int:
        """EMERGENCY_STOP ahead of everything queued; repeated until acknowledged."""
        estop_id = self.core.emergency_stop(self._clock.monotonic(), reason)
        self._flush()
        return estop_id

    def discard_pending(self) -> None:
        self._dispatch(self.core.discard_pending())

    def stall(self, seconds: float) -> None:
        """Fault injection: neither read nor write for ``seconds`` (a hung controller)."""
        self._stalled_until = self._clock.monotonic() + seconds

    @property
    def up(self) -> bool:
        return self.core.up

    # ---- internals ------------------------------------------------------------------------

    def _stalled(self) -> bool:
        return self._clock.monotonic() < self._stalled_until

    def _dispatch(self, events: list[LinkEvent]) -> None:
        for event in events:
            if isinstance(event, Delivered | Rejected | Discarded):
                fut = self._waiters.pop(event.ticket, None)
                if fut is not None and not fut.done():
                    if isinstance(event, Delivered):
                        fut.set_result(None)
                    else:
                        what = "rejected" if isinstance(event, Rejected) else "discarded"
                        fut.set_exception(
                            LinkError(f"{self.name}: {event.message.TYPE.name} {what}")
                        )
            try:
                self._on_event(event)
            except Exception:
                log.exception("%s: event handler failed on %r", self.name, event)

    def _flush(self) -> None:
        self._wake.set()
        if self._stalled() or self._transport is None:
            self.core.take_output()  # a stalled or closed port loses what it would send
            return
        urgent = self.core.take_urgent_output()
        normal = self.core.take_output()
        if self._baud > 0:
            if urgent:
                self._pace_urgent.append(urgent)
            if normal:
                self._pace_normal.append(normal)
            if urgent or normal:
                self._pace_wake.set()
            return
        if urgent:
            self._write(urgent, urgent=True)
        if normal:
            self._write(normal, urgent=False)

    def _write(self, data: bytes, *, urgent: bool) -> None:
        if self._tx_filter is not None:
            data = self._tx_filter(data)
        if self._transport is not None:
            self._transport.write(data, urgent=urgent)

    def _on_data(self, data: bytes) -> None:
        if self._stalled():
            return
        if self._rx_filter is not None:
            data = self._rx_filter(data)
        if self._baud > 0:
            self._pace_rx(data)
            return
        self._dispatch(self.core.receive(data, self._clock.monotonic()))
        self._flush()

    def _pace_rx(self, data: bytes) -> None:
        now = self._clock.monotonic()
        self._rx_free_at = max(now, self._rx_free_at) + len(data) * BITS_PER_BYTE / self._baud
        self._rx_pending.append((self._rx_free_at, data))
        if self._rx_handle is None:
            self._schedule_rx()

    def _schedule_rx(self) -> None:
        due, _ = self._rx_pending[0]
        delay = self._clock.to_wall_s(due - self._clock.monotonic())
        self._rx_handle = asyncio.get_running_loop().call_later(max(0.0, delay), self._rx_due)

    def _rx_due(self) -> None:
        self._rx_handle = None
        now = self._clock.monotonic()
        while self._rx_pending and self._rx_pending[0][0] <= now:
            _, data = self._rx_pending.popleft()
            self._dispatch(self.core.receive(data, now))
        self._flush()
        if self._rx_pending:
            self._schedule_rx()

    def _on_lost(self, reason: str) -> None:
        log.warning("%s: %s", self.name, reason)
        self._transport = None
        self._dispatch(self.core.port_lost(reason))
        self._lost.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                transport = await self._opener()
            except PortError as exc:
                log.warning("%s: %s; retrying in %.1f s", self.name, exc, self._reopen_s)
                await self._clock.sleep(self._reopen_s)
                continue
            self._lost.clear()
            self._transport = transport
            transport.attach(loop, self._on_data, self._on_lost)
            self.port_opened.set()
            log.info("%s: port %s open", self.name, transport.name)
            self._dispatch(self.core.start(self._clock.monotonic()))
            self._flush()
            try:
                await self._lost.wait()
            finally:
                if self._transport is not None:
                    self._transport.close()
                    self._transport = None
            self.port_opened.clear()
            await self._clock.sleep(self._reopen_s)

    async def _timers(self) -> None:
        while True:
            delay = self._clock.to_wall_s(self.core.next_deadline() - self._clock.monotonic())
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            if self._stalled():
                await self._clock.sleep(self._stalled_until - self._clock.monotonic())
                continue
            self._dispatch(self.core.poll(self._clock.monotonic()))
            self._flush()
            # poll() always moves the deadline forward; yield so readers get their turn
            await asyncio.sleep(0)

    async def _pacer(self) -> None:
        """Hand bytes to the port no faster than the line carries them, keeping at most
        PACE_SLICE_S (wall) of bytes ahead of the line, so urgent bytes wait at most that."""
        rate = self._baud / BITS_PER_BYTE  # bytes per clock second
        ahead_s = PACE_SLICE_S * self._clock.factor  # in clock seconds
        line_free_at = self._clock.monotonic()
        current = b""
        while True:
            if not current:
                if self._pace_urgent:
                    current = self._pace_urgent.popleft()
                elif self._pace_normal:
                    current = self._pace_normal.popleft()
                else:
                    self._pace_wake.clear()
                    await self._pace_wake.wait()
                    continue
            now = self._clock.monotonic()
            line_free_at = max(line_free_at, now)
            if line_free_at - now >= ahead_s:
                await self._clock.sleep(line_free_at - now - ahead_s / 2)
                continue
            budget = max(1, int((now + ahead_s - line_free_at) * rate))
            piece, current = current[:budget], current[budget:]
            # An urgent burst cuts in at the next piece: it starts with a delimiter, so it
            # decodes cleanly; a frame it cut in two is lost and retransmitted by the link.
            if current and self._pace_urgent:
                self._pace_normal.appendleft(current)
                current = b""
            self._write(piece, urgent=False)
            line_free_at += len(piece) / rate
