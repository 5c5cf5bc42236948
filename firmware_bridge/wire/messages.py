"""Serial message types and their little-endian fixed payload layouts (``docs/serial.md``).

Each message is a frozen dataclass that knows its type byte, whether it travels in the
sequenced (acknowledged) stream, and how to pack and unpack its payload with :mod:`struct`.
Pure code: no I/O, no clock.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from itertools import starmap
from typing import ClassVar, Self, TypeVar

from firmware_bridge.errors import WireError

PROTOCOL_VERSION = 1

# What every VCU must keep to (docs/serial.md, "Obligations of a VCU"):
TELEMETRY_MIN_HZ = 10.0  # TELEMETRY at least this often, whatever else happens
# After the VCU declares the bridge lost it drives on for at most this long and this far
# (whichever comes first), then makes a minimal-risk stop at the next safe place and holds.
LINK_LOSS_DRIVE_S = 5.0
LINK_LOSS_DRIVE_M = 50.0

# Coordinates travel as signed 32-bit integers of 1e-7 degree (about 1.1 cm at the equator).
DEG_E7 = 10_000_000
LON_E7_MAX = 180 * DEG_E7
LAT_E7_MAX = 90 * DEG_E7
WP_NONE = 0xFFFF_FFFF  # "no waypoint reached yet" in Telemetry.last_wp


def to_e7(deg: float) -> int:
    """Degrees to 1e-7 degree integer units, rounded to nearest."""
    return round(deg * DEG_E7)


def from_e7(units: int) -> float:
    return units / DEG_E7


class MsgType(IntEnum):
    HELLO = 0x01
    HEARTBEAT = 0x02
    ACK = 0x03
    NAK = 0x04
    ESTOP_ACK = 0x05
    DRIVE_SEGMENT = 0x10
    STOP = 0x11
    EMERGENCY_STOP = 0x12
    RESUME = 0x13
    DOOR = 0x14
    CHARGE = 0x15
    TELEMETRY = 0x20
    FAULT_REPORT = 0x21


class Role(IntEnum):
    BRIDGE = 1
    VCU = 2


class NakReason(IntEnum):
    """Why a receiver refused a frame. ``CRC`` and ``SEQ_GAP`` ask for a retransmission;
    the others reject the frame for good (retrying the same bytes cannot help)."""

    CRC = 1  # a frame arrived damaged (COBS, CRC or length): resend from header.ack + 1
    SEQ_GAP = 2  # ref_seq is ahead of the next expected: resend from header.ack + 1
    UNKNOWN_TYPE = 3  # ref_seq carried a type this side does not know
    BAD_PAYLOAD = 4  # ref_seq had a payload of the wrong length or out-of-range field
    BAD_VERSION = 5  # a frame carried a protocol version this side does not speak

    @property
    def asks_retransmit(self) -> bool:
        return self in (NakReason.CRC, NakReason.SEQ_GAP)


class StopMode(IntEnum):
    HOLD = 0  # controlled stop; the queued segments are kept and RESUME continues them
    ABORT = 1  # controlled stop; the mission and its queued segments are dropped


class DriveState(IntEnum):
    IDLE = 0  # no mission, standing
    DRIVING = 1
    DWELLING = 2  # standing at a stop point of the mission for its dwell time
    HOLDING = 3  # at the end of the queued segments, waiting for more
    PAUSED = 4  # stopped by STOP(HOLD)
    ESTOPPED = 5  # emergency stop latched
    FAULT = 6  # a fatal fault; needs a reboot


class DoorState(IntEnum):
    CLOSED = 0
    OPEN = 1
    OPENING = 2
    CLOSING = 3


class FaultBit(IntEnum):
    """Bits of ``fault_bits`` in TELEMETRY and FAULT_REPORT."""

    FATAL = 1 << 0  # internal fatal fault: the VCU refuses to drive until rebooted
    BATTERY_LOW = 1 << 1  # below 10 % state of charge
    BATTERY_EMPTY = 1 << 2  # no energy left: the van stopped
    ESTOP_LATCHED = 1 << 3
    LINK_LOST = 1 << 4  # the VCU lost the bridge's heartbeat
    DOOR_BLOCKED = 1 << 5  # a door command was refused (moving, or fault)
    SEGMENT_REJECTED = 1 << 6  # the last DRIVE_SEGMENT was refused (see FAULT_REPORT)
    CHARGING = 1 << 7  # status, not a fault: charging after a CHARGE, until its target


VENDOR_FAULT_MIN = 0x8000  # FAULT_REPORT codes 0x8000..0xFFFF belong to the VCU's vendor


class FaultCode(IntEnum):
    """FAULT_REPORT codes; ``arg`` carries the detail named here.

    Every u16 decodes, none is refused: a VCU must always be able to tell its faults.
    1..0x7FFF are this protocol's (the ones below; the rest reserved for later versions, and
    a receiver that does not know one takes it as ``UNKNOWN_0x....``, as it does 0);
    0x8000..0xFFFF are the vendor's own codes (``VENDOR_0x....``), meaning only what the
    vendor documents. What a fault means to the van is in its severity.
    """

    SEGMENT_GAP = 1  # arg = first_wp the VCU expected
    SEGMENT_MISSION = 2  # a non-initial segment for an unknown mission; arg = mission_id
    SEGMENT_REFUSED = 3  # refused in this state (fault, estop, empty battery); arg = drive state
    DOOR_REFUSED = 4  # door command while moving; arg = speed in cm/s
    BATTERY_EMPTY = 5  # arg = odometer in m
    FATAL = 6  # arg = vendor code
    LINK_LOST = 7  # arg = ms since the last frame from the bridge
    LINK_RESTORED = 8  # arg = ms the link was lost
    CHARGE_REFUSED = 9  # CHARGE while moving or faulted; arg = drive state

    @classmethod
    def _missing_(cls, value: object) -> FaultCode | None:
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            return None
        kind = "VENDOR" if value >= VENDOR_FAULT_MIN else "UNKNOWN"
        return _pseudo_member(cls, value, f"{kind}_0x{value:04X}")

    @property
    def is_vendor(self) -> bool:
        """A code of the VCU vendor's own range (0x8000..0xFFFF)."""
        return self.value >= VENDOR_FAULT_MIN

    @property
    def is_listed(self) -> bool:
        """A code this protocol version defines."""
        return self.name in FaultCode.__members__


class Severity(IntEnum):
    """FAULT_REPORT severity. 4..255 are reserved; a receiver takes them as at least FATAL
    (they decode as ``SEVERITY_n`` and compare above FATAL), never refuses them."""

    INFO = 0
    WARNING = 1
    ERROR = 2
    FATAL = 3

    @classmethod
    def _missing_(cls, value: object) -> Severity | None:
        if not isinstance(value, int) or not 0 <= value <= 0xFF:
            return None
        return _pseudo_member(cls, value, f"SEVERITY_{value}")


_IE = TypeVar("_IE", bound=IntEnum)


def _pseudo_member(cls: type[_IE], value: int, name: str) -> _IE:
    """A member of ``cls`` for a value it does not list (an int like the others, with a
    name that says what it is), so such values travel and compare like listed ones."""
    member = int.__new__(cls, value)
    member._name_ = name
    member._value_ = value
    return member


_E = TypeVar("_E", bound=IntEnum)


def _enum(kind: type[_E], value: int, where: str) -> _E:
    try:
        return kind(value)
    except ValueError as exc:
        raise WireError(f"{where}: {value} is not a valid {kind.__name__}") from exc


def _check_len(name: str, data: bytes, expected: int) -> None:
    if len(data) != expected:
        raise WireError(f"{name} payload is {len(data)} bytes, expected {expected}")


def _check_lonlat(where: str, lon_e7: int, lat_e7: int) -> None:
    if not -LON_E7_MAX <= lon_e7 <= LON_E7_MAX:
        raise WireError(f"{where}: lon_e7 {lon_e7} outside ±{LON_E7_MAX}")
    if not -LAT_E7_MAX <= lat_e7 <= LAT_E7_MAX:
        raise WireError(f"{where}: lat_e7 {lat_e7} outside ±{LAT_E7_MAX}")


def _pack(st: struct.Struct, name: str, *values: int) -> bytes:
    try:
        return st.pack(*values)
    except struct.error as exc:
        raise WireError(
            f"{name}: a field is out of range for its layout {st.format}: {exc}"
        ) from exc


HELLO_FLAG_LINK_UP = 0x01


@dataclass(frozen=True, slots=True)
class Hello:
    """Handshake: each side announces its role, versions and session; see docs/serial.md."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    SEQUENCED: ClassVar[bool] = False
    _ST: ClassVar[struct.Struct] = struct.Struct("<BBBBIIH")

    role: Role
    version_min: int
    version_max: int
    session: int  # random, non-zero, new at every open of the port / boot
    peer_session: int  # the peer's session this side has seen (0: none yet)
    heartbeat_ms: int  # the sender's heartbeat interval
    link_up: bool = False  # the sender has seen the peer echo its session (needs no reply)

    def encode_payload(self) -> bytes:
        return _pack(
            self._ST,
            "HELLO",
            self.role,
            self.version_min,
            self.version_max,
            HELLO_FLAG_LINK_UP if self.link_up else 0,
            self.session,
            self.peer_session,
            self.heartbeat_ms,
        )

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("HELLO", data, cls._ST.size)
        role, vmin, vmax, flags, session, peer, hb = cls._ST.unpack(data)
        if session == 0:
            raise WireError("HELLO: session must be non-zero")
        if flags & ~HELLO_FLAG_LINK_UP:
            raise WireError(f"HELLO: unknown flag bits 0x{flags:02x}")
        role_ = _enum(Role, role, "HELLO.role")
        return cls(role_, vmin, vmax, session, peer, hb, bool(flags & HELLO_FLAG_LINK_UP))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    SEQUENCED: ClassVar[bool] = False
    _ST: ClassVar[struct.Struct] = struct.Struct("<I")

    uptime_ms: int

    def encode_payload(self) -> bytes:
        return _pack(self._ST, "HEARTBEAT", self.uptime_ms)

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("HEARTBEAT", data, cls._ST.size)
        return cls(*cls._ST.unpack(data))


@dataclass(frozen=True, slots=True)
class Ack:
    """A bare acknowledgement: the header's ``ack`` field says up to which sequence."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    SEQUENCED: ClassVar[bool] = False

    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("ACK", data, 0)
        return cls()


@dataclass(frozen=True, slots=True)
class Nak:
    TYPE: ClassVar[MsgType] = MsgType.NAK
    SEQUENCED: ClassVar[bool] = False
    _ST: ClassVar[struct.Struct] = struct.Struct("<BH")

    reason: NakReason
    ref_seq: int  # the frame concerned, 0 when unknown (damaged frame)

    def encode_payload(self) -> bytes:
        return _pack(self._ST, "NAK", self.reason, self.ref_seq)

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("NAK", data, cls._ST.size)
        reason, ref = cls._ST.unpack(data)
        return cls(_enum(NakReason, reason, "NAK.reason"), ref)


@dataclass(frozen=True, slots=True)
class EstopAck:
    TYPE: ClassVar[MsgType] = MsgType.ESTOP_ACK
    SEQUENCED: ClassVar[bool] = False
    _ST: ClassVar[struct.Struct] = struct.Struct("<H")

    estop_id: int

    def encode_payload(self) -> bytes:
        return _pack(self._ST, "ESTOP_ACK", self.estop_id)

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("ESTOP_ACK", data, cls._ST.size)
        return cls(*cls._ST.unpack(data))


SEGMENT_FLAG_STOP_AT_END = 0x01
MAX_WAYPOINTS = 29  # keeps the largest frame within MAX_BODY_BYTES

# One struct per waypoint count: head fields then every lon/lat as a flat run of i32, so a
# whole segment packs and unpacks in one C call (segments are the bulk of the link's traffic).
_starmap = starmap
_SEG_HEAD = struct.Struct("<IIHHBB")
_SEG_WP = struct.Struct("<ii")
_SEG_LAYOUTS: tuple[struct.Struct, ...] = tuple(
    struct.Struct(f"<IIHHBB{2 * n}i") for n in range(MAX_WAYPOINTS + 1)
)
_SEG_SIZES = tuple(layout.size for layout in _SEG_LAYOUTS)
_SEG_HEAD_SIZE = _SEG_HEAD.size
_SEG_HEAD_UNPACK_FROM = _SEG_HEAD.unpack_from
_SEG_WP_ITER_UNPACK = _SEG_WP.iter_unpack
_SEG_HEAD_PACK = _SEG_HEAD.pack
_SEG_WP_PACK = _SEG_WP.pack
# The top byte (little-endian byte 3) of an i32 whose value is certainly within ±LAT_E7_MAX
# (0x35A4E900): 0x00..0x34 and 0xCB..0xFF. A value with any other top byte is checked exactly.
_SAFE_TOP_BYTES = bytes(range(0x00, 0x35)) + bytes(range(0xCB, 0x100))
_FIRST_TOP_BYTE = _SEG_HEAD.size + 3  # offset of the first coordinate's top byte in a payload


def _waypoints_near_bounds(payload: bytes) -> bool:
    """The fast range test of a DRIVE_SEGMENT payload, in C: False when every coordinate's top
    byte is one of ``_SAFE_TOP_BYTES``, so every value is within the latitude bound (the
    tighter one) and both bounds hold; that is every waypoint between 88.9° W and 88.9° E.
    True: some value must be checked exactly (:func:`_check_waypoints`)."""
    return bool(payload[_FIRST_TOP_BYTE::4].translate(None, _SAFE_TOP_BYTES))


def _check_waypoints(where: str, payload: bytes, n: int) -> None:
    """Range-check the ``n`` packed waypoints of a DRIVE_SEGMENT payload exactly; name the
    first bad one."""
    coords = _SEG_LAYOUTS[n].unpack(payload)[6:]
    for i in range(n):
        _check_lonlat(f"{where} waypoint {i}", coords[2 * i], coords[2 * i + 1])


@dataclass(frozen=True, slots=True, init=False)
class DriveSegment:
    """Drive along ``waypoints`` (lon/lat in 1e-7 degree) at no more than ``speed_cap_cmps``.

    Waypoints are numbered across the whole mission: this segment holds waypoints
    ``first_wp .. first_wp + len(waypoints) - 1``. The VCU appends a segment only when
    ``first_wp`` is the next number it expects, ignores one it already holds, and reports a gap.

    Frozen like every message; its ``__init__`` is written out (setting the slots through
    their descriptors) because the generated frozen one, with an ``object.__setattr__`` per
    field, costs more than the whole rest of decoding a segment, the link's bulk traffic.
    """

    TYPE: ClassVar[MsgType] = MsgType.DRIVE_SEGMENT
    SEQUENCED: ClassVar[bool] = True
    _ST: ClassVar[struct.Struct] = _SEG_HEAD
    _WP: ClassVar[struct.Struct] = _SEG_WP

    mission_id: int
    first_wp: int
    speed_cap_cmps: int
    dwell_s: int  # standing time at the last waypoint when stop_at_end
    stop_at_end: bool
    waypoints: tuple[tuple[int, int], ...]

    def __init__(
        self,
        mission_id: int,
        first_wp: int,
        speed_cap_cmps: int,
        dwell_s: int,
        stop_at_end: bool,
        waypoints: tuple[tuple[int, int], ...],
    ) -> None:
        _set_mission_id(self, mission_id)
        _set_first_wp(self, first_wp)
        _set_speed_cap_cmps(self, speed_cap_cmps)
        _set_dwell_s(self, dwell_s)
        _set_stop_at_end(self, stop_at_end)
        _set_waypoints(self, waypoints)

    def encode_payload(self) -> bytes:
        wps = self.waypoints
        n = len(wps)
        if not 1 <= n <= MAX_WAYPOINTS:
            raise WireError(f"DRIVE_SEGMENT: {n} waypoints, expected 1..{MAX_WAYPOINTS}")
        try:
            # the head, then one C-level pack per pair (a waypoint that is not exactly two
            # ints fails); on any error the slow path below names what is wrong
            payload = _SEG_HEAD_PACK(
                self.mission_id,
                self.first_wp,
                self.speed_cap_cmps,
                self.dwell_s,
                SEGMENT_FLAG_STOP_AT_END if self.stop_at_end else 0,
                n,
            ) + b"".join(_starmap(_SEG_WP_PACK, wps))
        except (struct.error, TypeError):
            payload = self._encode_checked(n)
        if _waypoints_near_bounds(payload):
            _check_waypoints("DRIVE_SEGMENT", payload, n)
        return payload

    def _encode_checked(self, n: int) -> bytes:
        """Field by field, raising WireError naming the field that does not fit."""
        head = _pack(
            _SEG_HEAD,
            "DRIVE_SEGMENT",
            self.mission_id,
            self.first_wp,
            self.speed_cap_cmps,
            self.dwell_s,
            SEGMENT_FLAG_STOP_AT_END if self.stop_at_end else 0,
            n,
        )
        try:
            # one C-level pack per pair: a waypoint that is not exactly two ints is refused
            return head + b"".join(_starmap(_SEG_WP.pack, self.waypoints))
        except (struct.error, TypeError) as exc:
            raise WireError(
                f"DRIVE_SEGMENT: waypoints must be (lon_e7, lat_e7) pairs of 32-bit integers: {exc}"
            ) from exc

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        size = len(data)
        if size < _SEG_HEAD_SIZE:
            raise WireError(f"DRIVE_SEGMENT payload is {size} bytes, expected ≥ {_SEG_HEAD_SIZE}")
        mission, first, cap, dwell, flags, n = _SEG_HEAD_UNPACK_FROM(data)
        if not 1 <= n <= MAX_WAYPOINTS:
            raise WireError(f"DRIVE_SEGMENT: count {n}, expected 1..{MAX_WAYPOINTS}")
        if size != _SEG_SIZES[n]:
            raise WireError(f"DRIVE_SEGMENT payload is {size} bytes, expected {_SEG_SIZES[n]}")
        if flags & ~SEGMENT_FLAG_STOP_AT_END:
            raise WireError(f"DRIVE_SEGMENT: unknown flag bits 0x{flags:02x}")
        if _waypoints_near_bounds(data):
            _check_waypoints("DRIVE_SEGMENT", data, n)
        wps = tuple(_SEG_WP_ITER_UNPACK(data[_SEG_HEAD_SIZE:]))
        return cls(mission, first, cap, dwell, flags == SEGMENT_FLAG_STOP_AT_END, wps)


def _slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The slot descriptor's ``__set__`` of ``cls.name`` (bypasses the frozen ``__setattr__``)."""
    setter: Callable[[object, object], None] = cls.__dict__[name].__set__
    return setter


_set_mission_id = _slot_setter(DriveSegment, "mission_id")
_set_first_wp = _slot_setter(DriveSegment, "first_wp")
_set_speed_cap_cmps = _slot_setter(DriveSegment, "speed_cap_cmps")
_set_dwell_s = _slot_setter(DriveSegment, "dwell_s")
_set_stop_at_end = _slot_setter(DriveSegment, "stop_at_end")
_set_waypoints = _slot_setter(DriveSegment, "waypoints")


@dataclass(frozen=True, slots=True)
class Stop:
    TYPE: ClassVar[MsgType] = MsgType.STOP
    SEQUENCED: ClassVar[bool] = True
    _ST: ClassVar[struct.Struct] = struct.Struct("<B")

    mode: StopMode

    def encode_payload(self) -> bytes:
        return _pack(self._ST, "STOP", self.mode)

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("STOP", data, cls._ST.size)
        return cls(_enum(StopMode, cls._ST.unpack(data)[0], "STOP.mode"))


@dataclass(frozen=True, slots=True)
class EmergencyStop:
    """Stop at maximum deceleration and latch. Unsequenced: it overtakes every queued frame and
    is repeated until an ESTOP_ACK with the same ``estop_id`` comes back."""

    TYPE: ClassVar[MsgType] = MsgType.EMERGENCY_STOP
    SEQUENCED: ClassVar[bool] = False
    _ST: ClassVar[struct.Struct] = struct.Struct("<HB")

    estop_id: int  # 1..65535, increasing (mod 2^16) per sender session
    reason: int  # free code for the log; 0 = commanded

    def encode_payload(self) -> bytes:
        return _pack(self._ST, "EMERGENCY_STOP", self.estop_id, self.reason)

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("EMERGENCY_STOP", data, cls._ST.size)
        return cls(*cls._ST.unpack(data))


@dataclass(frozen=True, slots=True)
class Resume:
    """Continue after STOP(HOLD) or an emergency stop. Clears an e-stop latch only when
    ``estop_id`` is the latched one (the sender had seen that e-stop before resuming)."""

    TYPE: ClassVar[MsgType] = MsgType.RESUME
    SEQUENCED: ClassVar[bool] = True
    _ST: ClassVar[struct.Struct] = struct.Struct("<H")

    estop_id: int  # the last e-stop the sender issued or saw; 0 = none

    def encode_payload(self) -> bytes:
        return _pack(self._ST, "RESUME", self.estop_id)

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("RESUME", data, cls._ST.size)
        return cls(*cls._ST.unpack(data))


@dataclass(frozen=True, slots=True)
class Door:
    TYPE: ClassVar[MsgType] = MsgType.DOOR
    SEQUENCED: ClassVar[bool] = True
    _ST: ClassVar[struct.Struct] = struct.Struct("<B")

    open: bool

    def encode_payload(self) -> bytes:
        return _pack(self._ST, "DOOR", 1 if self.open else 0)

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("DOOR", data, cls._ST.size)
        value = cls._ST.unpack(data)[0]
        if value not in (0, 1):
            raise WireError(f"DOOR.open: {value}, expected 0 (close) or 1 (open)")
        return cls(value == 1)


@dataclass(frozen=True, slots=True)
class Charge:
    """Charge while standing (at a depot's charger) until ``target_cpct``, drawing at most
    ``max_power_hw``; ``max_power_hw`` 0: the van's own limit. A target at or below the
    state of charge ends any charging at once."""

    TYPE: ClassVar[MsgType] = MsgType.CHARGE
    SEQUENCED: ClassVar[bool] = True
    _ST: ClassVar[struct.Struct] = struct.Struct("<HH")

    target_cpct: int  # state of charge to stop at, 0.01 % (0..10000)
    max_power_hw: int  # 0.1 kW; 0 = no limit beyond the van's

    def encode_payload(self) -> bytes:
        return _pack(self._ST, "CHARGE", self.target_cpct, self.max_power_hw)

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("CHARGE", data, cls._ST.size)
        target, power = cls._ST.unpack(data)
        if target > 10000:
            raise WireError(f"CHARGE.target_cpct {target} outside 0..10000")
        return cls(target, power)


@dataclass(frozen=True, slots=True)
class Telemetry:
    TYPE: ClassVar[MsgType] = MsgType.TELEMETRY
    SEQUENCED: ClassVar[bool] = False
    _ST: ClassVar[struct.Struct] = struct.Struct("<IiiHHHIIIIIBBHH")

    uptime_ms: int
    lon_e7: int
    lat_e7: int
    heading_cdeg: int  # 0..35999, clockwise from north, 0.01 degree
    speed_cmps: int
    soc_cpct: int  # battery state of charge, 0.01 % (0..10000)
    range_m: int  # remaining range on the battery
    odometer_m: int
    mission_id: int  # 0: none
    last_wp: int  # index of the last waypoint reached in the mission; WP_NONE: none yet
    wp_queued: int  # waypoints held for the mission = the next first_wp the VCU expects
    drive_state: DriveState
    door: DoorState
    fault_bits: int
    estop_id: int  # the latched (or last cleared) emergency stop id; 0: none

    def encode_payload(self) -> bytes:
        _check_lonlat("TELEMETRY", self.lon_e7, self.lat_e7)
        return _pack(
            self._ST,
            "TELEMETRY",
            self.uptime_ms,
            self.lon_e7,
            self.lat_e7,
            self.heading_cdeg,
            self.speed_cmps,
            self.soc_cpct,
            self.range_m,
            self.odometer_m,
            self.mission_id,
            self.last_wp,
            self.wp_queued,
            self.drive_state,
            self.door,
            self.fault_bits,
            self.estop_id,
        )

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("TELEMETRY", data, cls._ST.size)
        v = cls._ST.unpack(data)
        _check_lonlat("TELEMETRY", v[1], v[2])
        if v[3] >= 36000:
            raise WireError(f"TELEMETRY.heading_cdeg {v[3]} outside 0..35999")
        if v[5] > 10000:
            raise WireError(f"TELEMETRY.soc_cpct {v[5]} outside 0..10000")
        return cls(
            uptime_ms=v[0],
            lon_e7=v[1],
            lat_e7=v[2],
            heading_cdeg=v[3],
            speed_cmps=v[4],
            soc_cpct=v[5],
            range_m=v[6],
            odometer_m=v[7],
            mission_id=v[8],
            last_wp=v[9],
            wp_queued=v[10],
            drive_state=_enum(DriveState, v[11], "TELEMETRY.drive_state"),
            door=_enum(DoorState, v[12], "TELEMETRY.door"),
            fault_bits=v[13],
            estop_id=v[14],
        )

    @property
    def lon(self) -> float:
        return from_e7(self.lon_e7)

    @property
    def lat(self) -> float:
        return from_e7(self.lat_e7)


@dataclass(frozen=True, slots=True)
class FaultReport:
    TYPE: ClassVar[MsgType] = MsgType.FAULT_REPORT
    SEQUENCED: ClassVar[bool] = True
    _ST: ClassVar[struct.Struct] = struct.Struct("<HBHI")

    code: FaultCode
    severity: Severity
    fault_bits: int
    arg: int

    def encode_payload(self) -> bytes:
        return _pack(self._ST, "FAULT_REPORT", self.code, self.severity, self.fault_bits, self.arg)

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        _check_len("FAULT_REPORT", data, cls._ST.size)
        code, sev, bits, arg = cls._ST.unpack(data)
        return cls(
            _enum(FaultCode, code, "FAULT_REPORT.code"),
            _enum(Severity, sev, "FAULT_REPORT.severity"),
            bits,
            arg,
        )


Message = (
    Hello
    | Heartbeat
    | Ack
    | Nak
    | EstopAck
    | DriveSegment
    | Stop
    | EmergencyStop
    | Resume
    | Door
    | Charge
    | Telemetry
    | FaultReport
)

MESSAGE_CLASSES: dict[MsgType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Heartbeat,
        Ack,
        Nak,
        EstopAck,
        DriveSegment,
        Stop,
        EmergencyStop,
        Resume,
        Door,
        Charge,
        Telemetry,
        FaultReport,
    )
}
