"""From drivable OSM ways to the prepared graph: area cut, largest SCC, chain merging."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fleet.errors import RoadError
from fleet.roads.area import Area
from fleet.roads.geo import haversine_m
from fleet.roads.osm import WaySet
from fleet.roads.prepared import PreparedGraph

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]


def prepare_graph(ways: WaySet, area: Area, top_speed_kmh: float) -> PreparedGraph:
    """The drivable graph inside ``area``, strongly connected, with degree-2 chains merged.

    1. Split ways into segments between consecutive nodes; keep a segment only if both its
       nodes lie inside the operating area.
    2. Keep the largest strongly connected component (every kept node can reach every other).
    3. Merge chains of nodes that only continue one road (two neighbours, same directions
       through) into links carrying the geometry; intersections and dead ends stay nodes.
    """
    seg = _segments(ways, area, top_speed_kmh)
    seg = _largest_scc(seg)
    seg = _dedupe(seg)
    return _merge_chains(seg, ways)


class _Segments:
    """Undirected segments with p < q (node indexes into ``ids``), allowed directions, times."""

    def __init__(
        self,
        ids: I64,
        lon: npt.NDArray[np.float64],
        lat: npt.NDArray[np.float64],
        p: I64,
        q: I64,
        allow_pq: npt.NDArray[np.bool_],
        allow_qp: npt.NDArray[np.bool_],
        t_pq: npt.NDArray[np.float64],
        t_qp: npt.NDArray[np.float64],
        length_m: npt.NDArray[np.float64],
        way: I64,
    ) -> None:
        self.ids, self.lon, self.lat = ids, lon, lat
        self.p, self.q = p, q
        self.allow_pq, self.allow_qp = allow_pq, allow_qp
        self.t_pq, self.t_qp = t_pq, t_qp
        self.length_m, self.way = length_m, way

    def subset(self, keep: npt.NDArray[np.bool_]) -> _Segments:
        """Only the segments in ``keep``; nodes no segment uses any more are dropped."""
        p, q = self.p[keep], self.q[keep]
        used = np.zeros(len(self.ids), dtype=np.bool_)
        used[p] = True
        used[q] = True
        remap = np.cumsum(used) - 1
        return _Segments(
            self.ids[used],
            self.lon[used],
            self.lat[used],
            remap[p],
            remap[q],
            self.allow_pq[keep],
            self.allow_qp[keep],
            self.t_pq[keep],
            self.t_qp[keep],
            self.length_m[keep],
            self.way[keep],
        )


def _segments(ways: WaySet, area: Area, top_speed_kmh: float) -> _Segments:
    counts = np.diff(ways.offsets)
    way_of_ref = np.repeat(np.arange(ways.num_ways, dtype=np.int64), counts)
    a = np.nonzero(way_of_ref[:-1] == way_of_ref[1:])[0]
    b = a + 1
    shapely.prepare(area)
    inside = shapely.contains_xy(area, ways.lon, ways.lat)
    ok = inside[a] & inside[b] & (ways.node_ids[a] != ways.node_ids[b])
    a, b = a[ok], b[ok]
    if len(a) == 0:
        raise RoadError("no drivable road lies inside the operating area")
    way = way_of_ref[a]
    length_m = haversine_m(ways.lon[a], ways.lat[a], ways.lon[b], ways.lat[b])
    fwd_mps = np.minimum(ways.forward_kmh[way], top_speed_kmh) / 3.6
    bwd_mps = np.minimum(ways.backward_kmh[way], top_speed_kmh) / 3.6
    ids, inverse = np.unique(
        np.concatenate((ways.node_ids[a], ways.node_ids[b])), return_inverse=True
    )
    na, nb = inverse[: len(a)], inverse[len(a) :]
    lon = np.empty(len(ids))
    lat = np.empty(len(ids))
    lon[na], lat[na] = ways.lon[a], ways.lat[a]
    lon[nb], lat[nb] = ways.lon[b], ways.lat[b]
    swap = na > nb
    fwd, bwd = ways.forward[way], ways.backward[way]
    t_f, t_b = length_m / fwd_mps, length_m / bwd_mps
    return _Segments(
        ids.astype(np.int64),
        lon,
        lat,
        np.where(swap, nb, na).astype(np.int64),
        np.where(swap, na, nb).astype(np.int64),
        np.where(swap, bwd, fwd),
        np.where(swap, fwd, bwd),
        np.where(swap, t_b, t_f),
        np.where(swap, t_f, t_b),
        length_m,
        way,
    )


def _largest_scc(seg: _Segments) -> _Segments:
    n = len(seg.ids)
    src = np.concatenate((seg.p[seg.allow_pq], seg.q[seg.allow_qp]))
    dst = np.concatenate((seg.q[seg.allow_pq], seg.p[seg.allow_qp]))
    adj = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n)).tocsr()
    _, labels = connected_components(adj, directed=True, connection="strong")
    biggest = int(np.argmax(np.bincount(labels)))
    keep = (labels[seg.p] == biggest) & (labels[seg.q] == biggest)
    log.info("largest strongly connected part: %d of %d nodes", int(np.sum(labels == biggest)), n)
    return seg.subset(keep)


def _dedupe(seg: _Segments) -> _Segments:
    """One segment per node pair: the fastest time in each direction any of them allows."""
    key = seg.p * len(seg.ids) + seg.q
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    starts = np.nonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])[0]
    if len(starts) == len(key):
        return seg
    first = order[starts]
    inf = np.inf
    t_pq = np.minimum.reduceat(np.where(seg.allow_pq, seg.t_pq, inf)[order], starts)
    t_qp = np.minimum.reduceat(np.where(seg.allow_qp, seg.t_qp, inf)[order], starts)
    return _Segments(
        seg.ids,
        seg.lon,
        seg.lat,
        seg.p[first],
        seg.q[first],
        np.isfinite(t_pq),
        np.isfinite(t_qp),
        np.where(np.isfinite(t_pq), t_pq, 1.0),
        np.where(np.isfinite(t_qp), t_qp, 1.0),
        seg.length_m[first],
        seg.way[first],
    )


def _merge_chains(seg: _Segments, ways: WaySet) -> PreparedGraph:
    n, s_count = len(seg.ids), len(seg.p)
    # incidence lists: for node x, entries inc_seg[start[x]:start[x+1]]
    inc_node = np.concatenate((seg.p, seg.q))
    inc_seg = np.concatenate((np.arange(s_count), np.arange(s_count)))
    order = np.argsort(inc_node, kind="stable")
    inc_seg = inc_seg[order]
    degree = np.bincount(inc_node, minlength=n)
    start = np.r_[0, np.cumsum(degree)]
    interior = _interior_nodes(seg, degree, start, inc_seg)

    p_list: list[int] = seg.p.tolist()
    q_list: list[int] = seg.q.tolist()
    inc_list: list[int] = inc_seg.tolist()
    start_list: list[int] = start.tolist()
    is_interior: list[bool] = interior.tolist()
    visited = [False] * s_count
    chains: list[tuple[list[int], list[int]]] = []  # (nodes, segments) along the walk

    def walk(u: int, s: int) -> None:
        nodes, segs = [u], [s]
        cur = u
        while True:
            visited[s] = True
            nxt = q_list[s] if p_list[s] == cur else p_list[s]
            nodes.append(nxt)
            if not is_interior[nxt]:
                break
            k = start_list[nxt]
            s = inc_list[k + 1] if inc_list[k] == s else inc_list[k]
            segs.append(s)
            cur = nxt
        chains.append((nodes, segs))

    for u in range(n):
        if is_interior[u]:
            continue
        for k in range(start_list[u], start_list[u + 1]):
            s = inc_list[k]
            if not visited[s]:
                walk(u, s)
    for s in range(s_count):  # loops made only of interior nodes: cut them at one node
        if not visited[s]:
            is_interior[p_list[s]] = False
            walk(p_list[s], s)

    chains = _split_parallel(chains)
    return _assemble(seg, ways, chains)


def _interior_nodes(seg: _Segments, degree: I64, start: I64, inc_seg: I64) -> npt.NDArray[np.bool_]:
    """Nodes with two neighbours that a road only passes through (same directions in and out)."""
    two = np.nonzero(degree == 2)[0]
    s1, s2 = inc_seg[start[two]], inc_seg[start[two] + 1]

    def arrive_leave(s: I64) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        at_p = seg.p[s] == two
        arrive = np.where(at_p, seg.allow_qp[s], seg.allow_pq[s])
        leave = np.where(at_p, seg.allow_pq[s], seg.allow_qp[s])
        return arrive, leave

    arrive1, leave1 = arrive_leave(s1)
    arrive2, leave2 = arrive_leave(s2)
    interior = np.zeros(len(degree), dtype=np.bool_)
    interior[two] = (arrive1 == leave2) & (arrive2 == leave1)
    return interior


def _split_parallel(
    chains: list[tuple[list[int], list[int]]],
) -> list[tuple[list[int], list[int]]]:
    """Cut loops and links that join the same two nodes at a middle point, so that every
    directed node pair has at most one edge (the graph is a ``networkx.DiGraph``)."""
    while True:
        by_pair: dict[tuple[int, int], list[int]] = {}
        for i, (nodes, _) in enumerate(chains):
            u, v = nodes[0], nodes[-1]
            by_pair.setdefault((min(u, v), max(u, v)), []).append(i)
        cut: set[int] = set()
        for (u, v), members in by_pair.items():
            if u == v:
                cut.update(members)
            elif len(members) > 1:
                # keep the one with fewest points as it is; every other one is cut
                members.sort(key=lambda i: len(chains[i][0]))
                cut.update(members[1:])
        if not cut:
            return chains
        out: list[tuple[list[int], list[int]]] = []
        for i, (nodes, segs) in enumerate(chains):
            if i not in cut or len(nodes) < 3:
                out.append((nodes, segs))
                continue
            m = len(nodes) // 2
            out.append((nodes[: m + 1], segs[:m]))
            out.append((nodes[m:], segs[m:]))
        if len(out) == len(chains):  # nothing left to cut (cannot happen after dedupe)
            return chains
        chains = out


def _assemble(
    seg: _Segments, ways: WaySet, chains: list[tuple[list[int], list[int]]]
) -> PreparedGraph:
    n_links = len(chains)
    link_nodes = [nodes for nodes, _ in chains]
    lens = np.fromiter((len(n) for n in link_nodes), dtype=np.int64, count=n_links)
    flat_nodes = np.fromiter(
        (x for nodes in link_nodes for x in nodes), dtype=np.int64, count=int(lens.sum())
    )
    seg_counts = lens - 1
    flat_segs = np.fromiter(
        (s for _, segs in chains for s in segs), dtype=np.int64, count=int(seg_counts.sum())
    )
    node_starts = np.r_[0, np.cumsum(lens)[:-1]]
    seg_starts = np.r_[0, np.cumsum(seg_counts)[:-1]]
    link_of_seg = np.repeat(np.arange(n_links), seg_counts)
    # the walk's direction over each segment: from the node before it to the node after it
    pos = np.arange(len(flat_segs)) - seg_starts[link_of_seg] + node_starts[link_of_seg]
    walked_pq = seg.p[flat_segs] == flat_nodes[pos]
    t_along = np.where(walked_pq, seg.t_pq[flat_segs], seg.t_qp[flat_segs])
    t_against = np.where(walked_pq, seg.t_qp[flat_segs], seg.t_pq[flat_segs])
    first = flat_segs[seg_starts]
    allow_along = np.where(walked_pq[seg_starts], seg.allow_pq[first], seg.allow_qp[first])
    allow_against = np.where(walked_pq[seg_starts], seg.allow_qp[first], seg.allow_pq[first])
    seg_len = seg.length_m[flat_segs]
    link_len_m = np.add.reduceat(seg_len, seg_starts)
    time_along_s = np.add.reduceat(t_along, seg_starts)
    time_against_s = np.add.reduceat(t_against, seg_starts)

    seg_way = seg.way[flat_segs]
    link_class = _majority(link_of_seg, ways.highway[seg_way].astype(np.int64), seg_len, n_links)
    link_name = _majority(link_of_seg, ways.name[seg_way].astype(np.int64), seg_len, n_links)

    # nodes of the graph: the ends of links, renumbered in OSM id order
    ends = np.zeros(len(seg.ids), dtype=np.bool_)
    ends[flat_nodes[node_starts]] = True
    ends[flat_nodes[node_starts + lens - 1]] = True
    remap = np.cumsum(ends) - 1
    link_u = remap[flat_nodes[node_starts]].astype(np.int32)
    link_v = remap[flat_nodes[node_starts + lens - 1]].astype(np.int32)

    edge_link = np.concatenate((np.nonzero(allow_along)[0], np.nonzero(allow_against)[0]))
    edge_reversed = np.r_[
        np.zeros(int(allow_along.sum()), dtype=np.bool_),
        np.ones(int(allow_against.sum()), dtype=np.bool_),
    ]
    edge_time_s = np.r_[time_along_s[allow_along], time_against_s[allow_against]]
    # Lengths are stored in whole cm and times in whole ms, rounded up at the edge's average
    # speed over its true length, so that length / time never exceeds a speed limit.
    link_len_cm = np.maximum(1, np.round(link_len_m * 100.0)).astype(np.int64)
    edge_len_m = np.r_[link_len_m[allow_along], link_len_m[allow_against]]
    edge_len_cm = np.r_[link_len_cm[allow_along], link_len_cm[allow_against]]
    stretch = np.where(edge_len_m > 0, edge_len_cm / np.maximum(edge_len_m * 100.0, 1e-9), 1.0)
    edge_time_ms = np.ceil(edge_time_s * 1000.0 * np.maximum(stretch, 1.0))
    order = np.lexsort((edge_reversed, edge_link))
    graph = PreparedGraph(
        node_id=seg.ids[ends],
        node_lon=seg.lon[ends],
        node_lat=seg.lat[ends],
        link_u=link_u,
        link_v=link_v,
        link_len_cm=link_len_cm,
        link_class=link_class.astype(np.int16),
        link_name=link_name.astype(np.int32),
        geom_offsets=np.r_[0, np.cumsum(lens)].astype(np.int64),
        geom_lon=seg.lon[flat_nodes],
        geom_lat=seg.lat[flat_nodes],
        edge_link=edge_link[order].astype(np.int32),
        edge_reversed=edge_reversed[order],
        edge_time_ms=np.maximum(1, edge_time_ms[order]).astype(np.int64),
        classes=ways.classes,
        names=ways.names,
    )
    graph.check()
    log.info("prepared graph: %d nodes, %d edges", graph.num_nodes, graph.num_edges)
    return graph


def _majority(group: I64, value: I64, weight: npt.NDArray[np.float64], n_groups: int) -> I64:
    """Per group, the value carrying the largest total weight (ties: the smaller value)."""
    span = int(value.max()) + 1 if len(value) else 1
    key = group * span + value
    uniq, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse, weights=weight)
    g, v = uniq // span, uniq % span
    order = np.lexsort((v, -total, g))
    g_sorted = g[order]
    firsts = order[np.r_[True, g_sorted[1:] != g_sorted[:-1]]]
    out = np.zeros(n_groups, dtype=np.int64)
    out[g[firsts]] = v[firsts]
    return out
