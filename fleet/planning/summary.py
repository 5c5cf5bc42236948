"""The plan's summary: vans and trips used, parcels served, km, energy, utilisation."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fleet.model.plan import Leg, PlanSummary, StopKind, Unserved, VanRoute, VanSummary
from fleet.model.van import VanSpec


def summarise_van(route: VanRoute, van: VanSpec) -> VanSummary:
    stops = [s for s in route.stops() if s.kind in (StopKind.DOOR, StopKind.STATION)]
    parcels = sum(len(s.parcels_delivered) for s in stops)
    departing = [t.stops[0] for t in route.trips if t.stops]
    n = max(1, len(departing))
    return VanSummary(
        van_id=route.van_id,
        leg=route.leg,
        depot=route.depot,
        trips=len(route.trips),
        stops=len(stops),
        parcels=parcels,
        dist_m=route.dist_m,
        energy_kwh=route.energy_kwh,
        start_s=route.trips[0].stops[0].departure_s if route.trips else 0.0,
        end_s=route.trips[-1].stops[-1].arrival_s if route.trips else 0.0,
        min_soc_pct=min((s.soc_pct for s in route.stops()), default=100.0),
        util_kg_pct=100.0 * math.fsum(s.load_after_kg for s in departing) / (n * van.payload_kg),
        util_m3_pct=100.0
        * math.fsum(s.load_after_m3 for s in departing)
        / (n * van.cargo_volume_m3),
    )


def summarise(
    routes: Sequence[VanRoute],
    unserved: Sequence[Unserved],
    *,
    parcels: int,
    vans_available: int,
    van: VanSpec,
) -> PlanSummary:
    vans = tuple(summarise_van(r, van) for r in routes if r.trips)
    served = sum(
        len(s.parcels_delivered) for r in routes for s in r.stops() if s.kind is StopKind.DOOR
    )
    return PlanSummary(
        parcels=parcels,
        served=served,
        unserved=len(unserved),
        vans_available=vans_available,
        vans_used=len(vans),
        trips=sum(v.trips for v in vans),
        dist_m=math.fsum(v.dist_m for v in vans),
        energy_kwh=math.fsum(v.energy_kwh for v in vans),
        line_haul_dist_m=math.fsum(v.dist_m for v in vans if v.leg is Leg.LINE_HAUL),
        last_mile_dist_m=math.fsum(v.dist_m for v in vans if v.leg is Leg.LAST_MILE),
        vans=vans,
    )
