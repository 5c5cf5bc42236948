"""Many-to-many shortest paths: Dijkstra (``scipy.sparse.csgraph``) on a reduced core graph.

Road networks hang a lot of their nodes on the side of the routes that cross them: dead-end
trees, and the chains that are left once those trees are pruned. Any path between two nodes
outside such a side part enters and leaves it through at most two *boundary* nodes, so the
matrix can be computed exactly on the *core* (the rest) with:

* each side part reduced to shortcuts between its boundary nodes (the fastest way through it);
* each source or target outside the core joined to the core by a virtual node whose edges carry
  its exact distance to (or from) its boundary nodes inside its own side part;
* pairs inside the same side part also compared with the path that stays inside it.

Only the rows asked for are computed (the smaller side of the matrix is searched from), only
the columns asked for are kept, sources are taken in bounded chunks, and large matrices are
split over worker processes (``scipy``'s Dijkstra holds the GIL, threads would not help).

Weights are the encoded ``time_ms * 1e8 + dist_cm`` of :mod:`fleet.roads.prepared`: sums of
integer-valued floats below 2**53 are exact, so the result is bit-identical to a plain Dijkstra
on the whole graph.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

# Chunks of sources are sized so that one chunk's Dijkstra output stays below this.
CHUNK_BYTES = 48 * 2**20
# Below this much work (sources x core edges) a matrix is computed in this process.
PARALLEL_MIN_WORK = 4_000_000
WORKERS_ENV = "FLEET_ROAD_WORKERS"


def default_workers() -> int:
    """``$FLEET_ROAD_WORKERS`` if set, else the CPUs this process may run on (at most 8)."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            log.warning("ignoring %s=%r: not a whole number", WORKERS_ENV, env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def dedupe_min(n: int, src: I64, dst: I64, weight: F64) -> csr_matrix:
    """CSR adjacency keeping the smallest weight of parallel edges (scipy would add them)."""
    key = src * n + dst
    order = np.lexsort((weight, key))
    key_sorted = key[order]
    first = order[np.r_[True, key_sorted[1:] != key_sorted[:-1]]] if len(key) else order
    return csr_matrix((weight[first], (src[first], dst[first])), shape=(n, n))


@dataclass(frozen=True, slots=True)
class _Access:
    """For every node: its side part (-1 = core) and the exact costs to and from the boundary."""

    comp: I64  # [n] side-part id, -1 for core nodes
    boundary: I64  # [M, 2] core index of each side part's boundary nodes (-1 = none)
    out_cost: F64  # [n, 2] node -> boundary k inside its part (inf if none / unreachable)
    in_cost: F64  # [n, 2] boundary k -> node inside its part


class MatrixEngine:
    """Exact many-to-many shortest paths on one directed graph with encoded weights."""

    def __init__(self, n: int, src: I64, dst: I64, weight: F64) -> None:
        self.n = n
        self.full = dedupe_min(n, src, dst, weight)
        self._built = False

    # -- the reduction ---------------------------------------------------------------------
    def _build(self) -> None:
        if self._built:
            return
        full = self.full.tocoo()
        src, dst, w = full.row.astype(np.int64), full.col.astype(np.int64), full.data
        core = _core_nodes(self.n, src, dst)
        while True:
            comp, boundary = _side_parts(self.n, src, dst, core)
            too_many = boundary[:, 2] >= 0
            if not np.any(too_many):
                break
            core |= np.isin(comp, np.nonzero(too_many)[0])  # cannot happen; stay exact anyway
        boundary = boundary[:, :2]
        core_index = np.full(self.n, -1, dtype=np.int64)
        core_index[core] = np.arange(int(core.sum()))
        n_core = int(core.sum())
        out_cost, in_cost, s_src, s_dst, s_w = _side_costs(
            self.n, src, dst, w, core, comp, boundary
        )
        both = core[src] & core[dst]
        c_src = np.concatenate((core_index[src[both]], core_index[s_src]))
        c_dst = np.concatenate((core_index[dst[both]], core_index[s_dst]))
        c_w = np.concatenate((w[both], s_w))
        self.core_fwd = dedupe_min(n_core, c_src, c_dst, c_w)
        self.core_bwd = dedupe_min(n_core, c_dst, c_src, c_w)
        self.core_index = core_index
        self.n_core = n_core
        self.access = _Access(
            comp=comp,
            boundary=np.where(boundary >= 0, core_index[np.maximum(boundary, 0)], -1),
            out_cost=out_cost,
            in_cost=in_cost,
        )
        # internal edges of side parts, for pairs inside the same part
        inner = (comp[src] >= 0) & (comp[dst] >= 0)
        self.inner = csr_matrix((w[inner], (src[inner], dst[inner])), shape=(self.n, self.n))
        self._built = True
        log.debug(
            "matrix core: %d of %d nodes, %d edges, %d side parts",
            n_core,
            self.n,
            self.core_fwd.nnz,
            len(boundary),
        )

    @property
    def core_size(self) -> int:
        self._build()
        return self.n_core

    # -- queries ---------------------------------------------------------------------------
    def many_to_many(
        self,
        sources: I64,
        targets: I64,
        *,
        workers: int | None = None,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> F64:
        """Encoded shortest-path weights ``[len(sources), len(targets)]``; ``inf`` = no path.

        ``on_chunk(done_rows, total_rows)`` is called as chunks finish (for progress bars).
        """
        self._build()
        sources = np.asarray(sources, dtype=np.int64)
        targets = np.asarray(targets, dtype=np.int64)
        if len(sources) == 0 or len(targets) == 0:
            return np.full((len(sources), len(targets)), np.inf)
        u_src, src_inv = np.unique(sources, return_inverse=True)
        u_tgt, tgt_inv = np.unique(targets, return_inverse=True)
        if len(u_tgt) < len(u_src):  # search from the smaller side, on the reversed graph
            core = self.core_bwd
            rows = self._rows(
                core, u_tgt, u_src, self.access.in_cost, self.access.out_cost, workers, on_chunk
            ).T
        else:
            core = self.core_fwd
            rows = self._rows(
                core, u_src, u_tgt, self.access.out_cost, self.access.in_cost, workers, on_chunk
            )
        self._same_part(u_src, u_tgt, rows)
        return np.asarray(rows[np.ix_(src_inv.ravel(), tgt_inv.ravel())])

    def _rows(
        self,
        core: csr_matrix,
        origins: I64,
        dests: I64,
        leave_cost: F64,
        reach_cost: F64,
        workers: int | None,
        on_chunk: Callable[[int, int], None] | None,
    ) -> F64:
        """Dijkstra from ``origins`` on ``core`` plus one virtual node per origin outside it;
        a destination outside the core is reached through its boundary nodes."""
        nc = self.n_core
        acc = self.access
        o_core = self.core_index[origins]
        o_virtual = np.nonzero(o_core < 0)[0]
        row_of = o_core.copy()
        row_of[o_virtual] = nc + np.arange(len(o_virtual))
        core_coo = core.tocoo()
        e_src: list[I64] = [core_coo.row.astype(np.int64)]
        e_dst: list[I64] = [core_coo.col.astype(np.int64)]
        e_w: list[F64] = [core_coo.data]
        nodes = origins[o_virtual]
        for k in (0, 1):  # virtual origin -> its boundary node k, at the cost inside its part
            b = acc.boundary[acc.comp[nodes], k]
            cost = leave_cost[nodes, k]
            ok = (b >= 0) & np.isfinite(cost)
            e_src.append(row_of[o_virtual][ok])
            e_dst.append(b[ok])
            e_w.append(cost[ok])
        n_aug = nc + len(o_virtual)
        graph = dedupe_min(n_aug, np.concatenate(e_src), np.concatenate(e_dst), np.concatenate(e_w))
        d_core = self.core_index[dests]
        side = np.nonzero(d_core < 0)[0]
        side_b = acc.boundary[acc.comp[dests[side]]]  # [len(side), 2]
        cols = np.unique(np.concatenate((d_core[d_core >= 0], side_b[side_b >= 0])))
        found = _run_rows(graph, row_of, cols, workers, on_chunk)
        out = np.full((len(origins), len(dests)), np.inf)
        at_core = np.nonzero(d_core >= 0)[0]
        out[:, at_core] = found[:, np.searchsorted(cols, d_core[at_core])]
        for k in (0, 1):
            b = side_b[:, k]
            ok = b >= 0
            via = found[:, np.searchsorted(cols, b[ok])] + reach_cost[dests[side[ok]], k]
            out[:, side[ok]] = np.minimum(out[:, side[ok]], via)
        return out

    def _same_part(self, u_src: I64, u_tgt: I64, rows: F64) -> None:
        """Pairs inside one side part: also the path that never leaves it."""
        comp = self.access.comp
        s_comp, t_comp = comp[u_src], comp[u_tgt]
        shared = np.intersect1d(s_comp[s_comp >= 0], t_comp[t_comp >= 0])
        if len(shared) == 0:
            return
        for c in shared.tolist():
            si = np.nonzero(s_comp == c)[0]
            ti = np.nonzero(t_comp == c)[0]
            members = np.nonzero(comp == c)[0]
            local = self.inner[members][:, members]
            pos = {int(x): i for i, x in enumerate(members.tolist())}
            d = dijkstra(local, directed=True, indices=[pos[int(x)] for x in u_src[si]])
            inside = d[:, [pos[int(x)] for x in u_tgt[ti]]]
            rows[np.ix_(si, ti)] = np.minimum(rows[np.ix_(si, ti)], inside)


# -- building the reduction ----------------------------------------------------------------
def _undirected_pairs(src: I64, dst: I64) -> tuple[I64, I64]:
    a, b = np.minimum(src, dst), np.maximum(src, dst)
    pairs = np.unique(np.stack((a, b), axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _core_nodes(n: int, src: I64, dst: I64) -> Bool:
    """Nodes of degree >= 3 (distinct neighbours) in the 2-core; one node per part without."""
    a, b = _undirected_pairs(src, dst)
    degree = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    alive = np.ones(n, dtype=np.bool_)
    deg = degree.copy()
    while True:
        leaves = alive & (deg <= 1)
        if not np.any(leaves):
            break
        alive &= ~leaves
        for x, y in ((a, b), (b, a)):
            hit = leaves[x] & alive[y]
            np.subtract.at(deg, y[hit], 1)
    core = alive & (deg >= 3)
    # every connected part of the graph needs at least one core node (cycles, trees)
    graph = csr_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    has_core = np.zeros(labels.max() + 1, dtype=np.bool_)
    has_core[labels[core]] = True
    # in a part without one: a node of the 2-core if any (a cycle), else any node (a tree)
    for lab in np.nonzero(~has_core)[0].tolist():
        members = np.nonzero(labels == lab)[0]
        in_cycle = members[alive[members]]
        core[(in_cycle if len(in_cycle) else members)[0]] = True
    # a 2-core cycle hanging off the rest through no node of degree >= 3 cannot exist: the
    # node joining it to the rest has degree >= 3. Pure cycles were handled just above.
    return core


def _side_parts(n: int, src: I64, dst: I64, core: Bool) -> tuple[I64, I64]:
    """Connected parts of the graph without the core, and their boundary (core) nodes.

    Returns ``comp[n]`` (-1 on core nodes) and ``boundary[M, 3]``: up to two boundary nodes,
    and a third column that is >= 0 when a part has more than two (then it must join the core).
    """
    a, b = _undirected_pairs(src, dst)
    inner = ~core[a] & ~core[b]
    g = csr_matrix((np.ones(int(inner.sum())), (a[inner], b[inner])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    side = np.nonzero(~core)[0]
    uniq, comp_of_side = np.unique(labels[side], return_inverse=True)
    comp = np.full(n, -1, dtype=np.int64)
    comp[side] = comp_of_side
    m = len(uniq)
    boundary = np.full((m, 3), -1, dtype=np.int64)
    cross_side = np.concatenate((a[~core[a] & core[b]], b[~core[b] & core[a]]))
    cross_core = np.concatenate((b[~core[a] & core[b]], a[~core[b] & core[a]]))
    pairs = np.unique(np.stack((comp[cross_side], cross_core), axis=1), axis=0)
    if len(pairs):
        starts = np.r_[0, np.nonzero(np.diff(pairs[:, 0]))[0] + 1]
        rank = np.arange(len(pairs)) - np.repeat(starts, np.diff(np.r_[starts, len(pairs)]))
        keep = rank < 3
        boundary[pairs[keep, 0], rank[keep]] = pairs[keep, 1]
    return comp, boundary


def _side_costs(
    n: int, src: I64, dst: I64, w: F64, core: Bool, comp: I64, boundary: I64
) -> tuple[F64, F64, I64, I64, F64]:
    """Costs between each side node and its boundary nodes, staying inside its part;
    and the shortcuts through each part between its two boundary nodes."""
    m = len(boundary)
    out_cost = np.full((n, 2), np.inf)
    in_cost = np.full((n, 2), np.inf)
    inner = ~core[src] & ~core[dst]
    sc_src: list[I64] = []
    sc_dst: list[I64] = []
    sc_w: list[F64] = []
    for k in (0, 1):
        has = boundary[:, k] >= 0
        if not np.any(has):
            continue
        proxy = n + np.arange(m)  # a private copy of boundary node k for every part
        # boundary k -> side node (entering the part)
        enter = core[src] & ~core[dst]
        enter &= boundary[np.maximum(comp[dst], 0), k] == src
        g_in = csr_matrix(
            (
                np.concatenate((w[inner], w[enter])),
                (
                    np.concatenate((src[inner], proxy[comp[dst[enter]]])),
                    np.concatenate((dst[inner], dst[enter])),
                ),
            ),
            shape=(n + m, n + m),
        )
        d_in = dijkstra(g_in, directed=True, indices=proxy[has], min_only=True)
        in_cost[~core, k] = d_in[:n][~core]
        # side node -> boundary k (leaving the part): search backwards from the proxy
        leave = ~core[src] & core[dst]
        leave &= boundary[np.maximum(comp[src], 0), k] == dst
        g_out = csr_matrix(
            (
                np.concatenate((w[inner], w[leave])),
                (
                    np.concatenate((dst[inner], proxy[comp[src[leave]]])),
                    np.concatenate((src[inner], src[leave])),
                ),
            ),
            shape=(n + m, n + m),
        )
        d_out = dijkstra(g_out, directed=True, indices=proxy[has], min_only=True)
        out_cost[~core, k] = d_out[:n][~core]
        # shortcut: boundary k -> through the part -> the other boundary node
        other = boundary[np.maximum(comp[src], 0), 1 - k]
        exits = ~core[src] & core[dst] & (other == dst) & (other >= 0)
        through = in_cost[src[exits], k] + w[exits]
        ok = np.isfinite(through)
        sc_src.append(boundary[comp[src[exits]], k][ok])
        sc_dst.append(dst[exits][ok])
        sc_w.append(through[ok])
    if not sc_src:
        empty = np.zeros(0, dtype=np.int64)
        return out_cost, in_cost, empty, empty, np.zeros(0)
    return (
        out_cost,
        in_cost,
        np.concatenate(sc_src),
        np.concatenate(sc_dst),
        np.concatenate(sc_w),
    )


# -- running Dijkstra over chunks of rows, in this process or in workers --------------------
_WORKER_GRAPH: csr_matrix | None = None
_WORKER_COLS: I64 | None = None


def _init_worker(
    data: F64, indices: npt.NDArray[np.int32], indptr: npt.NDArray[np.int32], n: int, cols: I64
) -> None:
    global _WORKER_GRAPH, _WORKER_COLS
    _WORKER_GRAPH = csr_matrix((data, indices, indptr), shape=(n, n))
    _WORKER_COLS = cols


def _worker_chunk(rows: I64) -> F64:
    assert _WORKER_GRAPH is not None and _WORKER_COLS is not None
    return _chunk(_WORKER_GRAPH, rows, _WORKER_COLS)


def _chunk(graph: csr_matrix, rows: I64, cols: I64) -> F64:
    d = dijkstra(graph, directed=True, indices=rows)
    return np.ascontiguousarray(np.atleast_2d(d)[:, cols])


def _run_rows(
    graph: csr_matrix,
    rows: I64,
    cols: I64,
    workers: int | None,
    on_chunk: Callable[[int, int], None] | None,
) -> F64:
    n = graph.shape[0]
    total = len(rows)
    per_chunk = max(1, CHUNK_BYTES // (8 * max(n, 1)))
    workers = default_workers() if workers is None else max(1, workers)
    parallel = workers > 1 and total > 1 and total * graph.nnz >= PARALLEL_MIN_WORK
    if parallel:  # enough chunks to keep every worker busy until the end
        per_chunk = min(per_chunk, max(1, math.ceil(total / (workers * 4))))
    chunks = [rows[i : i + per_chunk] for i in range(0, total, per_chunk)]
    out = np.empty((total, len(cols)))
    done = 0
    if not parallel:
        for i, chunk in enumerate(chunks):
            out[i * per_chunk : i * per_chunk + len(chunk)] = _chunk(graph, chunk, cols)
            done += len(chunk)
            if on_chunk is not None:
                on_chunk(done, total)
        return out
    graph.sort_indices()
    with ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)),
        mp_context=_start_context(),
        initializer=_init_worker,
        initargs=(graph.data, graph.indices, graph.indptr, n, cols),
    ) as pool:
        for i, part in enumerate(pool.map(_worker_chunk, chunks)):
            out[i * per_chunk : i * per_chunk + len(part)] = part
            done += len(part)
            if on_chunk is not None:
                on_chunk(done, total)
    return out


def _start_context() -> multiprocessing.context.BaseContext:
    """``fork`` while this process has one thread (cheap, nothing to re-import), else a fresh
    interpreter: forking a threaded process can deadlock and Python 3.12+ warns about it."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
