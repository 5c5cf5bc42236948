"""Turning a van's planned route into the nodes and edges of an :class:`~fleet.protocol.Order`.

Pure: no clock, no I/O. Every stop of every trip becomes one node, in order; the road from the
previous stop (the plan's ``geometry_in``) becomes the edge before it. Where one trip ends and
the next starts at the same depot, the two stops stay two nodes joined by a zero-length edge,
so every node maps to exactly one planned stop. Node ``n{i}`` is the i-th stop, edge ``e{i}``
joins ``n{i}`` to ``n{i+1}``, action ``n{i}.{k}`` is the k-th action at ``n{i}``; ids are
positional, which is safe because the released base (a prefix) never changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from fleet.model.plan import Leg, Stop, VanRoute
from fleet.model.plan import StopKind as PlanStopKind
from fleet.model.van import VanSpec
from fleet.protocol import (
    Edge,
    Header,
    Node,
    NodeAction,
    NodeActionType,
    Order,
    StopKind,
    format_timestamp,
)

# A depot stop is counted as a charge if the plan leaves it with this much more charge.
CHARGE_NOTICE_PCT = 0.5
ARRIVAL_TOLERANCE_M = 25.0
# Where the controller joins two points without a road path (a van's position to its next
# stop), the road is taken as this much longer than the straight line.
ROAD_DETOUR = 1.3
EARTH_RADIUS_M = 6_371_000.0
MIN_SPEED_MPS = 1.0  # an edge's cap is never below walking pace (a rounding of a short edge)


def local_to_epoch(day: date, timezone: str) -> Callable[[float], float]:
    """Seconds after local midnight of ``day`` in ``timezone`` → UTC epoch seconds."""
    midnight_s = datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone)).timestamp()
    return lambda local_s: midnight_s + local_s


def epoch_to_local(day: date, timezone: str) -> Callable[[float], float]:
    midnight_s = datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone)).timestamp()
    return lambda epoch_s: epoch_s - midnight_s


@dataclass(frozen=True, slots=True)
class RoutePath:
    """A route as protocol nodes and edges, nothing released yet."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


def _kind(stop: Stop) -> StopKind:
    return StopKind(stop.kind.value)


def _actions(
    i: int,
    stop: Stop,
    prev: Stop | None,
    leg: Leg,
    door_work_s: float | None = None,
    van: VanSpec | None = None,
) -> tuple[NodeAction, ...]:
    """The stop's actions. Each one's ``duration_s`` is its work, never the waiting the
    stop's dwell may hold (that is what ``planned_departure`` says; docs/protocol.md): with
    ``van``, loading takes ``depot_load_s``, a consignment's unloading ``station_unload_s``,
    a door's hand-over ``door_work_s`` (or the van's door and per-parcel times), a charge the
    time the plan's energy needs at the van's charging power — each at most the dwell.
    Without ``van`` every action lasts the whole dwell (a door's, ``door_work_s`` if given)."""
    actions: list[NodeAction] = []
    dwell_s = max(0.0, stop.dwell_s)

    def work(kind: NodeActionType, target: float | None) -> float:
        if kind is NodeActionType.DELIVER and door_work_s is not None:
            return min(dwell_s, door_work_s)
        if van is None:
            return dwell_s
        if kind is NodeActionType.LOAD:
            return min(dwell_s, van.depot_load_s)
        if kind is NodeActionType.TRANSFER_LOAD:
            return min(dwell_s, van.transfer_time_s(len(stop.parcels_loaded)))
        if kind is NodeActionType.UNLOAD:
            return min(dwell_s, van.station_unload_s)
        if kind is NodeActionType.DELIVER:
            n = len(stop.parcels_delivered)
            return min(dwell_s, van.door_stop_s + n * van.per_parcel_s)
        return min(dwell_s, charge_work_s(stop, prev, target or 100.0, van))

    def add(kind: NodeActionType, parcels: Sequence[str], target: float | None = None) -> None:
        actions.append(
            NodeAction(
                action_id=f"n{i}.{len(actions)}",
                action_type=kind,
                parcel_ids=tuple(parcels),
                duration_s=work(kind, target),
                target_soc_pct=target,
            )
        )

    if stop.parcels_delivered:
        # a station's consignment, or what a van brings back to its own depot (a re-plan's
        # first trip returns what it cannot deliver in time): handed over, not delivered
        # (a door is a delivery whichever van serves it: a warehouse van lent to a station
        # after its line haul delivers too)
        unload = stop.kind is not PlanStopKind.DOOR
        add(NodeActionType.UNLOAD if unload else NodeActionType.DELIVER, stop.parcels_delivered)
    if stop.parcels_loaded:
        # beside a broken-down van (a rescue trip): its load is taken over there
        transfer = stop.kind is PlanStopKind.TRANSFER
        add(NodeActionType.TRANSFER_LOAD if transfer else NodeActionType.LOAD, stop.parcels_loaded)
    charged = prev is not None and stop.soc_pct > prev.soc_pct + CHARGE_NOTICE_PCT
    # An order's first stop at a depot: the plan charged the van there from the state of
    # charge it had when planned, which this stop does not show; charging to the planned
    # charge at departure is then the instruction (a van already above it just goes). The
    # controller adds a charge there, or raises its target, when the van's reported battery
    # needs one for the road ahead (fleet.control.battery).
    starts_at_depot = (
        prev is None
        and stop.kind in (PlanStopKind.DEPOT, PlanStopKind.CHARGE)
        and stop.soc_pct < 100.0 - CHARGE_NOTICE_PCT
    )
    if stop.kind is PlanStopKind.CHARGE or charged or starts_at_depot:
        add(NodeActionType.CHARGE, (), target=min(100.0, stop.soc_pct))
    return tuple(actions)


def charge_work_s(stop: Stop, prev: Stop | None, target_pct: float, van: VanSpec) -> float:
    """Time to charge to ``target_pct`` at ``stop``, from the charge the plan has the van
    arrive with (``prev``'s, less the energy of the road between); with no ``prev`` (an
    order's first stop) from empty — the controller sets it from the van's reported charge."""
    arrival_pct = 0.0
    if prev is not None:
        used_kwh = max(0.0, stop.energy_so_far_kwh - prev.energy_so_far_kwh)
        arrival_pct = prev.soc_pct - used_kwh / van.battery_kwh * 100.0
    energy_kwh = max(0.0, target_pct - arrival_pct) / 100.0 * van.battery_kwh
    return float(math.ceil(van.charge_time_s(energy_kwh)))


def _door_work(stop: Stop, door_work_s: Callable[[Stop], float] | None) -> float | None:
    if door_work_s is None or stop.kind is not PlanStopKind.DOOR:
        return None
    return max(0.0, math.ceil(door_work_s(stop)) - 1.0)


def straight_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (m) between two (lon, lat) points: joining a base to a re-plan that
    did not start there, and how far a van is from a stop."""
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def road_speed_mps(length_m: float, drive_s: float) -> float | None:
    """The speed the planner drove an edge at: its roads' speeds over its length (the
    planner's arrival at a stop is when it gets there, before any wait for a window). None
    when the plan gives no time to drive it (a zero-length edge)."""
    if length_m <= 0.0 or drive_s <= 0.0:
        return None
    return max(MIN_SPEED_MPS, length_m / drive_s)


def route_path(
    route: VanRoute,
    to_epoch: Callable[[float], float],
    *,
    top_speed_mps: float,
    after: Node | None = None,
    door_work_s: Callable[[Stop], float] | None = None,
    van: VanSpec | None = None,
) -> RoutePath:
    """Nodes and edges for every stop of ``route`` (all unreleased).

    Each edge's ``max_speed_mps`` is the speed of the roads the planner drove it on (its
    length over its driving time), capped at ``top_speed_mps``.

    With ``after`` (the last node of a van's released base) the path continues that order:
    nodes are numbered from the next position and the first edge leaves ``after``. A
    re-plan's ``start`` stop is where ``after`` is, so it is dropped and its road to the
    next stop becomes that first edge.

    With ``door_work_s`` (a door stop's service time) a door's actions last that long, not
    its whole dwell: a van early for a window waits, and the bridge holds the stop's work until
    the planned departure minus it, so nothing is delivered before the window opens. It is
    rounded up to whole seconds less one, so the float rounding of the timestamps never starts
    the work before the window (the work then lasts at most a second less than planned).

    With ``van`` every other action lasts its own work too (loading, unloading, charging;
    see :func:`_actions`): a depot stay of hours is not hours of work.
    """
    stops = list(route.stops())
    nodes: list[Node] = []
    edges: list[Edge] = []
    prev_stop: Stop | None = None
    prev_node: Node | None = after
    if after is not None and stops and stops[0].kind is PlanStopKind.START:
        prev_stop = stops.pop(0)
    first_index = 0 if after is None else after.sequence_id // 2 + 1
    for stop in stops:
        i = first_index + len(nodes)
        node = Node(
            node_id=f"n{i}",
            sequence_id=2 * i,
            released=False,
            kind=_kind(stop),
            ref=stop.ref[:64],
            lon=stop.lon,
            lat=stop.lat,
            allowed_deviation_m=ARRIVAL_TOLERANCE_M,
            planned_arrival=format_timestamp(to_epoch(stop.arrival_s)),
            planned_departure=format_timestamp(to_epoch(stop.departure_s)),
            actions=_actions(i, stop, prev_stop, route.leg, _door_work(stop, door_work_s), van),
        )
        if prev_node is not None:
            here = (stop.lon, stop.lat)
            there = (prev_node.lon, prev_node.lat)
            speed_mps = top_speed_mps
            if prev_stop is not None:
                length_m = max(0.0, stop.dist_so_far_m - prev_stop.dist_so_far_m)
                geometry = tuple(stop.geometry_in) or (there, here)
                road = road_speed_mps(length_m, stop.arrival_s - prev_stop.departure_s)
                speed_mps = min(top_speed_mps, road or top_speed_mps)
            else:  # nothing planned between them: the van's own stack finds the road
                length_m, geometry = straight_m(there, here), (there, here)
            edges.append(
                Edge(
                    edge_id=f"e{i - 1}",
                    sequence_id=2 * i - 1,
                    released=False,
                    start_node_id=prev_node.node_id,
                    end_node_id=node.node_id,
                    length_m=length_m,
                    max_speed_mps=speed_mps,
                    trajectory=geometry if len(geometry) >= 2 else (geometry[0], geometry[0]),
                )
            )
        nodes.append(node)
        prev_stop, prev_node = stop, node
    return RoutePath(tuple(nodes), tuple(edges))


def released(path: RoutePath, count: int) -> RoutePath:
    """``path`` with its first ``count`` nodes (and the edges between them) released."""
    count = max(1, min(count, len(path.nodes)))
    nodes = tuple(
        n if n.released == (i < count) else n.model_copy(update={"released": i < count})
        for i, n in enumerate(path.nodes)
    )
    edges = tuple(
        e if e.released == (i + 1 < count) else e.model_copy(update={"released": i + 1 < count})
        for i, e in enumerate(path.edges)
    )
    return RoutePath(nodes, edges)


def make_order(
    header: Header, van_id: str, order_id: str, update_id: int, path: RoutePath
) -> Order:
    """Validate and build the order (structure checked exactly as a van will)."""
    return Order.model_validate(
        {
            "header": header,
            "van_id": van_id,
            "order_id": order_id,
            "order_update_id": update_id,
            "nodes": path.nodes,
            "edges": path.edges,
        },
        strict=False,
    )


def path_of(order: Order) -> RoutePath:
    return RoutePath(order.nodes, order.edges)


def base_path(order: Order) -> RoutePath:
    """Only the released base of ``order``."""
    count = len(order.base_nodes)
    return RoutePath(order.nodes[:count], order.edges[: count - 1])


def join(head: RoutePath, tail: RoutePath) -> RoutePath:
    """``head`` then ``tail`` (made by :func:`route_path` with ``after=head.nodes[-1]``)."""
    return RoutePath(head.nodes + tail.nodes, head.edges + tail.edges)


def start_node(lon: float, lat: float) -> Node:
    """Node 0 of an order made for a van where it stands (a recovery or a return order)."""
    return Node(
        node_id="n0",
        sequence_id=0,
        released=False,
        kind=StopKind.START,
        lon=lon,
        lat=lat,
        allowed_deviation_m=ARRIVAL_TOLERANCE_M,
    )


def renumbered(nodes: Sequence[Node], edges: Sequence[Edge]) -> RoutePath:
    """``nodes`` (each followed by its edge in ``edges``) with positional ids again: node
    ``n{i}``, edge ``e{i}``, action ``n{i}.{k}``; nothing released."""
    out_nodes = tuple(
        node.model_copy(
            update={
                "node_id": f"n{i}",
                "sequence_id": 2 * i,
                "released": False,
                "actions": tuple(
                    a.model_copy(update={"action_id": f"n{i}.{k}"})
                    for k, a in enumerate(node.actions)
                ),
            }
        )
        for i, node in enumerate(nodes)
    )
    out_edges = tuple(
        edge.model_copy(
            update={
                "edge_id": f"e{i}",
                "sequence_id": 2 * i + 1,
                "released": False,
                "start_node_id": f"n{i}",
                "end_node_id": f"n{i + 1}",
            }
        )
        for i, edge in enumerate(edges)
    )
    return RoutePath(out_nodes, out_edges)


def joining_edge(a: Node, b: Node, top_speed_mps: float) -> Edge:
    """An edge where the controller has no road path (from a van's position): the straight
    line as trajectory (the van's own stack finds the road), the road taken as
    :data:`ROAD_DETOUR` times longer."""
    there, here = (a.lon, a.lat), (b.lon, b.lat)
    return Edge(
        edge_id="e0",
        sequence_id=1,
        released=False,
        start_node_id=a.node_id,
        end_node_id=b.node_id,
        length_m=min(1_000_000.0, straight_m(there, here) * ROAD_DETOUR),
        max_speed_mps=max(MIN_SPEED_MPS, top_speed_mps),
        trajectory=(there, here),
    )


def resume_path(
    path: RoutePath,
    from_index: int,
    *,
    at: tuple[float, float],
    done: Container[str],
    top_speed_mps: float,
) -> RoutePath:
    """A recovery order's path: node 0 ``start`` where the van stands (``at``), then the
    stops of ``path`` from ``from_index`` on, without the actions in ``done`` (a stop the van
    reached and did part of the work at keeps only the rest)."""
    start = start_node(*at)
    rest = [
        node.model_copy(
            update={"actions": tuple(a for a in node.actions if a.action_id not in done)}
        )
        for node in path.nodes[from_index:]
    ]
    edges = [joining_edge(start, rest[0], top_speed_mps), *path.edges[from_index:]]
    return renumbered([start, *rest], edges)


def return_path(
    *,
    at: tuple[float, float],
    home: tuple[float, float],
    depot: str,
    parcels: Sequence[str],
    arrive_s: float,
    unload_s: float,
    top_speed_mps: float,
) -> RoutePath:
    """A return order's path: node 0 ``start`` where the van stands (``at``), then its home
    ``depot`` (``home``), where it unloads ``parcels`` (arriving at ``arrive_s``, epoch s;
    unloading for ``unload_s``)."""
    start = start_node(*at)
    actions = (
        (
            NodeAction(
                action_id="n1.0",
                action_type=NodeActionType.UNLOAD,
                parcel_ids=tuple(parcels),
                duration_s=unload_s,
            ),
        )
        if parcels
        else ()
    )
    end = Node(
        node_id="n1",
        sequence_id=2,
        released=False,
        kind=StopKind.DEPOT,
        ref=depot[:64],
        lon=home[0],
        lat=home[1],
        allowed_deviation_m=ARRIVAL_TOLERANCE_M,
        planned_arrival=format_timestamp(arrive_s),
        planned_departure=format_timestamp(arrive_s + (unload_s if parcels else 0.0)),
        actions=actions,
    )
    return renumbered([start, end], [joining_edge(start, end, top_speed_mps)])
