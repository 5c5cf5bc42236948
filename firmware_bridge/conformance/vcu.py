"""The VCU conformance kit: scripted cases that drive any VCU through its serial line only.

``firmware-bridge conformance vcu --serial URL [--reset-command CMD]`` runs
:func:`run_vcu_conformance`. Each case checks one rule of ``docs/serial.md`` (the list, and
what each checks: ``docs/conformance.md``, "VCU conformance (serial)") and ends PASS, FAIL
(with what was seen instead) or SKIP (with why). The kit is a bridge of its own
(:class:`~firmware_bridge.conformance.probe.Probe`): nothing of the project's link layer
stands between it and the VCU. Cases drive the van: run them with the van where it may move
a few tens of metres ahead, or on a test bench.

Time: the kit runs against a live VCU, in wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import secrets
import shlex
import statistics
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from cobs import cobs

from firmware_bridge import wire
from firmware_bridge.conformance.probe import Opener, Probe, Seen, covers
from firmware_bridge.link.core import SEQ_MAX
from firmware_bridge.wire import DriveState, FaultBit
from fleet.protocol.clock import Clock, WallClock

EARTH_M_PER_DEG = math.radians(1.0) * 6_371_008.8
# Allowances of the kit, not rules of the protocol: the slowest controlled stop (service
# braking) and emergency stop it accepts, and the slack on timings over a loaded line.
MIN_SERVICE_DECEL_MPS2 = 1.0
MIN_EMERGENCY_DECEL_MPS2 = 2.0
PEER_TIMEOUT_S = 1.0  # docs/serial.md: no valid frame for 1 s means the peer is lost
SLACK_S = 0.5
ACK_P50_S = 0.020  # docs/serial.md: an ACK leaves within 20 ms of the frame's delimiter
ACK_MAX_S = 0.072  # a bridge at 115200 baud resends after 50 ms + a largest frame's time
RESET_WAIT_S = 30.0  # how long a VCU may take to come back after the reset command
NAK_GAP_S = 0.05  # the kit's pause before a fault it expects a NAK(CRC) for


class Status(Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    status: Status
    detail: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Report:
    results: tuple[CaseResult, ...]

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.status is Status.FAIL]

    @property
    def skipped(self) -> list[str]:
        return [r.name for r in self.results if r.status is Status.SKIP]

    def summary(self) -> dict[str, object]:
        """The final JSON line's content."""
        return {
            "cases": len(self.results),
            "passed": sum(r.status is Status.PASS for r in self.results),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "failed_cases": self.failed,
            "skipped_cases": self.skipped,
        }


class CaseFailed(Exception):
    """A case saw something the protocol does not allow (the message says what)."""


class CaseSkipped(Exception):
    """A case cannot run here (the message says why)."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise CaseFailed(what)


Reset = Callable[[], Awaitable[None]]


def shell_reset(command: str) -> Reset:
    """A reset that runs ``command`` in a shell and fails the case if it fails."""

    async def reset() -> None:
        proc = await asyncio.create_subprocess_shell(
            command,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise CaseFailed(
                f"the reset command {shlex.quote(command)} exited {proc.returncode}: "
                f"{err.decode(errors='replace').strip()[:200]}"
            )

    return reset


@dataclass
class Context:
    probe: Probe
    reset: Reset | None
    notes: list[str] = field(default_factory=list)
    mission_id: int = 0

    def new_mission(self) -> int:
        self.mission_id = secrets.randbits(31) or 1
        return self.mission_id


Case = Callable[[Context], Awaitable[str]]


# ---- helpers ------------------------------------------------------------------------------


def ahead(t: wire.Telemetry, metres: float) -> tuple[int, int]:
    """The point ``metres`` ahead of the van along its heading, in 1e-7 degree."""
    heading = math.radians(t.heading_cdeg / 100)
    lat = t.lat + metres * math.cos(heading) / EARTH_M_PER_DEG
    lon = t.lon + metres * math.sin(heading) / (
        EARTH_M_PER_DEG * max(1e-6, math.cos(math.radians(t.lat)))
    )
    return wire.to_e7(lon), wire.to_e7(lat)


def distance_m(t: wire.Telemetry, point: tuple[int, int]) -> float:
    lon, lat = wire.from_e7(point[0]), wire.from_e7(point[1])
    dx = (lon - t.lon) * EARTH_M_PER_DEG * math.cos(math.radians(t.lat))
    return math.hypot(dx, (lat - t.lat) * EARTH_M_PER_DEG)


async def current(ctx: Context) -> wire.Telemetry:
    t = await ctx.probe.telemetry(timeout_s=1.0)
    check(t is not None, "no TELEMETRY for 1 s (at least 10 Hz is required)")
    assert t is not None
    return t


async def deliver(ctx: Context, message: wire.Message, what: str) -> float:
    delay = await ctx.probe.send(message)
    check(delay is not None, f"{what}: not acknowledged within 2 s")
    assert delay is not None
    return delay


async def expect_telemetry(
    ctx: Context, what: Callable[[wire.Telemetry], bool], timeout_s: float, expected: str
) -> wire.Telemetry:
    t = await ctx.probe.telemetry(what, timeout_s)
    if t is None:
        last = ctx.probe.latest_telemetry()
        raise CaseFailed(f"{expected} within {timeout_s:.1f} s; last seen: {describe(last)}")
    return t


def describe(t: wire.Telemetry | None) -> str:
    if t is None:
        return "no telemetry"
    return (
        f"{t.drive_state.name} {t.speed_cmps / 100:.2f} m/s mission {t.mission_id} "
        f"wp {'-' if t.last_wp == wire.WP_NONE else t.last_wp}/{t.wp_queued} "
        f"faults 0x{t.fault_bits:04x} estop {t.estop_id}"
    )


async def drive_off(ctx: Context, cap_cmps: int, metres: float) -> wire.Telemetry:
    """A new mission straight ahead, ``metres`` long, at ``cap_cmps``; back when the van
    has reached 90 % of the cap."""
    t = await current(ctx)
    check(
        t.drive_state in (DriveState.IDLE, DriveState.HOLDING) and t.speed_cmps == 0,
        f"the van is not standing ready to drive: {describe(t)}",
    )
    points = tuple(ahead(t, metres * k / 3) for k in range(4))
    mission = ctx.new_mission()
    await deliver(ctx, wire.DriveSegment(mission, 0, cap_cmps, 0, True, points), "a DRIVE_SEGMENT")
    accel_s = cap_cmps / 100 / 0.5 + 2.0  # any van accelerates at 0.5 m/s² or better
    return await expect_telemetry(
        ctx,
        lambda x: x.mission_id == mission and x.speed_cmps >= 0.9 * cap_cmps,
        accel_s,
        f"the van driving at {cap_cmps * 0.9 / 100:.1f} m/s",
    )


async def stand_still(ctx: Context) -> None:
    """Clean up after a case: the mission dropped, the van standing, no latch, no hold."""
    p = ctx.probe
    p.muted = False
    t = p.latest_telemetry()
    if p.session == 0 or (t is not None and t.fault_bits & FaultBit.LINK_LOST):
        await p.handshake()
    await p.send(wire.Stop(wire.StopMode.ABORT))
    t = p.latest_telemetry()
    await p.send(wire.Resume(t.estop_id if t is not None else p.estop_id))
    await p.telemetry(lambda x: x.speed_cmps == 0, 15.0)


# ---- the cases ----------------------------------------------------------------------------


async def case_handshake(ctx: Context) -> str:
    p = ctx.probe
    since = len(p.seen)
    ok = await p.handshake(timeout_s=3.0)
    check(ok, "no VCU HELLO echoing our session within 3 s of HELLOs every 200 ms")
    hellos = [
        s.frame.message
        for s in p.seen[since:]
        if s.frame is not None and isinstance(s.frame.message, wire.Hello)
    ]
    h = hellos[-1]
    check(h.role is wire.Role.VCU, f"HELLO role {h.role.name}, expected VCU")
    check(h.version_min <= 1 <= h.version_max, f"versions {h.version_min}..{h.version_max}")
    check(h.session != 0 and h.heartbeat_ms > 0, f"session {h.session}, heartbeat {h.heartbeat_ms}")
    # the link is up on the VCU's side too: a sequenced frame is acknowledged
    delay = await p.send(wire.Door(open=False))
    check(delay is not None, "a DOOR(close) after the handshake was not acknowledged within 2 s")
    return f"VCU session 0x{h.session:08x}, versions {h.version_min}..{h.version_max}"


async def case_telemetry_rate(ctx: Context) -> str:
    p = ctx.probe
    start = len(p.seen)
    t0 = p.clock.monotonic()
    await asyncio.sleep(3.0)
    got = p.telemetry_since(start)
    beats = [
        s.at
        for s in p.seen[start:]
        if s.frame is not None and isinstance(s.frame.message, wire.Heartbeat)
    ]
    span = p.clock.monotonic() - t0
    times = [t0, *(at for at, _ in got), p.clock.monotonic()]
    gap = max(b - a for a, b in itertools.pairwise(times))
    rate = len(got) / span
    check(rate >= wire.TELEMETRY_MIN_HZ * 0.95, f"TELEMETRY at {rate:.1f} Hz, at least 10 Hz")
    check(gap <= 0.3, f"a {gap * 1000:.0f} ms gap between TELEMETRY frames (0.5 s is stale)")
    hb_times = [t0, *beats, p.clock.monotonic()]
    hb_gap = max(b - a for a, b in itertools.pairwise(hb_times))
    check(hb_gap <= 0.15, f"a {hb_gap * 1000:.0f} ms gap between HEARTBEATs (every 50 ms)")
    return (
        f"TELEMETRY {rate:.1f} Hz (longest gap {gap * 1000:.0f} ms), "
        f"HEARTBEAT gap ≤ {hb_gap * 1000:.0f} ms"
    )


async def case_framing(ctx: Context) -> str:
    p = ctx.probe
    # extra delimiters anywhere are empty frames: ignored
    seq = p.next_seq()
    padded = b"\x00\x00\x00" + p.frame(wire.Door(open=False), seq) + b"\x00\x00"
    check(await p.send(padded, seq=seq) is not None, "a frame padded with extra 0x00 was lost")
    # garbage, then a good frame: the garbage gets NAK(CRC), the frame goes through
    await asyncio.sleep(NAK_GAP_S)  # NAK(CRC) may be rate-limited to one per 12.5 ms
    since = len(p.seen)
    seq = p.next_seq()
    garbage = b"\x00\x17\x42\x99\xfe\x03\x88"
    check(
        await p.send(garbage + p.frame(wire.Door(open=False), seq), seq=seq) is not None,
        "a frame after garbage was not acknowledged",
    )
    naks = p.naks_since(since)
    check(any(n.reason is wire.NakReason.CRC for n in naks), "garbage got no NAK(CRC)")
    # a run of 300 bytes without a delimiter is dropped up to the next 0x00
    await asyncio.sleep(NAK_GAP_S)
    since = len(p.seen)
    seq = p.next_seq()
    oversize = b"\x00" + bytes((i % 255) + 1 for i in range(300))
    check(
        await p.send(oversize + p.frame(wire.Door(open=False), seq), seq=seq) is not None,
        "a frame after an oversize run was not acknowledged",
    )
    check(
        any(n.reason is wire.NakReason.CRC for n in p.naks_since(since)),
        "an oversize run got no NAK(CRC)",
    )
    # the largest frame (29 waypoints, 256 bytes on the wire) is taken whole
    t = await current(ctx)
    here = ahead(t, 0.0)
    biggest = wire.DriveSegment(ctx.new_mission(), 0, 100, 0, True, (here,) * wire.MAX_WAYPOINTS)
    seq = p.next_seq()
    data = p.frame(biggest, seq)
    check(len(data) - 1 == wire.MAX_WIRE_BYTES, f"{len(data) - 1} bytes")
    check(await p.send(data, seq=seq) is not None, "a 256-byte frame was not acknowledged")
    await deliver(ctx, wire.Stop(wire.StopMode.ABORT), "STOP(ABORT)")
    return "padding ignored; garbage and oversize NAK(CRC), the next frame taken; 256 B frame taken"


async def case_crc(ctx: Context) -> str:
    p = ctx.probe
    seq = p.next_seq()
    good = p.frame(wire.Door(open=False), seq)
    # the CRC damaged inside a valid COBS body
    body = bytearray(cobs.decode(good[1:-1]))
    body[-1] ^= 0x5A
    damaged = b"\x00" + cobs.encode(bytes(body)) + b"\x00"
    nak = None
    for _copy in range(3):  # a NAK(CRC) may be rate-limited: one per 12.5 ms
        await asyncio.sleep(NAK_GAP_S)
        since = len(p.seen)
        p.write(damaged)
        nak = await p.wait_for(_nak(wire.NakReason.CRC), 0.5, since=since)
        if nak is not None:
            break
    check(nak is not None, "3 frames with a bad CRC, 50 ms apart, got no NAK(CRC)")
    assert nak is not None and nak.frame is not None
    check(not covers(nak.frame.ack, seq), "the damaged frame was acknowledged")
    check(await p.send(good, seq=seq) is not None, "the good copy was not acknowledged")
    return "NAK(CRC) for the damaged copy, the good copy acknowledged"


async def case_sequence(ctx: Context) -> str:
    p = ctx.probe
    first = p.next_seq()
    check(await p.send(wire.Door(open=False), seq=first) is not None, "in order: no ACK")
    # a duplicate is acknowledged again, without a NAK
    since = len(p.seen)
    again = await p.send(p.frame(wire.Door(open=False), first), seq=first)
    check(again is not None, f"a duplicate of seq {first} was not acknowledged again")
    await asyncio.sleep(0.1)
    check(not p.naks_since(since), f"a duplicate got {p.naks_since(since)}")
    # a gap: seq + 2 before seq + 1 is held and answered NAK(SEQ_GAP, seq + 2)
    one, two = p.next_seq(), p.next_seq()
    since = len(p.seen)
    p.write(p.frame(wire.Door(open=False), two))
    nak = await p.wait_for(_nak(wire.NakReason.SEQ_GAP), 0.5, since=since)
    check(nak is not None, f"seq {two} ahead of {one} got no NAK(SEQ_GAP)")
    assert nak is not None and nak.frame is not None
    ref = _nak_of(nak).ref_seq
    check(ref == two, f"NAK(SEQ_GAP) names seq {ref}, expected {two}")
    check(not covers(nak.frame.ack, one), "the frame past the gap was acknowledged")
    # the missing frame fills the gap: the held one follows, one ACK covers both
    check(await p.send(wire.Door(open=False), seq=one) is not None, "the gap frame: no ACK")
    got = await p.wait_for(lambda s: s.frame is not None and covers(s.frame.ack, two), 1.0)
    check(got is not None or covers(_last_ack(p), two), f"seq {two} held past the gap was lost")
    return f"in order, duplicate re-acknowledged, gap NAK(SEQ_GAP {two}) then filled"


async def case_sequence_wrap(ctx: Context) -> str:
    p = ctx.probe
    check(await p.handshake(), "no handshake for a new session")  # seq from 1
    burst = 128
    start = p.clock.monotonic()
    # numbers 1 .. 65533 in windows of 128, each window acknowledged before the next
    while p.tx_seq < SEQ_MAX - 2:
        count = min(burst, SEQ_MAX - 2 - p.tx_seq)
        frames = [p.frame(wire.Door(open=False), p.next_seq()) for _ in range(count)]
        last = p.tx_seq
        since = len(p.seen)
        p.write(b"".join(frames))
        got = await p.wait_for(_acks(last), 5.0, since=since)
        if got is None:
            raise CaseFailed(f"seq {last} not acknowledged within 5 s (last ack {_last_ack(p)})")
    # 65534, 65535, then across the wrap: 2 before 1 is a gap, 1 fills it
    for _ in range(2):
        seq = p.next_seq()
        check(await p.send(wire.Door(open=False), seq=seq) is not None, f"seq {seq}: no ACK")
    check(p.tx_seq == SEQ_MAX, f"at {p.tx_seq}")
    one, two = p.next_seq(), p.next_seq()
    check((one, two) == (1, 2), f"the numbers after 65535 are {one}, {two}")
    since = len(p.seen)
    p.write(p.frame(wire.Door(open=False), two))
    nak = await p.wait_for(_nak(wire.NakReason.SEQ_GAP), 0.5, since=since)
    check(nak is not None and _nak_of(nak).ref_seq == 2, "seq 2 after 65535 got no NAK(SEQ_GAP 2)")
    check(await p.send(wire.Door(open=False), seq=one) is not None, "seq 1 after 65535: no ACK")
    got = await p.wait_for(lambda s: s.frame is not None and s.frame.ack == 2, 1.0)
    check(got is not None or _last_ack(p) == 2, f"ack after the wrap is {_last_ack(p)}, not 2")
    # a duplicate from before the wrap is re-acknowledged, not a gap
    since = len(p.seen)
    p.write(p.frame(wire.Door(open=False), SEQ_MAX))
    await asyncio.sleep(0.2)
    check(not p.naks_since(since), f"seq 65535 again after the wrap got {p.naks_since(since)}")
    # and a command after the wrap is carried out
    check(await p.send(wire.Door(open=True)) is not None, "DOOR(open) after the wrap: no ACK")
    await expect_telemetry(
        ctx,
        lambda t: t.door in (wire.DoorState.OPENING, wire.DoorState.OPEN),
        1.0,
        "the door opening after a DOOR(open) sent past the wrap",
    )
    await deliver(ctx, wire.Door(open=False), "DOOR(close)")
    await expect_telemetry(ctx, lambda t: t.door is wire.DoorState.CLOSED, 15.0, "door closed")
    return f"65,535 frames and across the wrap in {p.clock.monotonic() - start:.1f} s"


def _acks(seq: int) -> Callable[[Seen], bool]:
    return lambda s: s.frame is not None and covers(s.frame.ack, seq)


def _nak(reason: wire.NakReason) -> Callable[[Seen], bool]:
    return lambda s: (
        s.frame is not None
        and isinstance(s.frame.message, wire.Nak)
        and s.frame.message.reason is reason
    )


def _nak_of(s: Seen) -> wire.Nak:
    assert s.frame is not None and isinstance(s.frame.message, wire.Nak)
    return s.frame.message


def _last_ack(p: Probe) -> int:
    for s in reversed(p.seen):
        if s.frame is not None:
            return s.frame.ack
    return 0


async def refused(ctx: Context, type_code: int, payload: bytes, reason: wire.NakReason) -> None:
    """A sequenced frame the VCU must refuse for good with NAK(reason, seq): the first copy
    may be answered NAK(CRC) (a frame may pass CRC-16 damaged), the copy after must be
    refused; its number is consumed: the next frame is taken."""
    p = ctx.probe
    seq = p.next_seq()
    data = p.raw(type_code, payload, seq)
    name = f"type 0x{type_code:02x} payload {payload.hex() or '(empty)'}"
    for _copy in range(4):
        await asyncio.sleep(NAK_GAP_S)  # a NAK(CRC) may be rate-limited: one per 12.5 ms
        since = len(p.seen)
        p.write(data)
        nak = await p.wait_for(
            lambda s: s.frame is not None and isinstance(s.frame.message, wire.Nak),
            0.5,
            since=since,
        )
        if nak is None:
            continue
        got = _nak_of(nak)
        if got.reason is reason:
            check(got.ref_seq == seq, f"{name}: NAK({reason.name}) names {got.ref_seq}, not {seq}")
            break
        check(
            got.reason is wire.NakReason.CRC,
            f"{name}: NAK({got.reason.name}), expected {reason.name}",
        )
    else:
        raise CaseFailed(f"{name}: four copies, never NAK({reason.name}, {seq})")
    check(
        await p.send(wire.Door(open=False)) is not None,
        f"after {name} was refused, the next frame was not taken (its number not consumed?)",
    )


async def case_nak_unknown_type(ctx: Context) -> str:
    p = ctx.probe
    await refused(ctx, 0x7E, b"\x01\x02", wire.NakReason.UNKNOWN_TYPE)
    since = len(p.seen)
    p.write(p.raw(0x7F, b"\x01", 0))  # unsequenced and unknown: ignored
    await asyncio.sleep(0.2)
    bad = [n for n in p.naks_since(since) if n.reason is not wire.NakReason.CRC]
    check(not bad, f"an unsequenced unknown type got {bad}")
    return "NAK(UNKNOWN_TYPE, seq) and the number consumed; unsequenced ignored"


def _segment(mission: int, count: int, wps: int, flags: int = 0, lat: int = 411_500_000) -> bytes:
    head = struct.pack("<IIHHBB", mission, 0, 100, 0, flags, count)
    return head + struct.pack("<ii", -86_100_000, lat) * wps


BAD_PAYLOADS: tuple[tuple[str, int, bytes], ...] = (
    ("STOP mode 2", 0x11, b"\x02"),
    ("STOP of 2 bytes", 0x11, b"\x00\x00"),
    ("RESUME of 1 byte", 0x13, b"\x01"),
    ("DOOR open=2", 0x14, b"\x02"),
    ("DOOR of 0 bytes", 0x14, b""),
    ("CHARGE target 10001", 0x15, struct.pack("<HH", 10001, 0)),
    ("CHARGE of 3 bytes", 0x15, b"\x10\x27\x00"),
    ("DRIVE_SEGMENT count 0", 0x10, _segment(7, 0, 0)),
    ("DRIVE_SEGMENT count 2 with 1 waypoint", 0x10, _segment(7, 2, 1)),
    ("DRIVE_SEGMENT flag bit 1", 0x10, _segment(7, 1, 1, flags=0x02)),
    ("DRIVE_SEGMENT lat 90.0000001°", 0x10, _segment(7, 1, 1, lat=900_000_001)),
    ("DRIVE_SEGMENT of 13 bytes", 0x10, _segment(7, 1, 0)[:13]),
)


async def case_nak_bad_payload(ctx: Context) -> str:
    for name, type_code, payload in BAD_PAYLOADS:
        try:
            await refused(ctx, type_code, payload, wire.NakReason.BAD_PAYLOAD)
        except CaseFailed as exc:
            raise CaseFailed(f"{name}: {exc}") from None
    t = await current(ctx)
    check(t.speed_cmps == 0 and t.door is wire.DoorState.CLOSED, f"after refusals: {describe(t)}")
    return f"{len(BAD_PAYLOADS)} out-of-range payloads refused NAK(BAD_PAYLOAD) (docs table)"


async def case_ack_time(ctx: Context) -> str:
    p = ctx.probe
    delays: list[float] = []
    for _ in range(20):
        delay = await p.send(wire.Door(open=False), resend_s=1.0)
        check(delay is not None, "a DOOR(close) was not acknowledged within 1 s")
        assert delay is not None
        delays.append(delay)
        await asyncio.sleep(0.02)
    p50, worst = statistics.median(delays), max(delays)
    check(p50 <= ACK_P50_S, f"median ACK {p50 * 1000:.1f} ms, at most {ACK_P50_S * 1000:.0f} ms")
    check(worst <= ACK_MAX_S, f"an ACK took {worst * 1000:.1f} ms, at most {ACK_MAX_S * 1000:.0f}")
    return f"ACK p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms (20 frames)"


async def case_mission(ctx: Context) -> str:
    p = ctx.probe
    t = await current(ctx)
    check(t.speed_cmps == 0, f"not standing: {describe(t)}")
    cap = 400
    points = [ahead(t, d) for d in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)]
    mission = ctx.new_mission()
    first = wire.DriveSegment(mission, 0, cap, 0, False, tuple(points[:4]))
    second = wire.DriveSegment(mission, 4, cap, 1, True, tuple(points[4:]))
    start = len(p.seen)
    await deliver(ctx, first, "segment 0..3")
    await deliver(ctx, second, "segment 4..5")
    await deliver(ctx, first, "a duplicate of segment 0..3")  # held already: ignored
    faults_before = len(p.faults)
    await deliver(ctx, wire.DriveSegment(mission, 10, cap, 0, False, (points[5],)), "a gap")
    got = await p.wait_for(lambda s: len(p.faults) > faults_before, 1.0)
    gap = [f for f in p.faults[faults_before:] if f.code is wire.FaultCode.SEGMENT_GAP]
    check(got is not None and bool(gap), "a segment past a gap got no FAULT_REPORT SEGMENT_GAP")
    check(gap[0].arg == 6, f"SEGMENT_GAP arg {gap[0].arg}, expected 6 (the next first_wp)")
    t = await expect_telemetry(
        ctx, lambda x: x.mission_id == mission and x.wp_queued == 6, 1.0, "wp_queued 6"
    )
    # STOP(HOLD) on the way: PAUSED and standing, the mission kept; RESUME goes on
    await expect_telemetry(
        ctx, lambda x: x.last_wp != wire.WP_NONE and x.last_wp >= 1, 15.0, "wp 1"
    )
    await deliver(ctx, wire.Stop(wire.StopMode.HOLD), "STOP(HOLD)")
    await expect_telemetry(ctx, lambda x: x.drive_state is DriveState.PAUSED, 0.5, "PAUSED")
    await expect_telemetry(ctx, lambda x: x.speed_cmps == 0, 6.0, "standing after STOP(HOLD)")
    paused = await current(ctx)
    check(paused.mission_id == mission and paused.wp_queued == 6, f"paused: {describe(paused)}")
    await deliver(ctx, wire.Resume(paused.estop_id), "RESUME")
    end = await expect_telemetry(
        ctx,
        lambda x: x.last_wp == 5 and x.speed_cmps == 0,
        25.0,
        "standing at waypoint 5, the end of the mission",
    )
    check(distance_m(end, points[5]) <= 1.0, f"stopped {distance_m(end, points[5]):.2f} m off")
    await expect_telemetry(ctx, lambda x: x.drive_state is DriveState.HOLDING, 3.0, "HOLDING")
    seen = [x for _, x in p.telemetry_since(start) if x.mission_id == mission]
    top = max(x.speed_cmps for x in seen)
    check(top <= cap + 5, f"drove at {top / 100:.2f} m/s, the cap is {cap / 100:.2f}")
    wps = [x.last_wp for x in seen if x.last_wp != wire.WP_NONE]
    check(wps == sorted(wps), "last_wp went backwards")
    check(
        any(x.drive_state is DriveState.DWELLING for x in seen),
        "never DWELLING at the stop point (dwell 1 s)",
    )
    await deliver(ctx, wire.Stop(wire.StopMode.ABORT), "STOP(ABORT)")
    await expect_telemetry(
        ctx,
        lambda x: x.mission_id == 0 and x.wp_queued == 0 and x.drive_state is DriveState.IDLE,
        2.0,
        "IDLE with no mission after STOP(ABORT)",
    )
    return f"6 waypoints driven, top {top / 100:.2f} m/s, STOP(HOLD)/RESUME, gap reported"


async def case_estop(ctx: Context) -> str:
    p = ctx.probe
    moving = await drive_off(ctx, 300, 200.0)
    estop_id = p.emergency_stop()
    sent = p.clock.monotonic()
    ack = await p.wait_for(_estop_ack(estop_id), 0.1)
    copies = 1
    while ack is None and p.clock.monotonic() - sent < 1.0:
        p.emergency_stop(estop_id)  # repeated every 20 ms until acknowledged
        copies += 1
        ack = await p.wait_for(_estop_ack(estop_id), 0.02)
    check(ack is not None, "no ESTOP_ACK within 1 s")
    assert ack is not None
    ack_ms = (ack.at - sent) * 1000
    await expect_telemetry(ctx, _latched(estop_id), 0.5, f"ESTOP_LATCHED + ESTOPPED, id {estop_id}")
    v = moving.speed_cmps / 100
    await expect_telemetry(
        ctx, lambda x: x.speed_cmps == 0, v / MIN_EMERGENCY_DECEL_MPS2 + SLACK_S, "standing"
    )
    # a repeat is acknowledged again
    p.emergency_stop(estop_id)
    check(await p.wait_for(_estop_ack(estop_id), 0.5) is not None, "a repeat got no ESTOP_ACK")
    # RESUME naming another id leaves the latch alone; naming it releases it
    await deliver(ctx, wire.Resume((estop_id % 0xFFFF) + 1), "RESUME(wrong id)")
    await asyncio.sleep(0.5)
    t = await current(ctx)
    check(_latched(estop_id)(t) and t.speed_cmps == 0, f"RESUME(wrong id) released: {describe(t)}")
    await deliver(ctx, wire.Resume(estop_id), "RESUME(id)")
    await expect_telemetry(
        ctx,
        lambda x: (
            not x.fault_bits & FaultBit.ESTOP_LATCHED and x.drive_state is not DriveState.ESTOPPED
        ),
        0.5,
        "the latch released by RESUME naming its id",
    )
    await stand_still(ctx)
    copies_said = "1 copy" if copies == 1 else f"{copies} copies"
    return f"ESTOP_ACK in {ack_ms:.1f} ms ({copies_said}), latched, released by RESUME(id)"


def _estop_ack(estop_id: int) -> Callable[[Seen], bool]:
    return lambda s: (
        s.frame is not None
        and isinstance(s.frame.message, wire.EstopAck)
        and s.frame.message.estop_id == estop_id
    )


def _latched(estop_id: int) -> Callable[[wire.Telemetry], bool]:
    return lambda t: (
        bool(t.fault_bits & FaultBit.ESTOP_LATCHED)
        and t.drive_state is DriveState.ESTOPPED
        and t.estop_id == estop_id
    )


async def case_estop_without_session(ctx: Context) -> str:
    p = ctx.probe
    p.muted = True  # the VCU loses us: no session any more
    await expect_telemetry(
        ctx,
        lambda t: bool(t.fault_bits & FaultBit.LINK_LOST),
        PEER_TIMEOUT_S + SLACK_S + 0.5,
        "LINK_LOST after 1 s of silence",
    )
    p.muted = False
    p.heartbeats = p.answer_hellos = False
    try:
        estop_id = p.emergency_stop()  # no HELLO, no heartbeat: only the e-stop
        ack = await p.wait_for(_estop_ack(estop_id), 0.5)
        check(ack is not None, "an EMERGENCY_STOP without a session got no ESTOP_ACK")
        await expect_telemetry(ctx, _latched(estop_id), 0.5, "ESTOP_LATCHED without a session")
    finally:
        p.heartbeats = p.answer_hellos = True
    check(await p.handshake(), "no handshake afterwards")
    await deliver(ctx, wire.Resume(estop_id), "RESUME(id)")
    await expect_telemetry(
        ctx, lambda t: not t.fault_bits & FaultBit.ESTOP_LATCHED, 1.0, "the latch released"
    )
    await stand_still(ctx)
    return "obeyed and acknowledged without a session; released after a new handshake"


async def case_heartbeat_loss(ctx: Context) -> str:
    p = ctx.probe
    moving = await drive_off(ctx, 300, 300.0)
    v = moving.speed_cmps / 100
    faults = len(p.faults)
    muted_at = p.clock.monotonic()
    p.muted = True
    try:
        lost = await expect_telemetry(
            ctx,
            lambda t: bool(t.fault_bits & FaultBit.LINK_LOST),
            PEER_TIMEOUT_S + SLACK_S,
            "LINK_LOST within 1 s of silence",
        )
        lost_at = p.clock.monotonic()
        check(lost_at - muted_at >= PEER_TIMEOUT_S * 0.8, "LINK_LOST before 1 s of silence")
        stop_s = wire.LINK_LOSS_DRIVE_S + v / MIN_SERVICE_DECEL_MPS2 + SLACK_S + 0.5
        held = await expect_telemetry(
            ctx,
            lambda t: (
                t.speed_cmps == 0
                and t.drive_state is DriveState.HOLDING
                and bool(t.fault_bits & FaultBit.LINK_LOST)
            ),
            stop_s,
            "standing, HOLDING with LINK_LOST (5 s / 50 m without the bridge, then a stop)",
        )
        stopped_s = p.clock.monotonic() - lost_at
        driven_m = held.odometer_m - lost.odometer_m
        allowed_m = wire.LINK_LOSS_DRIVE_M + v * v / (2 * MIN_SERVICE_DECEL_MPS2) + 1.0
        check(driven_m <= allowed_m, f"drove {driven_m} m after LINK_LOST, at most {allowed_m:.0f}")
        await asyncio.sleep(1.0)
        t = await current(ctx)
        check(t.speed_cmps == 0 and t.drive_state is DriveState.HOLDING, f"not held: {describe(t)}")
    finally:
        p.muted = False
    # the link comes back (the probe answers the VCU's HELLO): still holding, until RESUME
    await expect_telemetry(
        ctx, lambda x: not x.fault_bits & FaultBit.LINK_LOST, 3.0, "LINK_LOST cleared"
    )
    back = len(p.seen)
    await asyncio.sleep(1.0)
    after = [x for _, x in p.telemetry_since(back)]
    check(
        bool(after)
        and all(x.speed_cmps == 0 and x.drive_state is DriveState.HOLDING for x in after),
        f"moved or left HOLDING before a RESUME: {describe(after[-1] if after else None)}",
    )
    codes = {f.code for f in p.faults[faults:]}
    check(wire.FaultCode.LINK_LOST in codes, "no FAULT_REPORT LINK_LOST once the link was back")
    check(wire.FaultCode.LINK_RESTORED in codes, "no FAULT_REPORT LINK_RESTORED")
    await deliver(ctx, wire.Resume(after[-1].estop_id), "RESUME")
    await expect_telemetry(ctx, lambda x: x.speed_cmps > 0, 5.0, "driving on after RESUME")
    await stand_still(ctx)
    return f"LINK_LOST, stopped {stopped_s:.1f} s / {driven_m} m later, held until RESUME"


async def case_estop_latch_reset(ctx: Context) -> str:
    p = ctx.probe
    if ctx.reset is None:
        raise CaseSkipped("no --reset-command given: the latch across a reset was not tested")
    estop_id = p.emergency_stop()
    check(await p.wait_for(_estop_ack(estop_id), 1.0) is not None, "no ESTOP_ACK")
    await expect_telemetry(ctx, _latched(estop_id), 0.5, "latched before the reset")
    old = p.vcu_session
    await ctx.reset()
    got = await p.wait_for(
        lambda s: (
            s.frame is not None
            and isinstance(s.frame.message, wire.Hello)
            and s.frame.message.session != old
        ),
        RESET_WAIT_S,
    )
    check(got is not None, f"no HELLO of a new VCU session within {RESET_WAIT_S:.0f} s")
    first = await expect_telemetry(ctx, lambda t: True, 2.0, "TELEMETRY after the reset")
    check(_latched(estop_id)(first), f"first TELEMETRY after the reset: {describe(first)}")
    check(await p.handshake(), "no handshake after the reset")
    await deliver(ctx, wire.Resume((estop_id % 0xFFFF) + 1), "RESUME(wrong id)")
    await asyncio.sleep(0.5)
    t = await current(ctx)
    check(_latched(estop_id)(t), f"RESUME(wrong id) after the reset released: {describe(t)}")
    await deliver(ctx, wire.Resume(estop_id), "RESUME(id)")
    await expect_telemetry(
        ctx, lambda x: not x.fault_bits & FaultBit.ESTOP_LATCHED, 1.0, "released by RESUME(id)"
    )
    await stand_still(ctx)
    return f"e-stop {estop_id} still latched after the reset, released only by RESUME({estop_id})"


async def case_version_mismatch(ctx: Context) -> str:
    p = ctx.probe
    p.muted = True  # let the VCU drop our session first
    await asyncio.sleep(PEER_TIMEOUT_S + 0.3)
    p.muted = False
    p.heartbeats = p.answer_hellos = False
    bad = secrets.randbits(32) or 1
    since = len(p.seen)
    try:
        for _ in range(5):
            p.write(p.hello(session=bad, version_min=2, version_max=3))
            await asyncio.sleep(0.2)
        door = p.frame(wire.Door(open=True), 1)
        p.write(door)
        await asyncio.sleep(0.5)
    finally:
        p.heartbeats = p.answer_hellos = True
    naks = p.naks_since(since)
    check(
        any(n.reason is wire.NakReason.BAD_VERSION for n in naks),
        f"HELLO with versions 2..3 got no NAK(BAD_VERSION) (got {naks})",
    )
    echoed = [
        s
        for s in p.seen[since:]
        if s.frame is not None
        and isinstance(s.frame.message, wire.Hello)
        and s.frame.message.peer_session == bad
    ]
    check(not echoed, "the VCU echoed the session of a HELLO of another version: link up")
    acked = [s for s in p.seen[since:] if s.frame is not None and covers(s.frame.ack, 1)]
    check(not acked, "a sequenced frame was acknowledged without a version-1 session")
    t = await current(ctx)
    check(t.door is wire.DoorState.CLOSED, f"DOOR(open) obeyed without a session: {t.door.name}")
    check(await p.handshake(), "no handshake with version 1 afterwards")
    return "NAK(BAD_VERSION), no echo, nothing taken; a version-1 HELLO then works"


async def case_clean_frames(ctx: Context) -> str:
    p = ctx.probe
    bad = [s.fault for s in p.seen if s.fault is not None]
    check(not bad, f"{len(bad)} frames from the VCU did not decode, first: {bad[0] if bad else ''}")
    frames = sum(s.frame is not None for s in p.seen)
    return f"{frames} frames from the VCU, all well-formed"


CASES: tuple[tuple[str, Case], ...] = (
    ("handshake", case_handshake),
    ("telemetry_rate", case_telemetry_rate),
    ("framing", case_framing),
    ("crc", case_crc),
    ("sequence", case_sequence),
    ("nak_unknown_type", case_nak_unknown_type),
    ("nak_bad_payload", case_nak_bad_payload),
    ("ack_time", case_ack_time),
    ("mission", case_mission),
    ("estop", case_estop),
    ("estop_without_session", case_estop_without_session),
    ("heartbeat_loss", case_heartbeat_loss),
    ("estop_latch_reset", case_estop_latch_reset),
    ("version_mismatch", case_version_mismatch),
    ("sequence_wrap", case_sequence_wrap),
    ("clean_frames", case_clean_frames),
)
CASE_NAMES = tuple(name for name, _ in CASES)


async def run_vcu_conformance(
    opener: Opener,
    *,
    reset: Reset | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    clock: Clock | None = None,
    on_result: Callable[[CaseResult], None] | None = None,
) -> Report:
    """Run the cases (``only`` some, ``skip`` some) against the VCU behind ``opener``.

    The handshake always runs first: every other case needs it (if it fails, they fail)."""
    unknown = [n for n in (*only, *skip) if n not in CASE_NAMES]
    if unknown:
        raise ValueError(f"unknown case(s) {', '.join(unknown)}; cases: {', '.join(CASE_NAMES)}")
    clock = clock or WallClock()
    results: list[CaseResult] = []
    async with Probe(opener, clock) as probe:
        ctx = Context(probe, reset)
        up = False
        for name, case in CASES:
            chosen = name == "handshake" or not only or name in only
            start = time.monotonic()
            if name in skip and name != "handshake":
                result = CaseResult(name, Status.SKIP, "skipped on request (--skip)", 0.0)
            elif not chosen:
                continue
            elif name != "handshake" and not up:
                result = CaseResult(name, Status.FAIL, "not run: the handshake failed", 0.0)
            else:
                try:
                    detail = await asyncio.wait_for(case(ctx), timeout=120.0)
                    result = CaseResult(name, Status.PASS, detail, time.monotonic() - start)
                except CaseFailed as exc:
                    result = CaseResult(name, Status.FAIL, str(exc), time.monotonic() - start)
                except CaseSkipped as exc:
                    result = CaseResult(name, Status.SKIP, str(exc), time.monotonic() - start)
                except TimeoutError:
                    result = CaseResult(name, Status.FAIL, "took over 120 s", 120.0)
                if result.status is Status.FAIL and name != "handshake":
                    await _recover(ctx)
            if name == "handshake":
                up = result.status is Status.PASS
            results.append(result)
            if on_result is not None:
                on_result(result)
    return Report(tuple(results))


async def _recover(ctx: Context) -> None:
    """After a failed case: try to leave the VCU as the next case expects it."""
    p = ctx.probe
    p.muted = False
    p.heartbeats = p.answer_hellos = True
    with contextlib.suppress(TimeoutError, CaseFailed):
        await asyncio.wait_for(_recover_steps(ctx), 20.0)


async def _recover_steps(ctx: Context) -> None:
    await ctx.probe.handshake()
    await stand_still(ctx)
