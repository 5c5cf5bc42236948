"""The asyncio adapter around :class:`LinkCore`: a transport, timers, reopening, pacing.

``async with SerialLink(opener, config=..., clock=..., on_event=...) as link:`` opens the port
(retrying every ``reopen_s`` while it is missing), runs the handshake, and from then on
delivers every :mod:`link event <firmware_bridge.link.core>` to ``on_event`` synchronously in
the loop's thread — so an emergency stop is acted on within the read callback. When the port
vanishes (device unplugged, peer closed the socket, pty gone) it is reopened and a new session
starts. With ``baud`` > 0 the bytes are paced both ways at that line rate (10 bits a byte,
8N1), as a real UART would, urgent bytes first.

Writes are coalesced: :meth:`SerialLink.send` and :meth:`SerialLink.send_now` queue their
frames in the core and schedule one flush (``call_soon``) that hands everything queued by then
to the port in one write; bytes produced while handling received data go out at the end of
that read callback. :meth:`SerialLink.emergency_stop` writes before it returns, ahead of all
of it. The core's timers run from one loop timer, re-armed only when the deadline moves
earlier (no task wakes up per frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Self

from firmware_bridge import wire
from firmware_bridge.errors import LinkError, PortError
from firmware_bridge.link.core import (
    Delivered,
    Discarded,
    LinkConfig,
    LinkCore,
    LinkEvent,
    Rejected,
    VersionMismatch,
)
from firmware_bridge.link.health import HealthLog
from firmware_bridge.link.transport import Transport, open_serial_url
from firmware_bridge.wire import Message
from fleet.protocol.clock import Clock

log = logging.getLogger(__name__)

Opener = Callable[[], Awaitable[Transport]]
LineFilter = Callable[[bytes], bytes]
BITS_PER_BYTE = 10  # start + 8 data + stop
PACE_SLICE_S = 0.002  # paced writes go out in slices of this much line time
ACK_SLICE_BYTES = 2048  # a received chunk is answered at least every this many bytes


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_due = False  # a coalesced flush is scheduled for this loop turn
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf  # the core deadline (clock time) the timer is armed for
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._stalled_until = float("-inf")
        self.port_opened = asyncio.Event()
        self.health = HealthLog()  # line faults, logged at most every 10 s
        # pacing
        self._pace_urgent: deque[bytes] = deque()
        self._pace_control: deque[bytes] = deque()  # ACK / NAK: before frames not started
        self._pace_normal: deque[bytes] = deque()
        self._pace_wake = asyncio.Event()
        self._rx_pending: deque[tuple[float, bytes]] = deque()
        self._rx_free_at = 0.0
        self._rx_handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._tasks.append(asyncio.create_task(self._run(), name=f"{self.name} port"))
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
        self._loop = None  # nothing is scheduled on the loop after this
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
        """Queue a sequenced message; returns its ticket. LinkError when the queue is full.

        The frame goes out with the next flush (scheduled now, run at the loop's next turn),
        in one write with everything else queued by then."""
        ticket = self.core.send(message, self._clock.monotonic())
        self._flush_soon()
        return ticket

    def send_many(self, messages: Iterable[Message]) -> list[int]:
        """Queue several sequenced messages at once (nothing is queued if one is refused);
        their tickets, in order. One flush, as for :meth:`send`."""
        tickets = self.core.send_many(messages, self._clock.monotonic())
        self._flush_soon()
        return tickets

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
        self._flush_soon()

    def emergency_stop(self, reason: int = 0) -> int:
        """EMERGENCY_STOP ahead of everything queued, written before this call returns;
        repeated until acknowledged."""
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
        waiters = self._waiters
        on_event = self._on_event
        for event in events:
            if waiters:
                if type(event) is Delivered:
                    for ticket in event.tickets:
                        fut = waiters.pop(ticket, None)
                        if fut is not None and not fut.done():
                            fut.set_result(None)
                elif isinstance(event, Rejected | Discarded):
                    fut = waiters.pop(event.ticket, None)
                    if fut is not None and not fut.done():
                        what = "rejected" if isinstance(event, Rejected) else "discarded"
                        fut.set_exception(
                            LinkError(f"{self.name}: {event.message.TYPE.name} {what}")
                        )
            if type(event) is VersionMismatch:
                log.error(
                    "%s: the peer speaks serial protocol versions %d..%d, this side %d: "
                    "the link stays down",
                    self.name,
                    event.peer_min,
                    event.peer_max,
                    wire.PROTOCOL_VERSION,
                )
            try:
                on_event(event)
            except Exception:
                log.exception("%s: event handler failed on %r", self.name, event)

    def _flush_soon(self) -> None:
        """Flush at the end of this loop turn (once, however many frames were queued)."""
        if self._loop is None:
            self._flush()
        elif not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        if self._stalled() or self._transport is None:
            self.core.take_output()  # a stalled or closed port loses what it would send
            self._arm_timer()
            return
        urgent = self.core.take_urgent_output()
        if self._baud > 0:
            control = self.core.take_control_output()
            normal = self.core.take_output()
            if urgent:
                self._pace_urgent.append(urgent)
            if control:
                self._pace_control.append(control)
            if normal:
                self._pace_normal.append(normal)
            if urgent or control or normal:
                self._pace_wake.set()
        else:
            normal = self.core.take_output()
            if urgent:
                self._write(urgent, urgent=True)
            if normal:
                self._write(normal, urgent=False)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Make sure the loop timer fires by the core's next deadline. A deadline that moved
        later leaves the timer as it is: it fires early, finds nothing due, and re-arms."""
        loop = self._loop
        if loop is None:
            return
        deadline = self.core.next_deadline()
        if deadline >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        if deadline == math.inf:
            self._timer = None
            return
        delay = self._clock.to_wall_s(deadline - self._clock.monotonic())
        self._timer = loop.call_later(max(0.0, delay), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self._clock.monotonic()
        if now < self._stalled_until:
            # a stalled controller runs no timers; pick up where it left off afterwards
            assert self._loop is not None
            self._timer_at = self._stalled_until
            delay = self._clock.to_wall_s(self._stalled_until - now)
            self._timer = self._loop.call_later(max(0.0, delay), self._on_timer)
            return
        if now >= self.core.next_deadline():
            self._dispatch(self.core.poll(now))
            self._flush()
            told = self.health.check(self.core.stats, now)
            if told is not None:
                log.warning("%s: %s", self.name, told)
        else:
            self._arm_timer()

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
        now = self._clock.monotonic()
        if len(data) > ACK_SLICE_BYTES:
            # A long chunk is handled in slices cut at a delimiter, each answered (its ACK
            # written) before the next is decoded: the sender refills its window while this
            # side is still decoding, instead of both ends taking turns.
            start = 0
            while (cut := data.find(0, start + ACK_SLICE_BYTES)) >= 0 and cut + 1 < len(data):
                self._dispatch(self.core.receive(data[start : cut + 1], now))
                self._flush()
                start = cut + 1
            data = data[start:]
        self._dispatch(self.core.receive(data, now))
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

    async def _pacer(self) -> None:
        """Hand bytes to the port no faster than the line carries them, keeping at most
        PACE_SLICE_S (wall) of bytes ahead of the line, so urgent bytes wait at most that.

        Three lanes: urgent bytes (e-stop) cut in at the next piece; ACK/NAK frames go
        next, once the frame being written is complete (an acknowledgement never waits
        behind this side's queued burst, and no frame is cut for it); then the rest."""
        rate = self._baud / BITS_PER_BYTE  # bytes per clock second
        ahead_s = PACE_SLICE_S * self._clock.factor  # in clock seconds
        line_free_at = self._clock.monotonic()
        current = b""
        lane = self._pace_normal
        while True:
            if not current:
                if self._pace_urgent:
                    lane = self._pace_urgent
                elif self._pace_control:
                    lane = self._pace_control
                elif self._pace_normal:
                    lane = self._pace_normal
                else:
                    self._pace_wake.clear()
                    await self._pace_wake.wait()
                    continue
                current = lane.popleft()
            now = self._clock.monotonic()
            line_free_at = max(line_free_at, now)
            if line_free_at - now >= ahead_s:
                await self._clock.sleep(line_free_at - now - ahead_s / 2)
                continue
            budget = max(1, int((now + ahead_s - line_free_at) * rate))
            yield_to_control = False
            if self._pace_control and lane is self._pace_normal:
                end = current.find(0)  # the end of the frame being written
                if 0 <= end < budget:
                    budget = end + 1
                    yield_to_control = True
            piece, current = current[:budget], current[budget:]
            # An urgent burst cuts in at the next piece: it starts with a delimiter, so it
            # decodes cleanly; a frame it cut in two is lost and retransmitted by the link.
            if current and (self._pace_urgent or yield_to_control):
                lane.appendleft(current)
                current = b""
            self._write(piece, urgent=False)
            line_free_at += len(piece) / rate
