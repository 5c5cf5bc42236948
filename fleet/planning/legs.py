"""The model builder: one leg at one depot as a :class:`~fleet.planning.vrp.Problem`.

Leg 1 (line haul) has the warehouse as depot and station consignments as clients; leg 2 (last
mile) has a station as depot and door stops as clients. Both use two load dimensions (grams,
litres), reloads at their depot (``depot_load_s`` each time), time windows, release times, a
distance bound per van, and optional clients with a prize far above any detour, so that the
optimiser serves everything it can and leaves out only what no van can fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fleet.model.ids import VanId
from fleet.model.plan import Leg
from fleet.model.site import Site
from fleet.model.van import VanSpec
from fleet.planning import scaling, vrp
from fleet.planning.demand import DepotPoint, LegMatrix, Visit

# A van brakes into every stop at its service braking, this share of ``max_decel_mps2`` (the
# VCU's controlled stop, docs/safety.md), and pulls away at ``max_accel_mps2``.
SERVICE_BRAKING_SHARE = 0.6


def stop_and_go_s(dist_m: np.ndarray, time_s: np.ndarray, van: VanSpec) -> np.ndarray:
    """What each leg takes above its road time: pulling away from the stop it starts at and
    braking into the one it ends at, ``v/(2a) + v/(2d)`` at the leg's speed ``v`` (its length
    over its road time, at most the top speed). 0 for a leg of no length or no road."""
    ok = np.isfinite(dist_m) & np.isfinite(time_s) & (dist_m > 0) & (time_s > 0)
    v = np.zeros(np.shape(time_s), dtype=np.float64)
    np.divide(dist_m, time_s, out=v, where=ok)
    v = np.minimum(v, van.top_speed_mps)
    brake = van.max_decel_mps2 * SERVICE_BRAKING_SHARE
    return v / (2.0 * van.max_accel_mps2) + v / (2.0 * brake)


@dataclass(frozen=True, slots=True)
class VanSlot:
    """One van of a depot as the optimiser sees it."""

    van_id: VanId
    start_s: float  # free at its depot from
    soc_pct: float  # state of charge then
    max_dist_m: float  # distance bound for its whole day (see day.py for how it tightens)
    # A van of another depot lent to this one (fleet/planning/borrow.py): what the drive here
    # and back home costs (metres, so the optimiser uses it only where it saves a parcel),
    # and when it must be back here at the latest to still reach home in the shift.
    fixed_cost_m: float = 0.0
    end_s: float | None = None
    one_trip: bool = False  # no reload: a rescue takes what it can in one load


def range_m(van: VanSpec, soc_pct: float) -> float:
    """Distance the van may drive from ``soc_pct`` before it reaches its reserve."""
    usable_kwh = van.battery_kwh * max(0.0, soc_pct - van.range_reserve_pct) / 100.0
    return usable_kwh / van.energy_per_m_kwh


@dataclass(frozen=True)
class LegProblem:
    leg: Leg
    depot: DepotPoint
    matrix: LegMatrix
    visits: tuple[Visit, ...]
    slots: tuple[VanSlot, ...]
    problem: vrp.Problem
    type_vans: tuple[tuple[VanId, ...], ...]  # van ids of each vehicle type, in order

    def van_of(self, vehicle_type: int, nth: int) -> VanId:
        return self.type_vans[vehicle_type][nth]


def build_problem(
    leg: Leg,
    depot: DepotPoint,
    matrix: LegMatrix,
    visits: Sequence[Visit],
    slots: Sequence[VanSlot],
    van: VanSpec,
    site: Site,
    *,
    minimise_vans: bool = False,
) -> LegProblem:
    """The PyVRP model for one leg at one depot; ``matrix`` index 0 is the depot.

    ``minimise_vans``: each van used costs a quarter of a visit's prize (far more than any
    detour, less than leaving a visit out), so the search uses the fewest vans that serve
    every visit it can (fleet sizing, :mod:`fleet.planning.sizing`)."""
    if not slots:
        raise ValueError(f"{leg.value} at {depot.depot.id}: no van to plan for")
    # the optimiser sees only the depot and the places it must visit (the leg's matrix may
    # hold more: addresses set aside as unreachable, vans' positions for a re-plan)
    full_at = matrix.index()
    nodes = list(dict.fromkeys([depot.node, *(v.node for v in visits)]))
    rows = [full_at[n] for n in nodes]
    at = {n: i for i, n in enumerate(nodes)}
    dist_m = matrix.dist_m[np.ix_(rows, rows)]
    time_s = matrix.time_s[np.ix_(rows, rows)]
    dist = scaling.dist_matrix(dist_m)
    # the optimiser counts each stop's braking and pulling away, which road times leave out,
    # so a window it meets is met on the road too (a plan's times stay road times)
    dur = scaling.duration_matrix(time_s + stop_and_go_s(dist_m, time_s, van))
    prize = 10 * int(dist.max(initial=0)) + 10 * int(dur.max(initial=0)) + 100_000
    shift_early = scaling.earliest(site.shift_start_s)
    shift_late = scaling.latest(site.shift_end_s)
    clients = tuple(
        vrp.Client(
            location=at[v.node],
            demand=v.demand(),
            service_s=scaling.duration_need(v.service_s),
            tw_early=scaling.earliest(v.earliest_s),
            tw_late=scaling.latest(v.latest_s),
            release_s=scaling.earliest(v.release_s),
            prize=prize,
            name=v.parcel_ids[0] if v.parcels else "",
        )
        for v in visits
    )
    groups: dict[tuple[int, int, int, int, bool], list[VanId]] = {}
    for s in slots:
        key = (
            scaling.earliest(max(s.start_s, site.shift_start_s)),
            scaling.dist_limit(s.max_dist_m),
            scaling.dist_need(s.fixed_cost_m),
            shift_late if s.end_s is None else scaling.latest(min(s.end_s, site.shift_end_s)),
            s.one_trip,
        )
        groups.setdefault(key, []).append(s.van_id)
    capacity = (scaling.weight_limit(van.payload_kg), scaling.volume_limit(van.cargo_volume_m3))
    vehicle_types = tuple(
        vrp.VehicleType(
            count=len(ids),
            capacity=capacity,
            start_depot=0,
            end_depot=0,
            reload_depots=() if one else (0,),
            tw_early=start,
            tw_late=max(start, late),
            max_distance=max(0, bound),
            fixed_cost=fixed + (prize // 4 if minimise_vans else 0),
            name=",".join(ids),
        )
        for (start, bound, fixed, late, one), ids in groups.items()
    )
    coords = np.array([[depot.lon, depot.lat]] + [[0.0, 0.0]] * (len(nodes) - 1))
    for v in visits:
        coords[at[v.node]] = (v.lon, v.lat)
    problem = vrp.Problem(
        dist=dist,
        dur=dur,
        depots=(
            vrp.Depot(
                location=0,
                service_s=scaling.duration_need(van.depot_load_s),
                tw_early=shift_early,
                tw_late=shift_late,
                name=depot.depot.id,
            ),
        ),
        clients=clients,
        vehicle_types=vehicle_types,
        coords=coords,
        name=f"{leg.value} {depot.depot.id}",
    )
    return LegProblem(
        leg=leg,
        depot=depot,
        matrix=matrix,
        visits=tuple(visits),
        slots=tuple(slots),
        problem=problem,
        type_vans=tuple(tuple(ids) for ids in groups.values()),
    )


def routes_by_van(lp: LegProblem, result: vrp.Result) -> dict[VanId, list[list[Visit]]]:
    """The solver's routes as visits per trip, keyed by the van each route was given to."""
    used: dict[int, int] = {}
    out: dict[VanId, list[list[Visit]]] = {}
    for r in result.routes:
        nth = used.get(r.vehicle_type, 0)
        used[r.vehicle_type] = nth + 1
        van_id = lp.van_of(r.vehicle_type, nth)
        if not r.feasible:
            continue  # the day planner lists this route's visits as unserved
        out[van_id] = [[lp.visits[c] for c in trip.clients] for trip in r.trips]
    return out
