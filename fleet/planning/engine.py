"""Planning both legs for a fleet as it is: the engine behind ``plan_day`` and ``replan``.

A day plan is the special case where every van is at its depot with a full battery at the
start of the shift and every parcel is at the warehouse. A re-plan starts from the fleet as
it is: vans on the road with parcels on board, vans out of service, parcels already at
stations. The steps:

1. Parcels no van could take (too heavy, too large, outside the area) are set aside; the rest
   snap to the road and go to their configured station, else the nearest one by road.
2. Per station, the door matrix is computed once; parcels that cannot be reached, do not fit
   one charge, or whose window no van could meet even alone, are set aside with the reason.
3. A van on the road first finishes what it carries (its *trip 0*, ordered by PyVRP); what
   it cannot deliver in time it brings back to its depot.
4. **Leg 1**: each station's parcels still at the warehouse are cut into van loads (kg and
   m³ together, the most urgent first); the warehouse vans carry them in as many trips as
   needed; a consignment must arrive early enough for its most urgent parcel.
5. **Leg 2**: each station's door stops, released when their parcels are at the station, are
   routed for that station's vans; stations are solved in parallel. With whole-fleet sharing
   (:class:`~fleet.planning.borrow.Sharing`), stops a station's vans could not take are then
   offered to every other van that has time left after its own day (``_Day.lend_vans``).
6. Each van's day is replayed with exact road times and its battery (see
   :mod:`fleet.planning.schedule`); a van whose day would break its range is re-planned with
   a tighter distance bound until it does not (one charge for the day at worst).
7. Road geometry is added, the summary computed, and the independent verifier must accept it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from enum import StrEnum

import numpy as np

from fleet.errors import InfeasibleError, InputError, VerificationError
from fleet.model.ids import DepotId, NodeId, ParcelId, VanId
from fleet.model.parcel import Parcel
from fleet.model.plan import Leg, Plan, Stop, StopKind, Trip, Unserved, UnservedReason, VanRoute
from fleet.model.site import Site
from fleet.model.van import VanSpec
from fleet.planning import scaling, vrp
from fleet.planning.borrow import Drive, Lend, Sharing, join_day, lead_in, lent_slot, then
from fleet.planning.demand import (
    DepotPoint,
    LegMatrix,
    Placed,
    Visit,
    assign_stations,
    check_alone,
    check_reach,
    consignments,
    door_service_s,
    door_visits,
    snap_depots,
    unserved,
    window,
)
from fleet.planning.legs import (
    LegProblem,
    VanSlot,
    build_problem,
    range_m,
    routes_by_van,
    stop_and_go_s,
)
from fleet.planning.schedule import Built, StartPoint, add_geometry, build_route
from fleet.planning.summary import summarise
from fleet.planning.text import clock
from fleet.planning.verify import verify_plan
from fleet.roads import RoadNetwork

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
EPOCH_DAY = date(1970, 1, 1)
TIGHTEN_ROUNDS = 3  # re-plans of a depot whose vans break their range, before one charge a day
FIRST_TRIP_ITERATIONS = 3000
REQUIRED_SHARE = 0.6  # of a leg's budget for the first search with every visit required
# A parcel at the warehouse (or on a warehouse van) whose window the two-leg path (line haul,
# then the station's last mile) could meet with less than this to spare is offered to the
# warehouse vans as a direct trip to its door instead.
DIRECT_MARGIN_S = 1800.0
RESCUE_WAIT_S = 1800.0  # a rescue van there this soon after the parcels counts as "at once"
RESCUE_TRIES = 3  # vans tried in turn for a rescue


class Where(StrEnum):
    WAREHOUSE = "warehouse"
    STATION = "station"
    ON_BOARD = "on_board"


@dataclass(frozen=True, slots=True)
class ParcelState:
    where: Where
    ready_s: float = 0.0  # when it can leave the warehouse or station
    station: DepotId | None = None  # where it is (Where.STATION)
    van: VanId | None = None  # who carries it (Where.ON_BOARD)


@dataclass(frozen=True, slots=True)
class VanState:
    van_id: VanId
    depot: DepotId
    in_service: bool
    free_s: float  # may start the plan from (seconds after local midnight)
    soc_pct: float
    away: tuple[NodeId, float, float] | None  # road node and lon/lat if not at its depot
    on_board: tuple[ParcelId, ...] = ()


@dataclass(frozen=True)
class StartingState:
    """What the verifier must be told to check a re-plan: the parcels already at a station
    (including those recovered from vans out of service) and each van's starting charge."""

    at_station: dict[ParcelId, DepotId]
    start_soc_pct: dict[VanId, float]
    at_station_from_s: dict[ParcelId, float] = field(default_factory=dict)
    # parcels aboard broken-down vans that a rescue trip may take over where the van stands:
    # which van, until when (then they are taken to its depot), and the van's road node
    transfer_from: dict[ParcelId, VanId] = field(default_factory=dict)
    transfer_until_s: dict[ParcelId, float] = field(default_factory=dict)
    transfer_node: dict[VanId, NodeId] = field(default_factory=dict)


def van_ids(depot: DepotId, count: int) -> list[VanId]:
    """``WH-PORTO-01``, ``WH-PORTO-02``, ... (contract section 2)."""
    return [VanId(f"{depot}-{k:02d}") for k in range(1, count + 1)]


class _Progress:
    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress

    def __call__(self, stage: str, fraction: float) -> None:
        if self._progress is not None:
            self._progress(stage, max(0.0, min(1.0, fraction)))

    def span(self, stage: str, lo: float, hi: float) -> Callable[[float], None]:
        return lambda f: self(stage, lo + (hi - lo) * f)


@dataclass
class _First:
    """A van's trip 0 from where it is, and what it then brings back to its depot."""

    start: StartPoint
    start_loc: int
    visits: list[Visit]
    returned: tuple[ParcelId, ...]
    built: Built


@dataclass
class _Part:
    """One leg at one depot, as the tightening loop re-plans it."""

    lp: LegProblem
    time_limit_s: float
    first: dict[VanId, _First] = field(default_factory=dict)
    routes: dict[VanId, Built] = field(default_factory=dict)
    dropped: list[Visit] = field(default_factory=list)


class _Engine:
    def __init__(
        self,
        site: Site,
        van: VanSpec,
        net: RoadNetwork,
        *,
        seed: int,
        workers: int | None,
        max_iterations: int | None,
        now_s: float,
        sharing: Sharing = Sharing.FLEET,
        transfer_from: frozenset[VanId] = frozenset(),
    ) -> None:
        self.sharing = sharing
        self.transfer_from = transfer_from
        self.site = site
        self.van = van
        self.net = net
        self.seed = seed
        self.max_iterations = max_iterations
        self.now_s = now_s
        self.solver = vrp.Solver(workers)
        self.out: list[Unserved] = []
        self.start_soc: dict[VanId, float] = {}
        self.minimise_vans = False  # fleet sizing: a cost per van used (legs.build_problem)

    def close(self) -> None:
        self.solver.close()

    # -- solving and replaying ------------------------------------------------------------
    def solve_parts(self, parts: list[_Part], progress: Callable[[float], None] | None) -> None:
        """Solve every part, then re-solve those whose replay breaks a limit."""
        todo = [p for p in parts if p.lp.visits]
        for p in parts:
            if not p.lp.visits:
                self._replay(p, None)
        last: dict[int, vrp.Result] = {}
        for round_ in range(TIGHTEN_ROUNDS + 2):
            if not todo:
                return
            seeds = tuple(range(self.seed, self.seed + max(1, self.solver.workers // len(todo))))
            if round_ == 0:
                results = self._first_solve(todo, seeds, progress)
            else:
                # the same problem with a tighter distance bound, from the last solution
                jobs = [
                    vrp.Job(
                        p.lp.problem,
                        max(0.5, p.time_limit_s / 4),
                        seeds,
                        self.max_iterations,
                        last[id(p)],
                    )
                    for p in todo
                ]
                results = self.solver.run(jobs)
            last.update({id(p): r for p, r in zip(todo, results, strict=True)})
            again: list[_Part] = []
            for part, result in zip(todo, results, strict=True):
                self._replay(part, result)
                short = {vid: b for vid, b in part.routes.items() if b.shortfalls}
                if not short:
                    continue
                if round_ > TIGHTEN_ROUNDS:  # pragma: no cover - one charge a day always fits
                    raise VerificationError(
                        [f"{s.van_id}: {s.message}" for b in short.values() for s in b.shortfalls]
                    )
                for vid, b in short.items():
                    log.info(
                        "%s: %s; re-planning with a tighter distance bound",
                        vid,
                        "; ".join(s.message for s in b.shortfalls),
                    )
                part.lp = self._tighten(part.lp, short, final=round_ >= TIGHTEN_ROUNDS - 1)
                again.append(part)
            todo = again

    def _first_solve(
        self,
        parts: Sequence[_Part],
        seeds: tuple[int, ...],
        progress: Callable[[float], None] | None,
    ) -> list[vrp.Result]:
        """Every visit required first; where the fleet cannot take them all, visits become
        optional (prize-collecting) and the search continues from the best attempt.

        PyVRP serves required clients well, adding trips as needed; prize-collecting alone
        would rather leave out a client than open a new trip for it. The budget is split:
        ``REQUIRED_SHARE`` for the first search, the rest to continue it (required where that
        was feasible, prize-collecting where not), so the whole stays within the budget.
        """

        def span(lo: float, hi: float) -> Callable[[float], None] | None:
            if progress is None:
                return None
            report = progress
            return lambda f: report(lo + (hi - lo) * f)

        first = [
            vrp.Job(
                p.lp.problem.all_required(),
                max(0.1, p.time_limit_s * REQUIRED_SHARE),
                seeds,
                self.max_iterations,
            )
            for p in parts
        ]
        results = self.solver.run(first, span(0.0, REQUIRED_SHARE))
        short = [i for i, r in enumerate(results) if not r.feasible]
        if short:
            log.info(
                "%s: not every visit fits the fleet; leaving out the fewest",
                ", ".join(parts[i].lp.problem.name for i in short),
            )
        again = [
            vrp.Job(
                p.lp.problem if not r.feasible else p.lp.problem.all_required(),
                max(0.1, p.time_limit_s * (1 - REQUIRED_SHARE)),
                seeds,
                self.max_iterations,
                r,
            )
            for p, r in zip(parts, results, strict=True)
        ]
        return self.solver.run(again, span(REQUIRED_SHARE, 1.0))

    def _tighten(self, lp: LegProblem, short: Mapping[VanId, Built], *, final: bool) -> LegProblem:
        slots = []
        for s in lp.slots:
            if s.van_id in short:
                floor = range_m(self.van, s.soc_pct)
                bound = floor if final else max(floor, 0.8 * short[s.van_id].dist_m)
                s = replace(s, max_dist_m=min(s.max_dist_m, bound))
            slots.append(s)
        return build_problem(
            lp.leg,
            lp.depot,
            lp.matrix,
            lp.visits,
            slots,
            self.van,
            self.site,
            minimise_vans=self.minimise_vans,
        )

    def _replay(self, part: _Part, result: vrp.Result | None) -> None:
        lp = part.lp
        by_van = routes_by_van(lp, result) if result is not None else {}
        routes: dict[VanId, Built] = {}
        taken: set[int] = set()
        index = {id(v): i for i, v in enumerate(lp.visits)}
        for s in lp.slots:
            pool = by_van.get(s.van_id, [])
            first = part.first.get(s.van_id)
            if not pool and first is None:
                continue
            if first is None:
                routes[s.van_id] = build_route(
                    s.van_id,
                    lp.leg,
                    lp.depot,
                    pool,
                    lp.matrix,
                    self.van,
                    self.site,
                    start_s=s.start_s,
                    start_soc_pct=s.soc_pct,
                    leave_early=s.one_trip,
                )
            else:
                routes[s.van_id] = build_route(
                    s.van_id,
                    lp.leg,
                    lp.depot,
                    [first.visits, *pool],
                    lp.matrix,
                    self.van,
                    self.site,
                    start_s=first.start.time_s,
                    start_soc_pct=self.start_soc[s.van_id],
                    start=first.start,
                    start_loc=first.start_loc,
                    returned=first.returned,
                )
            taken.update(index[id(v)] for trip in pool for v in trip)
        part.routes = routes
        part.dropped = [v for i, v in enumerate(lp.visits) if i not in taken]

    # -- trip 0 of vans on the road ---------------------------------------------------------
    def first_trips(
        self,
        leg: Leg,
        depot: DepotPoint,
        matrix: LegMatrix,
        todo: Sequence[tuple[VanState, list[Visit], tuple[ParcelId, ...], StartPoint]],
    ) -> dict[VanId, _First]:
        """Order what each van on the road still carries, from where it is to its depot."""
        at = matrix.index()
        jobs: list[vrp.Job] = []
        todo = [
            self._reachable(vs, visits, back, start, matrix) for vs, visits, back, start in todo
        ]
        for vs, visits, _, start in todo:
            # 0: the depot, 1: where the van is, then each place it must still stop at
            doors = sorted({at[v.node] for v in visits})
            locs = [0, at[start.node], *doors]
            pos = {matrix.nodes[i]: 2 + k for k, i in enumerate(doors)}
            sub_dist = matrix.dist_m[np.ix_(locs, locs)]
            sub_time = matrix.time_s[np.ix_(locs, locs)]
            jobs.append(
                vrp.Job(
                    self._first_problem(leg, depot, sub_dist, sub_time, pos, visits, start, vs),
                    2.0,
                    (self.seed,),
                    FIRST_TRIP_ITERATIONS,
                )
            )
        results = self.solver.run(jobs) if jobs else []
        out: dict[VanId, _First] = {}
        for (vs, visits, returned, start), result in zip(todo, results, strict=True):
            order: list[Visit] = []
            for r in result.routes:
                if r.feasible:
                    order = [visits[c] for t in r.trips for c in t.clients]
            kept = {id(v) for v in order}
            back = returned + tuple(p for v in visits if id(v) not in kept for p in v.parcel_ids)
            start_loc = at[start.node]
            built = build_route(
                vs.van_id,
                leg,
                depot,
                [order],
                matrix,
                self.van,
                self.site,
                start_s=start.time_s,
                start_soc_pct=vs.soc_pct,
                start=start,
                start_loc=start_loc,
                returned=back,
            )
            out[vs.van_id] = _First(start, start_loc, order, back, built)
        return out

    def _reachable(
        self,
        vs: VanState,
        visits: list[Visit],
        back: tuple[ParcelId, ...],
        start: StartPoint,
        matrix: LegMatrix,
    ) -> tuple[VanState, list[Visit], tuple[ParcelId, ...], StartPoint]:
        """Visits the van can drive to from where it is and then home; the rest go home."""
        at = matrix.index()
        s = at[start.node]
        if not math.isfinite(float(matrix.dist_m[s, 0])):
            raise InfeasibleError(
                f"van {vs.van_id}: no drivable road from where it is (node {start.node}) back "
                "to its depot"
            )
        ok = [
            v
            for v in visits
            if math.isfinite(float(matrix.dist_m[s, at[v.node]]))
            and math.isfinite(float(matrix.dist_m[at[v.node], 0]))
        ]
        kept = {id(v) for v in ok}
        back = back + tuple(p for v in visits if id(v) not in kept for p in v.parcel_ids)
        return vs, ok, back, start

    def _first_problem(
        self,
        leg: Leg,
        depot: DepotPoint,
        dist_m: np.ndarray,
        time_s: np.ndarray,
        at: Mapping[NodeId, int],
        visits: Sequence[Visit],
        start: StartPoint,
        vs: VanState,
    ) -> vrp.Problem:
        dist = scaling.dist_matrix(dist_m)
        dur = scaling.duration_matrix(time_s + stop_and_go_s(dist_m, time_s, self.van))
        prize = 10 * int(dist.max(initial=0)) + 10 * int(dur.max(initial=0)) + 100_000
        begin = scaling.earliest(start.time_s)
        back_s = float(time_s[1, 0])
        end = scaling.latest(max(self.site.shift_end_s, start.time_s + back_s + 1.0))
        big = (scaling.weight_need(start.load_kg) + 1, scaling.volume_need(start.load_m3) + 1)
        return vrp.Problem(
            dist=dist,
            dur=dur,
            depots=(vrp.Depot(0, name=depot.depot.id), vrp.Depot(1, name=str(vs.van_id))),
            clients=tuple(
                vrp.Client(
                    location=at[v.node],
                    demand=v.demand(),
                    service_s=scaling.duration_need(v.service_s),
                    tw_early=scaling.earliest(v.earliest_s),
                    tw_late=scaling.latest(v.latest_s),
                    prize=prize,
                )
                for v in visits
            ),
            vehicle_types=(
                vrp.VehicleType(
                    count=1,
                    capacity=(
                        max(big[0], scaling.weight_limit(self.van.payload_kg)),
                        max(big[1], scaling.volume_limit(self.van.cargo_volume_m3)),
                    ),
                    start_depot=1,
                    end_depot=0,
                    tw_early=begin,
                    tw_late=end,
                    max_distance=scaling.dist_limit(range_m(self.van, vs.soc_pct)),
                ),
            ),
            name=f"{leg.value} trip 0 of {vs.van_id}",
        )


def _drive_s(m: LegMatrix, i: int, j: int, van: VanSpec) -> float:
    """The drive from ``m``'s node ``i`` to node ``j`` as the optimiser counts it: the road
    time and the stop and go at either end (:func:`~fleet.planning.legs.stop_and_go_s`)."""
    dist, time = m.dist_m[i : i + 1, j : j + 1], m.time_s[i : i + 1, j : j + 1]
    return float((time + stop_and_go_s(dist, time, van))[0, 0])


def _sooner(route: VanRoute, parcels: set[ParcelId]) -> tuple[int, float, float]:
    """How well ``route`` delivers ``parcels``, smaller is better: how many it leaves out,
    then when it has delivered the last of those it delivers (a window opening late may
    decide that for both ways), then their mean delivery time."""
    done = {
        pid: s.arrival_s
        for s in route.stops()
        if s.kind is StopKind.DOOR
        for pid in s.parcels_delivered
        if pid in parcels
    }
    if not done:
        return len(parcels), math.inf, math.inf
    return len(parcels) - len(done), max(done.values()), math.fsum(done.values()) / len(done)


def _from_home(
    trip0: VanRoute,
    home: DepotPoint,
    broken: VanId,
    free_s: float,
    arrive_s: float,
    soc_pct: float,
    drive_m: float,
    van: VanSpec,
) -> VanRoute:
    """A rescue trip: ``trip0`` starts where the broken-down van stands (a ``start`` stop,
    left when the transfer is done); it becomes the van's depot (left at ``free_s`` with
    ``soc_pct``), the drive there (``drive_m``, arriving at ``arrive_s``) and a ``transfer``
    stop at ``broken`` loading what ``trip0`` carries, then the rest of ``trip0``, counted on."""
    stops = trip0.trips[0].stops
    at = stops[0]
    used = drive_m * van.energy_per_m_kwh
    leave = Stop(
        seq=0,
        kind=StopKind.DEPOT,
        ref=home.depot.id,
        node=home.node,
        lon=home.lon,
        lat=home.lat,
        arrival_s=free_s,
        departure_s=free_s,
        parcels_loaded=(),
        parcels_delivered=(),
        load_after_kg=0.0,
        load_after_m3=0.0,
        dist_so_far_m=0.0,
        energy_so_far_kwh=0.0,
        soc_pct=soc_pct,
        geometry_in=(),
    )
    meet = replace(
        at,
        seq=1,
        kind=StopKind.TRANSFER,
        ref=broken,
        arrival_s=arrive_s,
        dist_so_far_m=at.dist_so_far_m + drive_m,
        energy_so_far_kwh=at.energy_so_far_kwh + used,
    )
    rest = tuple(
        replace(
            s,
            seq=k + 2,
            dist_so_far_m=s.dist_so_far_m + drive_m,
            energy_so_far_kwh=s.energy_so_far_kwh + used,
        )
        for k, s in enumerate(stops[1:])
    )
    return replace(trip0, trips=(Trip(index=0, stops=(leave, meet, *rest)),))


def _unique(nodes: Sequence[NodeId]) -> list[NodeId]:
    return list(dict.fromkeys(nodes))


def _ordered(routes: Sequence[VanRoute], site: Site) -> list[VanRoute]:
    rank = {d.id: i for i, d in enumerate(site.depots)}
    by_depot: dict[int, list[VanRoute]] = defaultdict(list)
    for r in routes:
        by_depot[rank.get(r.depot, len(rank))].append(r)
    return [r for k in sorted(by_depot) for r in sorted(by_depot[k], key=lambda r: r.van_id)]


def _split_time(time_limit_s: float, n_line_haul: int, n_last_mile: int) -> tuple[float, float]:
    total = max(0.2, time_limit_s)
    if n_last_mile == 0:
        return total, 0.0
    if n_line_haul == 0:
        return 0.0, total
    share = min(0.5, max(0.1, n_line_haul / (n_line_haul + n_last_mile)))
    return total * share, total * (1 - share)


def station_budgets(
    total_s: float, sizes: Mapping[DepotId, int], workers: int
) -> dict[DepotId, float]:
    """Wall-clock seconds per station job so that all of them fit ``total_s`` on ``workers``."""
    n = sum(sizes.values())
    out = {}
    for st, size in sizes.items():
        share = total_s * min(workers, len(sizes)) * size / max(1, n)
        out[st] = max(0.2, min(total_s, share))
    return out


class _Day:
    """One planning run: where everything is, then leg 1, then leg 2."""

    def __init__(
        self,
        engine: _Engine,
        parcels: Sequence[Parcel],
        vans: Sequence[VanState],
        states: Mapping[ParcelId, ParcelState],
        report: _Progress,
    ) -> None:
        self.engine = engine
        self.site = engine.site
        self.van = engine.van
        self.net = engine.net
        self.report = report
        self.parcels = list(parcels)
        self.by_id = {p.id: p for p in parcels}
        self.vans = list(vans)
        self.states = states
        self.out = engine.out
        self.start = max(engine.now_s, float(self.site.shift_start_s))
        self.depots = snap_depots(self.site, self.net)
        self.wh = self.depots[self.site.warehouse.id]
        self.stations = [self.depots[s.id] for s in self.site.stations]
        self.live = {v.van_id: v for v in vans if v.in_service}
        self.full_m = range_m(self.van, 100.0)
        # filled by the steps below
        self.placed: dict[ParcelId, Placed] = {}
        self.to_station: dict[ParcelId, DepotId] = {}
        self.wh_ready: dict[ParcelId, float] = {}  # at the warehouse, may leave from
        self.st_ready: dict[ParcelId, float] = {}  # at a station, may leave from
        self.lm_board: dict[VanId, list[Placed]] = defaultdict(list)
        self.lh_board: dict[VanId, list[Placed]] = defaultdict(list)
        self.returned: dict[VanId, list[ParcelId]] = defaultdict(list)
        self.members: dict[DepotId, list[Placed]] = defaultdict(list)
        self.mats: dict[DepotId, LegMatrix] = {}
        self.keep: dict[DepotId, list[Placed]] = defaultdict(list)
        self.release: dict[ParcelId, float] = {}
        self.routes: list[VanRoute] = []
        # direct trips warehouse -> door (DIRECT_MARGIN_S): at the warehouse, and on board
        self.direct: list[Placed] = []
        self.direct_earliest: dict[ParcelId, float] = {}  # a warehouse van there, alone
        self.direct_board: dict[VanId, list[Placed]] = defaultdict(list)
        self.earliest: dict[ParcelId, float] = {}  # at the warehouse: a van alone at its door
        self.lh_matrix: LegMatrix | None = None  # every depot (and line-haul vans' positions)
        self.recovered: dict[DepotId, list[ParcelId]] = defaultdict(list)  # from broken vans
        self.lead: dict[VanId, VanRoute] = {}  # a rescue a van drives before its own work
        self.lent: set[VanId] = set()  # vans lent to another depot after their own day
        self.lh_left: dict[ParcelId, str] = {}  # what the line haul could not bring, and why

    # -- 1. where every parcel is and where it goes -------------------------------------------
    def cut_off(self) -> set[VanId]:
        """Vans on the road with no drivable way back to their depot (a road closure around
        them): they get no work, and what they carry waits aboard them (``unreachable``)."""
        away = [(v, v.away[0]) for v in self.vans if v.in_service and v.away is not None]
        if not away:
            return set()
        starts = _unique([node for _, node in away])
        homes = _unique([self.depots[v.depot].node for v, _ in away])
        m = self.net.matrix(starts, homes)
        src = {n: i for i, n in enumerate(starts)}
        dst = {n: j for j, n in enumerate(homes)}
        return {
            v.van_id
            for v, node in away
            if not math.isfinite(float(m.dist_m[src[node], dst[self.depots[v.depot].node]]))
        }

    def locate(self) -> None:
        trapped = self.cut_off()
        if trapped:
            log.warning("%s: no drivable way back to the depot", ", ".join(sorted(trapped)))
            self.vans = [
                replace(v, in_service=False) if v.van_id in trapped else v for v in self.vans
            ]
            self.live = {v.van_id: v for v in self.vans if v.in_service}
        carrier: dict[ParcelId, VanState] = {}
        for pid, state in self.states.items():
            if state.where is Where.ON_BOARD and state.van in self.live:
                carrier[pid] = self.live[VanId(state.van)]
        placed, rejected = check_alone(self.parcels, self.van, self.net)
        self.placed = {pl.parcel.id: pl for pl in placed}
        self.out += rejected
        owners = {v.van_id: v for v in self.vans}
        need_station: list[Placed] = []
        for parcel in self.parcels:
            state = self.states.get(parcel.id, ParcelState(Where.WAREHOUSE))
            pl = self.placed.get(parcel.id)
            vs = carrier.get(parcel.id)
            if state.where is Where.ON_BOARD and state.van in trapped:
                if pl is not None:  # (else check_alone listed it already)
                    self.out.append(
                        unserved(
                            parcel,
                            UnservedReason.UNREACHABLE,
                            f"aboard {state.van}, which a road closure cuts off from its depot",
                        )
                    )
                continue
            if vs is not None:
                if pl is None:
                    self.returned[vs.van_id].append(parcel.id)  # unservable: back to its depot
                elif vs.depot == self.wh.depot.id:
                    self.lh_board[vs.van_id].append(pl)
                    need_station.append(pl)
                else:
                    self.lm_board[vs.van_id].append(pl)
                    self.to_station[parcel.id] = vs.depot
                continue
            if pl is None:
                continue
            ready = max(self.start, state.ready_s)
            owner = owners.get(state.van) if state.van is not None else None
            if (
                state.where is Where.ON_BOARD
                and owner is not None
                and owner.depot != self.wh.depot.id
            ):
                # on a last-mile van out of service: recovered to its station
                self.to_station[parcel.id] = owner.depot
                self.st_ready[parcel.id] = ready
                self.recovered[owner.depot].append(parcel.id)
            elif state.where is Where.STATION:
                sid = state.station or parcel.station
                if sid is None:
                    need_station.append(pl)  # the nearest by road, as the day plan chose
                else:
                    self.to_station[parcel.id] = sid
                self.st_ready[parcel.id] = ready
            else:  # at the warehouse, or recovered there from a line-haul van
                self.wh_ready[parcel.id] = ready
                need_station.append(pl)
        self.report("assigning stations", 0.04)
        by_station, rejected = assign_stations(need_station, self.stations, self.net)
        for u in rejected:
            vs = carrier.get(u.parcel_id)
            if vs is not None:
                board = self.lh_board[vs.van_id]
                self.lh_board[vs.van_id] = [q for q in board if q.parcel.id != u.parcel_id]
                self.returned[vs.van_id].append(u.parcel_id)
        self.out += rejected
        for sid, group in by_station.items():
            for pl in group:
                self.to_station[pl.parcel.id] = sid
        for pid, sid in self.to_station.items():
            if pid in self.placed:
                self.members[sid].append(self.placed[pid])

    def away(self, depot: DepotId) -> list[VanState]:
        """In-service vans of ``depot`` that are not simply waiting, empty, at it."""
        return [
            v
            for v in self.vans
            if v.in_service and v.depot == depot and (v.away is not None or v.on_board)
        ]

    # -- 2. matrices, reach checks, consignments ---------------------------------------------
    def prepare_stations(self) -> tuple[LegMatrix, list[Visit]]:
        wh, van = self.wh, self.van
        lh_nodes = _unique(
            [wh.node, *(s.node for s in self.stations)]
            + [v.away[0] for v in self.away(wh.depot.id) if v.away is not None]
        )
        lh_matrix = self.lh_matrix = LegMatrix.between(lh_nodes, self.net)
        lh_at = lh_matrix.index()
        cons: list[Visit] = []
        candidates: list[tuple[DepotPoint, Placed, float, float]] = []  # maybe direct
        used = [s for s in self.stations if self.members.get(s.depot.id) or self.away(s.depot.id)]
        for k, st in enumerate(used):
            sid = st.depot.id
            self.report(f"road matrix for {sid}", 0.06 + 0.14 * k / max(1, len(used)))
            group = self.members.get(sid, [])
            i = lh_at[st.node]
            there_s, back_s = _drive_s(lh_matrix, 0, i, van), float(lh_matrix.time_s[i, 0])
            round_m = float(lh_matrix.dist_m[0, i] + lh_matrix.dist_m[i, 0])
            starts = [v.away[0] for v in self.away(sid) if v.away is not None]
            nodes = _unique([st.node, *sorted({pl.node for pl in group}), *starts])
            mat = self.mats[sid] = LegMatrix.between(nodes, self.net)
            at_wh = [pl for pl in group if pl.parcel.id in self.wh_ready]
            at_st = [pl for pl in group if pl.parcel.id in self.st_ready]
            if at_wh and not (math.isfinite(there_s) and math.isfinite(back_s)):
                self.out += [
                    unserved(
                        pl.parcel,
                        UnservedReason.UNREACHABLE,
                        f"no drivable round trip between the warehouse and station {sid}",
                    )
                    for pl in at_wh
                ]
                at_wh = []
            elif at_wh and round_m > self.full_m:
                self.out += [
                    unserved(
                        pl.parcel,
                        UnservedReason.OUT_OF_RANGE,
                        f"the line-haul round trip to station {sid} does not fit one charge",
                    )
                    for pl in at_wh
                ]
                at_wh = []
            first_out = min((self.wh_ready[pl.parcel.id] for pl in at_wh), default=self.start)
            ready = first_out + van.depot_load_s + there_s + van.station_unload_s
            at = mat.index()
            two_leg: list[Placed] = []
            for pl in at_wh:
                door_s = ready + van.depot_load_s + _drive_s(mat, 0, at[pl.node], van)
                self.earliest[pl.parcel.id] = door_s
                if pl.parcel.latest_s is not None and door_s + DIRECT_MARGIN_S > pl.parcel.latest_s:
                    candidates.append((st, pl, ready, door_s))
                else:
                    two_leg.append(pl)
            kept = self.reach(sid, two_leg, dict.fromkeys((pl.parcel.id for pl in two_leg), ready))
            kept_st = self.reach(sid, at_st, self.st_ready)
            self.keep[sid] += kept + kept_st
            cons += self.consign(st, kept)
        board = self.direct_on_board_candidates(lh_matrix)
        if candidates or board:
            lh_matrix = LegMatrix.between(
                _unique([*lh_nodes, *(c[1].node for c in candidates), *(b[1].node for b in board)]),
                self.net,
            )
            cons += self.choose_direct(lh_matrix, candidates, board)
        return lh_matrix, cons

    def consign(self, st: DepotPoint, kept: Sequence[Placed]) -> list[Visit]:
        """Line-haul consignments of ``kept`` (parcels at the warehouse) for station ``st``."""
        van, site, mat = self.van, self.site, self.mats[st.depot.id]
        slack: dict[ParcelId, float] = {}
        at = mat.index()
        for pl in kept:
            j = at[pl.node]
            to_s, from_s = float(mat.time_s[0, j]), float(mat.time_s[j, 0])
            _, late = window(pl.parcel, site)
            alone = van.door_stop_s + door_service_s(pl.parcel, van)
            before_door = van.station_unload_s + van.depot_load_s + to_s
            slack[pl.parcel.id] = min(
                late - before_door, site.shift_end_s - alone - from_s - before_door
            )
        return [
            replace(c, release_s=max(self.wh_ready[q.id] for q in c.parcels))
            for c in consignments(st, kept, van, site, slack_s=slack)
        ]

    def direct_on_board_candidates(self, lh_matrix: LegMatrix) -> list[tuple[VanId, Placed]]:
        """Parcels on board a warehouse van whose window the way through their station would
        meet with less than ``DIRECT_MARGIN_S`` to spare."""
        van, lh_at = self.van, lh_matrix.index()
        out: list[tuple[VanId, Placed]] = []
        for vs in self.away(self.wh.depot.id):
            node = vs.away[0] if vs.away is not None else self.wh.node
            t0 = max(self.start, vs.free_s)
            for pl in self.lh_board.get(vs.van_id, []):
                sid = self.to_station.get(pl.parcel.id)
                if pl.parcel.latest_s is None or sid is None or sid not in self.mats:
                    continue
                mat = self.mats[sid]
                door_s = (
                    t0
                    + float(lh_matrix.time_s[lh_at[node], lh_at[self.depots[sid].node]])
                    + van.station_unload_s
                    + van.depot_load_s
                    + float(mat.time_s[0, mat.index()[pl.node]])
                )
                if door_s + DIRECT_MARGIN_S > pl.parcel.latest_s:
                    out.append((vs.van_id, pl))
        return out

    def choose_direct(
        self,
        lh_matrix: LegMatrix,
        candidates: Sequence[tuple[DepotPoint, Placed, float, float]],
        board: Sequence[tuple[VanId, Placed]],
    ) -> list[Visit]:
        """Which candidates go direct from the warehouse to their door (a warehouse van,
        alone, would be there in time, back by the end of the shift, within one charge);
        the others go through their station if that can still meet the window, else they
        are unserved with the earliest time either way could reach them. Returns the
        consignments of those sent through their station after all."""
        van, site = self.van, self.site
        at = lh_matrix.index()
        dist, time_s = lh_matrix.dist_m, lh_matrix.time_s
        via: dict[DepotId, tuple[DepotPoint, float, list[Placed]]] = {}
        for st, pl, ready, two_leg_s in candidates:
            p, j = pl.parcel, at[pl.node]
            early, late = window(p, site)
            arrive = self.wh_ready[p.id] + van.depot_load_s + _drive_s(lh_matrix, 0, j, van)
            back = max(arrive, early) + van.door_stop_s + door_service_s(p, van) + time_s[j, 0]
            round_m = float(dist[0, j] + dist[j, 0])
            if arrive <= late and back <= site.shift_end_s and round_m <= self.full_m:
                self.direct.append(pl)
                self.direct_earliest[p.id] = arrive
                self.earliest[p.id] = min(arrive, two_leg_s)
            elif two_leg_s <= late or not math.isfinite(two_leg_s):
                via.setdefault(st.depot.id, (st, ready, []))[2].append(pl)
            else:
                best, how = min(
                    (arrive, "direct from the warehouse"), (two_leg_s, f"through {st.depot.id}")
                )
                self.out.append(
                    unserved(
                        p,
                        UnservedReason.WINDOW_IMPOSSIBLE,
                        f"the earliest a van can reach it is {clock(best)} ({how}), after its "
                        f"window closes at {clock(late)}",
                    )
                )
        cons: list[Visit] = []
        for st, ready, group in via.values():
            sid = st.depot.id
            kept = self.reach(sid, group, dict.fromkeys((pl.parcel.id for pl in group), ready))
            self.keep[sid] += kept
            cons += self.consign(st, kept)
        for van_id, pl in board:
            j = at[pl.node]
            if math.isfinite(float(dist[0, j])) and math.isfinite(float(dist[j, 0])):
                self.direct_board[van_id].append(pl)
        return cons

    def reach(
        self, sid: DepotId, group: Sequence[Placed], ready: Mapping[ParcelId, float]
    ) -> list[Placed]:
        """Parcels of ``group`` a van of ``sid`` could deliver alone once they are ready there."""
        kept: list[Placed] = []
        for pl in group:
            ok, rejected = check_reach(
                [pl],
                self.mats[sid],
                self.van,
                self.site,
                station=DepotId(sid),
                ready_s=ready[pl.parcel.id] + self.van.depot_load_s,
                range_m=self.full_m,
            )
            self.out += rejected
            kept += ok
        return kept

    def start_point(
        self, vs: VanState, home: DepotPoint, visits: Sequence[Visit]
    ) -> tuple[VanState, list[Visit], tuple[ParcelId, ...], StartPoint]:
        node, lon, lat = vs.away if vs.away is not None else (home.node, home.lon, home.lat)
        back = tuple(self.returned.get(vs.van_id, []))
        onboard = tuple(pid for v in visits for pid in v.parcel_ids) + back
        sp = StartPoint(
            node,
            lon,
            lat,
            max(self.start, vs.free_s),
            onboard,
            math.fsum(self.by_id[p].weight_kg for p in onboard),
            math.fsum(self.by_id[p].volume_m3 for p in onboard),
        )
        return vs, list(visits), back, sp

    # -- 3. leg 1 ----------------------------------------------------------------------------
    def line_haul(self, lh_matrix: LegMatrix, cons: list[Visit], time_s: float) -> None:
        wh, van, site = self.wh, self.van, self.site
        todo = []
        for vs in self.away(wh.depot.id):
            group: dict[DepotId, list[Parcel]] = defaultdict(list)
            doors = self.direct_board.get(vs.van_id, [])
            direct_ids = {pl.parcel.id for pl in doors}
            for pl in self.lh_board.get(vs.van_id, []):
                if pl.parcel.id not in direct_ids:
                    group[self.to_station[pl.parcel.id]].append(pl.parcel)
            visits = [
                Visit(
                    kind=StopKind.STATION,
                    ref=sid,
                    node=self.depots[sid].node,
                    lon=self.depots[sid].lon,
                    lat=self.depots[sid].lat,
                    parcels=tuple(ps),
                    service_s=van.station_unload_s,
                    earliest_s=0.0,
                    latest_s=float(max(site.shift_end_s, self.start)),
                    release_s=0.0,
                )
                for sid, ps in sorted(group.items())
            ]
            visits += door_visits(doors, van, site, dict.fromkeys(direct_ids, 0.0))
            todo.append(self.start_point(vs, wh, visits))
        first = self.engine.first_trips(Leg.LINE_HAUL, wh, lh_matrix, todo)
        lh_vans = [v for v in self.vans if v.in_service and v.depot == wh.depot.id]
        slots = _slots(self.engine, lh_vans, first, self.start)
        direct = door_visits(
            self.direct,
            van,
            site,
            {pl.parcel.id: self.wh_ready[pl.parcel.id] for pl in self.direct},
        )
        if not slots:
            for c in [*cons, *direct]:
                self.line_haul_left(
                    c.parcels,
                    f"no line-haul van is in service to bring it to {c.ref}"
                    if c.kind is StopKind.STATION
                    else "no warehouse van is in service to take it direct to its door",
                )
            return
        lp = build_problem(
            Leg.LINE_HAUL,
            wh,
            lh_matrix,
            [*cons, *direct],
            slots,
            van,
            site,
            minimise_vans=self.engine.minimise_vans,
        )
        part = _Part(lp, time_s, first=first)
        self.engine.solve_parts([part], self.report.span("line haul", 0.2, 0.4))
        shift = f"shift {clock(site.shift_start_s)}–{clock(site.shift_end_s)}"
        for c in part.dropped:
            self.line_haul_left(
                c.parcels,
                f"the line haul could not bring it to {c.ref} in time ({len(slots)} "
                f"warehouse vans, {shift})"
                if c.kind is StopKind.STATION
                else f"no warehouse van was free to take it direct to its door in time "
                f"({len(slots)} warehouse vans, {shift}); the earliest one alone could "
                f"have been there is {clock(self.direct_earliest[c.parcels[0].id])}",
            )
        for b in part.routes.values():
            self.routes.append(b.route)
            for stop in b.route.stops():
                if stop.kind is StopKind.STATION:
                    for pid in stop.parcels_delivered:
                        self.release[pid] = stop.departure_s

    # -- 4. leg 2 ----------------------------------------------------------------------------
    def last_mile(self, time_s: float) -> None:
        van, site = self.van, self.site
        lh_board = {pl.parcel.id for group in self.lh_board.values() for pl in group}
        self.release.update(self.st_ready)
        if self.engine.sharing is Sharing.FLEET:
            for sid in sorted(self.recovered):
                self.rescue(sid)
        parts: list[_Part] = []
        for st in self.stations:
            sid = st.depot.id
            if sid not in self.mats:
                continue
            mat = self.mats[sid]
            todo = []
            for vs in self.away(sid):
                board = self.lm_board.get(vs.van_id, [])
                visits = door_visits(
                    board, van, site, dict.fromkeys((pl.parcel.id for pl in board), 0.0)
                )
                todo.append(self.start_point(vs, st, visits))
            first = self.engine.first_trips(Leg.LAST_MILE, st, mat, todo)
            # what a trip 0 brings back, and what the line haul unloaded from a van that was
            # on the road, wait at the station for a later trip
            late: dict[ParcelId, float] = {}
            for f in first.values():
                end = f.built.route.trips[0].stops[-1].arrival_s
                late.update(dict.fromkeys((pid for pid in f.returned if pid in self.placed), end))
            for pl in self.members.get(sid, []):
                if pl.parcel.id in lh_board and pl.parcel.id in self.release:
                    late[pl.parcel.id] = self.release[pl.parcel.id]
            self.release.update(late)
            self.keep[sid] += self.reach(sid, [self.placed[pid] for pid in late], late)
            keep = [pl for pl in self.keep[sid] if pl.parcel.id in self.release]
            visits = door_visits(keep, van, site, self.release)
            st_vans = [v for v in self.vans if v.in_service and v.depot == sid]
            slots = _slots(self.engine, st_vans, first, self.start)
            if not slots:
                self.out += [
                    unserved(
                        p, UnservedReason.NOT_ENOUGH_VANS, f"station {sid} has no van in service"
                    )
                    for v in visits
                    for p in v.parcels
                ]
                continue
            lp = build_problem(
                Leg.LAST_MILE,
                st,
                mat,
                visits,
                slots,
                van,
                site,
                minimise_vans=self.engine.minimise_vans,
            )
            parts.append(_Part(lp, 0.0, first=first))
        budgets = station_budgets(
            time_s,
            {p.lp.depot.depot.id: len(p.lp.visits) for p in parts},
            self.engine.solver.workers,
        )
        for part in parts:
            part.time_limit_s = budgets[part.lp.depot.depot.id]
        if parts:
            self.engine.solve_parts(parts, self.report.span("last mile", 0.4, 0.85))
        own = {vid: b.route for part in parts for vid, b in part.routes.items()}
        for vid, lead in self.lead.items():
            if vid in own:
                own[vid] = then(lead, own.pop(vid))
            elif not any(r.van_id == vid for r in self.routes):
                own[vid] = lead
        self.routes += list(own.values())
        if self.engine.sharing is Sharing.FLEET:
            self.lend_vans(parts)
            self.direct_trips()
        for part in parts:
            sid = part.lp.depot.depot.id
            for v in part.dropped:
                self.out += [
                    unserved(
                        p,
                        UnservedReason.NOT_ENOUGH_VANS,
                        f"no van of station {sid} had room or time for it ({len(part.lp.slots)} "
                        f"vans, shift {clock(site.shift_start_s)}–{clock(site.shift_end_s)})",
                    )
                    for p in v.parcels
                ]

    def line_haul_left(self, parcels: Sequence[Parcel], detail: str) -> None:
        """Parcels the line haul cannot bring to their station: with whole-fleet sharing a
        van with time may still take them straight from the warehouse to the door
        (:meth:`direct_trips`); else they are not served."""
        for p in parcels:
            if self.engine.sharing is Sharing.FLEET and p.id in self.placed:
                self.lh_left[p.id] = detail
            else:
                self.out.append(unserved(p, UnservedReason.NOT_ENOUGH_VANS, detail))

    def direct_trips(self) -> None:
        """What the line haul could not bring, offered to every van with time left after its
        own day (any depot's, the warehouse's too): it loads at the warehouse and delivers
        straight to the doors (:mod:`fleet.planning.borrow`); what is left is not served."""
        left, self.lh_left = self.lh_left, {}
        if not left or self.lh_matrix is None:
            self.out += [
                unserved(self.by_id[pid], UnservedReason.NOT_ENOUGH_VANS, d)
                for pid, d in left.items()
            ]
            return
        wh = self.wh
        placed = [self.placed[pid] for pid in left]
        mat = LegMatrix.between(_unique([wh.node, *(pl.node for pl in placed)]), self.net)
        release = {pid: self.wh_ready.get(pid, self.start) for pid in left}
        visits = door_visits(placed, self.van, self.site, release)
        served = self.lend_to(wh, mat, visits, 1.0)
        self.out += [
            unserved(self.by_id[pid], UnservedReason.NOT_ENOUGH_VANS, d)
            for pid, d in left.items()
            if pid not in served
        ]

    def transferable(
        self,
    ) -> tuple[dict[ParcelId, VanId], dict[ParcelId, float], dict[VanId, NodeId]]:
        """Parcels a rescue trip may take over from a broken-down van where it stands (for
        the verifier): which van, until when, and where the van stands."""
        holders: dict[ParcelId, VanId] = {}
        until: dict[ParcelId, float] = {}
        nodes: dict[VanId, NodeId] = {}
        for vs in self.vans:
            if vs.in_service or vs.away is None or vs.van_id not in self.engine.transfer_from:
                continue
            nodes[vs.van_id] = vs.away[0]
        for pid, state in self.states.items():
            if state.where is Where.ON_BOARD and state.van in nodes and pid in self.st_ready:
                holders[pid] = VanId(state.van)
                until[pid] = self.st_ready[pid]
        return holders, until, nodes

    def rescue(self, sid: DepotId) -> None:
        """The parcels of broken-down vans of station ``sid``: per broken-down van, a rescue
        trip that takes its load over where it stands (:meth:`transfer_option`) or the one
        load from the station once they are back there (:meth:`depot_option`), whichever
        delivers them sooner; the rest stays with the station's vans."""
        mat = self.mats.get(sid)
        if mat is None or self.lh_matrix is None:
            return
        wanted = set(self.recovered[sid])
        depot = self.depot_option(sid, wanted)
        holders, until, nodes = self.transferable()
        moved = False
        for b in sorted(nodes):
            mine = {pid for pid in wanted if holders.get(pid) == b}
            keep = [pl for pl in self.keep[sid] if pl.parcel.id in mine]
            if not keep:
                continue
            rescue = self.transfer_option(sid, b, nodes[b], keep, min(until[p] for p in mine))
            if rescue is None:
                continue
            vid, lead, taken = rescue
            if depot is not None and _sooner(depot[1], mine) <= _sooner(lead, mine):
                log.info(
                    "%s: %s's load goes via its depot (%s) rather than a rescue trip (%s)",
                    sid,
                    b,
                    _sooner(depot[1], mine),
                    _sooner(lead, mine),
                )
                continue
            self.commit_rescue(sid, vid, lead)
            wanted -= taken
            moved = True
            log.info(
                "%s: %d parcels of %s taken over where it stands by %s", sid, len(taken), b, vid
            )
        if moved:
            depot = self.depot_option(sid, wanted)
        if depot is not None:
            self.commit_rescue(sid, depot[0], depot[1])

    def commit_rescue(self, sid: DepotId, vid: VanId, lead: VanRoute) -> None:
        """``vid`` drives ``lead`` before its own work: what it delivers leaves the station."""
        taken = {
            pid for s in lead.stops() if s.kind is StopKind.DOOR for pid in s.parcels_delivered
        }
        self.keep[sid] = [pl for pl in self.keep[sid] if pl.parcel.id not in taken]
        self.lead[vid] = lead
        end = lead.trips[-1].stops[-1]
        self.vans = [
            replace(v, free_s=end.arrival_s, soc_pct=end.soc_pct) if v.van_id == vid else v
            for v in self.vans
        ]

    def rescuers(self) -> list[VanState]:
        """Vans that may drive a rescue: in service, empty at their depot, with no rescue and
        no line haul of their own (a line-haul van with work may still be lent after it)."""
        by_van = {r.van_id for r in self.routes}
        return [
            vs
            for vs in self.vans
            if vs.in_service
            and vs.away is None
            and not vs.on_board
            and vs.van_id not in self.lead
            and vs.van_id not in by_van
        ]

    def depot_option(self, sid: DepotId, wanted: set[ParcelId]) -> tuple[VanId, VanRoute] | None:
        """The parcels of broken-down vans, back at station ``sid``, taken in one load by
        the van that can be there soonest among those with the least work of their own
        (:mod:`fleet.planning.borrow`)."""
        mat = self.mats.get(sid)
        if mat is None or self.lh_matrix is None:
            return None
        keep = [pl for pl in self.keep[sid] if pl.parcel.id in wanted]
        if not keep:
            return None
        visits = door_visits(keep, self.van, self.site, self.st_ready)
        ready = min(v.release_s for v in visits)
        st = self.depots[sid]
        at = self.lh_matrix.index()
        bound = range_m(self.van, 100.0) * (1 + vrp.MAX_RELOADS_DEFAULT)
        busy: dict[DepotId, float] = {}  # parcels per van in service of each station
        for depot in {v.depot for v in self.vans}:
            n = sum(1 for v in self.vans if v.in_service and v.depot == depot)
            busy[depot] = len(self.keep.get(depot, [])) / max(1, n)
        options: list[tuple[float, float, VanId, Lend]] = []
        for vs in self.rescuers():
            home = self.depots[vs.depot]
            i, j = at[home.node], at[st.node]
            lend = lent_slot(
                vs.van_id,
                home,
                st,
                None,
                max(self.start, vs.free_s),
                vs.soc_pct,
                Drive(float(self.lh_matrix.dist_m[i, j]), float(self.lh_matrix.time_s[i, j])),
                Drive(float(self.lh_matrix.dist_m[j, i]), float(self.lh_matrix.time_s[j, i])),
                self.van,
                self.site,
                bound,
            )
            if lend is None:
                continue
            there = max(ready, lend.slot.start_s)
            soon = there <= ready + RESCUE_WAIT_S
            options.append((0.0 if soon else there, busy.get(vs.depot, 0.0), vs.van_id, lend))
        options.sort(key=lambda o: (o[0], o[1], o[3].slot.start_s, o[2]))
        for _, _, vid, lend in options[:RESCUE_TRIES]:
            slot = replace(lend.slot, one_trip=True)
            lp = build_problem(Leg.LAST_MILE, st, mat, visits, [slot], self.van, self.site)
            part = _Part(lp, 0.5)
            self.engine.solve_parts([part], None)
            built = part.routes.get(vid)
            if built is None:
                continue
            leg = Leg.LINE_HAUL if lend.home.depot.id == self.wh.depot.id else Leg.LAST_MILE
            lead = lead_in(lend, built.route, leg, self.van, self.site)
            if lead is None:
                continue
            log.info(
                "%s: recovered parcels could be taken in one load by %s from %s",
                sid,
                vid,
                clock(built.route.trips[0].stops[0].departure_s),
            )
            return vid, lead
        return None

    def transfer_option(
        self,
        sid: DepotId,
        broken: VanId,
        node: NodeId,
        keep: Sequence[Placed],
        until_s: float,
    ) -> tuple[VanId, VanRoute, set[ParcelId]] | None:
        """A rescue trip for ``broken``'s load ``keep`` (parcels of station ``sid``): a van
        empty at its depot drives to where ``broken`` stands (at ``node``), arriving so that
        the transfer (``VanSpec.transfer_time_s``) ends by ``until_s`` (when the load is
        taken to the depot instead), takes over what it can deliver in one go, delivers it
        and drives home. Of the ``RESCUE_TRIES`` vans that can be there soonest, the one
        whose last delivery is soonest; returns it, its trip, and the parcels it takes."""
        van = self.van
        homes = _unique([self.depots[vs.depot].node for vs in self.rescuers()])
        if not homes or node in homes:
            return None
        doors = _unique([pl.node for pl in keep])
        nodes = _unique([*homes, node, *doors])
        full = LegMatrix.between(nodes, self.net)
        at = full.index()
        b = at[node]
        transfer_s = van.transfer_time_s(len(keep))
        per_m = van.energy_per_m_kwh
        reserve = van.battery_kwh * van.range_reserve_pct / 100.0
        candidates: list[tuple[float, VanId, VanState]] = []
        for vs in self.rescuers():
            h = at[self.depots[vs.depot].node]
            dist = float(full.dist_m[h, b])
            if not (math.isfinite(dist) and math.isfinite(float(full.dist_m[b, h]))):
                continue
            if van.battery_kwh * vs.soc_pct / 100.0 < reserve + 2 * dist * per_m:
                continue  # not enough charge to get there and back without charging first
            arrive = max(self.start, vs.free_s) + float(full.time_s[h, b])
            if arrive + transfer_s > until_s:
                continue
            candidates.append((arrive, vs.van_id, vs))
        candidates.sort(key=lambda c: (c[0], c[1]))
        best: tuple[tuple[int, float, float], VanId, VanRoute, set[ParcelId]] | None = None
        for arrive, vid, vs in candidates[:RESCUE_TRIES]:
            home = self.depots[vs.depot]
            h = at[home.node]
            order = [h, b, *(at[n] for n in doors)]
            sub = LegMatrix(
                tuple(full.nodes[i] for i in order),
                full.dist_m[np.ix_(order, order)],
                full.time_s[np.ix_(order, order)],
            )
            ready = arrive + transfer_s
            visits = door_visits(keep, van, self.site, dict.fromkeys(self.st_ready, ready))
            drive_m = float(full.dist_m[h, b])
            soc_there = vs.soc_pct - 100.0 * drive_m * per_m / van.battery_kwh
            aboard = tuple(pl.parcel.id for pl in keep)
            sp = StartPoint(
                node,
                self.net.lonlat(node)[0],
                self.net.lonlat(node)[1],
                ready,
                aboard,
                math.fsum(pl.parcel.weight_kg for pl in keep),
                math.fsum(pl.parcel.volume_m3 for pl in keep),
            )
            moved = replace(vs, soc_pct=soc_there, away=(node, sp.lon, sp.lat), on_board=aboard)
            leg = Leg.LINE_HAUL if vs.depot == self.wh.depot.id else Leg.LAST_MILE
            first = self.engine.first_trips(leg, home, sub, [(moved, visits, (), sp)])[vid]
            if not first.visits:
                continue
            taken = {pid for v in first.visits for pid in v.parcel_ids}
            sp = replace(
                sp,
                parcels=tuple(p for p in aboard if p in taken),
                load_kg=math.fsum(v.weight_kg for v in first.visits),
                load_m3=math.fsum(v.volume_m3 for v in first.visits),
            )
            built = build_route(
                vid,
                leg,
                home,
                [first.visits],
                sub,
                van,
                self.site,
                start_s=ready,
                start_soc_pct=soc_there,
                start=sp,
                start_loc=1,
                leave_early=True,
            )
            if built.shortfalls:
                continue
            free = max(self.start, vs.free_s)
            lead = _from_home(built.route, home, broken, free, arrive, vs.soc_pct, drive_m, van)
            score = _sooner(lead, set(aboard))
            if best is None or score < best[0]:
                best = (score, vid, lead, taken)
        if best is None:
            return None
        return best[1], best[2], best[3]

    def lend_vans(self, parts: Sequence[_Part]) -> None:
        """Door stops a station's own vans could not take, offered to every other van in
        service once its own day is done (:mod:`fleet.planning.borrow`), the station with the
        most parcels left first; a van is lent to one depot at most."""
        short = sorted(
            (p for p in parts if p.dropped),
            key=lambda p: (-sum(len(v.parcels) for v in p.dropped), p.lp.depot.depot.id),
        )
        for part in short:
            served = self.lend_to(
                part.lp.depot, part.lp.matrix, part.dropped, max(0.3, part.time_limit_s / 2)
            )
            part.dropped = [v for v in part.dropped if not served.intersection(v.parcel_ids)]

    def lend_to(
        self, target: DepotPoint, matrix: LegMatrix, visits: Sequence[Visit], time_s: float
    ) -> set[ParcelId]:
        """``visits`` (door stops from ``target``) for vans of other depots — or, at the
        warehouse, its own vans too — after their own day; returns the parcels they take."""
        if not visits or self.lh_matrix is None:
            return set()
        mat = self.lh_matrix
        at = mat.index()
        bound = range_m(self.van, 100.0) * (1 + vrp.MAX_RELOADS_DEFAULT)
        tid = target.depot.id
        by_van = {r.van_id: k for k, r in enumerate(self.routes)}
        lends: dict[VanId, Lend] = {}
        for vs in self.vans:
            if not vs.in_service or vs.van_id in self.lent:
                continue
            if vs.depot == tid and tid != self.wh.depot.id:
                continue  # a station's own vans had their chance
            home = self.depots[vs.depot]
            k = by_van.get(vs.van_id)
            own = self.routes[k] if k is not None else None
            if own is not None:
                last = own.trips[-1].stops[-1]
                free_s, soc = last.arrival_s, last.soc_pct
            elif vs.away is None:
                free_s, soc = max(self.start, vs.free_s), vs.soc_pct
            else:  # pragma: no cover - a van on the road always has a trip 0
                continue
            i, j = at[home.node], at[target.node]
            there = Drive(float(mat.dist_m[i, j]), float(mat.time_s[i, j]))
            back = Drive(float(mat.dist_m[j, i]), float(mat.time_s[j, i]))
            lend = lent_slot(
                vs.van_id, home, target, own, free_s, soc, there, back, self.van, self.site, bound
            )
            if lend is not None:
                lends[vs.van_id] = lend
        if not lends:
            return set()
        log.info("%s: %d door stops left; %d vans could help", tid, len(visits), len(lends))
        lp = build_problem(
            Leg.LAST_MILE,
            target,
            matrix,
            visits,
            [x.slot for x in lends.values()],
            self.van,
            self.site,
        )
        extra = _Part(lp, time_s)
        self.engine.solve_parts([extra], None)
        served: set[ParcelId] = set()
        for vid, built in sorted(extra.routes.items()):
            lend = lends[vid]
            leg = Leg.LINE_HAUL if lend.home.depot.id == self.wh.depot.id else Leg.LAST_MILE
            day = join_day(lend, built.route, leg, self.van, self.site)
            if day is None:
                log.info("%s: lent to %s, but its way home does not fit; not lent", vid, tid)
                continue
            k = by_van.get(vid)
            if k is None:
                self.routes.append(day)
            else:
                self.routes[k] = day
            self.lent.add(vid)
            served.update(
                pid
                for s in built.route.stops()
                if s.kind is StopKind.DOOR
                for pid in s.parcels_delivered
            )
        return served

    def leftovers(self) -> None:
        """Anything neither delivered nor yet listed (e.g. brought back and not re-sent)."""
        delivered = {
            pid
            for r in self.routes
            for s in r.stops()
            if s.kind is StopKind.DOOR
            for pid in s.parcels_delivered
        }
        listed = {u.parcel_id for u in self.out}
        for p in self.parcels:
            if p.id not in delivered and p.id not in listed:
                self.out.append(
                    unserved(p, UnservedReason.NOT_ENOUGH_VANS, "no van had room or time for it")
                )
        # the earliest time a van could have reached a parcel left out for want of a van
        # (its earliest way: direct, or through its station), for a dispatcher to offer
        for i, u in enumerate(self.out):
            when = self.earliest.get(u.parcel_id)
            if (
                u.reason is UnservedReason.NOT_ENOUGH_VANS
                and when is not None
                and math.isfinite(when)
                and "the earliest" not in u.detail
            ):
                self.out[i] = replace(
                    u, detail=f"{u.detail}; the earliest a van could reach it is {clock(when)}"
                )


def plan_fleet(
    parcels: Sequence[Parcel],
    site: Site,
    van: VanSpec,
    net: RoadNetwork,
    *,
    vans: Sequence[VanState],
    states: Mapping[ParcelId, ParcelState],
    now_s: float,
    time_limit_s: float,
    seed: int,
    progress: Progress | None,
    day: date | None,
    created_utc: str,
    workers: int | None,
    max_iterations: int | None,
    already_unserved: Sequence[Unserved],
    verify: bool,
    minimise_vans: bool = False,
    sharing: Sharing = Sharing.FLEET,
    transfer_from: frozenset[VanId] = frozenset(),
) -> tuple[Plan, StartingState]:
    """Plan both legs for ``vans`` as they are and ``parcels`` where ``states`` says they are.

    Returns the plan and the starting state the verifier needs to check it again.
    ``minimise_vans`` makes the search use as few of the vans as serve every parcel it can.
    """
    report = _Progress(progress)
    t0 = time.monotonic()
    seen: set[str] = set()
    for p in parcels:
        if p.id in seen:
            raise InputError(f"parcel id {p.id!r} is given twice")
        seen.add(p.id)
    report("snapping depots and parcels", 0.0)
    engine = _Engine(
        site,
        van,
        net,
        seed=seed,
        workers=workers,
        max_iterations=max_iterations,
        now_s=now_s,
        sharing=sharing,
        transfer_from=transfer_from,
    )
    engine.start_soc = {v.van_id: v.soc_pct for v in vans}
    engine.minimise_vans = minimise_vans
    engine.out += already_unserved
    try:
        run = _Day(engine, parcels, vans, states, report)
        run.locate()
        lh_matrix, cons = run.prepare_stations()
        n_doors = sum(len(v) for v in run.keep.values())
        t1, t2 = _split_time(time_limit_s, len(cons) + len(run.direct), n_doors)
        run.line_haul(lh_matrix, cons, t1)
        report("last mile", 0.4)
        run.last_mile(t2)
        run.leftovers()
    finally:
        engine.close()
    report("road geometry", 0.86)
    routes = add_geometry(_ordered(run.routes, site), net)
    unserved_sorted = tuple(sorted(engine.out, key=lambda u: u.parcel_id))
    plan = Plan(
        site=site.name,
        day=day or EPOCH_DAY,
        timezone=site.timezone,
        created_utc=created_utc,
        routes=tuple(routes),
        unserved=unserved_sorted,
        summary=summarise(
            routes,
            unserved_sorted,
            parcels=len(parcels) + len(already_unserved),
            vans_available=sum(1 for v in vans if v.in_service),
            van=van,
        ),
    )
    transfer = run.transferable()
    starting = StartingState(
        at_station={pid: run.to_station[pid] for pid in run.st_ready if pid in run.to_station},
        start_soc_pct={v.van_id: v.soc_pct for v in vans},
        at_station_from_s={pid: t for pid, t in run.st_ready.items() if pid in run.to_station},
        transfer_from=transfer[0],
        transfer_until_s=transfer[1],
        transfer_node=transfer[2],
    )
    if verify:
        report("verifying", 0.92)
        problems = verify_plan(
            plan,
            parcels,
            site,
            van,
            net,
            at_station=starting.at_station,
            start_soc_pct=starting.start_soc_pct,
            at_station_from_s=starting.at_station_from_s,
            transfer_from=starting.transfer_from,
            transfer_until_s=starting.transfer_until_s,
            transfer_node=starting.transfer_node,
        )
        if problems:
            raise VerificationError(problems)
    report("done", 1.0)
    log.info("planned %d parcels in %.1f s", len(parcels), time.monotonic() - t0)
    return plan, starting


def _slots(
    engine: _Engine, vans: Sequence[VanState], first: Mapping[VanId, _First], start: float
) -> list[VanSlot]:
    full = range_m(engine.van, 100.0)
    # A van charges during every stay at its depot, so its day's distance is bounded only by
    # what the replay finds; start generous, tighten if a replay breaks the range.
    bound = full * (1 + vrp.MAX_RELOADS_DEFAULT)
    slots = []
    for vs in vans:
        f = first.get(vs.van_id)
        if f is not None:
            last = f.built.route.trips[0].stops[-1]
            slots.append(VanSlot(vs.van_id, last.arrival_s, last.soc_pct, bound))
        else:
            slots.append(VanSlot(vs.van_id, max(start, vs.free_s), vs.soc_pct, bound))
    return slots
