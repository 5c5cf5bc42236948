"""Many-to-many shortest paths with a customizable contraction hierarchy (CCH), in numpy.

Three steps, the first independent of the weights (Dibbelt, Strasser, Wagner, *Customizable
Contraction Hierarchies*, 2016):

1. **Order and chordal graph** (:class:`Hierarchy`): nodes are eliminated one by one, fewest
   neighbours first; eliminating a node joins all its remaining neighbours to each other.
   Every node then has a list of *upper* neighbours (eliminated later), an *arc* to each, and a
   *level* (one more than the highest level below it). Dead ends and degree-2 chains go
   first and add nothing; a road network of 17,000 nodes gets about 65,000 arcs.
2. **Customization** (:meth:`Hierarchy.customize`): each arc gets the original edge weight in
   each direction (``inf`` if there is none), then, level by level, every lower triangle
   ``a - v - b`` (``a``, ``b`` upper neighbours of ``v``) improves ``a -> b`` with
   ``a -> v -> b``. Closing roads only changes these weights, so a closed network reuses step 1.
3. **Query** (:meth:`Customized.many_to_many`): for a block of sources at once, first each
   source's shortest *upward* distances (a Dijkstra on the upward arcs, a DAG, which touches
   only the few hundred nodes above the source), then one sweep down the levels relaxing
   downward arcs. Every shortest path in the chordal graph has an up-then-down form, so
   after the sweep every node holds its exact distance. The sweep visits only the nodes
   above the targets (RPHAST, Delling et al. 2011), each step one vectorised
   gather/add/min over the whole block of sources.

Weights are the encoded ``time_ms * 1e8 + dist_cm`` of :mod:`fleet.roads.prepared`: sums of
integer-valued floats below 2**53 are exact, so every entry equals what a plain Dijkstra on the
whole graph finds, bit for bit. Only the rows and columns asked for are computed; sources go
in blocks whose tables stay under :data:`BLOCK_BYTES`; very large matrices are split by blocks
over worker processes (the inner loops hold the GIL, threads do not help).
"""

from __future__ import annotations

import heapq
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
from scipy.sparse.csgraph import dijkstra

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

# A block of sources is sized so that its distance tables stay below this.
BLOCK_BYTES = 64 * 2**20
MAX_BLOCK = 512
# Below this much work (sources x hierarchy arcs) a matrix is computed in this process:
# starting worker processes and shipping their rows back costs ~0.2 s, which a 2,000 x 2,000
# matrix on Porto (1.3e8 units, ~0.6 s in one process) does not win back; 5,000 x 5,000 does.
PARALLEL_MIN_WORK = 300_000_000
WORKERS_ENV = "FLEET_ROAD_WORKERS"
# Up to this many distinct sources (or targets), a matrix on a network that has not built its
# hierarchy yet is answered by plain Dijkstra searches (Porto: ~2 ms each vs ~0.4 s to build).
FEW_SEARCHES = 64


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


# -- step 1: order, chordal arcs, levels, triangles (independent of weights) ----------------
@dataclass(frozen=True, slots=True)
class Hierarchy:
    n: int
    level: I64  # [n]
    arc_lo: I64  # [A] the lower end of each arc (eliminated first)
    arc_hi: I64  # [A]
    tri_low: I64  # [T] arc v-a of each lower triangle (v the bottom)
    tri_high: I64  # [T] arc v-b
    tri_top: I64  # [T] arc a-b (stored at the lower of a, b)
    tri_a_below_b: Bool  # [T] whether a is the lower end of arc a-b
    tri_level: I64  # [T] level of v, ascending
    arc_key: I64  # [A] sorted lo * n + hi
    arc_by_key: I64  # [A] arc index of each sorted key

    @classmethod
    def build(cls, n: int, src: I64, dst: I64) -> Hierarchy:
        upper = _eliminate(n, src, dst)
        counts = np.fromiter((len(u) for u in upper), dtype=np.int64, count=n)
        arc_lo = np.repeat(np.arange(n, dtype=np.int64), counts)
        arc_hi = np.fromiter((a for u in upper for a in u), dtype=np.int64, count=int(counts.sum()))
        level = _levels(n, upper)
        key = arc_lo * n + arc_hi
        by_key = np.argsort(key, kind="stable")
        h = cls(
            n=n,
            level=level,
            arc_lo=arc_lo,
            arc_hi=arc_hi,
            tri_low=np.zeros(0, dtype=np.int64),
            tri_high=np.zeros(0, dtype=np.int64),
            tri_top=np.zeros(0, dtype=np.int64),
            tri_a_below_b=np.zeros(0, dtype=np.bool_),
            tri_level=np.zeros(0, dtype=np.int64),
            arc_key=key[by_key],
            arc_by_key=by_key.astype(np.int64),
        )
        return h._with_triangles(counts)

    def arc_index(self, lo: I64, hi: I64) -> I64:
        pos = np.searchsorted(self.arc_key, lo * self.n + hi)
        return self.arc_by_key[pos]

    def _with_triangles(self, counts: I64) -> Hierarchy:
        # for every node v with upper neighbours u_0..u_{d-1}: all ordered pairs (a, b), a != b
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        pairs = counts * counts
        total = int(pairs.sum())
        owner = np.repeat(np.arange(self.n, dtype=np.int64), pairs)
        k = np.arange(total, dtype=np.int64) - np.repeat(np.r_[0, np.cumsum(pairs)[:-1]], pairs)
        d = counts[owner]
        i, j = k // np.maximum(d, 1), k % np.maximum(d, 1)
        keep = i != j
        owner, i, j = owner[keep], i[keep], j[keep]
        arc_va = starts[owner] + i  # arcs are laid out by owner, in upper-list order
        arc_vb = starts[owner] + j
        a, b = self.arc_hi[arc_va], self.arc_hi[arc_vb]
        a_below = _level_below(self, a, b)
        top = self.arc_index(np.where(a_below, a, b), np.where(a_below, b, a))
        order = np.argsort(self.level[owner], kind="stable")
        return Hierarchy(
            n=self.n,
            level=self.level,
            arc_lo=self.arc_lo,
            arc_hi=self.arc_hi,
            tri_low=arc_va[order],
            tri_high=arc_vb[order],
            tri_top=top[order],
            tri_a_below_b=a_below[order],
            tri_level=self.level[owner][order],
            arc_key=self.arc_key,
            arc_by_key=self.arc_by_key,
        )

    @property
    def num_arcs(self) -> int:
        return len(self.arc_lo)

    @property
    def num_levels(self) -> int:
        return int(self.level.max()) + 1 if self.n else 0

    def customize(self, src: I64, dst: I64, weight: F64) -> Customized:
        """Arc weights for one metric (edges absent from ``src``/``dst`` are closed)."""
        up = np.full(self.num_arcs, np.inf)  # lo -> hi
        down = np.full(self.num_arcs, np.inf)  # hi -> lo
        if len(src):
            goes_up = _level_below(self, src, dst)
            arcs = self.arc_index(np.where(goes_up, src, dst), np.where(goes_up, dst, src))
            np.minimum.at(up, arcs[goes_up], weight[goes_up])
            np.minimum.at(down, arcs[~goes_up], weight[~goes_up])
        bounds = np.searchsorted(self.tri_level, np.arange(self.num_levels + 1))
        for lev in range(self.num_levels):
            s, e = int(bounds[lev]), int(bounds[lev + 1])
            if s == e:
                continue
            # a -> v is the downward weight of arc v-a; v -> b the upward weight of arc v-b
            via = down[self.tri_low[s:e]] + up[self.tri_high[s:e]]
            top = self.tri_top[s:e]
            a_below = self.tri_a_below_b[s:e]
            np.minimum.at(up, top[a_below], via[a_below])
            np.minimum.at(down, top[~a_below], via[~a_below])
        return Customized(self, up, down)


def _level_below(h: Hierarchy, a: I64, b: I64) -> Bool:
    """Whether ``a`` lies below ``b``; they are joined by an arc, and an arc always climbs at
    least one level (a node's level exceeds every level below it)."""
    return np.asarray(h.level[a] < h.level[b])


def _eliminate(n: int, src: I64, dst: I64) -> list[list[int]]:
    """Minimum-degree elimination with fill-in: the upper neighbours of every node."""
    adj: list[set[int]] = [set() for _ in range(n)]
    for a, b in zip(src.tolist(), dst.tolist(), strict=True):
        if a != b:
            adj[a].add(b)
            adj[b].add(a)
    heap = [(len(adj[x]), x) for x in range(n)]
    heapq.heapify(heap)
    done = [False] * n
    upper: list[list[int]] = [[] for _ in range(n)]
    while heap:
        degree, x = heapq.heappop(heap)
        if done[x] or degree != len(adj[x]):
            continue
        done[x] = True
        neighbours = adj[x]
        upper[x] = sorted(neighbours)
        for a in neighbours:
            adj_a = adj[a]
            adj_a.discard(x)
            adj_a |= neighbours
            adj_a.discard(a)
            heapq.heappush(heap, (len(adj_a), a))
        adj[x] = set()
    return upper


def _levels(n: int, upper: list[list[int]]) -> I64:
    """Level of every node: 0 without lower neighbours, else one more than the highest one.
    Nodes are visited in elimination order, which the upper lists encode (a node's upper
    neighbours come after it), so one pass in topological order suffices."""
    indegree = [0] * n
    for ups in upper:
        for a in ups:
            indegree[a] += 1
    level = [0] * n
    ready = [x for x in range(n) if indegree[x] == 0]
    while ready:
        x = ready.pop()
        lx = level[x] + 1
        for a in upper[x]:
            if level[a] < lx:
                level[a] = lx
            indegree[a] -= 1
            if indegree[a] == 0:
                ready.append(a)
    return np.asarray(level, dtype=np.int64)


# -- steps 2 and 3: weights and queries -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Sweep:
    """Arcs sorted for one direction of the query: pull ``into`` from ``frm`` at ``weight``."""

    frm: I64
    into: I64
    weight: F64
    bounds: I64  # sweep step k covers arcs bounds[k]:bounds[k + 1]


@dataclass(frozen=True, slots=True)
class _Query:
    """One direction of queries: the upward graph (a DAG: searched with Dijkstra, which
    touches only each source's small upward space) and the sorted downward sweep."""

    upward: csr_matrix  # lo -> hi, finite weights only
    climb: _Sweep  # upward arcs by level (topology, for the nodes above the targets)
    descend: _Sweep


def _upward_graph(n: int, lo: I64, hi: I64, weight: F64) -> csr_matrix:
    ok = np.isfinite(weight)
    return csr_matrix((weight[ok], (lo[ok], hi[ok])), shape=(n, n))


class Customized:
    """A hierarchy with weights: answers many-to-many queries."""

    def __init__(self, hierarchy: Hierarchy, up: F64, down: F64) -> None:
        self.hierarchy = hierarchy
        self.up = up
        self.down = down
        h = hierarchy
        levels = h.num_levels
        lo, hi = h.arc_lo, h.arc_hi
        # forward queries: upward sweep pulls hi from lo (lo -> hi), by level of hi ascending;
        # downward sweep pulls lo from hi (hi -> lo), by level of lo descending.
        o_up = np.lexsort((hi, h.level[hi]))
        o_down = np.lexsort((lo, -h.level[lo]))
        up_bounds = np.searchsorted(h.level[hi][o_up], np.arange(levels + 1))
        down_bounds = np.searchsorted(-h.level[lo][o_down], np.arange(-levels + 1, 2))
        climb = _Sweep(lo[o_up], hi[o_up], up[o_up], up_bounds)
        self._fwd = _Query(
            _upward_graph(h.n, lo, hi, up),
            climb,
            _Sweep(hi[o_down], lo[o_down], down[o_down], down_bounds),
        )
        # backward queries (distances *to* the sources) use the other weight of each arc
        self._bwd = _Query(
            _upward_graph(h.n, lo, hi, down),
            climb,
            _Sweep(hi[o_down], lo[o_down], up[o_down], down_bounds),
        )

    def many_to_many(
        self,
        sources: I64,
        targets: I64,
        *,
        workers: int | None = None,
        on_block: Callable[[int, int], None] | None = None,
    ) -> F64:
        """Encoded shortest-path weights ``[len(sources), len(targets)]``; ``inf`` = no path.

        ``on_block(done_rows, total_rows)`` is called as blocks of sources finish.
        """
        sources = np.asarray(sources, dtype=np.int64).ravel()
        targets = np.asarray(targets, dtype=np.int64).ravel()
        if len(sources) == 0 or len(targets) == 0:
            return np.full((len(sources), len(targets)), np.inf)
        u_src, src_inv = np.unique(sources, return_inverse=True)
        u_tgt, tgt_inv = np.unique(targets, return_inverse=True)
        if len(u_tgt) < len(u_src):  # sweep from the smaller side, on the reversed graph
            rows = _run(self._bwd, self.hierarchy, u_tgt, u_src, workers, on_block).T
        else:
            rows = _run(self._fwd, self.hierarchy, u_src, u_tgt, workers, on_block)
        return np.asarray(rows[np.ix_(src_inv.ravel(), tgt_inv.ravel())])


def _closure(sweep: _Sweep, n: int, start: I64) -> Bool:
    """``start`` and every node above it (reachable over upward arcs)."""
    mark = np.zeros(n, dtype=np.bool_)
    mark[start] = True
    for k in range(len(sweep.bounds) - 1):
        s, e = int(sweep.bounds[k]), int(sweep.bounds[k + 1])
        if s == e:
            continue
        hit = mark[sweep.frm[s:e]]
        mark[sweep.into[s:e][hit]] = True
    return mark


# One step of the downward sweep: arcs whose ends ``into`` are all different, so that
# ``table[into] = min(table[into], table[frm] + weight)`` is one vectorised update.
_Step = tuple[I64, I64, F64]


def _descent_plan(sweep: _Sweep, active: Bool) -> list[_Step]:
    """The downward sweep restricted to arcs ending at ``active`` nodes, as steps: level by
    level (highest first), and within a level the first arc into each node, then the second,
    and so on (a gather/add/min per step is faster than a grouped ``reduceat``)."""
    steps: list[_Step] = []
    for k in range(len(sweep.bounds) - 1):
        s, e = int(sweep.bounds[k]), int(sweep.bounds[k + 1])
        if s == e:
            continue
        keep = active[sweep.into[s:e]]
        if not keep.any():
            continue
        frm = sweep.frm[s:e][keep]
        into = sweep.into[s:e][keep]
        weight = sweep.weight[s:e][keep]
        firsts = np.r_[0, np.nonzero(into[1:] != into[:-1])[0] + 1]
        sizes = np.diff(np.r_[firsts, len(into)])
        nth = np.arange(len(into)) - np.repeat(firsts, sizes)
        for j in range(int(sizes.max())):
            pick = nth == j
            steps.append((frm[pick], into[pick], weight[pick]))
    return steps


def _block(
    upward: csr_matrix, plan: list[_Step], n: int, sources: I64, targets: I64, targets_above: Bool
) -> F64:
    # up: every source's shortest upward distances (Dijkstra on the upward DAG)
    d_up = np.atleast_2d(dijkstra(upward, directed=True, indices=sources))
    reached = np.isfinite(d_up).any(axis=0)
    nodes = np.nonzero(reached | targets_above)[0]
    row = np.full(n, -1, dtype=np.int64)
    row[nodes] = np.arange(len(nodes))
    table = np.full((len(nodes), len(sources)), np.inf)
    up_nodes = np.nonzero(reached)[0]
    table[row[up_nodes]] = d_up[:, up_nodes].T
    del d_up
    # down: only nodes above a target matter (and what lies above them is above it too)
    for frm, into, weight in plan:
        dest = row[into]
        table[dest] = np.minimum(table[dest], table[row[frm]] + weight[:, None])
    return np.ascontiguousarray(table[row[targets]].T)


# -- running blocks of sources, in this process or in workers ------------------------------
_WORKER: tuple[csr_matrix, list[_Step], int, I64, Bool] | None = None


def _init_worker(upward: csr_matrix, plan: list[_Step], n: int, targets: I64, above: Bool) -> None:
    global _WORKER
    _WORKER = (upward, plan, n, targets, above)


def _worker_block(sources: I64) -> F64:
    assert _WORKER is not None
    upward, plan, n, targets, above = _WORKER
    return _block(upward, plan, n, sources, targets, above)


def _run(
    query: _Query,
    h: Hierarchy,
    sources: I64,
    targets: I64,
    workers: int | None,
    on_block: Callable[[int, int], None] | None,
) -> F64:
    n = h.n
    above = _closure(query.climb, n, targets)
    plan = _descent_plan(query.descend, above)
    total = len(sources)
    # per source: its upward row over all nodes, its column of the downward table (at most
    # as tall), and its column of the widest step's temporaries
    widest = 2 * n + max((len(step[0]) for step in plan), default=0)
    per_block = int(max(1, min(MAX_BLOCK, BLOCK_BYTES // (8 * widest))))
    workers = default_workers() if workers is None else max(1, workers)
    parallel = workers > 1 and total > 1 and total * h.num_arcs >= PARALLEL_MIN_WORK
    if parallel:  # enough blocks to keep every worker busy until the end
        per_block = min(per_block, max(1, math.ceil(total / (workers * 3))))
    blocks = [sources[i : i + per_block] for i in range(0, total, per_block)]
    out = np.empty((total, len(targets)))
    done = 0
    if not parallel:
        for i, block in enumerate(blocks):
            out[i * per_block : i * per_block + len(block)] = _block(
                query.upward, plan, n, block, targets, above
            )
            done += len(block)
            if on_block is not None:
                on_block(done, total)
        return out
    with ProcessPoolExecutor(
        max_workers=min(workers, len(blocks)),
        mp_context=_start_context(),
        initializer=_init_worker,
        initargs=(query.upward, plan, n, targets, above),
    ) as pool:
        for i, part in enumerate(pool.map(_worker_block, blocks)):
            out[i * per_block : i * per_block + len(part)] = part
            done += len(part)
            if on_block is not None:
                on_block(done, total)
    return out


def _start_context() -> multiprocessing.context.BaseContext:
    """``fork`` while this process has one thread (cheap, nothing to re-import), else a fresh
    interpreter: forking a threaded process can deadlock and Python 3.12+ warns about it."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


# -- the engine a road network holds --------------------------------------------------------
class MatrixEngine:
    """Exact many-to-many shortest paths on one directed graph with encoded weights.

    A network with the same nodes and a subset of the edges (road closures) passes its
    ``parent`` engine: the hierarchy is built once, on the parent, and only the
    customization is redone.
    """

    def __init__(
        self, n: int, src: I64, dst: I64, weight: F64, parent: MatrixEngine | None = None
    ) -> None:
        self.n = n
        self.full = dedupe_min(n, src, dst, weight)
        self._src, self._dst, self._weight = src, dst, weight
        self._parent = parent
        self._hierarchy: Hierarchy | None = None
        self._customized: Customized | None = None

    @property
    def hierarchy(self) -> Hierarchy:
        if self._hierarchy is None:
            if self._parent is not None:
                self._hierarchy = self._parent.hierarchy
            else:
                self._hierarchy = Hierarchy.build(self.n, self._src, self._dst)
                log.debug(
                    "hierarchy: %d nodes, %d arcs, %d triangles, %d levels",
                    self.n,
                    self._hierarchy.num_arcs,
                    len(self._hierarchy.tri_low),
                    self._hierarchy.num_levels,
                )
        return self._hierarchy

    @property
    def has_hierarchy(self) -> bool:
        """Whether the hierarchy exists already (here or on the parent)."""
        if self._hierarchy is not None:
            return True
        return self._parent is not None and self._parent.has_hierarchy

    @property
    def customized(self) -> Customized:
        if self._customized is None:
            self._customized = self.hierarchy.customize(self._src, self._dst, self._weight)
        return self._customized

    def many_to_many(
        self,
        sources: I64,
        targets: I64,
        *,
        workers: int | None = None,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> F64:
        """Encoded shortest-path weights ``[len(sources), len(targets)]``; ``inf`` = no path.

        A few rows (or columns), before any hierarchy exists, are cheaper as plain Dijkstra
        searches than building one: the depots of a site, a van's next stops.
        """
        sources = np.asarray(sources, dtype=np.int64).ravel()
        targets = np.asarray(targets, dtype=np.int64).ravel()
        few = min(len(np.unique(sources)), len(np.unique(targets))) <= FEW_SEARCHES
        if few and self._customized is None and not self.has_hierarchy:
            return self._plain(sources, targets, on_chunk)
        return self.customized.many_to_many(sources, targets, workers=workers, on_block=on_chunk)

    def _plain(
        self, sources: I64, targets: I64, on_chunk: Callable[[int, int], None] | None
    ) -> F64:
        if len(sources) == 0 or len(targets) == 0:
            return np.full((len(sources), len(targets)), np.inf)
        u_src, src_inv = np.unique(sources, return_inverse=True)
        u_tgt, tgt_inv = np.unique(targets, return_inverse=True)
        if len(u_tgt) < len(u_src):  # search backwards from the targets
            back = self.full.T.tocsr()
            rows = np.atleast_2d(dijkstra(back, directed=True, indices=u_tgt))[:, u_src].T
        else:
            rows = np.atleast_2d(dijkstra(self.full, directed=True, indices=u_src))[:, u_tgt]
        if on_chunk is not None:
            on_chunk(len(sources), len(sources))
        return np.asarray(rows[np.ix_(src_inv.ravel(), tgt_inv.ravel())])
