"""A released edge's road geometry goes out as short DRIVE_SEGMENT frames (docs/serial.md §3):
short frames get through a noisy line, one long frame would not."""

from __future__ import annotations

from bridge_fixtures import long_edge_order

from firmware_bridge import wire
from firmware_bridge.bridge.mission import SEGMENT_WAYPOINTS, base_waypoints, cut_segments


def test_a_long_edge_is_split_into_segments_of_at_most_8_waypoints_and_88_bytes() -> None:
    order = long_edge_order()
    wps = base_waypoints(order)
    segs = cut_segments(wps, mission_id=1, start=0)
    assert SEGMENT_WAYPOINTS == 8
    assert max(len(s.waypoints) for s in segs) == SEGMENT_WAYPOINTS
    assert len(segs) >= len(wps) // SEGMENT_WAYPOINTS
    # consecutive numbering, every waypoint once
    assert [s.first_wp for s in segs] == [
        sum(len(t.waypoints) for t in segs[:k]) for k in range(len(segs))
    ]
    assert [p for s in segs for p in s.waypoints] == [(w.lon_e7, w.lat_e7) for w in wps]
    for k, seg in enumerate(segs):
        on_wire = len(wire.encode_frame(seg, seq=0xFFFF, ack=0xFFFF))
        assert on_wire <= 88, (k, on_wire)
