"""From an MQTT order to serial drive segments: the released base only, never the horizon.

The released base's road geometry becomes one list of waypoints (lon/lat in 1e-7 degree):
node 0's position first, then each released edge's trajectory to its end node. Each node
knows the index of its waypoint. The waypoints are cut into :class:`wire.DriveSegment` frames
that never span a node and never hold more than :data:`SEGMENT_WAYPOINTS` (the protocol allows
:data:`wire.MAX_WAYPOINTS`; short frames survive a noisy line); a segment that ends at a stop
with actions asks the VCU to stop there for the stop's work time.

Timing (``docs/bridge.md``, "Timing"): a node's actions run together while the van stands
there, so the stop's work time (the dwell) is the longest action's ``duration_s``, never their
sum. A stop with a ``planned_departure`` must not start its work before ``planned_departure``
minus the work time: its position appears twice, a *wait point* (stop, no dwell, not the node)
where the van arrives and holds, then the node's own waypoint in a segment of its own that the
bridge releases at that time (:attr:`Waypoint.not_before_s`), which the van reaches at once
and dwells at. Node 0 is where the van already stands, its work under way since it got
there: it is no stop, but nothing leaves it before its ``planned_departure`` (the depot's
loading time); its actions finish as the van leaves.

Charging: a node with a ``charge`` action is a stop; the segments after it are held back
(:attr:`Mission.holds`) until the VCU reports the charge over (``docs/bridge.md``).

A *mission* is what one VCU holds: waypoints ``start .. end`` of the order, numbered from 0
on the VCU. The first mission of an order starts at waypoint 0; after a VCU reboot the bridge
starts a new mission at the first stop not yet finished. Pure code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from firmware_bridge import wire
from fleet.protocol import Node, NodeActionType, Order, StopKind, parse_timestamp

SAME_POINT_M = 0.5
_M_PER_DEG = math.radians(1.0) * 6_371_008.8
MAX_CAP_CMPS = 0xFFFF
# Waypoints per DRIVE_SEGMENT the bridge sends (docs/serial.md §3, "Short frames"): 8 make an
# 88-byte frame, intact with a chance of 41 % when 1 % of the bytes are corrupted, where a
# full 29-waypoint frame (256 bytes) gets through 7.6 % of the time.
SEGMENT_WAYPOINTS = 8


def distance_m(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Metres between two (lon, lat) points in 1e-7 degree (equirectangular: short spans)."""
    lat = math.radians(a[1] / 1e7)
    dx = (a[0] - b[0]) / 1e7 * _M_PER_DEG * math.cos(lat)
    dy = (a[1] - b[1]) / 1e7 * _M_PER_DEG
    return math.hypot(dx, dy)


def _near(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return distance_m(a, b) < SAME_POINT_M


@dataclass(frozen=True, slots=True)
class Waypoint:
    lon_e7: int
    lat_e7: int
    cap_cmps: int  # speed cap on the way to this point
    node_seq: int | None = None  # the node this waypoint is, if any
    stop: bool = False  # stop here (for the node's actions, or to wait for their time)
    dwell_s: int = 0
    not_before_s: float | None = None  # a segment starting here is sent no earlier (epoch s)
    charge_pct: float | None = None  # the node's charge action: charge to this here


def charge_target(node: Node) -> float | None:
    """The target of the node's ``charge`` action (the highest, if several)."""
    targets = [
        100.0 if a.target_soc_pct is None else a.target_soc_pct
        for a in node.actions
        if a.action_type is NodeActionType.CHARGE
    ]
    return max(targets) if targets else None


def work_s(node: Node) -> float:
    """The stop's work time: its actions run together, so the longest one (a ``charge``
    action's time is how long charging takes: the VCU says when it is done)."""
    return max(
        (a.duration_s for a in node.actions if a.action_type is not NodeActionType.CHARGE),
        default=0.0,
    )


def _is_stop(node: Node) -> bool:
    return node.kind is not StopKind.START and bool(node.actions)


def _work_point(node: Node, cap: int) -> Waypoint:
    """The node's own waypoint: a stop with its work time, released at its time if planned."""
    lon, lat = wire.to_e7(node.lon), wire.to_e7(node.lat)
    if not _is_stop(node):
        return Waypoint(lon, lat, cap, node_seq=node.sequence_id)
    not_before = None
    if node.planned_departure is not None:
        # the planned time of all the work, charging included, ends at the departure
        planned = max(a.duration_s for a in node.actions)
        not_before = parse_timestamp(node.planned_departure) - planned
    return Waypoint(
        lon,
        lat,
        cap,
        node_seq=node.sequence_id,
        stop=True,
        dwell_s=round(work_s(node)),
        not_before_s=not_before,
        charge_pct=charge_target(node),
    )


def _cap_cmps(speed_mps: float) -> int:
    return max(1, min(MAX_CAP_CMPS, math.floor(speed_mps * 100)))


def base_waypoints(order: Order) -> list[Waypoint]:
    """The released base as waypoints (see the module docstring)."""
    nodes = order.nodes
    first = nodes[0]
    first_cap = _cap_cmps(order.edges[0].max_speed_mps) if order.edges else 100
    departure = first.planned_departure
    out = [
        Waypoint(
            wire.to_e7(first.lon),
            wire.to_e7(first.lat),
            first_cap,
            node_seq=first.sequence_id,
            not_before_s=parse_timestamp(departure) if departure and _is_stop(first) else None,
            charge_pct=charge_target(first),
        )
    ]
    for i, edge in enumerate(order.edges):
        if not edge.released:
            break
        end = nodes[i + 1]
        cap = _cap_cmps(edge.max_speed_mps)
        points = [(wire.to_e7(lon), wire.to_e7(lat)) for lon, lat in edge.trajectory]
        end_pt = (wire.to_e7(end.lon), wire.to_e7(end.lat))
        if points and _near(points[-1], end_pt):
            points[-1] = end_pt
        else:
            points.append(end_pt)
        for pt in points[:-1]:
            if not _near(pt, (out[-1].lon_e7, out[-1].lat_e7)):
                out.append(Waypoint(pt[0], pt[1], cap))
        work = _work_point(end, cap)
        if work.not_before_s is not None:
            out.append(Waypoint(end_pt[0], end_pt[1], cap, stop=True))  # the wait point
        out.append(work)
    return out


def cut_segments(
    waypoints: list[Waypoint], *, mission_id: int, start: int, end: int | None = None
) -> list[wire.DriveSegment]:
    """Segments for ``waypoints[start:end]``, numbered from 0 within the mission."""
    end = len(waypoints) if end is None else end
    out: list[wire.DriveSegment] = []
    i = start
    while i < end:
        cap = waypoints[i].cap_cmps
        j = i
        pts: list[tuple[int, int]] = []
        while j < end and len(pts) < SEGMENT_WAYPOINTS and waypoints[j].cap_cmps == cap:
            wp = waypoints[j]
            if j > i and wp.not_before_s is not None:
                break  # a gated waypoint starts a segment of its own
            pts.append((wp.lon_e7, wp.lat_e7))
            j += 1
            if wp.node_seq is not None or wp.stop:
                break  # a segment never runs past a node or a stop
        last = waypoints[j - 1]
        out.append(
            wire.DriveSegment(
                mission_id=mission_id,
                first_wp=i - start,
                speed_cap_cmps=cap,
                dwell_s=min(0xFFFF, last.dwell_s),
                stop_at_end=last.stop,
                waypoints=tuple(pts),
            )
        )
        i = j
    return out


@dataclass
class Mission:
    """The part of an order a VCU holds under one mission id."""

    mission_id: int
    start: int  # order waypoint index of mission waypoint 0
    segments: list[wire.DriveSegment]
    sent: int = 0  # segments handed to the link
    delivered: int = 0  # segments the VCU acknowledged
    gates: list[float | None] = field(default_factory=list)  # per segment: not before (epoch s)
    # per segment: the node (sequence id) whose charge must be over before it is sent
    holds: list[int | None] = field(default_factory=list)

    @classmethod
    def cut(cls, waypoints: list[Waypoint], mission_id: int, start: int) -> Mission:
        m = cls(mission_id, start, [])
        m.extend(waypoints)
        return m

    @property
    def end(self) -> int:
        """Order waypoint index just past the last one in the mission."""
        if not self.segments:
            return self.start
        last = self.segments[-1]
        return self.start + last.first_wp + len(last.waypoints)

    def order_wp(self, mission_wp: int) -> int:
        return self.start + mission_wp

    def extend(self, waypoints: list[Waypoint]) -> None:
        """Append the segments for waypoints released since the mission was cut."""
        new = cut_segments(waypoints, mission_id=self.mission_id, start=self.start, end=None)[
            len(self.segments) :
        ]
        self.segments += new
        for seg in new:
            first = self.start + seg.first_wp
            self.gates.append(waypoints[first].not_before_s)
            before = waypoints[first - 1] if first > 0 else None
            charging = before is not None and before.charge_pct is not None
            self.holds.append(before.node_seq if before is not None and charging else None)

    def gate(self, k: int) -> float | None:
        return self.gates[k] if k < len(self.gates) else None

    def hold(self, k: int) -> int | None:
        return self.holds[k] if k < len(self.holds) else None

    def resync(self, wp_queued: int) -> None:
        """The VCU says it holds mission waypoints ``0 .. wp_queued - 1``: send from there."""
        for k, seg in enumerate(self.segments):
            if seg.first_wp >= wp_queued:
                self.sent = self.delivered = k
                return
        self.sent = self.delivered = len(self.segments)
