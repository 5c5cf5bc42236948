#!/usr/bin/env python3
"""A whole day on the bundled city: how long, how much memory, how much served, how good.

    python benchmarks/city_day.py --parcels 500 2000 10000

For each size, in a fresh process (so that peak memory is that size's own): sample a day of
orders on the site (``fleet orders sample``'s generator, seed 1), write and read the orders
CSV, load the road network (from the cache; the parent warms it first), plan both legs with
``fleet.planning.plan_day`` (verified), and write ``plan.json``. Reported:

* ``matrix_s``: road matrices (snapping, stations, per-station door matrices);
* ``solve_s``: the optimiser, both legs; ``geometry_s``, ``verify_s``;
* ``plan_s``: ``plan_day`` as a whole; ``end_to_end_s``: network + orders + plan + write;
* ``peak_mb``: peak resident memory of the process and its workers (the larger);
* ``served_pct``: parcels delivered to the door;
* ``cost_vs_ortools_pct``: the optimiser's cost against OR-Tools (guided local search) given
  *the same model and time*: every routing problem the planner solved (line haul, each
  station's last mile: the same integer matrices, two load dimensions, time windows, release
  times, trips with reloading at the depot, optional visits with the same prizes) is given to
  OR-Tools with the same wall-clock budget that problem had. Multiple trips are modelled in
  OR-Tools as a chain of vehicles per van (each trip starts after the previous one ends),
  release times as "the trip carrying it starts loading after its release". Both answers are
  checked and costed here by the same code (distance + prizes of what is left out); a
  negative figure means ours is cheaper.

The time limit per size defaults to 10 s for up to 1,000 parcels, 25 s up to 3,000, else
120 s (``--time-limit`` overrides). Prints a table, then one JSON line with the per-size
figures. OR-Tools is the ``bench`` extra; without it the comparison is ``null``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import math
import resource
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fleet.model import load_site, load_van_spec
from fleet.paths import default_site_file, default_van_file
from fleet.planning import engine, plan_day, read_orders, vrp, write_orders, write_plan
from fleet.planning.sample import sample_orders
from fleet.roads import load_network


def default_limit(parcels: int) -> float:
    return 10.0 if parcels <= 1000 else 25.0 if parcels <= 3000 else 120.0


# -- the same model in OR-Tools --------------------------------------------------------------


@dataclass
class Solved:
    problem: vrp.Problem  # with prizes (the cost both are measured by)
    time_limit_s: float
    ours: vrp.Result


@dataclass
class Costed:
    cost: int  # the model's objective: distance + prizes of clients left out
    dist: int
    left_out: int


def check_cost(p: vrp.Problem, vans: list[list[list[int]]]) -> tuple[Costed | None, str]:
    """The cost of ``vans`` (per van, trips of client indices), or ``None`` and why it breaks
    the model."""
    seen: set[int] = set()
    dist = 0
    depot = p.depots[0]
    n_vans = sum(v.count for v in p.vehicle_types)
    if len([v for v in vans if any(v)]) > n_vans:
        return None, "more vans than the fleet"
    vt = p.vehicle_types[0]
    for trips in vans:
        t = vt.tw_early
        for trip in trips:
            if not trip:
                continue
            for k in range(len(vt.capacity)):
                if sum(p.clients[c].demand[k] for c in trip) > vt.capacity[k]:
                    return None, "over capacity"
            t = max(t, max(p.clients[c].release_s for c in trip)) + depot.service_s
            here = depot.location
            for c in trip:
                if c in seen:
                    return None, f"client {c} twice"
                seen.add(c)
                cl = p.clients[c]
                dist += int(p.dist[here, cl.location])
                t = max(t + int(p.dur[here, cl.location]), cl.tw_early)
                if t > cl.tw_late:
                    return None, f"client {c} after its window"
                t += cl.service_s
                here = cl.location
            dist += int(p.dist[here, depot.location])
            t += int(p.dur[here, depot.location])
            if t > vt.tw_late:
                return None, "back after the shift"
    missing = [i for i in range(len(p.clients)) if i not in seen]
    for i in missing:
        if p.clients[i].prize is None:
            return None, f"required client {i} left out"
    return Costed(dist + sum(p.clients[i].prize or 0 for i in missing), dist, len(missing)), ""


def ours_as_vans(p: vrp.Problem, r: vrp.Result) -> list[list[list[int]]]:
    return [[list(t.clients) for t in route.trips] for route in r.routes]


def run_ortools(p: vrp.Problem, limit_s: float, trips_per_van: int) -> list[list[list[int]]] | None:
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    vt = p.vehicle_types[0]
    if any(v != vt for v in p.vehicle_types[1:]):
        raise SystemExit("the comparison expects one vehicle type per problem")
    n_vans = vt.count
    n_veh = n_vans * trips_per_van
    locs = [p.depots[0].location] + [c.location for c in p.clients]
    idx = np.asarray(locs)
    dist = p.dist[np.ix_(idx, idx)]
    service = np.asarray([p.depots[0].service_s] + [c.service_s for c in p.clients], dtype=np.int64)
    travel = p.dur[np.ix_(idx, idx)] + service[:, None]
    np.fill_diagonal(travel, 0)
    manager = pywrapcp.RoutingIndexManager(len(locs), n_veh, 0)
    routing = pywrapcp.RoutingModel(manager)
    routing.SetArcCostEvaluatorOfAllVehicles(routing.RegisterTransitMatrix(dist.tolist()))
    for k in range(len(vt.capacity)):
        demand = [0] + [c.demand[k] for c in p.clients]
        cb = routing.RegisterUnaryTransitVector(demand)
        routing.AddDimensionWithVehicleCapacity(cb, 0, [vt.capacity[k]] * n_veh, True, f"load{k}")
    horizon = int(vt.tw_late)
    routing.AddDimension(
        routing.RegisterTransitMatrix(travel.tolist()), horizon, horizon, False, "time"
    )
    time_dim = routing.GetDimensionOrDie("time")
    solver = routing.solver()
    for v in range(n_veh):
        time_dim.CumulVar(routing.Start(v)).SetRange(int(vt.tw_early), horizon)
        time_dim.CumulVar(routing.End(v)).SetRange(int(vt.tw_early), horizon)
    for van in range(n_vans):  # a van's trips one after another
        for k in range(trips_per_van - 1):
            a, b = van * trips_per_van + k, van * trips_per_van + k + 1
            solver.Add(time_dim.CumulVar(routing.End(a)) <= time_dim.CumulVar(routing.Start(b)))
    starts = [solver.IntVar(horizon, horizon, "dropped")] + [
        time_dim.CumulVar(routing.Start(v)) for v in range(n_veh)
    ]
    for i, c in enumerate(p.clients, start=1):
        index = manager.NodeToIndex(i)
        time_dim.CumulVar(index).SetRange(int(c.tw_early), min(int(c.tw_late), horizon))
        if c.release_s > vt.tw_early:
            solver.Add(solver.Element(starts, routing.VehicleVar(index) + 1) >= int(c.release_s))
        if c.prize is not None:
            routing.AddDisjunction([index], int(c.prize))
    params = pywrapcp.DefaultRoutingSearchParameters()
    # insertion builds a first solution that respects windows and releases far better than
    # PATH_CHEAPEST_ARC on these problems (which then leaves clients out)
    params.first_solution_strategy = (
        routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
    )
    params.local_search_metaheuristic = (
        routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    )
    params.time_limit.FromMilliseconds(max(100, int(limit_s * 1000)))
    sol = routing.SolveWithParameters(params)
    if sol is None:
        return None
    vans: list[list[list[int]]] = []
    for van in range(n_vans):
        trips = []
        for k in range(trips_per_van):
            v = van * trips_per_van + k
            index = routing.Start(v)
            trip = []
            while not routing.IsEnd(index):
                node = manager.IndexToNode(index)
                if node:
                    trip.append(node - 1)
                index = sol.Value(routing.NextVar(index))
            trips.append(trip)
        vans.append(trips)
    return vans


def compare(solved: Sequence[Solved]) -> dict[str, Any]:
    """Both solvers on every problem. ``cost_vs_ortools_pct`` compares the model's objective
    over the problems where both serve every client (so it compares distance for the same
    service); what each leaves out, and the objective over all problems, are reported too."""
    try:
        import ortools  # noqa: F401
    except ImportError:
        return {"cost_vs_ortools_pct": None, "ortools": "not installed"}
    rows = []
    same = [0, 0]
    everything = [0, 0]
    left_out = [0, 0]
    for s in solved:
        mine, why = check_cost(s.problem, ours_as_vans(s.problem, s.ours))
        if mine is None:
            raise SystemExit(f"{s.problem.name}: our own solution breaks the model: {why}")
        most = max((len(r.trips) for r in s.ours.routes), default=1)
        vt = s.problem.vehicle_types[0]
        demand = sum(c.demand[0] for c in s.problem.clients)
        trips = min(8, max(most + 1, math.ceil(demand / (vt.capacity[0] * vt.count)) + 1))
        t0 = time.perf_counter()
        vans = run_ortools(s.problem, s.time_limit_s, trips)
        wall = time.perf_counter() - t0
        theirs, why = (None, "no solution in time") if vans is None else check_cost(s.problem, vans)
        rows.append(
            {
                "problem": s.problem.name,
                "clients": len(s.problem.clients),
                "time_limit_s": round(s.time_limit_s, 1),
                "ours_km": round(mine.dist / 1000, 2),
                "ours_left_out": mine.left_out,
                "ortools_km": None if theirs is None else round(theirs.dist / 1000, 2),
                "ortools_left_out": None if theirs is None else theirs.left_out,
                "ortools_wall_s": round(wall, 1),
                **({"ortools_problem": why} if theirs is None else {}),
            }
        )
        text = (
            why if theirs is None else f"{theirs.dist / 1000:9.2f} km, {theirs.left_out} left out"
        )
        print(
            f"    {s.problem.name:<28} {len(s.problem.clients):>5} clients {s.time_limit_s:6.1f} s | "
            f"ours {mine.dist / 1000:9.2f} km, {mine.left_out} left out | OR-Tools {text}",
            flush=True,
        )
        left_out[0] += mine.left_out
        if theirs is None:
            left_out[1] += len(s.problem.clients)
            continue
        left_out[1] += theirs.left_out
        everything[0] += mine.cost
        everything[1] += theirs.cost
        if mine.left_out == 0 and theirs.left_out == 0:
            same[0] += mine.cost
            same[1] += theirs.cost

    def pct(pair: list[int]) -> float | None:
        return round(100.0 * (pair[0] - pair[1]) / pair[1], 2) if pair[1] else None

    return {
        "cost_vs_ortools_pct": pct(same),
        "objective_vs_ortools_pct": pct(everything),
        "left_out": {"ours": left_out[0], "ortools": left_out[1]},
        "problems": rows,
    }


# -- one size, in its own process -------------------------------------------------------------


def one(args: argparse.Namespace) -> dict[str, Any]:
    n = args.one
    limit = args.time_limit or default_limit(n)
    solved: list[Solved] = []
    original = engine._Engine._first_solve

    def spy(self: Any, parts: Any, seeds: Any, progress: Any) -> list[vrp.Result]:
        results = original(self, parts, seeds, progress)
        solved.extend(
            Solved(p.lp.problem, p.time_limit_s, r) for p, r in zip(parts, results, strict=True)
        )
        return results

    engine._Engine._first_solve = spy  # type: ignore[method-assign]  # record what was solved
    t_start = time.perf_counter()
    site = load_site(Path(args.site))
    van = load_van_spec(Path(args.van))
    net = load_network(site, van)
    t_net = time.perf_counter() - t_start
    with tempfile.TemporaryDirectory() as tmp:
        orders_csv = Path(tmp) / "orders.csv"
        write_orders(sample_orders(net, n, args.seed), orders_csv)
        t0 = time.perf_counter()
        parcels = read_orders(orders_csv, site).parcels
        t_orders = time.perf_counter() - t0
        stages: dict[str, float] = {}
        clock = {"stage": "", "t": time.perf_counter()}

        def progress(stage: str, fraction: float) -> None:
            now = time.perf_counter()
            key = clock["stage"]
            stages[str(key)] = stages.get(str(key), 0.0) + now - float(clock["t"])
            clock.update(stage=stage, t=now)

        t0 = time.perf_counter()
        plan = plan_day(
            parcels, site, van, net, time_limit_s=limit, seed=args.seed, progress=progress
        )
        t_plan = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_plan(plan, Path(tmp) / "plan.json", parcels=parcels)
        t_write = time.perf_counter() - t0
    peak_kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )

    def stage_sum(*prefixes: str) -> float:
        return round(sum(v for k, v in stages.items() if k.startswith(prefixes)), 2)

    unserved: dict[str, int] = {}
    for u in plan.unserved:
        where = "line haul" if "line haul" in u.detail else u.reason.value
        unserved[where] = unserved.get(where, 0) + 1
    out: dict[str, Any] = {
        "parcels": n,
        "time_limit_s": limit,
        "matrix_s": stage_sum("snapping", "assigning", "road matrix"),
        "solve_s": stage_sum("line haul", "last mile"),
        "geometry_s": stage_sum("road geometry"),
        "verify_s": stage_sum("verifying"),
        "plan_s": round(t_plan, 2),
        "end_to_end_s": round(t_net + t_orders + t_plan + t_write, 2),
        "peak_mb": round(peak_kb / 1024, 1),
        "served_pct": round(100.0 * plan.summary.served / max(1, n), 2),
        "vans_used": plan.summary.vans_used,
        "trips": plan.summary.trips,
        "km": round(plan.summary.dist_m / 1000, 1),
        "unserved": unserved,
    }
    if not args.no_ortools:
        print(
            f"  {n} parcels: OR-Tools on the same {len(solved)} problems, same time each",
            flush=True,
        )
        out |= compare(solved)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parcels", type=int, nargs="+", default=[500, 2000, 10000])
    ap.add_argument("--site", default=str(default_site_file()))
    ap.add_argument("--van", default=str(default_van_file()))
    ap.add_argument("--time-limit", type=float, default=None, help="seconds for the optimiser")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-ortools", action="store_true", help="skip the OR-Tools comparison")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(one(args)), flush=True)
        return
    site = load_site(Path(args.site))
    net = load_network(site, load_van_spec(Path(args.van)))  # warm the cache
    print(f"{site.name}: {net.num_nodes:,} road nodes; sizes {args.parcels}", flush=True)
    results = []
    for n in args.parcels:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--site",
            args.site,
            "--van",
            args.van,
            "--seed",
            str(args.seed),
        ]
        if args.time_limit is not None:
            cmd += ["--time-limit", str(args.time_limit)]
        if args.no_ortools:
            cmd.append("--no-ortools")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            if not line.startswith("RESULT "):
                print(line, flush=True)
        found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not found:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{n} parcels: the run failed (exit {proc.returncode})")
        r = json.loads(found[0][7:])
        results.append(r)
        print(
            f"{n:>6} parcels: limit {r['time_limit_s']:g} s | matrices {r['matrix_s']:.1f} s, "
            f"solve {r['solve_s']:.1f} s, geometry {r['geometry_s']:.1f} s, verify {r['verify_s']:.1f} s "
            f"| plan {r['plan_s']:.1f} s, end to end {r['end_to_end_s']:.1f} s | peak {r['peak_mb']:.0f} MB "
            f"| served {r['served_pct']:.1f} % | vs OR-Tools {r.get('cost_vs_ortools_pct')} %",
            flush=True,
        )
    print()
    print(
        f"{'parcels':>8} {'matrix s':>9} {'plan s':>8} {'e2e s':>8} {'peak MB':>8} {'served %':>9} "
        f"{'vs OR-Tools %':>14} {'left out: ours / OR-Tools':>26}"
    )
    for r in results:
        vs = r.get("cost_vs_ortools_pct")
        out = r.get("left_out", {})
        print(
            f"{r['parcels']:>8} {r['matrix_s']:>9.1f} {r['plan_s']:>8.1f} {r['end_to_end_s']:>8.1f} "
            f"{r['peak_mb']:>8.0f} {r['served_pct']:>9.1f} {vs if vs is not None else '-':>14} "
            f"{str(out.get('ours', '-')) + ' / ' + str(out.get('ortools', '-')):>26}"
        )
    print(
        "(vs OR-Tools: our cost against OR-Tools' over the problems where both serve every "
        "client; left out: door stops or consignments each leaves out in the same problems)"
    )
    print(json.dumps({"site": site.name, "parcels": args.parcels, "results": results}))


if __name__ == "__main__":
    main()
