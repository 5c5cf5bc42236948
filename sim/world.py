"""What both modes share about the simulated world: road closures, re-plan causes, and
the parcels a van is responsible for.

A road closure is a geometry (edges named by OSM node ids, the roads near a point, a
polygon, or a circle) turned into a :class:`~fleet.roads.RoadNetwork` without those roads,
which the re-planner uses from then on, and into lines for the report's map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from shapely.geometry import Polygon

from fleet.errors import ConfigError, RoadError
from fleet.model import NodeId
from fleet.protocol import NodeActionType, Order
from fleet.roads import RoadNetwork
from sim.scenario import RoadClosure
from sim.trace import LonLat

NEAR_RADIUS_M = 25.0  # ``near = [lon, lat]`` closes every road passing this close
_M_PER_DEG = 111_320.0


def circle(lon: float, lat: float, radius_m: float, points: int = 48) -> Polygon:
    """A circle of ``radius_m`` around a point, as a lon/lat polygon (city-scale accurate)."""
    k = math.cos(math.radians(lat))
    ring = [
        (
            lon + radius_m * math.cos(a) / (_M_PER_DEG * k),
            lat + radius_m * math.sin(a) / _M_PER_DEG,
        )
        for a in np.linspace(0.0, 2 * math.pi, points, endpoint=False)
    ]
    return Polygon(ring)


@dataclass(frozen=True, slots=True)
class AppliedClosure:
    """A closure as the world sees it: the network without it and what it closed."""

    net: RoadNetwork
    lines: tuple[tuple[LonLat, ...], ...]  # closed road geometry
    polygon: tuple[LonLat, ...]  # the closed area ("" for named edges)


def apply_closures(base: RoadNetwork, closures: list[RoadClosure], where: str) -> AppliedClosure:
    """``base`` without every road the ``closures`` name (all of them at once)."""
    edges: list[tuple[NodeId, NodeId]] = []
    areas: list[Polygon] = []
    for c in closures:
        if c.edges:
            graph = base.graph
            for u, v in c.edges:
                if not graph.has_edge(u, v):
                    raise ConfigError(
                        f"{where}: road_closure edge = [{u}, {v}]: no such road in site "
                        f"{base.site.name!r} (OSM node ids of two ends of one road segment)"
                    )
                edges.append((u, v))
                if graph.has_edge(v, u):
                    edges.append((v, u))
        elif c.near is not None:
            areas.append(circle(c.near[0], c.near[1], NEAR_RADIUS_M))
        elif c.center is not None:
            areas.append(circle(c.center[0], c.center[1], c.radius_m))
        elif c.polygon:
            areas.append(Polygon(c.polygon))
    try:
        closed = base.with_closures(edges=edges, areas=areas)
    except RoadError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    p = base.prepared
    before = set(np.unique(p.edge_link).tolist())
    after = set(np.unique(closed.prepared.edge_link).tolist())
    lines: list[tuple[LonLat, ...]] = []
    for link in sorted(before - after):
        a, b = int(p.geom_offsets[link]), int(p.geom_offsets[link + 1])
        lines.append(tuple(zip(p.geom_lon[a:b].tolist(), p.geom_lat[a:b].tolist(), strict=True)))
    ring: tuple[LonLat, ...] = ()
    if areas:
        ring = tuple((float(x), float(y)) for x, y in areas[-1].exterior.coords)
    return AppliedClosure(net=closed, lines=tuple(lines), polygon=ring)


def check_depots_reachable(net: RoadNetwork, where: str) -> None:
    """A closure must leave every depot on the road network (else the day cannot go on)."""
    site = net.site
    for depot in site.depots:
        try:
            node = net.snap(depot.lon, depot.lat).node
            back = net.path(node, net.snap(site.warehouse.lon, site.warehouse.lat).node)
            del back
        except RoadError as exc:
            raise ConfigError(
                f"{where}: the closure cuts off {depot.id} ({depot.name}): {exc}"
            ) from exc


CHARGE_NOTICE_PCT = 0.05  # a van's state of charge rising by more than this was charging


def closure_reason(ev: RoadClosure, applied: AppliedClosure) -> str:
    """What the simulator tells the controller when it asks for a re-plan for a closure."""
    if ev.center is not None:
        where = f"within {ev.radius_m:g} m of {ev.center[0]:.5f},{ev.center[1]:.5f}"
    elif ev.near is not None:
        where = f"the road nearest {ev.near[0]:.5f},{ev.near[1]:.5f}"
    elif ev.polygon:
        where = f"inside a {len(ev.polygon)}-point area"
    else:
        where = f"{len(ev.edges)} named road edge(s)"
    until = ""
    if ev.until_s is not None:
        until = f" until {ev.until_s // 3600:02d}:{ev.until_s % 3600 // 60:02d}"
    return f"road closure: {len(applied.lines)} road segment(s) {where}{until}"


def replan_cause(cause: str) -> str:
    """The controller's re-plan cause (free text) as one of the report's categories."""
    text = cause.lower()
    if text.startswith("resume"):
        return "controller_restart"
    if "back in service" in text:
        return "van_back"
    if "closure" in text or "closed" in text:
        return "road_closure"
    if "fatal error" in text or "vehicle_fault" in text:
        return "breakdown"
    if "offline" in text:
        return "link_loss"
    if "urgent order" in text or "parcels added" in text:
        return "late_orders"
    if "cancelled" in text:
        return "cancelled"
    if text.startswith("requested"):
        return "requested"
    return "other"


def parcels_due(order: Order | None, finished_nodes: set[int]) -> set[str]:
    """Parcels a van must still hand over under ``order`` (nodes not finished yet)."""
    if order is None:
        return set()
    out: set[str] = set()
    for node in order.nodes:
        if node.sequence_id in finished_nodes:
            continue
        for a in node.actions:
            if a.action_type in (NodeActionType.DELIVER, NodeActionType.UNLOAD):
                out.update(a.parcel_ids)
    return out
