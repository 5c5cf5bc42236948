"""Fleet sizing: how many vans each depot needs for a day (``fleet plan --size-fleet``).

The day is planned twice: with the fleet as it is (the site's vans, or ``--vans``), and with
more vans at every depot than it has, where each van used costs the search a quarter of a
visit's prize (far more than any detour, less than leaving a parcel out): PyVRP then serves
every parcel it can with the fewest vans, and the vans each depot's routes use are the
answer (or, where the vans available left none of a depot's parcels for want of a van and
used fewer there, that number: the search is a heuristic with a time limit). A depot whose
offered vans were all used while parcels of it were still left for want
of a van is offered twice as many and the sizing planned again (at most ``SIZING_ROUNDS``
times); otherwise its count is a lower bound ("at least") and says so.

A parcel left for want of a van is put down to the depot the planner names in its sentence
(the warehouse for a line-haul shortage, the station for a last-mile one), else to the depot
whose van delivers it in the other plan.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from fleet.model.ids import DepotId, ParcelId
from fleet.model.parcel import Parcel
from fleet.model.plan import Plan, StopKind, Unserved, UnservedReason
from fleet.model.site import Site
from fleet.model.van import VanSpec
from fleet.planning.day import fleet_sizes, plan_day
from fleet.roads import RoadNetwork

SIZING_ROUNDS = 3  # sized plans at most (the first, then twice as many vans where all were used)
CURRENT_SHARE = 0.3  # of the time limit for the plan with the fleet as it is
MIN_OFFER = 4  # vans offered beyond a depot's own, at least

Progress = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class DepotSize:
    depot: DepotId
    available: int  # vans the depot has (site config or --vans)
    offered: int  # vans the last sizing search could use
    needed: int  # vans the sized plan's routes use (or the current plan's, if fewer and enough)
    short_now: int  # parcels left for want of a van with the vans available
    short_sized: int  # ... with the sized fleet (then ``needed`` is a lower bound)

    @property
    def at_least(self) -> bool:
        """``needed`` is only a lower bound: even ``offered`` vans left parcels for want of
        a van, and they were not all used (so more would not help this search)."""
        return self.short_sized > 0


@dataclass(frozen=True)
class FleetSizing:
    depots: tuple[DepotSize, ...]
    current: Plan  # with the vans available
    sized: Plan  # with as many vans as offered, the fewest used
    rounds: int  # sized plans made
    unattributed_now: int  # parcels left for want of a van that no depot could be named for
    unattributed_sized: int

    def needed(self) -> dict[DepotId, int]:
        return {d.depot: d.needed for d in self.depots}


def size_fleet(
    parcels: Sequence[Parcel],
    site: Site,
    van: VanSpec,
    net: RoadNetwork,
    *,
    time_limit_s: float = 30.0,
    seed: int = 1,
    progress: Progress | None = None,
    day: date | None = None,
    vans: Mapping[str, int] | None = None,
    workers: int | None = None,
    max_iterations: int | None = None,
) -> FleetSizing:
    """How many vans each depot needs so that no parcel is left for want of a van.

    ``time_limit_s`` is the optimiser's budget for all the plans together (each is verified
    as every plan is); ``vans`` overrides the vans available at some depots.
    """
    available = fleet_sizes(site, vans)
    budget = max(0.5, time_limit_s)
    left_s = budget * (1 - CURRENT_SHARE)  # for the sized plans: 60 % of what is left each

    def span(lo: float, hi: float, what: str) -> Progress | None:
        if progress is None:
            return None
        report = progress
        return lambda stage, f: report(f"{what}: {stage}", lo + (hi - lo) * f)

    current = plan_day(
        parcels,
        site,
        van,
        net,
        time_limit_s=budget * CURRENT_SHARE,
        seed=seed,
        progress=span(0.0, 0.3, "with the vans available"),
        day=day,
        vans={str(d): n for d, n in available.items()},
        workers=workers,
        max_iterations=max_iterations,
    )
    offered = {d: max(2 * n, n + MIN_OFFER) for d, n in available.items()}
    rounds = 0
    while True:
        lo = 0.3 + 0.7 * rounds / SIZING_ROUNDS
        round_s = left_s * (0.6 if rounds < SIZING_ROUNDS - 1 else 1.0)
        left_s -= round_s
        sized = plan_day(
            parcels,
            site,
            van,
            net,
            time_limit_s=round_s,
            seed=seed,
            progress=span(lo, lo + 0.7 / SIZING_ROUNDS, f"sizing ({sum(offered.values())} vans)"),
            day=day,
            vans={str(d): n for d, n in offered.items()},
            workers=workers,
            max_iterations=max_iterations,
            minimise_vans=True,
        )
        rounds += 1
        used = _used(sized)
        short = _short(sized, site, _served_from(current))
        grow = [d for d, n in short.items() if d is not None and n and used[d] >= offered[d]]
        if not grow or rounds >= SIZING_ROUNDS:
            break
        for d in grow:
            offered[d] *= 2
    short_now = _short(current, site, _served_from(sized))
    # a depot the vans available already serve in full needs no more than they use there
    # (the sized search is a heuristic with a time limit: it may not find the fewest)
    now_used = _used(current)
    for depot in site.depots:
        if not short_now.get(depot.id) and not short.get(depot.id):
            used[depot.id] = min(used.get(depot.id, 0), now_used.get(depot.id, 0))
    if progress is not None:
        progress("done", 1.0)
    return FleetSizing(
        depots=tuple(
            DepotSize(
                depot=d.id,
                available=available[d.id],
                offered=offered[d.id],
                needed=used.get(d.id, 0),
                short_now=short_now.get(d.id, 0),
                short_sized=short.get(d.id, 0),
            )
            for d in site.depots
        ),
        current=current,
        sized=sized,
        rounds=rounds,
        unattributed_now=short_now.get(None, 0),
        unattributed_sized=short.get(None, 0),
    )


def _used(plan: Plan) -> Counter[DepotId]:
    return Counter(r.depot for r in plan.routes if r.trips)


def _served_from(plan: Plan) -> dict[ParcelId, DepotId]:
    """Each parcel delivered at a door, and the depot of the van that does it."""
    return {
        pid: r.depot
        for r in plan.routes
        for s in r.stops()
        if s.kind is StopKind.DOOR
        for pid in s.parcels_delivered
    }


_LINE_HAUL = re.compile(r"line haul|line-haul|warehouse van")


def shortage_depot(
    u: Unserved, site: Site, served_from: Mapping[ParcelId, DepotId]
) -> DepotId | None:
    """The depot a parcel left for want of a van is short at (see the module's docstring)."""
    if _LINE_HAUL.search(u.detail):
        return site.warehouse.id
    for st in site.stations:
        if re.search(rf"(?<![\w-]){re.escape(st.id)}(?![\w-])", u.detail):
            return st.id
    return served_from.get(u.parcel_id)


def _short(
    plan: Plan, site: Site, served_from: Mapping[ParcelId, DepotId]
) -> Counter[DepotId | None]:
    return Counter(
        shortage_depot(u, site, served_from)
        for u in plan.unserved
        if u.reason is UnservedReason.NOT_ENOUGH_VANS
    )
