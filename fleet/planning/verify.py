"""The independent verifier: does a plan keep every limit, on the real road graph?

It shares no code with the model builder (it imports nothing from the rest of
``fleet.planning``). From the stop sequence alone it recomputes, leg by leg with
``RoadNetwork.path``:

* distance, travel time and energy; no van may arrive sooner than the road allows at
  ``min(road speed, van top speed)``, and every road edge used must respect the top speed;
* the load on board after every stop (kg and m³ within the van's limits), from the parcels
  loaded and handed over;
* the state of charge: drained by ``consumption_kwh_per_km`` on the road, refilled at
  ``charging_power_kw`` for the whole stay at any depot (its own, or a station it helps at:
  every depot has a charger), up to a full battery; never below the reserve;
* a van lent to another station (whole-fleet planning): a trip may end at a station, the next
  one starts there; trips from a station that is not the van's own deliver to doors only,
  load only there, and the van's day ends at its own depot;
* service times, delivery windows, the shift, and the hand-over between the legs (a parcel
  leaves its station only after the line haul unloaded it there, or, for a parcel a re-plan
  found at a station, not before the time it is there);
* a rescue trip (docs/plan.md, "Breakdowns"): its ``transfer`` stop is the second of a trip
  from the van's depot, where a broken-down van stands (as given), loads only parcels that
  van carries, before they are taken to its depot, staying the transfer time; the trip then
  stops only at doors;
* that every parcel is delivered exactly once at its own address, or listed as unserved once;
* the figures in the plan (times, loads, distance, energy, SoC, geometry, summary).

It returns one line per violation; an empty list means the plan is valid.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from fleet.errors import RoadError
from fleet.model.ids import DepotId, NodeId, ParcelId, VanId
from fleet.model.parcel import Parcel
from fleet.model.plan import Leg, Plan, Stop, StopKind, UnservedReason, VanRoute
from fleet.model.site import Site
from fleet.model.van import VanSpec
from fleet.roads import RoadNetwork

TIME_TOL_S = 1e-3
DIST_TOL_M = 1e-2
ENERGY_TOL_KWH = 1e-6
LOAD_TOL = 1e-6
SOC_TOL_PCT = 1e-4
COORD_TOL_DEG = 1e-7
MAX_LINES = 200
PREFETCH_MIN_LEGS = 500  # from this many road legs on, they are recomputed in parallel
_NET: RoadNetwork | None = None  # the network a forked worker inherits

_LegData = tuple[float, float, list[tuple[float, float]], list[NodeId]] | None


def _recompute(pairs: list[tuple[NodeId, NodeId]]) -> list[tuple[NodeId, NodeId, _LegData]]:
    net = _NET
    if net is None:  # pragma: no cover - only reached in a forked worker
        raise RuntimeError("no road network in this worker")
    out: list[tuple[NodeId, NodeId, _LegData]] = []
    for a, b in pairs:
        try:
            p = net.path(a, b)
        except RoadError:
            out.append((a, b, None))
        else:
            out.append((a, b, (p.dist_m, p.time_s, list(p.coords), list(p.nodes))))
    return out


def _recompute_all(
    net: RoadNetwork, pairs: list[tuple[NodeId, NodeId]]
) -> list[tuple[NodeId, NodeId, _LegData]]:
    """Every leg's road path: in forked workers when there are many and forking is safe."""
    global _NET
    try:
        workers = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        workers = os.cpu_count() or 1
    _NET = net
    try:
        if (
            len(pairs) < PREFETCH_MIN_LEGS
            or workers < 2
            or "fork" not in multiprocessing.get_all_start_methods()
            or threading.active_count() > 1
        ):
            return _recompute(pairs)
        pairs = sorted(pairs)  # one shortest-path tree per start node and worker
        size = -(-len(pairs) // (workers * 4))
        chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return [leg for part in pool.map(_recompute, chunks) for leg in part]
    finally:
        _NET = None


def _hhmm(t: float) -> str:
    if not math.isfinite(t):
        return str(t)
    m = math.floor(t / 60.0 + 1e-9)
    return f"{m // 60:02d}:{m % 60:02d}:{int(t) % 60:02d}"


class _Leg:
    __slots__ = ("coords", "dist_m", "edges", "time_s")

    def __init__(
        self,
        dist_m: float,
        time_s: float,
        coords: list[tuple[float, float]],
        edges: list[tuple[NodeId, NodeId]],
    ) -> None:
        self.dist_m = dist_m
        self.time_s = time_s
        self.coords = coords
        self.edges = edges


class _Verifier:
    def __init__(
        self,
        plan: Plan,
        parcels: Sequence[Parcel],
        site: Site,
        van: VanSpec,
        net: RoadNetwork,
        at_station: Mapping[ParcelId, DepotId],
        start_soc_pct: Mapping[VanId, float],
        at_station_from_s: Mapping[ParcelId, float],
        transfer_from: Mapping[ParcelId, VanId],
        transfer_until_s: Mapping[ParcelId, float],
        transfer_node: Mapping[VanId, NodeId],
    ) -> None:
        self.plan = plan
        self.transfer_from = transfer_from
        self.transfer_until = transfer_until_s
        self.transfer_node = transfer_node
        self.transferred: dict[ParcelId, list[VanId]] = defaultdict(list)  # by the rescuer
        self.site = site
        self.van = van
        self.net = net
        self.parcels = {p.id: p for p in parcels}
        self.at_station = at_station
        self.at_station_from = at_station_from_s
        self.start_soc = start_soc_pct
        self.problems: list[str] = []
        self._legs: dict[tuple[NodeId, NodeId], _Leg | None] = {}
        self._edge_ok: dict[tuple[NodeId, NodeId], bool] = {}
        self.depot_node: dict[str, NodeId] = {}
        # facts gathered over all routes
        self.delivered: Counter[ParcelId] = Counter()
        self.door_of: dict[ParcelId, tuple[NodeId, VanId]] = {}
        self.dropped_at: dict[ParcelId, list[tuple[str, float, VanId]]] = defaultdict(list)
        self.loaded_at: dict[ParcelId, list[tuple[str, float, Leg, VanId]]] = defaultdict(list)

    def bad(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # -- road legs ------------------------------------------------------------------------
    def leg(self, a: NodeId, b: NodeId) -> _Leg | None:
        key = (a, b)
        if key not in self._legs:
            try:
                path = self.net.path(a, b)
            except RoadError:
                self._legs[key] = None
            else:
                edges = list(zip(path.nodes[:-1], path.nodes[1:], strict=True))
                self._legs[key] = _Leg(path.dist_m, path.time_s, list(path.coords), edges)
        return self._legs[key]

    def edge_ok(self, u: NodeId, v: NodeId) -> bool:
        key = (u, v)
        if key not in self._edge_ok:
            g = self.net.graph
            data = g.edges[u, v] if g.has_edge(u, v) else None
            top = self.van.top_speed_kmh
            ok = (
                data is not None
                and float(data["speed_kmh"]) <= top + 1e-9
                and float(data["time_s"]) + 1e-3 >= float(data["length_m"]) / (top / 3.6)
            )
            self._edge_ok[key] = ok
        return self._edge_ok[key]

    # -- the plan ---------------------------------------------------------------------------
    def run(self) -> list[str]:
        plan, site = self.plan, self.site
        if plan.site != site.name:
            self.bad("plan", f"is for site {plan.site!r}, not {site.name!r}")
        if plan.timezone != site.timezone:
            self.bad(
                "plan", f"timezone {plan.timezone!r} differs from the site's {site.timezone!r}"
            )
        for d in site.depots:
            try:
                self.depot_node[d.id] = self.net.snap(d.lon, d.lat).node
            except RoadError as exc:
                self.bad(f"depot {d.id}", f"does not snap to the road graph: {exc}")
        pairs: set[tuple[NodeId, NodeId]] = set()
        for r in plan.routes:
            prev: NodeId | None = None
            for stop in r.stops():
                if prev is not None and prev != stop.node:
                    pairs.add((prev, stop.node))
                prev = stop.node
        for a, b, leg in _recompute_all(self.net, sorted(pairs)):
            self._legs[(a, b)] = (
                None
                if leg is None
                else _Leg(leg[0], leg[1], leg[2], list(zip(leg[3][:-1], leg[3][1:], strict=True)))
            )
        seen_vans: set[str] = set()
        for r in plan.routes:
            if r.van_id in seen_vans:
                self.bad(f"van {r.van_id}", "has more than one route")
            seen_vans.add(r.van_id)
            self.route(r)
        self.parcels_once()
        self.summary()
        return self.problems

    def route(self, r: VanRoute) -> None:
        site, van = self.site, self.van
        where = f"van {r.van_id}"
        warehouse = site.warehouse.id
        stations = {s.id for s in site.stations}
        if r.depot not in self.depot_node:
            self.bad(where, f"depot {r.depot!r} is not a depot of site {site.name!r}")
            return
        if not re.fullmatch(re.escape(r.depot) + r"-\d{2,}", r.van_id):
            self.bad(where, f"van id does not name its depot {r.depot} (expected {r.depot}-NN)")
        expected_leg = Leg.LINE_HAUL if r.depot == warehouse else Leg.LAST_MILE
        if r.leg is not expected_leg:
            self.bad(where, f"a van of {r.depot} runs the {expected_leg.value} leg, not {r.leg}")
        if not r.trips:
            self.bad(where, "has no trips")
            return
        battery = van.battery_kwh
        reserve = battery * van.range_reserve_pct / 100.0
        depot_of_node = {n: d for d, n in self.depot_node.items()}
        first = r.trips[0].stops[0] if r.trips[0].stops else None
        soc0 = self.start_soc.get(r.van_id)
        if soc0 is None:
            soc0 = first.soc_pct if first is not None and first.kind is StopKind.START else 100.0
        if not 0.0 <= soc0 <= 100.0:
            self.bad(where, f"starts with an impossible state of charge {soc0:g} %")
        energy = battery * soc0 / 100.0
        dist = 0.0
        used = 0.0
        prev: Stop | None = None
        on_board: dict[ParcelId, Parcel] = {}
        for k, trip in enumerate(r.trips):
            tw = f"{where} trip {k}"
            if trip.index != k:
                self.bad(tw, f"has index {trip.index}, expected {k}")
            if len(trip.stops) < 2:
                self.bad(tw, "needs at least a start and an end stop")
                continue
            trip_loaded: set[ParcelId] = set()
            # the depot the trip starts from: the van's own, or a station it is lent to
            base = trip.stops[0].ref if trip.stops[0].kind is not StopKind.START else r.depot
            lent = base != r.depot
            if lent and base not in stations and base != warehouse:
                self.bad(tw, f"starts at {base!r}, neither its depot {r.depot} nor a station")
            # from the warehouse a trip either unloads at stations (the line haul) or
            # delivers to doors (a direct trip, any van); from a station it delivers to doors
            middle = {s.kind for s in trip.stops[1:-1]}
            # (a warehouse van's own line haul may also take parcels straight to their doors
            # on the way: a direct trip of the line haul, stations and doors mixed)
            direct = base == warehouse and StopKind.DOOR in middle and r.leg is not Leg.LINE_HAUL
            if direct and StopKind.STATION in middle:
                self.bad(tw, "a trip from the warehouse unloads at stations or delivers to doors")
            if k == len(r.trips) - 1 and trip.stops[-1].ref != r.depot:
                self.bad(tw, f"the van's day ends at {trip.stops[-1].ref}, not its depot {r.depot}")
            for i, s in enumerate(trip.stops):
                sw = f"{tw} stop {i} ({s.kind.value} {s.ref or s.node})"
                if s.seq != i:
                    self.bad(sw, f"has seq {s.seq}, expected {i}")
                # -- kind and place
                is_first, is_last = i == 0, i == len(trip.stops) - 1
                if is_first:
                    allowed = {StopKind.DEPOT, StopKind.CHARGE}
                    if k == 0:
                        allowed.add(StopKind.START)
                    if s.kind not in allowed:
                        self.bad(sw, "a trip must start at the van's depot")
                elif is_last:
                    if s.kind is not StopKind.DEPOT:
                        self.bad(sw, "a trip must end at the van's depot")
                    elif s.ref not in (r.depot, base) and not (s.ref in self.depot_node and i == 1):
                        # a trip ends where it started, at home, or (a drive with nothing to
                        # do between) at the station the van is lent to next
                        self.bad(sw, f"a trip from {base} must end there or at {r.depot}")
                elif s.kind is StopKind.TRANSFER or StopKind.TRANSFER in middle:
                    if s.kind is StopKind.TRANSFER and (i != 1 or lent):
                        self.bad(sw, "a transfer is the first stop of a trip from the van's depot")
                    elif s.kind not in (StopKind.TRANSFER, StopKind.DOOR):
                        self.bad(sw, "a rescue trip stops only at doors after its transfer")
                elif (lent or direct) and s.kind is not StopKind.DOOR:
                    self.bad(sw, f"a van lent to {base} stops only at doors between depot visits")
                elif (
                    not lent
                    and not direct
                    and r.leg is Leg.LINE_HAUL
                    and s.kind not in (StopKind.STATION, StopKind.DOOR)
                ):
                    self.bad(
                        sw, "a line-haul van stops only at stations and doors between depot visits"
                    )
                elif not lent and r.leg is Leg.LAST_MILE and s.kind is not StopKind.DOOR:
                    self.bad(sw, "a last-mile van stops only at doors between depot visits")
                if s.kind in (StopKind.DEPOT, StopKind.CHARGE):
                    if s.ref not in self.depot_node or s.node != self.depot_node[s.ref]:
                        self.bad(sw, f"is not at a depot's road node (depot {s.ref!r})")
                    elif s.ref != r.depot and s.ref not in stations and s.ref != warehouse:
                        self.bad(sw, f"a van of {r.depot} has no business at {s.ref}")
                elif s.kind is StopKind.STATION:
                    if s.ref not in stations:
                        self.bad(sw, f"{s.ref!r} is not a station of the site")
                    elif s.node != self.depot_node.get(s.ref):
                        self.bad(sw, f"is not at station {s.ref}'s road node")
                elif s.kind is StopKind.DOOR and s.ref:
                    self.bad(sw, "a door stop must have an empty ref")
                elif s.kind is StopKind.TRANSFER:
                    stands = self.transfer_node.get(VanId(s.ref))
                    if stands is None:
                        self.bad(sw, f"{s.ref!r} is not a broken-down van a load may be taken from")
                    elif s.node != stands:
                        self.bad(sw, f"is not where {s.ref} stands (node {stands})")
                    if not s.parcels_loaded:
                        self.bad(sw, "a transfer takes at least one parcel over")
                try:
                    lon, lat = self.net.lonlat(s.node)
                except RoadError:
                    self.bad(sw, f"node {s.node} is not in the road graph")
                    continue
                if abs(lon - s.lon) > COORD_TOL_DEG or abs(lat - s.lat) > COORD_TOL_DEG:
                    self.bad(sw, f"lon/lat ({s.lon}, {s.lat}) is not its node's ({lon}, {lat})")
                # -- the way here
                if prev is not None:
                    if is_first:  # a new trip starts where the last one ended
                        if s.node != prev.node or abs(s.arrival_s - prev.arrival_s) > TIME_TOL_S:
                            self.bad(sw, "does not start where and when the previous trip ended")
                        if s.geometry_in:
                            self.bad(sw, "a trip's first stop has no road geometry")
                    elif s.node == prev.node:
                        if s.geometry_in:
                            self.bad(sw, "same place as the previous stop but has road geometry")
                        if s.arrival_s + TIME_TOL_S < prev.departure_s:
                            self.bad(sw, "arrives before it left the previous stop")
                    else:
                        road = self.leg(prev.node, s.node)
                        if road is None:
                            self.bad(sw, f"no drivable road from node {prev.node}")
                        else:
                            dist += road.dist_m
                            used += road.dist_m * van.energy_per_m_kwh
                            energy -= road.dist_m * van.energy_per_m_kwh
                            soonest = prev.departure_s + road.time_s
                            if s.arrival_s + TIME_TOL_S < soonest:
                                self.bad(
                                    sw,
                                    f"arrives at {_hhmm(s.arrival_s)}, but the road takes until "
                                    f"{_hhmm(soonest)} at no more than {van.top_speed_kmh:g} km/h",
                                )
                            for u, v in road.edges:
                                if not self.edge_ok(u, v):
                                    self.bad(
                                        sw, f"road edge {u}->{v} allows more than the top speed"
                                    )
                                    break
                            if not _same_line(s.geometry_in, road.coords):
                                self.bad(
                                    sw, "geometry_in is not the road path from the previous stop"
                                )
                            if energy < reserve - ENERGY_TOL_KWH:
                                self.bad(
                                    sw,
                                    f"state of charge {100 * energy / battery:.2f} % on arrival "
                                    f"is below the {van.range_reserve_pct:g} % reserve",
                                )
                elif s.geometry_in:
                    self.bad(sw, "the first stop of the day has no road geometry")
                if s.departure_s + TIME_TOL_S < s.arrival_s:
                    self.bad(sw, "leaves before it arrives")
                # -- charging at a depot (every depot has a charger)
                if s.kind in (StopKind.DEPOT, StopKind.CHARGE) and depot_of_node.get(s.node):
                    charge = van.charging_power_kw * max(0.0, s.departure_s - s.arrival_s) / 3600
                    energy = min(battery, energy + charge)
                # -- parcels
                for pid in s.parcels_loaded:
                    p = self.parcels.get(pid)
                    if p is None:
                        self.bad(sw, f"loads unknown parcel {pid}")
                        continue
                    if s.kind is StopKind.TRANSFER:
                        self.transfer(sw, s, pid, r.van_id)
                    elif s.kind not in (StopKind.DEPOT, StopKind.CHARGE, StopKind.START):
                        self.bad(sw, f"parcel {pid} is loaded away from a depot")
                    elif s.kind is not StopKind.START and (i != 0 or s.ref != base):
                        self.bad(sw, f"parcel {pid} is loaded at {s.ref}, not at its trip's start")
                    if pid in on_board:
                        self.bad(sw, f"parcel {pid} is loaded while already on board")
                    on_board[pid] = p
                    trip_loaded.add(pid)
                    if s.kind not in (StopKind.START, StopKind.TRANSFER):
                        # which leg a load is for follows from where it is made
                        kind = Leg.LINE_HAUL if s.ref == warehouse else Leg.LAST_MILE
                        self.loaded_at[pid].append(
                            (s.ref, s.departure_s - van.depot_load_s, kind, r.van_id)
                        )
                for pid in s.parcels_delivered:
                    p = on_board.pop(pid, None)
                    if p is None:
                        self.bad(sw, f"hands over parcel {pid}, which is not on board")
                        continue
                    if s.kind is StopKind.DOOR:
                        self.delivered[pid] += 1
                        self.door_of[pid] = (s.node, r.van_id)
                        self.window(sw, s, p)
                    elif s.kind is StopKind.STATION:
                        self.dropped_at[pid].append((s.ref, s.departure_s, r.van_id))
                    elif s.kind is StopKind.DEPOT and s.ref == r.depot:
                        # brought back to the van's own depot (a re-plan's trip 0)
                        if r.leg is Leg.LAST_MILE:
                            self.dropped_at[pid].append((s.ref, s.departure_s, r.van_id))
                    else:
                        self.bad(sw, f"parcel {pid} is handed over at a {s.kind.value} stop")
                self.service(sw, s, r.leg)
                kg = math.fsum(p.weight_kg for p in on_board.values())
                m3 = math.fsum(p.volume_m3 for p in on_board.values())
                if kg > van.payload_kg + LOAD_TOL:
                    self.bad(
                        sw, f"carries {kg:.3f} kg, more than the payload {van.payload_kg:g} kg"
                    )
                if m3 > van.cargo_volume_m3 + LOAD_TOL:
                    self.bad(
                        sw,
                        f"carries {m3:.4f} m³, more than the cargo volume "
                        f"{van.cargo_volume_m3:g} m³",
                    )
                if abs(kg - s.load_after_kg) > 1e-6 * max(1.0, kg) + LOAD_TOL:
                    self.bad(sw, f"load_after_kg {s.load_after_kg:g}, recomputed {kg:g}")
                if abs(m3 - s.load_after_m3) > 1e-6 * max(1.0, m3) + LOAD_TOL:
                    self.bad(sw, f"load_after_m3 {s.load_after_m3:g}, recomputed {m3:g}")
                if abs(dist - s.dist_so_far_m) > DIST_TOL_M + 1e-9 * dist:
                    self.bad(sw, f"dist_so_far_m {s.dist_so_far_m:.2f}, recomputed {dist:.2f}")
                if abs(used - s.energy_so_far_kwh) > ENERGY_TOL_KWH + 1e-9 * used:
                    self.bad(
                        sw, f"energy_so_far_kwh {s.energy_so_far_kwh:.6f}, recomputed {used:.6f}"
                    )
                soc = 100.0 * energy / battery
                if abs(soc - s.soc_pct) > SOC_TOL_PCT:
                    self.bad(sw, f"soc_pct {s.soc_pct:.4f}, recomputed {soc:.4f}")
                prev = s
            if on_board:
                left = ", ".join(sorted(on_board)[:5])
                self.bad(tw, f"ends with parcels still on board ({left})")
                on_board.clear()
            if trip.stops[0].departure_s + TIME_TOL_S < self.site.shift_start_s and (
                trip.stops[0].kind is not StopKind.START
            ):
                self.bad(tw, f"leaves at {_hhmm(trip.stops[0].departure_s)}, before the shift")
            if trip.stops[-1].arrival_s > self.site.shift_end_s + TIME_TOL_S:
                self.bad(
                    tw,
                    f"ends at {_hhmm(trip.stops[-1].arrival_s)}, after the shift ends at "
                    f"{_hhmm(self.site.shift_end_s)}",
                )

    def transfer(self, where: str, s: Stop, pid: ParcelId, van_id: VanId) -> None:
        """``pid`` taken over at transfer stop ``s``: from the van that carries it, in time."""
        holder = self.transfer_from.get(pid)
        if holder is None or holder != s.ref:
            self.bad(where, f"parcel {pid} is not aboard {s.ref}")
            return
        until = self.transfer_until.get(pid)
        if until is not None and s.departure_s > until + TIME_TOL_S:
            self.bad(
                where,
                f"takes parcel {pid} over until {_hhmm(s.departure_s)}, but it is taken to its "
                f"depot at {_hhmm(until)}",
            )
        self.transferred[pid].append(van_id)

    def service(self, where: str, s: Stop, leg: Leg) -> None:
        van = self.van
        dwell = s.departure_s - s.arrival_s
        if s.kind is StopKind.TRANSFER:
            need = van.transfer_time_s(len(s.parcels_loaded))
            if dwell + TIME_TOL_S < need:
                self.bad(where, f"stays {dwell:.0f} s, the transfer takes {need:g} s")
        if s.kind is StopKind.STATION and dwell + TIME_TOL_S < van.station_unload_s:
            self.bad(where, f"stays {dwell:.0f} s, unloading takes {van.station_unload_s:g} s")
        if (
            s.kind in (StopKind.DEPOT, StopKind.CHARGE)
            and s.parcels_loaded
            and dwell + TIME_TOL_S < van.depot_load_s
        ):
            self.bad(where, f"stays {dwell:.0f} s, loading takes {van.depot_load_s:g} s")

    def window(self, where: str, s: Stop, p: Parcel) -> None:
        van = self.van
        if p.latest_s is not None and s.arrival_s > p.latest_s + TIME_TOL_S:
            self.bad(
                where,
                f"parcel {p.id} arrives at {_hhmm(s.arrival_s)}, after its window closes at "
                f"{_hhmm(p.latest_s)}",
            )
        hand_over = van.door_stop_s + math.fsum(
            (q.service_s if q.service_s is not None else van.per_parcel_s)
            for q in (self.parcels[i] for i in s.parcels_delivered if i in self.parcels)
        )
        begin = s.departure_s - hand_over
        if begin + TIME_TOL_S < s.arrival_s:
            self.bad(
                where,
                f"stays {s.departure_s - s.arrival_s:.0f} s, the hand-over takes {hand_over:.0f} s",
            )
        if p.earliest_s is not None and begin + TIME_TOL_S < p.earliest_s:
            self.bad(
                where,
                f"parcel {p.id} is handed over from {_hhmm(begin)}, before its window opens at "
                f"{_hhmm(p.earliest_s)}",
            )

    # -- across routes ----------------------------------------------------------------------
    def parcels_once(self) -> None:
        plan, van = self.plan, self.van
        listed = Counter(u.parcel_id for u in plan.unserved)
        for pid, n in listed.items():
            if n > 1:
                self.bad(f"parcel {pid}", f"is listed as unserved {n} times")
        reasons = {u.parcel_id: u for u in plan.unserved}
        for pid, u in reasons.items():
            p = self.parcels.get(pid)
            if p is None:
                if u.reason is not UnservedReason.BAD_ROW:
                    self.bad(f"parcel {pid}", "is listed as unserved but is not among the parcels")
                continue
            if u.reason is UnservedReason.BAD_ROW:
                self.bad(f"parcel {pid}", "is listed as a bad row but was given as a parcel")
            if u.reason is UnservedReason.TOO_HEAVY and p.weight_kg <= van.payload_kg:
                self.bad(f"parcel {pid}", f"is listed too heavy but weighs {p.weight_kg:g} kg")
            if u.reason is UnservedReason.TOO_LARGE and p.volume_m3 <= van.cargo_volume_m3:
                self.bad(f"parcel {pid}", f"is listed too large but is {p.volume_m3:g} m³")
            if not u.detail.strip():
                self.bad(f"parcel {pid}", "is unserved without a sentence saying why")
        # where each delivered parcel belongs
        delivered = [pid for pid in self.delivered if pid in self.parcels]
        if delivered:
            ps = [self.parcels[pid] for pid in delivered]
            snaps = self.net.snap_many(
                np.asarray([p.lon for p in ps]), np.asarray([p.lat for p in ps])
            )
            for i, pid in enumerate(delivered):
                node, vid = self.door_of[pid]
                if not snaps.ok[i]:
                    self.bad(f"parcel {pid}", f"is delivered but its address {snaps.reason[i]}")
                elif int(snaps.node[i]) != node:
                    self.bad(
                        f"parcel {pid}",
                        f"is delivered by {vid} at node {node}, not at its address "
                        f"(node {int(snaps.node[i])})",
                    )
        for pid, p in self.parcels.items():
            n = self.delivered.get(pid, 0)
            if n > 1:
                self.bad(f"parcel {pid}", f"is delivered {n} times")
            if n and pid in reasons:
                self.bad(f"parcel {pid}", "is delivered and also listed as unserved")
            if not n and pid not in reasons:
                self.bad(f"parcel {pid}", "is neither delivered nor listed as unserved")
            drops = self.dropped_at.get(pid, [])
            if len(drops) > 1:
                self.bad(f"parcel {pid}", f"is unloaded at stations {len(drops)} times")
            lm_loads = [x for x in self.loaded_at.get(pid, []) if x[2] is Leg.LAST_MILE]
            rescuers = self.transferred.get(pid, [])
            if len(rescuers) > 1:
                self.bad(
                    f"parcel {pid}", f"is taken over from a broken-down van {len(rescuers)} times"
                )
            if rescuers and self.loaded_at.get(pid):
                self.bad(
                    f"parcel {pid}", "is taken over from a broken-down van and loaded at a depot"
                )
            if not n:
                if rescuers:
                    self.bad(
                        f"parcel {pid}", "is taken over from a broken-down van but not delivered"
                    )
                continue
            if rescuers:
                if rescuers[0] != self.door_of[pid][1]:
                    self.bad(
                        f"parcel {pid}",
                        f"is taken over by {rescuers[0]} but delivered by {self.door_of[pid][1]}",
                    )
                continue
            if len(lm_loads) != 1:
                # on board when a re-plan started: loaded at the START stop, nowhere else
                if not lm_loads and not self.loaded_at.get(pid):
                    continue
                # a direct trip: loaded at the warehouse by the van that delivers it, and
                # never unloaded at a station
                loads = self.loaded_at.get(pid, [])
                if (
                    not lm_loads
                    and len(loads) == 1
                    and loads[0][3] == self.door_of[pid][1]
                    and not drops
                    and pid not in self.at_station
                ):
                    continue
                self.bad(f"parcel {pid}", f"is loaded for the last mile {len(lm_loads)} times")
                continue
            station, load_start, _, vid = lm_loads[0]
            if p.station is not None and station != p.station:
                self.bad(f"parcel {pid}", f"goes out from {station}, its station is {p.station}")
            if pid in self.at_station:
                if self.at_station[pid] != station:
                    self.bad(
                        f"parcel {pid}",
                        f"is at {self.at_station[pid]} but {vid} loads it at {station}",
                    )
                there = self.at_station_from.get(pid)
                if there is not None and load_start + TIME_TOL_S < there:
                    self.bad(
                        f"parcel {pid}",
                        f"{vid} starts loading it at {station} at {_hhmm(load_start)}, before "
                        f"it is there ({_hhmm(there)})",
                    )
                continue
            if not drops:
                self.bad(f"parcel {pid}", f"leaves {station} but the line haul never brought it")
                continue
            drop_station, ready, _ = drops[0]
            if drop_station != station:
                self.bad(
                    f"parcel {pid}", f"is unloaded at {drop_station} but leaves from {station}"
                )
            elif load_start + TIME_TOL_S < ready:
                self.bad(
                    f"parcel {pid}",
                    f"{vid} starts loading it at {station} at {_hhmm(load_start)}, before the "
                    f"line haul has unloaded it ({_hhmm(ready)})",
                )

    def summary(self) -> None:
        s = self.plan.summary
        used = [r for r in self.plan.routes if r.trips]
        served = sum(self.delivered.values())
        checks: list[tuple[str, float, float]] = [
            ("served", s.served, served),
            ("unserved", s.unserved, len(self.plan.unserved)),
            ("vans_used", s.vans_used, len(used)),
            ("trips", s.trips, sum(len(r.trips) for r in used)),
            ("dist_m", s.dist_m, math.fsum(r.trips[-1].stops[-1].dist_so_far_m for r in used)),
        ]
        for name, claimed, actual in checks:
            if abs(claimed - actual) > 1e-6 * max(1.0, abs(actual)) + 1e-6:
                self.bad("summary", f"{name} is {claimed:g}, the routes give {actual:g}")
        if s.parcels != s.served + s.unserved:
            self.bad("summary", f"parcels {s.parcels} != served {s.served} + unserved {s.unserved}")


def _same_line(got: Sequence[tuple[float, float]], want: Sequence[tuple[float, float]]) -> bool:
    if len(want) < 2:
        want = list(want) * 2
    if len(got) != len(want):
        return False
    return all(
        abs(a[0] - b[0]) <= COORD_TOL_DEG and abs(a[1] - b[1]) <= COORD_TOL_DEG
        for a, b in zip(got, want, strict=True)
    )


def verify_plan(
    plan: Plan,
    parcels: Sequence[Parcel],
    site: Site,
    van: VanSpec,
    net: RoadNetwork,
    *,
    at_station: Mapping[ParcelId, DepotId] | None = None,
    start_soc_pct: Mapping[VanId, float] | None = None,
    at_station_from_s: Mapping[ParcelId, float] | None = None,
    transfer_from: Mapping[ParcelId, VanId] | None = None,
    transfer_until_s: Mapping[ParcelId, float] | None = None,
    transfer_node: Mapping[VanId, NodeId] | None = None,
) -> list[str]:
    """Every violation of ``plan`` as one line each (``[]``: the plan is valid).

    ``parcels`` are all the parcels the plan was made for. For a re-plan, ``at_station``
    names parcels already at a station (no line haul needed) and ``start_soc_pct`` the state
    of charge each van had when the plan was made (else a van starts full at its depot, or
    with the state of charge its ``start`` stop states); ``at_station_from_s`` when each of
    those parcels is there (a line haul still on its way unloads it then; no load before).
    ``transfer_from`` names, for parcels aboard broken-down vans, the van a rescue trip may
    take each over from, ``transfer_until_s`` until when, and ``transfer_node`` where each
    such van stands (:class:`fleet.planning.StartingState` carries all three).
    """
    problems = _Verifier(
        plan,
        parcels,
        site,
        van,
        net,
        at_station or {},
        start_soc_pct or {},
        at_station_from_s or {},
        transfer_from or {},
        transfer_until_s or {},
        transfer_node or {},
    ).run()
    if len(problems) > MAX_LINES:
        problems = [*problems[:MAX_LINES], f"... and {len(problems) - MAX_LINES} more"]
    return problems
