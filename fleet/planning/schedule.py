"""From a visiting order to a van's day: times, loads, distance, energy, charging, geometry.

The optimiser decides the order of visits and trips in rounded integers; this module replays
that order with the exact road distances and times (the floats of the road matrix, equal to
``RoadNetwork.path``) as early as every constraint allows:

* a trip leaves its depot once its parcels are released there and the van is loaded
  (``depot_load_s``); the van charges at ``charging_power_kw`` for its whole time at the
  depot, up to a full battery;
* if that is not enough for the next trip to end above the reserve, the stay is lengthened
  by the charging time still needed (the stop becomes ``charge``);
* a van waits at a door that opens later; it must arrive no later than the window's end;
* with the site's ``departure = "late"`` a trip leaves as late as it can without ending later
  (see :func:`_delay_s`); with ``"early"`` it leaves as soon as it is loaded (and charged).

Whatever still breaks a limit (a trip longer than a full charge, a window missed because of
charging) is reported as a :class:`Shortfall` so the day planner can re-plan that van with a
tighter distance bound.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from fleet.model.ids import DepotId, NodeId, ParcelId, VanId
from fleet.model.plan import Leg, Stop, StopKind, Trip, VanRoute
from fleet.model.site import Departure, Site
from fleet.model.van import VanSpec
from fleet.planning.demand import DepotPoint, LegMatrix, Visit
from fleet.planning.text import clock
from fleet.planning.vrp import default_workers
from fleet.roads import RoadNetwork

EPS_S = 1e-6
KEEP_SLACK_S = 900.0  # a later start keeps up to this margin before each window closes


@dataclass(frozen=True, slots=True)
class StartPoint:
    """Where a van is when a re-plan is made, with what it carries (every parcel of trip 0's
    visits, plus those it brings back to its depot)."""

    node: NodeId
    lon: float
    lat: float
    time_s: float
    parcels: tuple[ParcelId, ...]
    load_kg: float
    load_m3: float


@dataclass(frozen=True, slots=True)
class Shortfall:
    van_id: VanId
    message: str


@dataclass(frozen=True, slots=True)
class Built:
    route: VanRoute
    shortfalls: tuple[Shortfall, ...]
    dist_m: float


def _trip_dist(prev: int, locs: Sequence[int], matrix: LegMatrix) -> float:
    total = 0.0
    for a, b in zip((prev, *locs), (*locs, 0), strict=True):
        total += float(matrix.dist_m[a, b])
    return total


def _delay_s(
    depart: float, visits: Sequence[Visit], locs: Sequence[int], matrix: LegMatrix
) -> float:
    """How much later a trip may leave its depot and still end when it would have.

    Leaving later only shortens waits at doors that open later (never the return), as long as
    every stop is still reached inside its window with up to ``KEEP_SLACK_S`` to spare: the van
    waits at its depot (charging), not at a door.
    """
    t, prev = depart, 0
    waited = 0.0
    best = math.inf
    for v, loc in zip(visits, locs, strict=True):
        arrive = t + float(matrix.time_s[prev, loc])
        slack = v.latest_s - arrive
        best = min(best, slack - min(KEEP_SLACK_S, max(0.0, slack)) + waited)
        begin = max(arrive, v.earliest_s)
        waited += begin - arrive
        t = begin + v.service_s
        prev = loc
    return max(0.0, min(best, waited))


def build_route(
    van_id: VanId,
    leg: Leg,
    depot: DepotPoint,
    trips: Sequence[Sequence[Visit]],
    matrix: LegMatrix,
    van: VanSpec,
    site: Site,
    *,
    start_s: float,
    start_soc_pct: float = 100.0,
    start: StartPoint | None = None,
    start_loc: int | None = None,
    returned: tuple[ParcelId, ...] = (),
    leave_early: bool = False,
) -> Built:
    """Replay ``trips`` (visits in order; trip 0 may start at ``start``) as a van's day.

    Index 0 of ``matrix`` is the depot; ``start_loc`` is the index of ``start.node``.
    ``returned`` are parcels on board at ``start`` that trip 0 brings back to the depot
    (handed over there) instead of delivering. ``leave_early``: trips leave as soon as they
    are loaded (a rescue), not as late as they can without ending later.
    """
    at = matrix.index()
    battery = van.battery_kwh
    reserve_kwh = battery * van.range_reserve_pct / 100.0
    per_m = van.energy_per_m_kwh
    power = van.charging_power_kw
    energy = battery * start_soc_pct / 100.0
    used_kwh = 0.0
    dist = 0.0
    t = start_s
    problems: list[str] = []
    out_trips: list[Trip] = []
    min_soc = start_soc_pct

    def soc() -> float:
        return 100.0 * energy / battery

    for k, visits in enumerate(trips):
        locs = [at[v.node] for v in visits]
        stops: list[Stop] = []
        load_kg = math.fsum(v.weight_kg for v in visits)
        load_m3 = math.fsum(v.volume_m3 for v in visits)
        loaded = tuple(pid for v in visits for pid in v.parcel_ids)
        if k == 0 and start is not None:
            if start_loc is None:
                raise ValueError("start_loc is needed with start")
            # trip 0 hands over what is already on board: nothing is loaded here
            prev = start_loc
            load_kg, load_m3 = start.load_kg, start.load_m3
            need = reserve_kwh + _trip_dist(prev, locs, matrix) * per_m
            if energy + EPS_S < need:
                problems.append(
                    f"trip 1 needs {need - reserve_kwh:.1f} kWh but the van has "
                    f"{energy - reserve_kwh:.1f} kWh above its reserve"
                )
            stops.append(
                Stop(
                    seq=0,
                    kind=StopKind.START,
                    ref="",
                    node=start.node,
                    lon=start.lon,
                    lat=start.lat,
                    arrival_s=t,
                    departure_s=t,
                    parcels_loaded=start.parcels,
                    parcels_delivered=(),
                    load_after_kg=load_kg,
                    load_after_m3=load_m3,
                    dist_so_far_m=dist,
                    energy_so_far_kwh=used_kwh,
                    soc_pct=soc(),
                    geometry_in=(),
                )
            )
        else:
            prev = 0
            release = max((v.release_s for v in visits), default=t)
            ready = max(t, release)
            depart = ready + van.depot_load_s
            charged = min(battery, energy + power * (depart - t) / 3600.0)
            need = reserve_kwh + _trip_dist(0, locs, matrix) * per_m
            kind = StopKind.DEPOT
            if need > battery + 1e-9:
                problems.append(
                    f"trip {k + 1} is {_trip_dist(0, locs, matrix) / 1000:.1f} km, more than a "
                    "full charge allows"
                )
            elif charged < need:
                # whole seconds, one more for rounding: the verifier recomputes in floats
                depart += math.ceil((need - charged) / power * 3600.0) + 1.0
                kind = StopKind.CHARGE
            # a rescue leaves as soon as it is loaded; else the site's departure policy
            if site.departure is Departure.LATE and not leave_early:
                depart += _delay_s(depart, visits, locs, matrix)
            energy = min(battery, energy + power * (depart - t) / 3600.0)
            stops.append(
                Stop(
                    seq=0,
                    kind=kind,
                    ref=depot.depot.id,
                    node=depot.node,
                    lon=depot.lon,
                    lat=depot.lat,
                    arrival_s=t,
                    departure_s=depart,
                    parcels_loaded=loaded,
                    parcels_delivered=(),
                    load_after_kg=load_kg,
                    load_after_m3=load_m3,
                    dist_so_far_m=dist,
                    energy_so_far_kwh=used_kwh,
                    soc_pct=soc(),
                    geometry_in=(),
                )
            )
            t = depart
        for v, loc in zip(visits, locs, strict=True):
            leg_m = float(matrix.dist_m[prev, loc])
            arrive = t + float(matrix.time_s[prev, loc])
            dist += leg_m
            used_kwh += leg_m * per_m
            energy -= leg_m * per_m
            min_soc = min(min_soc, soc())
            begin = max(arrive, v.earliest_s)
            if arrive > v.latest_s + EPS_S:
                problems.append(
                    f"arrives at {clock(arrive)} at {v.kind.value} {v.ref or v.node}, after "
                    f"its window closes at {clock(v.latest_s)}"
                )
            depart = begin + v.service_s
            load_kg -= v.weight_kg
            load_m3 -= v.volume_m3
            stops.append(
                Stop(
                    seq=len(stops),
                    kind=v.kind,
                    ref=v.ref,
                    node=v.node,
                    lon=v.lon,
                    lat=v.lat,
                    arrival_s=arrive,
                    departure_s=depart,
                    parcels_loaded=(),
                    parcels_delivered=v.parcel_ids,
                    load_after_kg=max(0.0, load_kg),
                    load_after_m3=max(0.0, load_m3),
                    dist_so_far_m=dist,
                    energy_so_far_kwh=used_kwh,
                    soc_pct=soc(),
                    geometry_in=(),
                )
            )
            t = depart
            prev = loc
        leg_m = float(matrix.dist_m[prev, 0])
        arrive = t + float(matrix.time_s[prev, 0])
        dist += leg_m
        used_kwh += leg_m * per_m
        energy -= leg_m * per_m
        min_soc = min(min_soc, soc())
        stops.append(
            Stop(
                seq=len(stops),
                kind=StopKind.DEPOT,
                ref=depot.depot.id,
                node=depot.node,
                lon=depot.lon,
                lat=depot.lat,
                arrival_s=arrive,
                departure_s=arrive,
                parcels_loaded=(),
                parcels_delivered=returned if (k == 0 and start is not None) else (),
                load_after_kg=0.0,
                load_after_m3=0.0,
                dist_so_far_m=dist,
                energy_so_far_kwh=used_kwh,
                soc_pct=soc(),
                geometry_in=(),
            )
        )
        t = arrive
        out_trips.append(Trip(index=k, stops=tuple(stops)))
    if t > site.shift_end_s + EPS_S:
        problems.append(f"back at {clock(t)}, after the shift ends at {clock(site.shift_end_s)}")
    if min_soc < van.range_reserve_pct - 1e-9:
        problems.append(
            f"its charge falls to {min_soc:.1f} %, below the {van.range_reserve_pct:g} % reserve"
        )
    route = VanRoute(van_id=van_id, leg=leg, depot=DepotId(depot.depot.id), trips=tuple(out_trips))
    return Built(route, tuple(Shortfall(van_id, p) for p in problems), dist)


Shape = tuple[tuple[float, float], ...]
PARALLEL_MIN_PATHS = 500  # fewer paths than this are looked up in this process
_NET: RoadNetwork | None = None  # the network a forked worker inherits


def _shapes_from(chunk: list[tuple[NodeId, list[NodeId]]]) -> list[tuple[NodeId, NodeId, Shape]]:
    net = _NET
    if net is None:  # pragma: no cover - only reached in a forked worker
        raise RuntimeError("no road network in this worker")
    out = []
    for source, targets in chunk:
        for target in targets:
            coords = tuple((float(lon), float(lat)) for lon, lat in net.path(source, target).coords)
            if len(coords) < 2:
                coords = (*coords, *coords) if coords else ()
            out.append((source, target, coords))
    return out


def road_shapes(
    net: RoadNetwork, wanted: Mapping[NodeId, set[NodeId]]
) -> dict[tuple[NodeId, NodeId], Shape]:
    """The road path (lon, lat) of every ``source -> target`` asked for.

    Paths are asked for grouped by their start node, so each shortest-path tree is built once;
    many of them are shared over forked worker processes (when this process has one thread,
    so that forking is safe), each inheriting the network without copying it.
    """
    global _NET
    items = [(s, sorted(wanted[s])) for s in sorted(wanted)]
    total = sum(len(t) for _, t in items)
    workers = default_workers()
    chunks: list[list[tuple[NodeId, list[NodeId]]]] = [items]
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    if total >= PARALLEL_MIN_PATHS and workers > 1 and can_fork and threading.active_count() == 1:
        chunks = [items[i :: workers * 4] for i in range(workers * 4)]
    shapes: dict[tuple[NodeId, NodeId], Shape] = {}
    if len(chunks) == 1:
        _NET = net
        try:
            parts = [_shapes_from(items)]
        finally:
            _NET = None
    else:
        _NET = net
        try:
            with ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("fork")
            ) as pool:
                parts = list(pool.map(_shapes_from, chunks))
        finally:
            _NET = None
    for part in parts:
        for source, target, coords in part:
            shapes[(source, target)] = coords
    return shapes


def add_geometry(routes: Sequence[VanRoute], net: RoadNetwork) -> list[VanRoute]:
    """Fill every stop's ``geometry_in`` with the road path from the previous stop.

    See :func:`road_shapes`.
    """
    wanted: dict[NodeId, set[NodeId]] = defaultdict(set)
    for r in routes:
        prev: NodeId | None = None
        for stop in r.stops():
            if prev is not None and prev != stop.node:
                wanted[prev].add(stop.node)
            prev = stop.node
    shapes = road_shapes(net, wanted)
    out: list[VanRoute] = []
    for r in routes:
        prev = None
        trips: list[Trip] = []
        for trip in r.trips:
            stops: list[Stop] = []
            for stop in trip.stops:
                geometry: tuple[tuple[float, float], ...] = ()
                if prev is not None and prev != stop.node:
                    geometry = shapes[(prev, stop.node)]
                stops.append(replace(stop, geometry_in=geometry))
                prev = stop.node
            trips.append(replace(trip, stops=tuple(stops)))
        out.append(replace(r, trips=tuple(trips)))
    return out
