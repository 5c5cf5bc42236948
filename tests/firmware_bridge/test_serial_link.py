"""The asyncio link over a real pseudo-terminal: coalesced writes, the e-stop write, timers."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import tty
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cobs import cobs

from firmware_bridge import wire
from firmware_bridge.link import (
    Delivered,
    FdTransport,
    LinkConfig,
    LinkDown,
    LinkEvent,
    PtyPair,
    Received,
    SerialLink,
    Transport,
)
from firmware_bridge.link.serial_link import ACK_SLICE_BYTES
from fleet.protocol.clock import WallClock


def fast(role: wire.Role) -> LinkConfig:
    """An unpaced line with short timers, so the test sees many heartbeats quickly."""
    return LinkConfig(
        role, line_baud=0, window=128, heartbeat_s=0.05, peer_timeout_s=0.5, hello_interval_s=0.05
    )


class RecordingTransport(FdTransport):
    """The real fd transport, keeping a copy of every write handed to it."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__(fd, name, lambda: os.close(fd))
        self.writes: list[bytes] = []

    def write(self, data: bytes, *, urgent: bool = False) -> None:
        self.writes.append(bytes(data))
        super().write(data, urgent=urgent)


def frames_in(data: bytes) -> list[wire.Message]:
    return [f.message for f in wire.FrameDecoder().feed(data) if isinstance(f, wire.Frame)]


class Ends:
    def __init__(self) -> None:
        self.received: list[wire.Message] = []
        self.changed = asyncio.Event()
        self.bridge_tx: RecordingTransport | None = None
        self.vcu_tx: RecordingTransport | None = None

    def on_vcu_event(self, event: LinkEvent) -> None:
        if isinstance(event, Received):
            self.received.append(event.message)
            self.changed.set()

    async def until(self, what: Callable[[], bool]) -> None:
        while not what():
            self.changed.clear()
            await self.changed.wait()


@asynccontextmanager
async def bridge_and_vcu() -> AsyncIterator[tuple[SerialLink, SerialLink, Ends]]:
    pair = PtyPair()
    ends = Ends()

    async def open_slave() -> Transport:
        fd = os.open(pair.slave_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        ends.bridge_tx = RecordingTransport(fd, pair.slave_path)
        return ends.bridge_tx

    async def open_master() -> Transport:
        ends.vcu_tx = RecordingTransport(os.dup(pair.master_fd), "master")
        return ends.vcu_tx

    clock = WallClock()
    bridge = SerialLink(
        open_slave,
        config=fast(wire.Role.BRIDGE),
        clock=clock,
        on_event=lambda _: None,
        name="bridge",
    )
    vcu = SerialLink(
        open_master,
        config=fast(wire.Role.VCU),
        clock=clock,
        on_event=ends.on_vcu_event,
        name="vcu",
    )
    try:
        async with vcu, bridge:
            while not (bridge.up and vcu.up):
                await asyncio.sleep(0.01)
            yield bridge, vcu, ends
    finally:
        pair.close()


def segment(i: int) -> wire.DriveSegment:
    return wire.DriveSegment(4, i, 1000, 0, False, ((-86_100_000 + i, 411_500_000),))


def test_a_burst_of_sends_leaves_in_one_write_and_arrives_in_order() -> None:
    async def body() -> None:
        async with asyncio.timeout(20), bridge_and_vcu() as (bridge, _, ends):
            assert ends.bridge_tx is not None
            for i in range(100):
                bridge.send(segment(i))
            await ends.until(lambda: len(ends.received) >= 100)
            assert ends.received == [segment(i) for i in range(100)]
            carrying = [w for w in ends.bridge_tx.writes if segment(0) in frames_in(w)]
            assert len(carrying) == 1
            assert frames_in(carrying[0]) == [segment(i) for i in range(100)]

    asyncio.run(body())


def test_an_emergency_stop_is_written_before_the_call_returns_ahead_of_queued_frames() -> None:
    async def body() -> None:
        async with asyncio.timeout(20), bridge_and_vcu() as (bridge, _, ends):
            assert ends.bridge_tx is not None
            for i in range(10):
                bridge.send(segment(i))  # queued for the end of this loop turn
            before = len(ends.bridge_tx.writes)
            estop_id = bridge.emergency_stop()
            written = ends.bridge_tx.writes[before:]  # no await in between
            assert [frames_in(w) for w in written] == [
                [wire.EmergencyStop(estop_id, 0)],
                [segment(i) for i in range(10)],
            ]
            await ends.until(lambda: len(ends.received) >= 11)
            assert ends.received[0] == wire.EmergencyStop(estop_id, 0)
            assert ends.received[1:] == [segment(i) for i in range(10)]

    asyncio.run(body())


def test_a_long_chunk_read_is_acknowledged_slice_by_slice() -> None:
    """A chunk of 128 frames (4 KB) read at once is answered every ACK_SLICE_BYTES, so the
    sender can refill its window while the receiver still decodes the rest."""

    async def body() -> None:
        async with asyncio.timeout(20), bridge_and_vcu() as (bridge, vcu, ends):
            assert ends.vcu_tx is not None
            for i in range(128):  # numbered by the bridge's core, not written by it
                bridge.core.send(segment(i), 0.0)
            burst = bridge.core.take_output()
            assert len(burst) > ACK_SLICE_BYTES + 1024
            ends.vcu_tx.writes.clear()
            vcu._on_data(burst)  # as one read from the port
            assert ends.received == [segment(i) for i in range(128)]
            acks = [m for w in ends.vcu_tx.writes for m in frames_in(w) if type(m) is wire.Ack]
            assert len(acks) >= 2  # one per slice, each written before the next is decoded
            assert len(ends.vcu_tx.writes) == len(acks)

    asyncio.run(body())


def test_an_idle_link_stays_up_on_heartbeats_from_the_loop_timer() -> None:
    async def body() -> None:
        async with asyncio.timeout(20), bridge_and_vcu() as (bridge, vcu, ends):
            assert ends.bridge_tx is not None
            sent = bridge.core.stats.frames_tx
            await asyncio.sleep(1.5)  # three peer timeouts with nothing to send
            assert bridge.up and vcu.up
            heartbeats = bridge.core.stats.frames_tx - sent
            assert 10 <= heartbeats <= 31  # every 50 ms; a loaded machine may skip some

    asyncio.run(body())


class NoisyTransport(FdTransport):
    """The real fd transport, corrupting a share of the bytes it writes (seeded)."""

    def __init__(self, fd: int, name: str, p_corrupt: float, seed: int) -> None:
        super().__init__(fd, name, lambda: os.close(fd))
        self.p_corrupt = p_corrupt
        self.rng = random.Random(seed)
        self.corrupted = 0

    def write(self, data: bytes, *, urgent: bool = False) -> None:
        out = bytearray(data)
        rnd = self.rng.random
        for i in range(len(out)):
            if rnd() < self.p_corrupt:
                out[i] ^= self.rng.randrange(1, 256)
                self.corrupted += 1
        super().write(bytes(out), urgent=urgent)


def route_segment(i: int) -> wire.DriveSegment:
    """8 waypoints, as the bridge cuts a long route (88 bytes on the wire)."""
    pts = tuple(
        (-86_100_000 + 977 * (8 * i + k), 411_500_000 - 613 * (8 * i + k)) for k in range(8)
    )
    return wire.DriveSegment(9, 8 * i, 1389, 0, False, pts)


@pytest.mark.parametrize(("p_corrupt", "segments"), [(0.01, 60), (0.05, 4)])
def test_a_pty_corrupting_both_ways_delivers_a_long_route_once_and_never_goes_down(
    p_corrupt: float, segments: int
) -> None:
    """The production timers (a 115200-baud line's resend allowance, 50 ms heartbeats, a 1 s
    peer timeout) over a real pty whose both ends corrupt what they write."""
    pair = PtyPair()
    downs: list[LinkEvent] = []
    ends = Ends()
    noisy: list[NoisyTransport] = []

    async def open_slave() -> Transport:
        fd = os.open(pair.slave_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        noisy.append(NoisyTransport(fd, pair.slave_path, p_corrupt, seed=1))
        return noisy[-1]

    async def open_master() -> Transport:
        noisy.append(NoisyTransport(os.dup(pair.master_fd), "master", p_corrupt, seed=2))
        return noisy[-1]

    def on_bridge_event(event: LinkEvent) -> None:
        if isinstance(event, LinkDown):
            downs.append(event)

    def on_vcu_event(event: LinkEvent) -> None:
        if isinstance(event, LinkDown):
            downs.append(event)
        ends.on_vcu_event(event)

    async def body() -> None:
        clock = WallClock()
        bridge = SerialLink(
            open_slave,
            config=LinkConfig(wire.Role.BRIDGE),
            clock=clock,
            on_event=on_bridge_event,
            name="bridge",
        )
        vcu = SerialLink(
            open_master,
            config=LinkConfig(wire.Role.VCU),
            clock=clock,
            on_event=on_vcu_event,
            name="vcu",
        )
        async with asyncio.timeout(90), vcu, bridge:
            while not (bridge.up and vcu.up):
                await asyncio.sleep(0.02)
            route = [route_segment(i) for i in range(segments)]
            for seg in route:
                bridge.send(seg)
            await ends.until(lambda: len(ends.received) >= segments)
            await asyncio.sleep(0.3)  # late duplicates would show here
            assert ends.received == route  # every segment once, in order
            assert bridge.up and vcu.up

    try:
        asyncio.run(body())
    finally:
        pair.close()
    assert downs == []
    assert sum(n.corrupted for n in noisy) > 0


@asynccontextmanager
async def paced_pair(
    baud: int, on_bridge: Callable[[LinkEvent], None], on_vcu: Callable[[LinkEvent], None]
) -> AsyncIterator[tuple[SerialLink, SerialLink]]:
    """A bridge and a VCU link over a pty, both paced at ``baud`` as in production."""
    pair = PtyPair()

    async def open_slave() -> Transport:
        fd = os.open(pair.slave_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        return FdTransport(fd, pair.slave_path, lambda: os.close(fd))

    async def open_master() -> Transport:
        fd = os.dup(pair.master_fd)
        return FdTransport(fd, "master", lambda: os.close(fd))

    clock = WallClock()
    bridge = SerialLink(
        open_slave,
        config=LinkConfig(wire.Role.BRIDGE, line_baud=baud),
        clock=clock,
        on_event=on_bridge,
        baud=baud,
        name="bridge",
    )
    vcu = SerialLink(
        open_master,
        config=LinkConfig(wire.Role.VCU, line_baud=baud),
        clock=clock,
        on_event=on_vcu,
        baud=baud,
        name="vcu",
    )
    try:
        async with vcu, bridge:
            while not (bridge.up and vcu.up):
                await asyncio.sleep(0.01)
            yield bridge, vcu
    finally:
        pair.close()


def test_bursts_on_a_paced_line_acknowledged_at_once_are_never_resent() -> None:
    """Issue 14 item 10: bursts of 11+ segments at 115200 baud resent their last frames
    although each was acknowledged within a millisecond: the resend timer counted the time the
    frames spent queued behind the burst in this side's own pacing."""
    delivered: list[int] = []
    received: list[wire.Message] = []

    def on_bridge(event: LinkEvent) -> None:
        if isinstance(event, Delivered):
            delivered.extend(event.tickets)

    def on_vcu(event: LinkEvent) -> None:
        if isinstance(event, Received):
            received.append(event.message)

    async def body() -> None:
        async with asyncio.timeout(30), paced_pair(115_200, on_bridge, on_vcu) as (bridge, vcu):
            before = bridge.core.stats.retransmits
            sent = 0
            for count in (11, 16, 30):
                tickets = bridge.send_many([route_segment(sent + i) for i in range(count)])
                sent += count
                while not set(tickets) <= set(delivered):
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.3)  # a late resend would show here
            assert received == [route_segment(i) for i in range(sent)]
            assert bridge.core.stats.retransmits - before == 0
            assert vcu.core.stats.duplicates_rx == 0

    asyncio.run(body())


def test_an_acknowledgement_does_not_wait_behind_a_burst_of_our_own_frames() -> None:
    """The VCU's FAULT_REPORT arrives while the bridge has a long burst queued for the line:
    the bridge's ACK goes out at the next frame boundary, not after the burst (0.3 s of line),
    so the VCU does not resend its report."""
    faults: list[wire.Message] = []

    def on_bridge(event: LinkEvent) -> None:
        if isinstance(event, Received) and isinstance(event.message, wire.FaultReport):
            faults.append(event.message)

    async def body() -> None:
        async with (
            asyncio.timeout(30),
            paced_pair(115_200, on_bridge, lambda _: None) as (
                bridge,
                vcu,
            ),
        ):
            window = bridge.core.config.window
            bridge.send_many([route_segment(i) for i in range(window)])  # 0.12 s of line
            await asyncio.sleep(0.01)  # the burst is on its way
            report = wire.FaultReport(wire.FaultCode.DOOR_REFUSED, wire.Severity.WARNING, 0, 3)
            before = vcu.core.stats.retransmits
            vcu.send(report)
            while vcu.core.queued:
                await asyncio.sleep(0.005)
            assert faults == [report]
            assert vcu.core.stats.retransmits - before == 0

    asyncio.run(body())


def test_the_monitor_counts_crc_errors_garbage_and_refused_frames() -> None:
    """Issue 14 item 10: CRC errors, garbage and refused frames were never counted or told."""
    pair = PtyPair()
    try:
        monitor = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "firmware-bridge"),
                "monitor",
                "--serial",
                pair.slave_path,
                "--seconds",
                "1.5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        body = bytearray(wire.encode_frame(wire.Heartbeat(1), seq=0, ack=0)[:-1])
        damaged = bytearray(cobs.decode(bytes(body)))
        damaged[-1] ^= 0x33  # the CRC
        unknown = b"\x01\x7e\x00\x00\x00\x00"
        unknown += wire.crc16_ccitt_false(unknown).to_bytes(2, "little")
        line = (
            b"\x00"
            + cobs.encode(bytes(damaged))  # a CRC error
            + b"\x00\x05\x01\x00"  # garbage: bad COBS
            + cobs.encode(unknown)  # a good CRC, an unknown type: refused
            + b"\x00"
            + wire.encode_frame(wire.Heartbeat(2), seq=0, ack=0)
        )
        assert monitor.stdout is not None
        assert "monitoring" in monitor.stdout.readline()
        time.sleep(0.5)  # it opens the port right after saying so
        os.write(pair.master_fd, line)
        out, _ = monitor.communicate(timeout=20)
    finally:
        pair.close()
    assert "line faults: CRC errors 1, garbage (bad COBS, short, oversize) 1" in out, out
    assert "frames refused (good CRC, unusable) 1" in out


def test_a_version_mismatch_is_logged_once_and_line_faults_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 14 item 3: the version mismatch was never reported or logged."""
    pair = PtyPair()

    async def open_slave() -> Transport:
        fd = os.open(pair.slave_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        return FdTransport(fd, pair.slave_path, lambda: os.close(fd))

    bad = wire.Hello(wire.Role.VCU, 2, 2, 0xBEEF, 0, 50)

    async def body() -> None:
        link = SerialLink(
            open_slave,
            config=fast(wire.Role.BRIDGE),
            clock=WallClock(),
            on_event=lambda _: None,
            name="bridge",
        )
        async with asyncio.timeout(20), link:
            await link.port_opened.wait()
            for _ in range(6):  # a VCU that speaks only version 2 keeps saying HELLO
                os.write(pair.master_fd, b"\x00" + wire.encode_frame(bad, seq=0, ack=0))
                await asyncio.sleep(0.1)
            os.write(pair.master_fd, b"\x00\x05\x01\x00")  # and some garbage
            await asyncio.sleep(0.3)
            assert not link.up

    with caplog.at_level("WARNING", logger="firmware_bridge.link.serial_link"):
        try:
            asyncio.run(body())
        finally:
            pair.close()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "versions 2..2, this side 1" in errors[0].getMessage()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("line faults" in w and "HELLOs of another protocol version" in w for w in warnings)
