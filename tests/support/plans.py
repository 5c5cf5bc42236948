"""A small two-leg plan built by hand, for controller tests that need no road network.

``WH-PORTO-01`` carries P1..P4 from the warehouse to station ``ST-A``; ``ST-A-01`` loads them
there and delivers them to three doors. Coordinates are in Porto; times on 2026-11-23.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from fleet.model import (
    DepotId,
    Leg,
    NodeId,
    Parcel,
    ParcelId,
    Plan,
    PlanSummary,
    Stop,
    StopKind,
    Trip,
    VanId,
    VanRoute,
)

DAY = date(2026, 11, 23)
TIMEZONE = "Europe/Lisbon"
WAREHOUSE = (-8.6000, 41.1500)
STATION = (-8.6200, 41.1600)
DOORS = [(-8.6250, 41.1620), (-8.6280, 41.1640), (-8.6300, 41.1610)]
ROSTER = {
    "WH-PORTO-01": WAREHOUSE,
    "WH-PORTO-02": WAREHOUSE,
    "ST-A-01": STATION,
    "ST-A-02": STATION,
}


def parcels(n: int = 4) -> list[Parcel]:
    return [
        Parcel(
            id=ParcelId(f"P{i}"),
            lon=DOORS[min(i - 1, 2)][0],
            lat=DOORS[min(i - 1, 2)][1],
            weight_kg=5.0 * i,
            volume_m3=0.05 * i,
            station=DepotId("ST-A"),
        )
        for i in range(1, n + 1)
    ]


def _stop(
    seq: int,
    kind: StopKind,
    ref: str,
    at: tuple[float, float],
    arrival_s: float,
    dwell_s: float,
    *,
    loaded: Sequence[str] = (),
    delivered: Sequence[str] = (),
    dist_m: float,
    prev: tuple[float, float] | None,
    soc_pct: float = 90.0,
) -> Stop:
    return Stop(
        seq=seq,
        kind=kind,
        ref=ref,
        node=NodeId(1000 + seq),
        lon=at[0],
        lat=at[1],
        arrival_s=arrival_s,
        departure_s=arrival_s + dwell_s,
        parcels_loaded=tuple(ParcelId(p) for p in loaded),
        parcels_delivered=tuple(ParcelId(p) for p in delivered),
        load_after_kg=0.0,
        load_after_m3=0.0,
        dist_so_far_m=dist_m,
        energy_so_far_kwh=dist_m / 1000 * 0.3,
        soc_pct=soc_pct,
        geometry_in=() if prev is None else (prev, ((prev[0] + at[0]) / 2, prev[1]), at),
    )


def line_haul_route(
    ids: Sequence[str] = ("P1", "P2", "P3", "P4"), van: str = "WH-PORTO-01"
) -> VanRoute:
    t0 = 6 * 3600.0
    stops = (
        _stop(0, StopKind.DEPOT, "WH-PORTO", WAREHOUSE, t0, 900, loaded=ids, dist_m=0, prev=None),
        _stop(
            1,
            StopKind.STATION,
            "ST-A",
            STATION,
            t0 + 1500,
            600,
            delivered=ids,
            dist_m=2500,
            prev=WAREHOUSE,
        ),
        _stop(2, StopKind.DEPOT, "WH-PORTO", WAREHOUSE, t0 + 2700, 0, dist_m=5000, prev=STATION),
    )
    return VanRoute(VanId(van), Leg.LINE_HAUL, DepotId("WH-PORTO"), (Trip(0, stops),))


def last_mile_route(
    ids: Sequence[str] = ("P1", "P2", "P3", "P4"), van: str = "ST-A-01"
) -> VanRoute:
    t0 = 8 * 3600.0
    doors: dict[int, list[str]] = {}
    for pid in ids:
        doors.setdefault(min(int(pid[1:]) - 1, 2), []).append(pid)
    stops = [_stop(0, StopKind.DEPOT, "ST-A", STATION, t0, 900, loaded=ids, dist_m=0, prev=None)]
    prev, dist, t = STATION, 0.0, t0 + 900
    for door, pids in sorted(doors.items()):
        dist += 400.0
        t += 120.0
        stops.append(
            _stop(
                len(stops),
                StopKind.DOOR,
                "",
                DOORS[door],
                t,
                80,
                delivered=pids,
                dist_m=dist,
                prev=prev,
            )
        )
        prev, t = DOORS[door], t + 80
    stops.append(
        _stop(len(stops), StopKind.DEPOT, "ST-A", STATION, t + 200, 0, dist_m=dist + 600, prev=prev)
    )
    return VanRoute(VanId(van), Leg.LAST_MILE, DepotId("ST-A"), (Trip(0, tuple(stops)),))


def plan(routes: Sequence[VanRoute] | None = None, n_parcels: int = 4) -> Plan:
    routes = list(routes) if routes is not None else [line_haul_route(), last_mile_route()]
    return Plan(
        site="test",
        day=DAY,
        timezone=TIMEZONE,
        created_utc="2026-11-23T05:00:00Z",
        routes=tuple(routes),
        unserved=(),
        summary=PlanSummary(
            parcels=n_parcels,
            served=n_parcels,
            unserved=0,
            vans_available=len(ROSTER),
            vans_used=len(routes),
            trips=len(routes),
            dist_m=0.0,
            energy_kwh=0.0,
            line_haul_dist_m=0.0,
            last_mile_dist_m=0.0,
            vans=(),
        ),
    )
