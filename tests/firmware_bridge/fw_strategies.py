"""Hypothesis strategies for every serial message type (shared by the wire and link tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from firmware_bridge import wire
from firmware_bridge.wire.messages import LAT_E7_MAX, LON_E7_MAX

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
lon_e7 = st.integers(-LON_E7_MAX, LON_E7_MAX)
lat_e7 = st.integers(-LAT_E7_MAX, LAT_E7_MAX)

hello = st.builds(
    wire.Hello,
    role=st.sampled_from(wire.Role),
    version_min=u8,
    version_max=u8,
    session=st.integers(1, 0xFFFF_FFFF),
    peer_session=u32,
    heartbeat_ms=u16,
    link_up=st.booleans(),
)
heartbeat = st.builds(wire.Heartbeat, uptime_ms=u32)
ack = st.just(wire.Ack())
nak = st.builds(wire.Nak, reason=st.sampled_from(wire.NakReason), ref_seq=u16)
estop_ack = st.builds(wire.EstopAck, estop_id=u16)
drive_segment = st.builds(
    wire.DriveSegment,
    mission_id=u32,
    first_wp=u32,
    speed_cap_cmps=u16,
    dwell_s=u16,
    stop_at_end=st.booleans(),
    waypoints=st.lists(st.tuples(lon_e7, lat_e7), min_size=1, max_size=wire.MAX_WAYPOINTS).map(
        tuple
    ),
)
stop = st.builds(wire.Stop, mode=st.sampled_from(wire.StopMode))
emergency_stop = st.builds(wire.EmergencyStop, estop_id=u16, reason=u8)
resume = st.builds(wire.Resume, estop_id=u16)
door = st.builds(wire.Door, open=st.booleans())
charge = st.builds(wire.Charge, target_cpct=st.integers(0, 10000), max_power_hw=u16)
telemetry = st.builds(
    wire.Telemetry,
    uptime_ms=u32,
    lon_e7=lon_e7,
    lat_e7=lat_e7,
    heading_cdeg=st.integers(0, 35999),
    speed_cmps=u16,
    soc_cpct=st.integers(0, 10000),
    range_m=u32,
    odometer_m=u32,
    mission_id=u32,
    last_wp=u32,
    wp_queued=u32,
    drive_state=st.sampled_from(wire.DriveState),
    door=st.sampled_from(wire.DoorState),
    fault_bits=u16,
    estop_id=u16,
)
fault_report = st.builds(
    wire.FaultReport,
    # every u16 code travels (listed, unknown, the vendor's 0x8000..0xFFFF), every severity
    code=st.one_of(st.sampled_from(wire.FaultCode), st.integers(0, 0xFFFF).map(wire.FaultCode)),
    severity=st.integers(0, 0xFF).map(wire.Severity),
    fault_bits=u16,
    arg=u32,
)

BY_TYPE: dict[wire.MsgType, st.SearchStrategy[wire.Message]] = {
    wire.MsgType.HELLO: hello,
    wire.MsgType.HEARTBEAT: heartbeat,
    wire.MsgType.ACK: ack,
    wire.MsgType.NAK: nak,
    wire.MsgType.ESTOP_ACK: estop_ack,
    wire.MsgType.DRIVE_SEGMENT: drive_segment,
    wire.MsgType.STOP: stop,
    wire.MsgType.EMERGENCY_STOP: emergency_stop,
    wire.MsgType.RESUME: resume,
    wire.MsgType.DOOR: door,
    wire.MsgType.CHARGE: charge,
    wire.MsgType.TELEMETRY: telemetry,
    wire.MsgType.FAULT_REPORT: fault_report,
}
any_message = st.one_of(*BY_TYPE.values())


@st.composite
def frames(draw: st.DrawFn) -> tuple[wire.Message, int, int]:
    """A message with a header that suits it: (message, seq, ack)."""
    message = draw(any_message)
    seq = draw(st.integers(1, 0xFFFF)) if message.SEQUENCED else 0
    return message, seq, draw(u16)
