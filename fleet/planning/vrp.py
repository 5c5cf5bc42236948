"""A routing problem on integer matrices, handed to PyVRP, and its solution read back.

This module knows nothing of roads, parcels or vans: :class:`Problem` is depots, clients and
vehicle types over numpy distance and duration matrices in PyVRP's integer units (see
:mod:`fleet.planning.scaling`). It is shared by the day planner and ``benchmarks/vrplib.py``,
so the benchmark measures exactly the core the product runs.

PyVRP is the optimiser; nothing here searches. To use more than one core, :func:`solve`
runs independent PyVRP searches with different seeds in worker processes and keeps the best
(feasible first, then lowest cost); :class:`Solver` runs a batch of problems (one per
station, say) across the same workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyvrp
import pyvrp.stop

from fleet.errors import InfeasibleError
from fleet.planning.scaling import FloatArray, IntArray

log = logging.getLogger(__name__)

INF = int(np.iinfo(np.int64).max)
MAX_RELOADS_DEFAULT = 50


@dataclass(frozen=True, slots=True)
class Depot:
    location: int  # row/column in the matrices
    service_s: int = 0  # at the start of every trip (loading); not at the final return
    tw_early: int = 0
    tw_late: int = INF
    name: str = ""


@dataclass(frozen=True, slots=True)
class Client:
    location: int
    demand: tuple[int, ...]  # one amount per load dimension
    service_s: int = 0
    tw_early: int = 0
    tw_late: int = INF  # latest start of service
    release_s: int = 0  # its trip may not leave the depot before this
    prize: int | None = None  # None: must be visited; else optional, worth this much
    name: str = ""


@dataclass(frozen=True, slots=True)
class VehicleType:
    count: int
    capacity: tuple[int, ...]
    start_depot: int  # index into Problem.depots
    end_depot: int
    reload_depots: tuple[int, ...] = ()
    max_reloads: int = MAX_RELOADS_DEFAULT
    tw_early: int = 0  # earliest start of the route
    tw_late: int = INF  # latest end of the route
    max_distance: int = INF
    initial_load: tuple[int, ...] = ()
    fixed_cost: int = 0
    unit_distance_cost: int = 1
    unit_duration_cost: int = 0
    name: str = ""


@dataclass(frozen=True)
class Problem:
    dist: IntArray  # [locations, locations], whole units (metres)
    dur: IntArray  # [locations, locations], whole units (seconds)
    depots: tuple[Depot, ...]
    clients: tuple[Client, ...]
    vehicle_types: tuple[VehicleType, ...]
    coords: FloatArray | None = None  # [locations, 2]; only used by PyVRP for display
    name: str = ""

    @property
    def num_locations(self) -> int:
        return int(self.dist.shape[0])

    def all_required(self) -> Problem:
        """The same problem with every client required (no prizes)."""
        return replace(self, clients=tuple(replace(c, prize=None) for c in self.clients))

    def check(self) -> None:
        """Refuse a malformed problem with a clear :class:`InfeasibleError`."""
        n = self.num_locations
        where = f"routing problem {self.name!r}" if self.name else "routing problem"
        for name, m in (("distance", self.dist), ("duration", self.dur)):
            if m.shape != (n, n):
                raise InfeasibleError(f"{where}: {name} matrix is {m.shape}, expected ({n}, {n})")
            if m.dtype != np.int64:
                raise InfeasibleError(f"{where}: {name} matrix must be int64, got {m.dtype}")
            if n and (int(m.min()) < 0):
                raise InfeasibleError(f"{where}: {name} matrix has negative entries")
        if not self.depots:
            raise InfeasibleError(f"{where}: no depot")
        if not self.vehicle_types:
            raise InfeasibleError(f"{where}: no vehicle type")
        dims = len(self.vehicle_types[0].capacity)
        for i, d in enumerate(self.depots):
            if not 0 <= d.location < n:
                raise InfeasibleError(f"{where}: depot {i} location {d.location} out of range")
        for i, c in enumerate(self.clients):
            if not 0 <= c.location < n:
                raise InfeasibleError(f"{where}: client {i} location {c.location} out of range")
            if len(c.demand) != dims:
                raise InfeasibleError(
                    f"{where}: client {i} has {len(c.demand)} load dimensions, expected {dims}"
                )
        for i, v in enumerate(self.vehicle_types):
            if len(v.capacity) != dims:
                raise InfeasibleError(f"{where}: vehicle type {i} capacity has wrong dimensions")
            for depot in (v.start_depot, v.end_depot, *v.reload_depots):
                if not 0 <= depot < len(self.depots):
                    raise InfeasibleError(f"{where}: vehicle type {i} names depot {depot}")


def to_pyvrp(problem: Problem) -> pyvrp.ProblemData:
    """The PyVRP ``ProblemData`` for ``problem`` (matrices passed as they are)."""
    problem.check()
    coords = problem.coords if problem.coords is not None else np.zeros((problem.num_locations, 2))
    locations = [
        pyvrp.Location(x=float(coords[i, 0]), y=float(coords[i, 1]))
        for i in range(problem.num_locations)
    ]
    depots = [
        pyvrp.Depot(
            location=d.location,
            tw_early=d.tw_early,
            tw_late=d.tw_late,
            service_duration=d.service_s,
            name=d.name,
        )
        for d in problem.depots
    ]
    clients = [
        pyvrp.Client(
            location=c.location,
            delivery=list(c.demand),
            service_duration=c.service_s,
            tw_early=c.tw_early,
            tw_late=c.tw_late,
            release_time=c.release_s,
            prize=c.prize or 0,
            required=c.prize is None,
            name=c.name,
        )
        for c in problem.clients
    ]
    vehicle_types = [
        pyvrp.VehicleType(
            num_available=v.count,
            capacity=list(v.capacity),
            start_depot=v.start_depot,
            end_depot=v.end_depot,
            fixed_cost=v.fixed_cost,
            tw_early=v.tw_early,
            tw_late=v.tw_late,
            max_distance=v.max_distance,
            unit_distance_cost=v.unit_distance_cost,
            unit_duration_cost=v.unit_duration_cost,
            initial_load=list(v.initial_load) or [0] * len(v.capacity),
            reload_depots=list(v.reload_depots),
            max_reloads=v.max_reloads if v.reload_depots else 0,
            name=v.name,
        )
        for v in problem.vehicle_types
    ]
    matrices: list[Any] = [problem.dist]  # PyVRP's stub says ndarray[int]: any int64 array
    durations: list[Any] = [problem.dur]
    return pyvrp.ProblemData(locations, clients, depots, vehicle_types, matrices, durations)


@dataclass(frozen=True, slots=True)
class TripResult:
    depot: int  # the depot the trip starts from (index into Problem.depots)
    clients: tuple[int, ...]  # indices into Problem.clients, in visiting order


@dataclass(frozen=True, slots=True)
class RouteResult:
    vehicle_type: int
    trips: tuple[TripResult, ...]
    end_depot: int
    distance: int
    duration: int
    start_s: int  # PyVRP's start of the route
    feasible: bool  # no excess load, time warp or excess distance


@dataclass(frozen=True)
class Result:
    routes: tuple[RouteResult, ...]
    unvisited: tuple[int, ...]  # clients no route visits
    cost: int  # PyVRP objective (distance cost + uncollected prizes); INF if infeasible
    distance: int
    feasible: bool
    iterations: int
    runtime_s: float
    seed: int
    stats: dict[str, float] = field(default_factory=dict)

    def better_than(self, other: Result | None) -> bool:
        if other is None:
            return True
        return (self.feasible, -self.cost) > (other.feasible, -other.cost)


def _read_solution(data: pyvrp.ProblemData, res: pyvrp.Result, seed: int) -> Result:
    best = res.best
    routes: list[RouteResult] = []
    visited: set[int] = set()
    for route in best.routes():
        trips: list[TripResult] = []
        depot = route.start_depot()
        current: list[int] = []
        trip_index = 0
        for act in route.schedule():
            if act.is_depot():
                if act.trip != trip_index:
                    trips.append(TripResult(depot, tuple(current)))
                    current = []
                    trip_index = act.trip
                depot = act.idx
            elif act.is_client():
                current.append(act.idx)
                visited.add(act.idx)
        if current:
            trips.append(TripResult(depot, tuple(current)))
        routes.append(
            RouteResult(
                vehicle_type=route.vehicle_type(),
                trips=tuple(t for t in trips if t.clients),
                end_depot=route.end_depot(),
                distance=route.distance(),
                duration=route.duration(),
                start_s=route.start_time(),
                feasible=route.is_feasible(),
            )
        )
    unvisited = tuple(i for i in range(data.num_clients) if i not in visited)
    feasible = best.is_feasible()
    return Result(
        routes=tuple(routes),
        unvisited=unvisited,
        cost=int(res.cost()) if feasible else INF,
        distance=best.distance(),
        feasible=feasible,
        iterations=res.num_iterations,
        runtime_s=res.runtime,
        seed=seed,
    )


def _stop(time_limit_s: float, max_iterations: int | None) -> pyvrp.stop.StoppingCriterion:
    runtime = pyvrp.stop.MaxRuntime(max(0.0, time_limit_s))
    if max_iterations is None:
        return runtime
    return pyvrp.stop.MultipleCriteria([runtime, pyvrp.stop.MaxIterations(max_iterations)])


def _initial(data: pyvrp.ProblemData, start: Result) -> pyvrp.Solution:
    """``start``'s routes as a PyVRP solution of ``data`` (same clients and vehicle types).

    A warm start is only a hint: routes beyond what a vehicle type has available now (a
    re-plan's earlier solve may have used more of one type) are left out, not an error."""
    routes = []
    used: dict[int, int] = {}
    for r in start.routes:
        if used.get(r.vehicle_type, 0) >= data.vehicle_type(r.vehicle_type).num_available:
            continue
        used[r.vehicle_type] = used.get(r.vehicle_type, 0) + 1
        acts: list[pyvrp.Activity] = []
        for k, trip in enumerate(r.trips):
            if k:
                acts.append(pyvrp.Activity(pyvrp.ActivityType.DEPOT, trip.depot))
            acts += [pyvrp.Activity(pyvrp.ActivityType.CLIENT, c) for c in trip.clients]
        if acts:
            routes.append(pyvrp.Route(data, acts, r.vehicle_type))
    return pyvrp.Solution(data, routes)


def solve_in_process(
    problem: Problem,
    time_limit_s: float,
    seed: int,
    max_iterations: int | None = None,
    initial: Result | None = None,
) -> Result:
    """One PyVRP search in this process, from ``initial`` if given (a warm start)."""
    data = to_pyvrp(problem)
    if not problem.clients:
        return Result((), (), 0, 0, True, 0, 0.0, seed)
    start = _initial(data, initial) if initial is not None and initial.routes else None
    with warnings.catch_warnings(record=True) as caught:
        # PyVRP warns when its penalties saturate on a hard instance; the result says
        # whether it is feasible, so the warning is only worth a debug line.
        warnings.simplefilter("always")
        res = pyvrp.solve(
            data,
            stop=_stop(time_limit_s, max_iterations),
            seed=seed,
            collect_stats=False,
            display=False,
            initial_solution=start,
        )
    for w in caught:
        log.debug("PyVRP on %s: %s", problem.name or "problem", str(w.message).strip())
    return _read_solution(data, res, seed)


def _task(
    problem: Problem,
    deadline_s: float,
    seed: int,
    max_iterations: int | None,
    initial: Result | None,
) -> Result:
    # A worker process: spend what is left of the wall-clock budget (start-up included).
    remaining = deadline_s - time.time()
    return solve_in_process(problem, max(0.05, remaining), seed, max_iterations, initial)


def default_workers() -> int:
    """Cores this process may use (``FLEET_WORKERS`` overrides)."""
    env = os.environ.get("FLEET_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            log.warning("FLEET_WORKERS=%r is not a whole number; using the CPU count", env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _mp_context() -> multiprocessing.context.BaseContext:
    """``fork`` while this process has one thread (cheap: nothing to re-import), else a fresh
    interpreter (forking a threaded process can deadlock; Python 3.12+ warns about it)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    method = "forkserver" if "forkserver" in methods else "spawn"
    log.debug("%d threads running: solver workers start by %s", threading.active_count(), method)
    return multiprocessing.get_context(method)


@dataclass(frozen=True, slots=True)
class Job:
    """One problem to solve with a wall-clock budget and a number of seeds (parallel searches)."""

    problem: Problem
    time_limit_s: float
    seeds: tuple[int, ...]
    max_iterations: int | None = None
    initial: Result | None = None  # warm start (same clients and vehicle types)


Progress = Callable[[float], None]  # fraction of the wall-clock budget used, 0..1


class Solver:
    """Runs PyVRP searches, in worker processes when there is more than one core to use.

    Use as a context manager; the worker pool lives as long as the ``with`` block, so several
    batches share its start-up.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = default_workers() if workers is None else max(1, workers)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Solver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_mp_context())
        return self._pool

    def run(self, jobs: Sequence[Job], progress: Progress | None = None) -> list[Result]:
        """Solve every job; return the best result of each (in job order).

        Tasks (job, seed) run on the workers, longest budget first; each task's budget
        counts from when it starts. With one worker everything runs in this process.
        """
        tasks = [(j, s) for j, job in enumerate(jobs) for s in job.seeds]
        if not tasks:
            return []
        best: list[Result | None] = [None] * len(jobs)
        total = sum(jobs[j].time_limit_s for j, _ in tasks) / min(self.workers, len(tasks))
        start = time.monotonic()

        def report() -> None:
            if progress is not None and total > 0:
                progress(min(1.0, (time.monotonic() - start) / total))

        if self.workers == 1 or len(tasks) == 1:
            for j, seed in tasks:
                job = jobs[j]
                result = solve_in_process(
                    job.problem, job.time_limit_s, seed, job.max_iterations, job.initial
                )
                if result.better_than(best[j]):
                    best[j] = result
                report()
        else:
            pool = self._executor()
            order = sorted(tasks, key=lambda t: -jobs[t[0]].time_limit_s)
            pending: dict[Future[Result], int] = {}
            queue = list(order)
            while queue or pending:
                while queue and len(pending) < self.workers:
                    j, seed = queue.pop(0)
                    job = jobs[j]
                    deadline = time.time() + job.time_limit_s
                    fut = pool.submit(
                        _task, job.problem, deadline, seed, job.max_iterations, job.initial
                    )
                    pending[fut] = j
                done, _ = wait(list(pending), timeout=0.25, return_when=FIRST_COMPLETED)
                for fut in done:
                    j = pending.pop(fut)
                    result = fut.result()
                    if result.better_than(best[j]):
                        best[j] = result
                report()
        out: list[Result] = []
        for j, r in enumerate(best):
            if r is None:  # pragma: no cover - every job has at least one seed
                raise InfeasibleError(f"job {j} produced no result")
            out.append(r)
        return out


def solve(
    problem: Problem,
    *,
    time_limit_s: float,
    seed: int = 1,
    workers: int | None = None,
    max_iterations: int | None = None,
    progress: Progress | None = None,
) -> Result:
    """Solve one problem with ``workers`` parallel PyVRP searches (seeds seed, seed+1, ...)."""
    with Solver(workers) as solver:
        seeds = tuple(range(seed, seed + solver.workers))
        job = Job(problem, time_limit_s, seeds, max_iterations)
        return solver.run([job], progress)[0]
