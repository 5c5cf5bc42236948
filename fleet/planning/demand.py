"""A day's parcels made ready to route: checked, snapped, given a station, grouped into stops.

Everything that can be decided about a parcel on its own is decided here, each with a reason a
dispatcher can act on: too heavy, too large, outside the operating area, unreachable, out of
range, window impossible. What is left becomes door stops (leg 2: one stop per address and
window) and station consignments (leg 1: a station's parcels cut into van loads by kg and m³
together, the most urgent first).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fleet.errors import ConfigError, SnapError
from fleet.model.ids import DepotId, NodeId, ParcelId
from fleet.model.parcel import Parcel
from fleet.model.plan import StopKind, Unserved, UnservedReason
from fleet.model.site import Depot, Site
from fleet.model.van import VanSpec
from fleet.planning import scaling
from fleet.planning.text import clock, km
from fleet.roads import Matrix, RoadNetwork


@dataclass(frozen=True, slots=True)
class DepotPoint:
    depot: Depot
    node: NodeId
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class Placed:
    """A parcel that passed the checks that need no routing: it has a road node."""

    parcel: Parcel
    node: NodeId
    lon: float  # the road point it snapped to
    lat: float


@dataclass(frozen=True, slots=True)
class Visit:
    """A place a van stops at to hand over parcels: a door (leg 2) or a station (leg 1)."""

    kind: StopKind
    ref: str  # station id for a station stop, "" for a door
    node: NodeId
    lon: float
    lat: float
    parcels: tuple[Parcel, ...]
    service_s: float
    earliest_s: float  # service may not start before this
    latest_s: float  # ... nor after this
    release_s: float  # the trip carrying it may not leave its depot before this

    @property
    def weight_kg(self) -> float:
        return math.fsum(p.weight_kg for p in self.parcels)

    @property
    def volume_m3(self) -> float:
        return math.fsum(p.volume_m3 for p in self.parcels)

    @property
    def parcel_ids(self) -> tuple[ParcelId, ...]:
        return tuple(p.id for p in self.parcels)

    def demand(self) -> tuple[int, int]:
        """PyVRP demand (grams, litres), each parcel rounded up on its own."""
        return (
            sum(scaling.weight_need(p.weight_kg) for p in self.parcels),
            sum(scaling.volume_need(p.volume_m3) for p in self.parcels),
        )


def snap_depots(site: Site, net: RoadNetwork) -> dict[DepotId, DepotPoint]:
    """Every depot on the road graph; a depot that does not snap is a config error."""
    points: dict[DepotId, DepotPoint] = {}
    for d in site.depots:
        try:
            s = net.snap(d.lon, d.lat)
        except SnapError as exc:
            raise ConfigError(f"{site.config_file}: depot {d.id} ({d.name}): {exc}") from exc
        points[d.id] = DepotPoint(d, s.node, *net.lonlat(s.node))
    return points


def unserved(p: Parcel | ParcelId, reason: UnservedReason, detail: str) -> Unserved:
    pid = p.id if isinstance(p, Parcel) else p
    return Unserved(pid, reason, detail)


def check_alone(
    parcels: Sequence[Parcel], van: VanSpec, net: RoadNetwork
) -> tuple[list[Placed], list[Unserved]]:
    """Weight, volume and position: what no van of this model could ever carry or reach."""
    out: list[Unserved] = []
    candidates: list[Parcel] = []
    for p in parcels:
        if p.weight_kg > van.payload_kg:
            out.append(
                unserved(
                    p,
                    UnservedReason.TOO_HEAVY,
                    f"{p.weight_kg:g} kg is more than the van's payload of {van.payload_kg:g} kg",
                )
            )
        elif p.volume_m3 > van.cargo_volume_m3:
            out.append(
                unserved(
                    p,
                    UnservedReason.TOO_LARGE,
                    f"{p.volume_m3:g} m³ is more than the van's cargo volume of "
                    f"{van.cargo_volume_m3:g} m³",
                )
            )
        else:
            candidates.append(p)
    if not candidates:
        return [], out
    batch = net.snap_many(
        np.asarray([p.lon for p in candidates]), np.asarray([p.lat for p in candidates])
    )
    placed: list[Placed] = []
    for i, p in enumerate(candidates):
        if not batch.ok[i]:
            out.append(
                unserved(
                    p,
                    UnservedReason.OUTSIDE_AREA,
                    f"its address ({p.lon:.6f}, {p.lat:.6f}) is {batch.reason[i]}",
                )
            )
            continue
        node = NodeId(int(batch.node[i]))
        lon, lat = net.lonlat(node)
        placed.append(Placed(p, node, lon, lat))
    return placed, out


def assign_stations(
    placed: Sequence[Placed],
    stations: Sequence[DepotPoint],
    net: RoadNetwork,
) -> tuple[dict[DepotId, list[Placed]], list[Unserved]]:
    """Each parcel to its configured station, else to the nearest station by road."""
    by_station: dict[DepotId, list[Placed]] = defaultdict(list)
    out: list[Unserved] = []
    if not placed:
        return by_station, out
    doors = sorted({p.node for p in placed})
    col = {n: j for j, n in enumerate(doors)}
    m = net.matrix([s.node for s in stations], doors)
    index = {s.depot.id: i for i, s in enumerate(stations)}
    for p in placed:
        j = col[p.node]
        if p.parcel.station is not None:
            i = index[p.parcel.station]
            if not math.isfinite(m.dist_m[i, j]):
                out.append(
                    unserved(
                        p.parcel,
                        UnservedReason.UNREACHABLE,
                        f"no drivable road from its station {p.parcel.station} to its address",
                    )
                )
                continue
        else:
            column = m.dist_m[:, j]
            if not np.isfinite(column).any():
                out.append(
                    unserved(
                        p.parcel,
                        UnservedReason.UNREACHABLE,
                        "no drivable road from any station to its address",
                    )
                )
                continue
            i = int(np.argmin(column))
        by_station[stations[i].depot.id].append(p)
    return by_station, out


@dataclass(frozen=True)
class LegMatrix:
    """Distances and times between a leg's places: index 0 is the depot."""

    nodes: tuple[NodeId, ...]
    dist_m: np.ndarray
    time_s: np.ndarray

    @classmethod
    def between(cls, nodes: Sequence[NodeId], net: RoadNetwork) -> LegMatrix:
        m: Matrix = net.matrix(list(nodes), list(nodes))
        return cls(tuple(nodes), m.dist_m, m.time_s)

    def index(self) -> dict[NodeId, int]:
        return {n: i for i, n in enumerate(self.nodes)}


def check_reach(
    placed: Sequence[Placed],
    matrix: LegMatrix,
    van: VanSpec,
    site: Site,
    *,
    station: DepotId,
    ready_s: float,
    range_m: float,
) -> tuple[list[Placed], list[Unserved]]:
    """Round trip, range and window of each parcel from its station, alone in a van.

    ``ready_s`` is the earliest moment a van can leave the station with it (leg 1 brought it
    and the van is loaded); ``range_m`` the distance one charge allows.
    """
    at = matrix.index()
    keep: list[Placed] = []
    out: list[Unserved] = []
    for p in placed:
        j = at[p.node]
        there_m, back_m = matrix.dist_m[0, j], matrix.dist_m[j, 0]
        if not (math.isfinite(there_m) and math.isfinite(back_m)):
            out.append(
                unserved(
                    p.parcel,
                    UnservedReason.UNREACHABLE,
                    f"no drivable round trip between station {station} and its address",
                )
            )
            continue
        if there_m + back_m > range_m:
            out.append(
                unserved(
                    p.parcel,
                    UnservedReason.OUT_OF_RANGE,
                    f"the round trip from station {station} is {km(there_m + back_m)}, more "
                    f"than one charge allows ({km(range_m)})",
                )
            )
            continue
        arrive = ready_s + matrix.time_s[0, j]
        latest = p.parcel.latest_s if p.parcel.latest_s is not None else site.shift_end_s
        if arrive > latest:
            out.append(
                unserved(
                    p.parcel,
                    UnservedReason.WINDOW_IMPOSSIBLE,
                    f"the earliest a van can reach it is {clock(arrive)}, after its window "
                    f"closes at {clock(latest)}",
                )
            )
            continue
        start = max(arrive, p.parcel.earliest_s or 0)
        service = van.door_stop_s + door_service_s(p.parcel, van)
        back = start + service + matrix.time_s[j, 0]
        if back > site.shift_end_s:
            out.append(
                unserved(
                    p.parcel,
                    UnservedReason.WINDOW_IMPOSSIBLE,
                    f"delivered at {clock(start)} at the earliest, its van could not be back at "
                    f"station {station} by the end of the shift ({clock(site.shift_end_s)})",
                )
            )
            continue
        keep.append(p)
    return keep, out


def door_service_s(parcel: Parcel, van: VanSpec) -> float:
    """Hand-over time of one parcel (the fixed door stop time is added once per stop)."""
    return parcel.service_s if parcel.service_s is not None else van.per_parcel_s


def window(parcel: Parcel, site: Site) -> tuple[float, float]:
    return (
        float(parcel.earliest_s) if parcel.earliest_s is not None else float(site.shift_start_s),
        float(parcel.latest_s) if parcel.latest_s is not None else float(site.shift_end_s),
    )


def pack(parcels: Iterable[Parcel], van: VanSpec) -> list[list[Parcel]]:
    """Cut parcels (in the given order) into van loads: kg and m³ both within the limits."""
    cap_g = scaling.weight_limit(van.payload_kg)
    cap_l = scaling.volume_limit(van.cargo_volume_m3)
    loads: list[list[Parcel]] = []
    current: list[Parcel] = []
    g = litres = 0
    for p in parcels:
        pg, pl = scaling.weight_need(p.weight_kg), scaling.volume_need(p.volume_m3)
        if current and (g + pg > cap_g or litres + pl > cap_l):
            loads.append(current)
            current, g, litres = [], 0, 0
        current.append(p)
        g += pg
        litres += pl
    if current:
        loads.append(current)
    return loads


def door_visits(
    placed: Sequence[Placed],
    van: VanSpec,
    site: Site,
    release_s: dict[ParcelId, float],
) -> list[Visit]:
    """One visit per address, window and release time; split if it would overfill a van."""
    groups: dict[tuple[NodeId, float, float, float], list[Placed]] = defaultdict(list)
    for p in placed:
        early, late = window(p.parcel, site)
        groups[(p.node, early, late, release_s[p.parcel.id])].append(p)
    visits: list[Visit] = []
    for (node, early, late, release), members in sorted(groups.items(), key=lambda kv: kv[0]):
        members.sort(key=lambda m: m.parcel.id)
        for load in pack((m.parcel for m in members), van):
            visits.append(
                Visit(
                    kind=StopKind.DOOR,
                    ref="",
                    node=node,
                    lon=members[0].lon,
                    lat=members[0].lat,
                    parcels=tuple(load),
                    service_s=van.door_stop_s + math.fsum(door_service_s(p, van) for p in load),
                    earliest_s=early,
                    latest_s=late,
                    release_s=release,
                )
            )
    return visits


def consignments(
    station: DepotPoint,
    placed: Sequence[Placed],
    van: VanSpec,
    site: Site,
    *,
    slack_s: dict[ParcelId, float],
) -> list[Visit]:
    """A station's parcels as van loads for the line haul, the most urgent first.

    ``slack_s[p]`` is the latest moment its consignment may *start* unloading at the station
    for the parcel to still reach its door in its window (and its van be back in the shift).
    """
    ordered = sorted(placed, key=lambda p: (slack_s[p.parcel.id], p.parcel.id))
    visits: list[Visit] = []
    for load in pack((p.parcel for p in ordered), van):
        latest = min(slack_s[p.id] for p in load)
        visits.append(
            Visit(
                kind=StopKind.STATION,
                ref=station.depot.id,
                node=station.node,
                lon=station.lon,
                lat=station.lat,
                parcels=tuple(load),
                service_s=van.station_unload_s,
                earliest_s=float(site.shift_start_s),
                latest_s=latest,
                release_s=float(site.shift_start_s),
            )
        )
    return visits
