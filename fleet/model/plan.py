"""A day's plan: per van, trips of stops with times, loads, distance, energy and road geometry.

Times are seconds after local midnight of ``Plan.day`` in ``Plan.timezone``. A plan is made by
``fleet.planning.plan_day`` (or ``replan``), checked by ``fleet.planning.verify.verify_plan``,
and stored as ``plan.json`` by ``fleet.planning.plan_io`` (format in ``docs/plan.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from fleet.model.ids import DepotId, NodeId, ParcelId, VanId


class Leg(StrEnum):
    """Which leg of the network a van runs."""

    LINE_HAUL = "line_haul"  # warehouse → stations, consolidated by station
    LAST_MILE = "last_mile"  # station → doors


class StopKind(StrEnum):
    DEPOT = "depot"  # the van's own depot: start, reload (and charge), end of a trip
    STATION = "station"  # line-haul: a station where consignments are unloaded
    DOOR = "door"  # last mile: a delivery address
    CHARGE = "charge"  # a stop at a depot whose dwell was lengthened only to charge
    START = "start"  # re-plan only: where the van is when the plan is made (first stop)
    # a rescue trip's second stop: where a broken-down van stands; the rescuer takes its load
    # over there (``ref``: the broken-down van's id; docs/plan.md, "Breakdowns")
    TRANSFER = "transfer"


class UnservedReason(StrEnum):
    TOO_HEAVY = "too_heavy"  # heavier than the van's payload
    TOO_LARGE = "too_large"  # bigger than the van's cargo volume
    OUTSIDE_AREA = "outside_area"  # outside the operating area or too far from a road
    UNREACHABLE = "unreachable"  # no drivable path from/to its station
    OUT_OF_RANGE = "out_of_range"  # the round trip does not fit one charge
    WINDOW_IMPOSSIBLE = "window_impossible"  # no van could arrive inside its window
    NOT_ENOUGH_VANS = "not_enough_vans"  # feasible alone, but the fleet ran out of capacity
    BAD_ROW = "bad_row"  # its orders-file row was skipped (--skip-bad-rows)


@dataclass(frozen=True, slots=True)
class Stop:
    """One stop of a trip, with the state of the van as it leaves."""

    seq: int  # 0-based position in the trip
    kind: StopKind
    ref: str  # depot or station id for depot/station/charge stops; the van a transfer loads
    # from; "" otherwise
    node: NodeId  # road node the stop is snapped to
    lon: float
    lat: float
    arrival_s: float
    departure_s: float
    parcels_loaded: tuple[ParcelId, ...]
    parcels_delivered: tuple[ParcelId, ...]
    load_after_kg: float  # on board when leaving this stop
    load_after_m3: float
    dist_so_far_m: float  # since the start of the van's day (all trips)
    energy_so_far_kwh: float  # drawn from the battery since the start of the day
    soc_pct: float  # state of charge when leaving (after any charging here)
    geometry_in: tuple[tuple[float, float], ...]  # (lon, lat) road path from the previous stop

    @property
    def dwell_s(self) -> float:
        return self.departure_s - self.arrival_s


@dataclass(frozen=True, slots=True)
class Trip:
    """A loop from the van's depot back to it (a re-plan's first trip may start on the road)."""

    index: int  # 0-based within the van's day
    stops: tuple[Stop, ...]

    @property
    def start_s(self) -> float:
        return self.stops[0].departure_s

    @property
    def end_s(self) -> float:
        return self.stops[-1].arrival_s

    def parcels_delivered(self) -> Iterator[ParcelId]:
        for stop in self.stops:
            yield from stop.parcels_delivered


@dataclass(frozen=True, slots=True)
class VanRoute:
    van_id: VanId
    leg: Leg
    depot: DepotId
    trips: tuple[Trip, ...]

    def stops(self) -> Iterator[Stop]:
        for trip in self.trips:
            yield from trip.stops

    @property
    def dist_m(self) -> float:
        return self.trips[-1].stops[-1].dist_so_far_m if self.trips else 0.0

    @property
    def energy_kwh(self) -> float:
        return self.trips[-1].stops[-1].energy_so_far_kwh if self.trips else 0.0


@dataclass(frozen=True, slots=True)
class Unserved:
    parcel_id: ParcelId
    reason: UnservedReason
    detail: str  # one sentence a dispatcher can act on


@dataclass(frozen=True, slots=True)
class VanSummary:
    van_id: VanId
    leg: Leg
    depot: DepotId
    trips: int
    stops: int  # stations or doors visited
    parcels: int  # parcels unloaded (line haul) or delivered (last mile)
    dist_m: float
    energy_kwh: float
    start_s: float
    end_s: float
    min_soc_pct: float
    util_kg_pct: float  # mean over trips of the load leaving the depot / payload
    util_m3_pct: float  # same by volume


@dataclass(frozen=True, slots=True)
class PlanSummary:
    parcels: int  # every parcel given to the planner (served + unserved)
    served: int  # delivered to the door
    unserved: int
    vans_available: int
    vans_used: int
    trips: int
    dist_m: float
    energy_kwh: float
    line_haul_dist_m: float
    last_mile_dist_m: float
    vans: tuple[VanSummary, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    site: str
    day: date
    timezone: str
    created_utc: str  # ISO 8601 UTC instant the plan was made ("" if the caller gave none)
    routes: tuple[VanRoute, ...]
    unserved: tuple[Unserved, ...]
    summary: PlanSummary

    def route(self, van_id: str) -> VanRoute:
        for r in self.routes:
            if r.van_id == van_id:
                return r
        raise KeyError(van_id)

    def delivered(self) -> Iterator[tuple[VanId, ParcelId]]:
        """Every door delivery as (van, parcel): the last mile, by a station's own vans or by
        vans lent to it (a warehouse van after its line haul, too)."""
        for r in self.routes:
            for stop in r.stops():
                if stop.kind is StopKind.DOOR:
                    for pid in stop.parcels_delivered:
                        yield r.van_id, pid
