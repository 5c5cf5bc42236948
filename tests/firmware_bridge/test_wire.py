"""The pure wire codec: round trips, corruption and truncation detection, resynchronisation."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from cobs import cobs
from fw_strategies import BY_TYPE, frames
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import wire
from firmware_bridge.errors import WireError
from firmware_bridge.wire.frame import HEADER, FaultKind
from firmware_bridge.wire.messages import LAT_E7_MAX, LON_E7_MAX

# One realistic instance of every message type, used by the exhaustive corruption tests.
SAMPLES: list[tuple[wire.Message, int, int]] = [
    (wire.Hello(wire.Role.BRIDGE, 1, 1, 0xDEADBEEF, 0x01020304, 250), 0, 0),
    (wire.Heartbeat(123_456), 0, 17),
    (wire.Ack(), 0, 42),
    (wire.Nak(wire.NakReason.SEQ_GAP, 44), 0, 42),
    (wire.EstopAck(7), 0, 3),
    (
        wire.DriveSegment(
            mission_id=9,
            first_wp=30,
            speed_cap_cmps=1389,
            dwell_s=90,
            stop_at_end=True,
            waypoints=tuple(
                (-86_100_000 + 1000 * i, 411_500_000 - 700 * i) for i in range(wire.MAX_WAYPOINTS)
            ),
        ),
        5,
        2,
    ),
    (wire.Stop(wire.StopMode.HOLD), 6, 2),
    (wire.EmergencyStop(8, 0), 0, 2),
    (wire.Resume(8), 7, 2),
    (wire.Door(open=True), 8, 2),
    (
        wire.Telemetry(
            uptime_ms=99_000,
            lon_e7=-86_100_000,
            lat_e7=411_500_000,
            heading_cdeg=27_000,
            speed_cmps=1250,
            soc_cpct=8_750,
            range_m=140_000,
            odometer_m=12_345_678,
            mission_id=9,
            last_wp=31,
            wp_queued=59,
            drive_state=wire.DriveState.DRIVING,
            door=wire.DoorState.CLOSED,
            fault_bits=0,
            estop_id=0,
        ),
        0,
        9,
    ),
    (wire.FaultReport(wire.FaultCode.SEGMENT_GAP, wire.Severity.WARNING, 0x40, 30), 3, 9),
    (wire.Charge(target_cpct=8000, max_power_hw=500), 9, 2),
]


def test_every_message_type_has_a_sample_and_a_strategy() -> None:
    assert {m.TYPE for m, _, _ in SAMPLES} == set(wire.MsgType)
    assert set(BY_TYPE) == set(wire.MsgType)


def test_crc_is_ccitt_false_with_its_published_check_value() -> None:
    assert wire.crc16_ccitt_false(b"123456789") == 0x29B1
    assert wire.crc16_ccitt_false(b"") == 0xFFFF


def test_documented_heartbeat_frame_bytes() -> None:
    # The worked example in docs/serial.md: HEARTBEAT uptime 1000 ms, ack 5.
    encoded = wire.encode_frame(wire.Heartbeat(1000), seq=0, ack=5)
    assert encoded.hex(" ") == "03 01 02 01 02 05 03 e8 03 01 03 63 53 00"


@given(frames())
def test_every_message_round_trips_through_a_frame(sample: tuple[wire.Message, int, int]) -> None:
    message, seq, ack = sample
    encoded = wire.encode_frame(message, seq=seq, ack=ack)
    assert encoded.endswith(b"\x00") and b"\x00" not in encoded[:-1]
    assert len(encoded) <= wire.MAX_WIRE_BYTES
    frame = wire.decode_frame(encoded)
    assert frame == wire.Frame(seq=seq, ack=ack, message=message)


@given(st.lists(frames(), min_size=1, max_size=8), st.data())
def test_a_stream_decodes_the_same_whatever_the_chunking(
    samples: list[tuple[wire.Message, int, int]], data: st.DataObject
) -> None:
    stream = b"".join(wire.encode_frame(m, seq=s, ack=a) for m, s, a in samples)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = wire.FrameDecoder()
    out: list[wire.Frame | wire.FrameFault] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[lo:hi])
    assert out == [wire.Frame(seq=s, ack=a, message=m) for m, s, a in samples]
    assert decoder.pending_bytes == 0


@given(frames(), st.binary(min_size=1, max_size=600), frames())
def test_garbage_between_frames_is_skipped_and_decoding_resumes(
    first: tuple[wire.Message, int, int],
    garbage: bytes,
    second: tuple[wire.Message, int, int],
) -> None:
    # Line noise ends at a delimiter (the link starts every burst with one).
    stream = (
        wire.encode_frame(first[0], seq=first[1], ack=first[2])
        + garbage
        + b"\x00"
        + wire.encode_frame(second[0], seq=second[1], ack=second[2])
    )
    out = wire.FrameDecoder().feed(stream)
    good = [r for r in out if isinstance(r, wire.Frame)]
    assert good[0] == wire.Frame(seq=first[1], ack=first[2], message=first[0])
    assert good[-1] == wire.Frame(seq=second[1], ack=second[2], message=second[0])
    assert all(isinstance(r, wire.FrameFault) for r in out[1:-1])


def test_an_oversize_run_is_one_fault_then_the_next_frame_decodes() -> None:
    good = wire.encode_frame(wire.Heartbeat(5), seq=0, ack=0)
    decoder = wire.FrameDecoder()
    out = decoder.feed(b"\x55" * 200)
    out += decoder.feed(b"\x55" * 200 + b"\x00" + good)
    assert len(out) == 2
    assert isinstance(out[0], wire.FrameFault) and out[0].kind is FaultKind.OVERSIZE
    assert out[0].size == 400
    assert out[1] == wire.Frame(seq=0, ack=0, message=wire.Heartbeat(5))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s[0].TYPE.name)
def test_every_single_byte_corruption_is_detected(sample: tuple[wire.Message, int, int]) -> None:
    message, seq, ack = sample
    encoded = wire.encode_frame(message, seq=seq, ack=ack)
    for pos in range(len(encoded)):
        for value in range(256):
            if value == encoded[pos]:
                continue
            damaged = encoded[:pos] + bytes([value]) + encoded[pos + 1 :]
            # A trailing delimiter closes whatever the damage left open.
            out = wire.FrameDecoder().feed(damaged + b"\x00")
            assert out, f"pos {pos} value {value:#04x}: nothing reported"
            assert not any(isinstance(r, wire.Frame) for r in out), (
                f"pos {pos} value {value:#04x} decoded as a frame: {out}"
            )


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s[0].TYPE.name)
def test_every_truncation_is_detected(sample: tuple[wire.Message, int, int]) -> None:
    message, seq, ack = sample
    encoded = wire.encode_frame(message, seq=seq, ack=ack)
    for cut in range(1, len(encoded) - 1):
        out = wire.FrameDecoder().feed(encoded[:cut] + b"\x00")
        assert len(out) == 1 and isinstance(out[0], wire.FrameFault), f"cut at {cut}: {out}"
        assert out[0].kind.damaged


def _raw_frame(version: int, type_code: int, seq: int, ack: int, payload: bytes) -> bytes:
    body = HEADER.pack(version, type_code, seq, ack) + payload
    body += wire.crc16_ccitt_false(body).to_bytes(2, "little")
    return bytes(cobs.encode(body)) + b"\x00"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (_raw_frame(2, 0x02, 0, 0, b"\x00" * 4), FaultKind.VERSION),
        (_raw_frame(1, 0x7F, 3, 0, b""), FaultKind.UNKNOWN_TYPE),
        (_raw_frame(1, 0x02, 0, 0, b"\x00" * 5), FaultKind.BAD_PAYLOAD),
        (_raw_frame(1, 0x14, 4, 0, b"\x02"), FaultKind.BAD_PAYLOAD),  # door value 2
        (_raw_frame(1, 0x10, 4, 0, b"\x00" * 14), FaultKind.BAD_PAYLOAD),  # 0 waypoints
        (_raw_frame(1, 0x14, 0, 0, b"\x01"), FaultKind.BAD_SEQ),  # sequenced type, seq 0
        (_raw_frame(1, 0x02, 9, 0, b"\x00" * 4), FaultKind.BAD_SEQ),  # heartbeat with seq
    ],
    ids=[
        "version",
        "unknown-type",
        "heartbeat-length",
        "door-value",
        "no-waypoints",
        "door-seq0",
        "hb-seq",
    ],
)
def test_a_well_checksummed_but_wrong_frame_is_a_named_fault_with_its_header(
    raw: bytes, kind: FaultKind
) -> None:
    (out,) = wire.FrameDecoder().feed(raw)
    assert isinstance(out, wire.FrameFault)
    assert out.kind is kind
    assert out.seq is not None  # the header was readable, so a NAK can name the frame


def test_a_bad_telemetry_field_is_named() -> None:
    good = SAMPLES[10][0]
    assert isinstance(good, wire.Telemetry)
    payload = bytearray(good.encode_payload())
    payload[12:14] = (36000).to_bytes(2, "little")  # heading_cdeg
    (out,) = wire.FrameDecoder().feed(_raw_frame(1, 0x20, 0, 0, bytes(payload)))
    assert isinstance(out, wire.FrameFault) and "heading_cdeg" in out.detail


def test_encoding_refuses_what_the_layout_cannot_hold() -> None:
    with pytest.raises(WireError, match="waypoints"):
        wire.encode_frame(wire.DriveSegment(1, 0, 100, 0, False, ()), seq=1, ack=0)
    with pytest.raises(WireError, match="lat_e7"):
        wire.encode_frame(wire.DriveSegment(1, 0, 100, 0, False, ((0, 910_000_000),)), seq=1, ack=0)
    with pytest.raises(WireError, match="seq"):
        wire.encode_frame(wire.Door(open=True), seq=0, ack=0)
    with pytest.raises(WireError, match="seq"):
        wire.encode_frame(wire.Heartbeat(1), seq=3, ack=0)
    with pytest.raises(WireError, match="HEARTBEAT"):
        wire.encode_frame(wire.Heartbeat(-1), seq=0, ack=0)


def test_coordinates_convert_to_1e7_degree_units() -> None:
    assert wire.to_e7(-8.6109900) == -86_109_900
    assert wire.from_e7(411_496_100) == pytest.approx(41.14961)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    decoder = wire.FrameDecoder()
    for r in decoder.feed(data) + decoder.feed(b"\x00"):
        assert isinstance(r, wire.Frame | wire.FrameFault)


# ---- the bulk paths: exact range checks, batch decoding ---------------------------------

I32 = st.integers(-(2**31), 2**31 - 1)
# values on and around both bounds, and around the top bytes 0x35 / 0xCA that the fast
# range check hands to the exact one
EDGES = st.sampled_from(
    [
        sign * v + d
        for v in (LAT_E7_MAX, LON_E7_MAX, 0x3500_0000, 0x3600_0000)
        for sign in (1, -1)
        for d in (-1, 0, 1)
    ]
)
COORD = st.one_of(I32, EDGES, st.integers(-LAT_E7_MAX, LAT_E7_MAX))


def _in_range(lon: int, lat: int) -> bool:
    return -LON_E7_MAX <= lon <= LON_E7_MAX and -LAT_E7_MAX <= lat <= LAT_E7_MAX


@settings(max_examples=400)
@given(st.lists(st.tuples(COORD, COORD), min_size=1, max_size=wire.MAX_WAYPOINTS))
def test_segment_coordinates_are_refused_exactly_when_out_of_range(
    waypoints: list[tuple[int, int]],
) -> None:
    segment = wire.DriveSegment(3, 0, 1000, 0, False, tuple(waypoints))
    bad = [i for i, (lon, lat) in enumerate(waypoints) if not _in_range(lon, lat)]
    # the encoder refuses what the decoder would refuse, naming the first bad waypoint
    if bad:
        with pytest.raises(WireError, match=f"waypoint {bad[0]}:"):
            segment.encode_payload()
    else:
        assert wire.DriveSegment.decode_payload(segment.encode_payload()) == segment
    # the decoder, given the same values packed raw
    n = len(waypoints)
    raw = struct.pack(f"<IIHHBB{2 * n}i", 3, 0, 1000, 0, 0, n, *(c for wp in waypoints for c in wp))
    if bad:
        with pytest.raises(WireError, match=f"waypoint {bad[0]}:"):
            wire.DriveSegment.decode_payload(raw)
    else:
        assert wire.DriveSegment.decode_payload(raw) == segment


def test_waypoints_that_are_not_pairs_are_refused() -> None:
    # (1,) + (2, 3, 4) would flatten to two pairs; the encoder must not pair them up anew
    odd = wire.DriveSegment(1, 0, 100, 0, False, ((1,), (2, 3, 4)))  # type: ignore[arg-type]
    with pytest.raises(WireError, match="pairs"):
        odd.encode_payload()


@settings(max_examples=100)
@given(st.lists(frames(), min_size=1, max_size=40), st.binary(max_size=30))
def test_the_raw_batch_decoder_agrees_with_the_frame_decoder(
    samples: list[tuple[wire.Message, int, int]], noise: bytes
) -> None:
    stream = noise + b"\x00" + b"".join(wire.encode_frame(m, seq=s, ack=a) for m, s, a in samples)
    frames_ = wire.FrameDecoder().feed(stream)
    raw = wire.FrameDecoder().feed_raw(stream)
    assert len(frames_) == len(raw)
    for f, r in zip(frames_, raw, strict=True):
        if isinstance(f, wire.Frame):
            assert r == (f.seq, f.ack, f.message)
        else:
            assert r == f
    good = [(f.message, f.seq, f.ack) for f in frames_ if isinstance(f, wire.Frame)]
    assert good[-len(samples) :] == samples


def test_a_damaged_frame_inside_a_batch_costs_only_that_frame() -> None:
    burst = [wire.encode_frame(wire.Resume(i), seq=i, ack=0) for i in range(1, 65)]
    damaged = bytearray(burst[30])
    damaged[4] ^= 0x40
    burst[30] = bytes(damaged)
    out = wire.FrameDecoder().feed(b"".join(burst))
    assert len(out) == 64
    assert isinstance(out[30], wire.FrameFault) and out[30].kind.damaged
    assert [f.seq for f in out if isinstance(f, wire.Frame)] == [i for i in range(1, 65) if i != 31]


def test_a_segment_is_a_frozen_value_like_every_message() -> None:
    seg = wire.DriveSegment(1, 2, 3, 4, True, ((5, 6),))
    same = wire.DriveSegment(
        mission_id=1, first_wp=2, speed_cap_cmps=3, dwell_s=4, stop_at_end=True, waypoints=((5, 6),)
    )
    assert seg == same and hash(seg) == hash(same)
    with pytest.raises(dataclasses.FrozenInstanceError):
        seg.first_wp = 9  # type: ignore[misc]
    assert dataclasses.replace(seg, first_wp=7) == wire.DriveSegment(1, 7, 3, 4, True, ((5, 6),))
    assert [f.name for f in dataclasses.fields(seg)] == [
        "mission_id",
        "first_wp",
        "speed_cap_cmps",
        "dwell_s",
        "stop_at_end",
        "waypoints",
    ]


@pytest.mark.parametrize(
    ("code", "name", "vendor"),
    [
        (0x8000, "VENDOR_0x8000", True),
        (0xBEEF, "VENDOR_0xBEEF", True),
        (0xFFFF, "VENDOR_0xFFFF", True),
        (0x002A, "UNKNOWN_0x002A", False),  # reserved for later versions of the protocol
        (0x0000, "UNKNOWN_0x0000", False),
        (0x0003, "SEGMENT_REFUSED", False),
    ],
)
def test_every_fault_code_decodes_and_says_whose_it_is(code: int, name: str, vendor: bool) -> None:
    """Issue 14 item 10: an unlisted fault code was refused for good (NAK BAD_PAYLOAD), so a
    VCU could not tell its own faults. Every u16 decodes now; 0x8000.. are the vendor's."""
    report = wire.FaultReport(wire.FaultCode(code), wire.Severity.ERROR, 0x10, 77)
    frame = wire.decode_frame(wire.encode_frame(report, seq=3, ack=0))
    got = frame.message
    assert isinstance(got, wire.FaultReport)
    assert got == report and got.code == code and got.code.name == name
    assert got.code.is_vendor is vendor
    assert got.code.is_listed is (name == "SEGMENT_REFUSED")


def test_a_reserved_severity_decodes_and_ranks_at_least_fatal() -> None:
    body = wire.FaultReport(wire.FaultCode(0x8001), wire.Severity(9), 0, 0)
    got = wire.decode_frame(wire.encode_frame(body, seq=1, ack=0)).message
    assert isinstance(got, wire.FaultReport)
    assert got.severity == 9 and got.severity.name == "SEVERITY_9"
    assert got.severity > wire.Severity.FATAL
