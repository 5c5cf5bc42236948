"""Predicted arrivals from where a van is and the route it still has to drive (pure).

The van's order carries every stop with its planned arrival and departure and every road leg
with its length and the speed the planner drove it at (``docs/protocol.md``, "Order"). From
the van's latest state — the last stop it reached and its position — the rest of the route is
timed the way the plan was: the rest of the current leg (measured along its geometry from the
van's position), then each leg at its planned speed, each stop's work (its longest action),
and waiting where the van is early for a stop (it leaves no sooner than planned).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleet.protocol import Edge, Node, Order, State
from fleet.protocol.timestamps import parse_timestamp

EARTH_M_PER_DEG = 111_320.0


@dataclass(frozen=True, slots=True)
class StopEta:
    index: int  # the node's index in the order
    arrival_s: float  # epoch seconds, predicted
    departure_s: float
    planned_arrival_s: float | None


def _planned(text: str | None) -> float | None:
    return parse_timestamp(text) if text else None


def work_s(node: Node) -> float:
    """The time the stop's work takes: its longest action (they run side by side)."""
    return max((a.duration_s for a in node.actions), default=0.0)


def remaining_on_edge_m(edge: Edge, lon: float, lat: float) -> float:
    """Metres left on ``edge`` from the point of its geometry nearest to ``(lon, lat)``.

    Without a geometry (an unreleased leg may have none) the whole leg is left.
    """
    pts = edge.trajectory
    if len(pts) < 2:
        return edge.length_m
    kx = EARTH_M_PER_DEG * math.cos(math.radians(lat))
    ky = EARTH_M_PER_DEG
    seg_len: list[float] = []
    best_i, best_t, best_d = 0, 0.0, math.inf
    for i in range(len(pts) - 1):
        ax, ay = (pts[i][0] - lon) * kx, (pts[i][1] - lat) * ky
        bx, by = (pts[i + 1][0] - lon) * kx, (pts[i + 1][1] - lat) * ky
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        seg_len.append(math.sqrt(length2))
        t = 0.0 if length2 == 0 else min(1.0, max(0.0, -(ax * dx + ay * dy) / length2))
        qx, qy = ax + t * dx, ay + t * dy
        d = qx * qx + qy * qy
        if d < best_d:
            best_i, best_t, best_d = i, t, d
    geometry_m = sum(seg_len)
    left_m = seg_len[best_i] * (1.0 - best_t) + sum(seg_len[best_i + 1 :])
    if geometry_m <= 0:
        return 0.0
    return edge.length_m * (left_m / geometry_m)  # the leg's own length is what was timed


def predict(
    order: Order,
    state: State | None,
    now_s: float,
    *,
    reached_s: float | None = None,
    max_stops: int | None = None,
) -> list[StopEta]:
    """Predicted arrival at every stop after the last one ``state`` reached (at most
    ``max_stops`` of them).

    ``reached_s`` is when the van reached that stop (the console saw it), to tell how much of
    the stop's work is left; without it the work is taken as done by ``now_s``.
    """
    nodes, edges = order.nodes, order.edges
    last = -1
    if (
        state is not None
        and state.order_id == order.order_id
        and state.last_node_sequence_id is not None
    ):
        last = min(state.last_node_sequence_id // 2, len(nodes) - 1)
    out: list[StopEta] = []
    if last < 0:  # not started: the first stop is where the order begins
        first = nodes[0]
        planned = _planned(first.planned_arrival)
        arrival = now_s if planned is None else max(now_s, planned)
        departure = max(arrival + work_s(first), _planned(first.planned_departure) or 0.0)
        out.append(StopEta(0, arrival, departure, planned))
        last = 0
        t = departure
        moving_from = None
    else:
        node = nodes[last]
        at_stop = state is not None and not state.driving and _near(node, state)
        if at_stop:
            start = reached_s if reached_s is not None else now_s
            t = max(now_s, start + work_s(node))
            planned_dep = _planned(node.planned_departure)
            planned_arr = _planned(node.planned_arrival)
            if planned_dep is not None and planned_arr is not None and start <= planned_arr:
                t = max(t, planned_dep)  # early: it waits for its plan
            moving_from = None
        else:
            t = now_s
            moving_from = state
    end = len(nodes) if max_stops is None else min(len(nodes), last + 1 + max_stops)
    for j in range(last + 1, end):
        edge = edges[j - 1]
        speed = edge.max_speed_mps
        if moving_from is not None and moving_from.position is not None:
            dist = remaining_on_edge_m(edge, moving_from.position.lon, moving_from.position.lat)
            moving_from = None
        else:
            dist = edge.length_m
        arrival = t + dist / speed
        node = nodes[j]
        planned = _planned(node.planned_arrival)
        departure = arrival + work_s(node)
        planned_dep = _planned(node.planned_departure)
        if planned is not None and planned_dep is not None and arrival < planned:
            departure = max(departure, planned_dep)  # early for a window: waits as planned
        out.append(StopEta(j, arrival, departure, planned))
        t = departure
    return out


def _near(node: Node, state: State) -> bool:
    if state.position is None:
        return True
    kx = EARTH_M_PER_DEG * math.cos(math.radians(node.lat))
    dx = (state.position.lon - node.lon) * kx
    dy = (state.position.lat - node.lat) * EARTH_M_PER_DEG
    return math.hypot(dx, dy) <= max(node.allowed_deviation_m, 50.0)
