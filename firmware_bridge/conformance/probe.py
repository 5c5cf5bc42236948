"""The conformance kit's end of the serial line: a bridge written from ``docs/serial.md`` with
every knob a test needs, and a record of everything the VCU sent.

It does not use :class:`firmware_bridge.link.LinkCore`: it numbers, frames and times what it
sends itself, so that a case can send any frame with any header (a damaged CRC, a gap, a
wrap-around, a bad payload, a HELLO of another version) and see exactly what comes back and
when. By default it keeps the VCU's link alive as a bridge must: it answers every HELLO that
waits for an echo, sends a HEARTBEAT every 50 ms, and acknowledges the VCU's sequenced frames
(FAULT_REPORT). ``muted`` silences it completely (a cut line, seen from the VCU).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from firmware_bridge import wire
from firmware_bridge.errors import PortError
from firmware_bridge.link.core import HALF, next_seq, seq_distance
from firmware_bridge.link.transport import Transport
from firmware_bridge.wire.frame import frame_bytes
from fleet.protocol.clock import Clock

log = logging.getLogger(__name__)

Opener = Callable[[], Awaitable[Transport]]
HEARTBEAT_S = 0.05
HELLO_S = 0.2


@dataclass(frozen=True, slots=True)
class Seen:
    """One thing the VCU sent, with the time it arrived (clock seconds)."""

    at: float
    frame: wire.Frame | None = None
    fault: wire.FrameFault | None = None


def covers(ack: int, seq: int) -> bool:
    """A cumulative ``ack`` acknowledges ``seq`` (both 1..65535, wrapping to 1)."""
    return ack != 0 and seq_distance(seq, ack) < HALF


class Probe:
    """The bridge end of the line under the kit's control. Not thread-safe."""

    def __init__(self, opener: Opener, clock: Clock) -> None:
        self._opener = opener
        self.clock = clock
        self.transport: Transport | None = None
        self.decoder = wire.FrameDecoder()
        self.seen: list[Seen] = []
        self.changed = asyncio.Event()
        self.session = 0  # ours
        self.vcu_session = 0  # the VCU's, from its HELLOs
        self.tx_seq = 0  # the last sequence number we used
        self.rx_seq = 0  # the VCU's last in-order sequenced frame
        self.muted = False
        self.answer_hellos = True
        self.heartbeats = True
        self.estop_id = 0
        self.faults: list[wire.FaultReport] = []  # the VCU's FAULT_REPORTs, once each
        self.reopened = 0
        self._echoed = False  # the VCU's last HELLO echoed our session
        self._tasks: list[asyncio.Task[None]] = []
        self._lost = asyncio.Event()
        self._connected = asyncio.Event()

    # ---- lifetime ---------------------------------------------------------------------

    async def __aenter__(self) -> Probe:
        self._tasks.append(asyncio.create_task(self._keep_open(), name="probe port"))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="probe heartbeat"))
        async with asyncio.timeout(10.0):
            await self._connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    async def _keep_open(self) -> None:
        """Open the port, and open it again whenever it is lost (a VCU that listens on a
        socket closes it when it reboots)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                transport = await self._opener()
            except PortError as exc:
                log.debug("probe: %s; retrying", exc)
                await self.clock.sleep(0.2)
                continue
            self._lost.clear()
            self.decoder = wire.FrameDecoder()
            self.transport = transport
            transport.attach(loop, self._on_data, self._on_lost)
            self._connected.set()
            await self._lost.wait()
            self.transport = None
            self._connected.clear()
            self.reopened += 1
            await self.clock.sleep(0.1)

    def _on_lost(self, reason: str) -> None:
        log.debug("probe: port lost: %s", reason)
        if self.transport is not None:
            self.transport.close()
        self._lost.set()

    async def connected(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def _heartbeat(self) -> None:
        while True:
            await self.clock.sleep(HEARTBEAT_S)
            if self.heartbeats and self.session:
                uptime_ms = int(self.clock.monotonic() * 1000) & 0xFFFF_FFFF
                self.write(self.frame(wire.Heartbeat(uptime_ms)))

    # ---- sending ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Bytes to the line as they are (nothing while muted or while the port is closed)."""
        if not self.muted and self.transport is not None:
            self.transport.write(data)

    def frame(self, message: wire.Message, seq: int = 0) -> bytes:
        """``message`` framed with our current acknowledgement, a delimiter in front."""
        return b"\x00" + wire.encode_frame(message, seq=seq, ack=self.rx_seq)

    def raw(self, type_code: int, payload: bytes, seq: int) -> bytes:
        """Any type and payload, framed with a good CRC (for frames the codec refuses)."""
        return b"\x00" + frame_bytes(type_code, payload, seq, self.rx_seq)

    def next_seq(self) -> int:
        self.tx_seq = next_seq(self.tx_seq)
        return self.tx_seq

    def hello(
        self, *, session: int | None = None, version_min: int = 1, version_max: int = 1
    ) -> bytes:
        hello = wire.Hello(
            role=wire.Role.BRIDGE,
            version_min=version_min,
            version_max=version_max,
            session=self.session if session is None else session,
            peer_session=self.vcu_session,
            heartbeat_ms=round(HEARTBEAT_S * 1000),
            link_up=self.session != 0 and self._echoed,
        )
        return self.frame(hello)

    async def handshake(self, timeout_s: float = 3.0) -> bool:
        """A new session of ours, HELLO every 200 ms until the VCU echoes it."""
        self.session = secrets.randbits(32) or 1
        self.tx_seq = 0
        self.rx_seq = 0
        self._echoed = False
        deadline = self.clock.monotonic() + timeout_s
        while self.clock.monotonic() < deadline:
            self.write(self.hello())
            if await self.wait_for(lambda s: self._echoed, HELLO_S) is not None:
                self.write(self.hello())  # echo theirs, link_up: needs no answer
                return True
        return False

    async def send(
        self,
        message: wire.Message | bytes,
        *,
        seq: int | None = None,
        timeout_s: float = 2.0,
        resend_s: float = 0.2,
    ) -> float | None:
        """Send a sequenced message (or ready bytes carrying ``seq``) and wait for an ACK
        covering it, resending every ``resend_s``; the seconds to the first covering ACK,
        None when none came within ``timeout_s``."""
        if seq is None:
            seq = self.next_seq()
        data = message if isinstance(message, bytes) else self.frame(message, seq)
        start = self.clock.monotonic()
        since = len(self.seen)
        deadline = start + timeout_s
        while True:
            self.write(data)
            wait_s = min(resend_s, deadline - self.clock.monotonic())
            got = await self.wait_for(lambda s: covers(_ack(s), seq), wait_s, since=since)
            if got is not None:
                return got.at - start
            if self.clock.monotonic() >= deadline:
                return None

    def emergency_stop(self, estop_id: int | None = None) -> int:
        if estop_id is None:
            self.estop_id = next_seq(self.estop_id)
            estop_id = self.estop_id
        self.write(self.frame(wire.EmergencyStop(estop_id, 0)))
        return estop_id

    # ---- receiving ----------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        now = self.clock.monotonic()
        for r in self.decoder.feed(data):
            if isinstance(r, wire.FrameFault):
                self.seen.append(Seen(now, fault=r))
                continue
            self.seen.append(Seen(now, frame=r))
            msg = r.message
            if isinstance(msg, wire.Hello):
                self._on_hello(msg)
            elif msg.SEQUENCED:
                if r.seq == next_seq(self.rx_seq):
                    self.rx_seq = r.seq
                    if isinstance(msg, wire.FaultReport):
                        self.faults.append(msg)
                self.write(self.frame(wire.Ack()))  # acknowledge (again, for a duplicate)
        self.changed.set()

    def _on_hello(self, hello: wire.Hello) -> None:
        if hello.role is not wire.Role.VCU:
            return
        if hello.session != self.vcu_session:
            self.vcu_session = hello.session  # a new VCU session: both spaces restart
            self.tx_seq = 0
            self.rx_seq = 0
        self._echoed = self.session != 0 and hello.peer_session == self.session
        if self.answer_hellos and self.session and (not hello.link_up or not self._echoed):
            self.write(self.hello())

    async def wait_for(
        self, what: Callable[[Seen], bool], timeout_s: float, *, since: int | None = None
    ) -> Seen | None:
        """The first thing seen (from index ``since``; default: from now on) for which
        ``what`` holds, or None after ``timeout_s``."""
        i = len(self.seen) if since is None else since
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                while True:
                    while i < len(self.seen):
                        s = self.seen[i]
                        i += 1
                        if what(s):
                            return s
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return None

    async def telemetry(
        self, what: Callable[[wire.Telemetry], bool] = lambda t: True, timeout_s: float = 2.0
    ) -> wire.Telemetry | None:
        """The next TELEMETRY for which ``what`` holds."""
        got = await self.wait_for(lambda s: _telemetry(s) is not None and what(_tm(s)), timeout_s)
        return None if got is None else _tm(got)

    def latest_telemetry(self) -> wire.Telemetry | None:
        for s in reversed(self.seen):
            t = _telemetry(s)
            if t is not None:
                return t
        return None

    def telemetry_since(self, index: int) -> list[tuple[float, wire.Telemetry]]:
        return [(s.at, t) for s in self.seen[index:] if (t := _telemetry(s)) is not None]

    def naks_since(self, index: int) -> list[wire.Nak]:
        return [
            s.frame.message
            for s in self.seen[index:]
            if s.frame is not None and isinstance(s.frame.message, wire.Nak)
        ]


def _ack(s: Seen) -> int:
    return s.frame.ack if s.frame is not None else 0


def _telemetry(s: Seen) -> wire.Telemetry | None:
    if s.frame is not None and isinstance(s.frame.message, wire.Telemetry):
        return s.frame.message
    return None


def _tm(s: Seen) -> wire.Telemetry:
    t = _telemetry(s)
    assert t is not None
    return t
