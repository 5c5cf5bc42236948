#!/usr/bin/env python3
"""Route quality against best-known solutions: fleet's planning core vs OR-Tools vs VROOM.

    python benchmarks/vrplib.py benchmarks/data/vrplib --time-limit 10

Reads every VRPLIB instance in DIR (CVRPLIB ``X-*.vrp`` with ``.sol`` files, Solomon
``*.vrptw`` in the LKH-3 layout) and the best-known costs in ``DIR/bks.csv``. Each instance
becomes one integer matrix and one fleet, and the three solvers run on exactly that, one
after another, with the same wall-clock limit:

* **fleet**: ``fleet.planning.vrp.solve`` — the core the day planner runs (PyVRP, one search
  per core with different seeds, best kept);
* **ortools**: OR-Tools routing, guided local search (single-threaded by design);
* **vroom**: pyvroom, exploration level 5, one thread per core.

Integer conventions (the ones the best-known solutions use): X instances round Euclidean
distances to the nearest integer; Solomon instances use ``floor(10 * d)`` (the DIMACS
convention; costs, times, windows and service times are all scaled by 10), travel time =
distance. Fleet: Solomon instances have their stated vehicle count; X instances get the
number of routes in the best-known solution plus 10 % (at least 2 more), the same for all
three solvers. Every solution is re-checked here (each client once, capacity, time windows,
fleet size) and costed on the shared matrix; an invalid solution has no gap.

Prints a table, then one JSON line:
``{"instances": N, "time_limit_s": T, "mean_gap_pct": {"fleet": .., "ortools": .., "vroom": ..}, ...}``.
OR-Tools and VROOM are the ``bench`` extra (``pip install -e '.[bench]'``); a missing peer is
reported as ``null`` and skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is called vrplib.py, like the `vrplib` package PyVRP imports: take our own
# directory off the import path so that `import vrplib` finds the package, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import csv  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import timedelta  # noqa: E402

import numpy as np  # noqa: E402

from fleet.planning import vrp  # noqa: E402

BIG = 10**9


@dataclass
class Instance:
    name: str
    kind: str  # "cvrp" | "vrptw"
    dist: np.ndarray  # int64 [n, n], node 0 is the depot
    demand: np.ndarray  # int64 [n]
    capacity: int
    service: np.ndarray  # int64 [n]
    tw: np.ndarray | None  # int64 [n, 2]
    vehicles: int
    bks: int  # best-known cost in the same integer units
    bks_routes: int | None
    coords: np.ndarray


def _sections(path: Path) -> tuple[dict[str, str], dict[str, list[list[str]]]]:
    header: dict[str, str] = {}
    sections: dict[str, list[list[str]]] = {}
    current: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line == "EOF":
            continue
        if line.endswith("SECTION"):
            current = line
            sections[current] = []
        elif ":" in line and not line[0].isdigit() and not line.startswith("-"):
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip().strip('"')
            current = None
        elif current is not None:
            sections[current].append(line.split())
    return header, sections


def read_instance(path: Path, bks_table: dict[str, float]) -> Instance:
    header, sec = _sections(path)
    n = int(header["DIMENSION"])
    coords = np.array([[float(r[1]), float(r[2])] for r in sec["NODE_COORD_SECTION"]])
    diff = coords[:, None, :] - coords[None, :, :]
    euclid = np.sqrt((diff**2).sum(axis=2))
    demand = np.array([int(r[1]) for r in sec["DEMAND_SECTION"]], dtype=np.int64)
    depot_rows = [int(r[0]) for r in sec.get("DEPOT_SECTION", [["1"]]) if int(r[0]) > 0]
    if depot_rows != [1]:
        raise SystemExit(f"{path}: only one depot, node 1, is supported")
    weight_type = header.get("EDGE_WEIGHT_TYPE", "EUC_2D")
    name = header["NAME"].split(".")[0]
    if weight_type == "EUC_2D":
        dist = np.rint(euclid).astype(np.int64)
        scale = 1
    elif weight_type == "FLOOR_2D":
        scale = int(header.get("SCALE", "1"))
        dist = np.floor(scale * euclid + 1e-9).astype(np.int64)
    else:
        raise SystemExit(f"{path}: EDGE_WEIGHT_TYPE {weight_type} not supported")
    tw = None
    service = np.zeros(n, dtype=np.int64)
    kind = "cvrp"
    if "TIME_WINDOW_SECTION" in sec:
        kind = "vrptw"
        tw = (
            np.array([[int(r[1]), int(r[2])] for r in sec["TIME_WINDOW_SECTION"]], dtype=np.int64)
            * scale
        )
        service[1:] = int(float(header.get("SERVICE_TIME", "0")) * scale)
    bks_routes = None
    sol = path.with_suffix(".sol")
    if sol.exists():
        routes = [line for line in sol.read_text().splitlines() if line.startswith("Route")]
        bks_routes = len(routes)
        cost = 0
        for line in routes:
            visits = [0] + [int(v) for v in line.split(":")[1].split()] + [0]
            cost += sum(int(dist[a, b]) for a, b in itertools.pairwise(visits))
        m = re.search(r"Cost\s+(\d+)", sol.read_text())
        if m and int(m.group(1)) != cost:
            raise SystemExit(f"{sol}: routes cost {cost}, file says {m.group(1)}")
    if name not in bks_table:
        raise SystemExit(f"{path}: no best-known cost for {name} in bks.csv")
    bks = round(bks_table[name] * scale)
    if "VEHICLES" in header:
        vehicles = int(header["VEHICLES"])
    else:
        base = bks_routes or math.ceil(demand.sum() / int(header["CAPACITY"]))
        vehicles = base + max(2, math.ceil(0.1 * base))
    return Instance(
        name,
        kind,
        dist,
        demand,
        int(header["CAPACITY"]),
        service,
        tw,
        vehicles,
        bks,
        bks_routes,
        coords,
    )


# -- checking and costing any solution on the shared matrix ---------------------------------


def check(inst: Instance, routes: list[list[int]]) -> tuple[int | None, str]:
    """Cost of ``routes`` (client node ids, depot excluded) or None with the reason."""
    n = len(inst.demand)
    seen = sorted(v for r in routes for v in r)
    if seen != list(range(1, n)):
        return None, f"visits {len(seen)} of {n - 1} clients (or some twice)"
    used = [r for r in routes if r]
    if len(used) > inst.vehicles:
        return None, f"uses {len(used)} vehicles, fleet is {inst.vehicles}"
    cost = 0
    for r in used:
        if int(inst.demand[r].sum()) > inst.capacity:
            return None, "over capacity"
        path = [0, *r, 0]
        cost += sum(int(inst.dist[a, b]) for a, b in itertools.pairwise(path))
        if inst.tw is not None:
            t = int(inst.tw[0, 0])
            for a, b in itertools.pairwise(path):
                t = max(t + int(inst.service[a]) + int(inst.dist[a, b]), int(inst.tw[b, 0]))
                if t > inst.tw[b, 1]:
                    return None, f"time window of node {b} missed"
    return cost, ""


# -- the three solvers ---------------------------------------------------------------------


def run_fleet(inst: Instance, limit_s: float, seed: int, workers: int) -> list[list[int]]:
    n = len(inst.demand)
    tw = inst.tw if inst.tw is not None else np.array([[0, vrp.INF]] * n, dtype=np.int64)
    problem = vrp.Problem(
        dist=inst.dist,
        dur=inst.dist,
        depots=(vrp.Depot(0, tw_early=int(tw[0, 0]), tw_late=int(tw[0, 1])),),
        clients=tuple(
            vrp.Client(
                location=i,
                demand=(int(inst.demand[i]),),
                service_s=int(inst.service[i]),
                tw_early=int(tw[i, 0]),
                tw_late=int(tw[i, 1]),
            )
            for i in range(1, n)
        ),
        vehicle_types=(
            vrp.VehicleType(
                count=inst.vehicles,
                capacity=(inst.capacity,),
                start_depot=0,
                end_depot=0,
                tw_early=int(tw[0, 0]),
                tw_late=int(tw[0, 1]),
            ),
        ),
        coords=inst.coords,
        name=inst.name,
    )
    result = vrp.solve(problem, time_limit_s=limit_s, seed=seed, workers=workers)
    return [
        [problem.clients[c].location for t in r.trips for c in t.clients] for r in result.routes
    ]


def run_ortools(inst: Instance, limit_s: float) -> list[list[int]]:
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    n = len(inst.demand)
    manager = pywrapcp.RoutingIndexManager(n, inst.vehicles, 0)
    routing = pywrapcp.RoutingModel(manager)
    arc = routing.RegisterTransitMatrix(inst.dist.tolist())
    routing.SetArcCostEvaluatorOfAllVehicles(arc)
    demand = routing.RegisterUnaryTransitVector(inst.demand.tolist())
    routing.AddDimensionWithVehicleCapacity(
        demand, 0, [inst.capacity] * inst.vehicles, True, "load"
    )
    if inst.tw is not None:
        travel = (inst.dist + inst.service[:, None]).tolist()
        transit = routing.RegisterTransitMatrix(travel)
        horizon = int(inst.tw[0, 1])
        routing.AddDimension(transit, horizon, horizon, False, "time")
        time_dim = routing.GetDimensionOrDie("time")
        for node in range(1, n):
            time_dim.CumulVar(manager.NodeToIndex(node)).SetRange(
                int(inst.tw[node, 0]), int(inst.tw[node, 1])
            )
        for v in range(inst.vehicles):
            time_dim.CumulVar(routing.Start(v)).SetRange(int(inst.tw[0, 0]), horizon)
            time_dim.CumulVar(routing.End(v)).SetRange(int(inst.tw[0, 0]), horizon)
    # Every client may be left out at a high price, so that a first solution always exists
    # with a tight fleet (OR-Tools often finds none otherwise); one that still leaves a client
    # out at the end is reported as invalid.
    penalty = int(inst.dist.max()) * 100
    for node in range(1, n):
        routing.AddDisjunction([manager.NodeToIndex(node)], penalty)
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = (
        routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
        if inst.tw is not None
        else routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    )
    params.local_search_metaheuristic = (
        routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    )
    params.time_limit.FromMilliseconds(int(limit_s * 1000))
    sol = routing.SolveWithParameters(params)
    if sol is None:
        return []
    routes = []
    for v in range(inst.vehicles):
        idx = routing.Start(v)
        route = []
        while not routing.IsEnd(idx):
            node = manager.IndexToNode(idx)
            if node:
                route.append(node)
            idx = sol.Value(routing.NextVar(idx))
        routes.append(route)
    return routes


def run_vroom(inst: Instance, limit_s: float, threads: int) -> list[list[int]]:
    import vroom

    n = len(inst.demand)
    problem = vroom.Input()
    problem.set_durations_matrix(profile="car", matrix_input=inst.dist)
    problem.set_costs_matrix(profile="car", matrix_input=inst.dist)
    depot_tw = None if inst.tw is None else vroom.TimeWindow(int(inst.tw[0, 0]), int(inst.tw[0, 1]))
    for v in range(inst.vehicles):
        problem.add_vehicle(
            vroom.Vehicle(
                v + 1,
                start=0,
                end=0,
                capacity=[inst.capacity],
                **({"time_window": depot_tw} if depot_tw else {}),
            )
        )
    for i in range(1, n):
        tws = [] if inst.tw is None else [vroom.TimeWindow(int(inst.tw[i, 0]), int(inst.tw[i, 1]))]
        problem.add_job(
            vroom.Job(
                i,
                location=i,
                delivery=[int(inst.demand[i])],
                default_service=int(inst.service[i]),
                time_windows=tws,
            )
        )
    sol = problem.solve(exploration_level=5, nb_threads=threads, timeout=timedelta(seconds=limit_s))
    frame = sol.routes
    routes: dict[int, list[int]] = {}
    for vid, typ, loc in zip(
        frame["vehicle_id"], frame["type"], frame["location_index"], strict=True
    ):
        if typ == "job":
            routes.setdefault(int(vid), []).append(int(loc))
    return list(routes.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="directory with VRPLIB instances and bks.csv")
    ap.add_argument(
        "--time-limit", type=float, default=10.0, help="seconds per instance per solver"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--workers", type=int, default=None, help="cores for fleet and VROOM (default: all)"
    )
    ap.add_argument("--solvers", default="fleet,ortools,vroom")
    ap.add_argument("--only", default="", help="comma-separated instance names")
    args = ap.parse_args()
    workers = args.workers or vrp.default_workers()
    solvers = [s for s in args.solvers.split(",") if s]
    bks_table: dict[str, float] = {}
    with (args.dir / "bks.csv").open() as fh:
        for row in csv.DictReader(fh):
            bks_table[row["instance"]] = float(row["bks"])
    files = sorted(p for p in args.dir.iterdir() if p.suffix in (".vrp", ".vrptw"))
    if args.only:
        wanted = set(args.only.split(","))
        files = [p for p in files if p.name.split(".")[0] in wanted]
    if not files:
        raise SystemExit(f"{args.dir}: no .vrp or .vrptw files")
    gaps: dict[str, list[float]] = {s: [] for s in solvers}
    available = dict.fromkeys(solvers, True)
    rows = []
    print(
        f"{'instance':<12} {'n':>4} {'veh':>4} {'bks':>8}"
        + "".join(f" {s:>10} {'gap%':>6}" for s in solvers)
    )
    for path in files:
        inst = read_instance(path, bks_table)
        row: dict[str, object] = {"instance": inst.name, "bks": inst.bks}
        line = f"{inst.name:<12} {len(inst.demand) - 1:>4} {inst.vehicles:>4} {inst.bks:>8}"
        for s in solvers:
            cost: int | None = None
            why = ""
            if available[s]:
                t0 = time.perf_counter()
                try:
                    if s == "fleet":
                        routes = run_fleet(inst, args.time_limit, args.seed, workers)
                    elif s == "ortools":
                        routes = run_ortools(inst, args.time_limit)
                    elif s == "vroom":
                        routes = run_vroom(inst, args.time_limit, workers)
                    else:
                        raise SystemExit(f"unknown solver {s}")
                except ImportError as exc:
                    available[s] = False
                    why = f"not installed ({exc.name})"
                    print(f"  {s}: {why}; skipped", file=sys.stderr)
                    routes = None
                wall = time.perf_counter() - t0
                if routes is not None:
                    cost, why = check(inst, routes)
                    row[f"{s}_wall_s"] = round(wall, 2)
            gap = None if cost is None else 100.0 * (cost - inst.bks) / inst.bks
            if gap is not None:
                gaps[s].append(gap)
            elif available[s]:
                print(f"  {inst.name} {s}: invalid solution: {why}", file=sys.stderr)
            row[s] = cost
            row[f"{s}_gap_pct"] = None if gap is None else round(gap, 3)
            line += f" {cost if cost is not None else '-':>10} {f'{gap:.2f}' if gap is not None else '-':>6}"
        print(line, flush=True)
        rows.append(row)
    n_inst = len(files)
    mean = {
        s: (round(sum(g) / len(g), 3) if g and len(g) == n_inst else None) for s, g in gaps.items()
    }
    print(
        f"{'mean gap %':<31}"
        + "".join(f" {'':>10} {f'{m:.2f}' if m is not None else '-':>6}" for m in mean.values())
    )
    valid = {s: len(g) for s, g in gaps.items()}
    print(f"{'valid solutions':<31}" + "".join(f" {'':>10} {valid[s]:>6}" for s in solvers))
    print(
        f"(fleet: {workers} worker(s); ortools: 1 thread; vroom: {workers} thread(s); {args.time_limit:g} s each;"
        " a mean needs a valid solution on every instance)"
    )
    print(
        json.dumps(
            {
                "instances": n_inst,
                "time_limit_s": args.time_limit,
                "mean_gap_pct": mean,
                "valid_solutions": valid,
                "workers": workers,
                "per_instance": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
