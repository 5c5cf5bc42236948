#!/usr/bin/env python3
"""Road network speed and memory on the Porto site: loading, and a 2,000 x 2,000 matrix.

    python benchmarks/roadnet.py                      # the Porto site (configs/sites/porto.toml)
    python benchmarks/roadnet.py --whole-extract      # every drivable road of the extract

Measures, in one run on one machine:

* **load_cold_s**: ``fleet.roads.load_network`` with an empty cache (parse the .pbf, cut to the
  operating area, largest strongly connected part, chain merging, write the cache);
* **load_cached_s**: the same call again, served from the cache (in process), and the wall
  time of a whole ``fleet site show`` command on the warm cache (a new process);
* **matrix_2000_s**: ``RoadNetwork.matrix`` between 2,000 and 2,000 random road points (points
  drawn uniformly along the roads, snapped; seeded), the first call, so including building
  and customizing the contraction hierarchy; then again (warm), and forced into worker
  processes (the engine itself only starts them for larger matrices);
* **scipy_plain_2000_s**: the peer: one plain single-process
  ``scipy.sparse.csgraph.dijkstra(graph, indices=sources)`` on the same graph (travel-time
  weights) and the same points, then the target columns taken - the answers are compared;
* **networkx_2000_est_s**: networkx's per-source Dijkstra loop
  (``single_source_dijkstra_path_length``), timed on 100 sources and scaled to 2,000;
* **peak_mb**: this process's peak resident memory after loading and our matrix, before the
  peers run (a forked worker's peak and the peers' are printed separately).

Prints a table, then one JSON line with those keys and ``speedup_vs_scipy_plain``.
The issue's target: the matrix in <= 10 s on a 2-core machine, >= 2.5x the plain scipy call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO))

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402
from scipy.sparse.csgraph import dijkstra  # noqa: E402

from fleet.model import NodeId, Site, load_site, load_van_spec  # noqa: E402
from fleet.roads import RoadNetwork, load_network  # noqa: E402
from fleet.roads import engine as road_engine  # noqa: E402
from fleet.roads.engine import default_workers  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident set of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def random_road_nodes(net: RoadNetwork, k: int, rng: np.random.Generator) -> list[NodeId]:
    """``k`` points uniformly along the drivable roads, snapped to the graph."""
    p = net.prepared
    links = np.unique(p.edge_link)
    weights = p.link_len_cm[links].astype(np.float64)
    chosen = rng.choice(links, size=k, p=weights / weights.sum())
    lons = np.empty(k)
    lats = np.empty(k)
    for i, link in enumerate(chosen.tolist()):
        a, b = int(p.geom_offsets[link]), int(p.geom_offsets[link + 1])
        j = int(rng.integers(a, b - 1))
        t = float(rng.random())
        lons[i] = p.geom_lon[j] + t * (p.geom_lon[j + 1] - p.geom_lon[j])
        lats[i] = p.geom_lat[j] + t * (p.geom_lat[j + 1] - p.geom_lat[j])
    batch = net.snap_many(lons, lats)
    assert batch.ok.all(), [r for r in batch.reason if r][:3]
    return [NodeId(int(n)) for n in batch.node]


def n_work(points: int, net: RoadNetwork) -> int:
    """The engine's measure of a matrix's size (it goes parallel above PARALLEL_MIN_WORK)."""
    return points * net._engine.hierarchy.num_arcs


def whole_extract_site(site: Site, tmp: Path) -> Site:
    """The same site with an operating area covering the whole extract (its header's box, or
    the globe) and no road class excluded."""
    import osmium

    reader = osmium.io.Reader(str(site.osm_file), osmium.osm.osm_entity_bits.NOTHING)
    box = reader.header().box()
    reader.close()
    if box.valid():
        w, s = box.bottom_left.lon - 0.01, box.bottom_left.lat - 0.01
        e, n = box.top_right.lon + 0.01, box.top_right.lat + 0.01
    else:
        w, s, e, n = -180.0, -85.0, 180.0, 85.0
    area = tmp / "everything.geojson"
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    area.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    return replace(
        site,
        name=f"{site.name} (whole extract)",
        operating_area_file=area,
        excluded_highways=(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", type=Path, default=_REPO / "configs" / "sites" / "porto.toml")
    parser.add_argument("--van", type=Path, default=_REPO / "configs" / "van.toml")
    parser.add_argument("--points", type=int, default=2000, help="matrix side (default 2000)")
    parser.add_argument("--nx-sources", type=int, default=100, help="networkx sources timed")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None, help="default: CPUs available")
    parser.add_argument(
        "--whole-extract",
        action="store_true",
        help="every drivable road of the extract instead of the operating area",
    )
    args = parser.parse_args()

    van = load_van_spec(args.van)
    site = load_site(args.site)
    with tempfile.TemporaryDirectory(prefix="roadnet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.whole_extract:
            site = whole_extract_site(site, tmp)
        os.environ["FLEET_CACHE_DIR"] = str(tmp / "cache")

        t0 = time.perf_counter()
        net = load_network(site, van)
        load_cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        net = load_network(site, van)
        load_cached_s = time.perf_counter() - t0
        rng = np.random.default_rng(args.seed)
        sources = random_road_nodes(net, args.points, rng)
        targets = random_road_nodes(net, args.points, rng)
        workers = args.workers if args.workers is not None else default_workers()

        t0 = time.perf_counter()
        ours = net.matrix(sources, targets, workers=workers)
        matrix_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours_again = net.matrix(sources, targets, workers=workers)
        matrix_again_s = time.perf_counter() - t0
        assert np.array_equal(ours.time_s, ours_again.time_s)
        used = workers if n_work(args.points, net) >= road_engine.PARALLEL_MIN_WORK else 1
        peak_mb = peak_rss_mb()
        # the same, forced into worker processes whatever the size
        threshold = road_engine.PARALLEL_MIN_WORK
        road_engine.PARALLEL_MIN_WORK = 0
        t0 = time.perf_counter()
        forced = net.matrix(sources, targets, workers=max(2, workers))
        matrix_forced_s = time.perf_counter() - t0
        road_engine.PARALLEL_MIN_WORK = threshold
        assert np.array_equal(ours.time_s, forced.time_s)
        workers_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        hierarchy = net._engine.hierarchy

        # -- the plain scipy call, on the same graph and points --------------------------
        p = net.prepared
        graph = csr_matrix(
            (p.edge_time_ms / 1000.0, (p.edge_u, p.edge_v)), shape=(net.num_nodes, net.num_nodes)
        )
        src_idx = net.index_of(sources)
        tgt_idx = net.index_of(targets)
        t0 = time.perf_counter()
        plain = dijkstra(graph, directed=True, indices=src_idx)[:, tgt_idx]
        plain_s = time.perf_counter() - t0
        plain_peak_mb = peak_rss_mb()
        diff = np.abs(np.where(np.isfinite(plain), plain - ours.time_s, 0.0))
        same_unreachable = bool(np.array_equal(np.isinf(plain), np.isinf(ours.time_s)))
        max_diff_s = float(diff.max())

        # -- networkx, per source, on a sample -----------------------------------------
        g = net.graph
        k = min(args.nx_sources, args.points)
        t0 = time.perf_counter()
        for s in sources[:k]:
            nx.single_source_dijkstra_path_length(g, s, weight="time_s")
        nx_sample_s = time.perf_counter() - t0
        nx_est_s = nx_sample_s * args.points / k

        # last: its memory would count as a child's peak
        show_s = None
        if not args.whole_extract:
            t0 = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "from fleet.cli.app import main; main()",
                    "site",
                    "show",
                    str(args.site),
                    "--van",
                    str(args.van),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            show_s = time.perf_counter() - t0
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)

    speedup = plain_s / matrix_s
    n = args.points
    rows = [
        (
            "site",
            f"{site.name}: {net.num_nodes:,} nodes, {net.num_edges:,} edges, "
            f"{net.area_km2:.0f} km² (hierarchy: {hierarchy.num_arcs:,} arcs, "
            f"{hierarchy.num_levels} levels)",
        ),
        ("load, cold (parse + build + cache)", f"{load_cold_s:8.2f} s"),
        ("load, cached (in process)", f"{load_cached_s:8.2f} s"),
    ]
    if show_s is not None:
        rows.append(("`fleet site show`, cached (new process)", f"{show_s:8.2f} s"))
    rows += [
        (f"matrix {n}x{n}, fleet (first: + hierarchy; {used} process(es))", f"{matrix_s:8.2f} s"),
        (f"matrix {n}x{n}, fleet, again", f"{matrix_again_s:8.2f} s"),
        (
            f"matrix {n}x{n}, fleet, forced into {max(2, workers)} worker processes",
            f"{matrix_forced_s:8.2f} s",
        ),
        (f"matrix {n}x{n}, plain scipy dijkstra (1 process)", f"{plain_s:8.2f} s"),
        (f"matrix {n}x{n}, networkx loop ({k} sources x {n // k})", f"{nx_est_s:8.1f} s (est.)"),
        ("speedup vs plain scipy", f"{speedup:8.2f} x"),
        ("answers equal (max |diff| in time)", f"{same_unreachable} ({max_diff_s:.2e} s)"),
        ("peak memory: load + our matrix (one process)", f"{peak_mb:8.0f} MB"),
        ("peak memory: one worker process (forked)", f"{workers_peak_mb:8.0f} MB"),
        ("peak memory: after the plain scipy call", f"{plain_peak_mb:8.0f} MB"),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"roadnet benchmark ({os.cpu_count()} CPUs visible, target: matrix <= 10 s and "
        ">= 2.5x plain scipy)"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(
        json.dumps(
            {
                "site": site.name,
                "nodes": net.num_nodes,
                "edges": net.num_edges,
                "hierarchy_arcs": hierarchy.num_arcs,
                "hierarchy_levels": hierarchy.num_levels,
                "points": n,
                "processes": used,
                "matrix_2000_again_s": round(matrix_again_s, 3),
                "matrix_2000_worker_processes_s": round(matrix_forced_s, 3),
                "load_cold_s": round(load_cold_s, 3),
                "load_cached_s": round(load_cached_s, 3),
                "site_show_cached_s": None if show_s is None else round(show_s, 3),
                "matrix_2000_s": round(matrix_s, 3),
                "scipy_plain_2000_s": round(plain_s, 3),
                "speedup_vs_scipy_plain": round(speedup, 2),
                "networkx_2000_est_s": round(nx_est_s, 1),
                "networkx_sources_timed": k,
                "answers_equal": same_unreachable and max_diff_s < 1e-6,
                "peak_mb": round(peak_mb, 1),
                "worker_peak_mb": round(workers_peak_mb, 1),
                "peak_mb_with_plain_scipy": round(plain_peak_mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
