"""The road network of a site: the graph, snapping, matrices and paths (contract section 1)."""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import shapely
from scipy.sparse.csgraph import dijkstra
from shapely.geometry import LineString, Polygon

from fleet.errors import ConfigError, RoadError, SnapError, UnreachableError
from fleet.model import NodeId, Site, VanSpec
from fleet.roads.area import Area, area_km2, load_operating_area
from fleet.roads.cache import cache_key, cache_path, file_sha256, read_cached, write_cached
from fleet.roads.engine import MatrixEngine
from fleet.roads.geo import LocalProjection, haversine_m
from fleet.roads.highways import DRIVABLE_CLASSES
from fleet.roads.osm import read_drivable_ways
from fleet.roads.prepare import prepare_graph
from fleet.roads.prepared import TIME_SCALE, PreparedGraph

if TYPE_CHECKING:
    import networkx as nx

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_PATH_CACHE_SOURCES = 32  # shortest-path trees kept for repeated path() calls from one node


@dataclass(frozen=True, slots=True)
class Snap:
    """A point matched to the road graph.

    ``lon``/``lat`` is the nearest point on a drivable road, ``dist_m`` the straight distance
    from the given point to it; ``node`` is the nearer end of that road link (the routing
    node), ``along_m`` the distance along the road from the road point to ``node``.
    """

    node: NodeId
    dist_m: float
    lon: float
    lat: float
    along_m: float = 0.0


@dataclass(frozen=True, slots=True)
class SnapBatch:
    """Many points snapped at once; a refused point has ``ok`` False and a ``reason``."""

    node: I64  # -1 where refused
    dist_m: F64  # distance to the nearest road (also filled for points too far away)
    ok: npt.NDArray[np.bool_]
    reason: list[str | None]
    lon: F64  # nearest road point (nan where there is none)
    lat: F64
    along_m: F64

    def __len__(self) -> int:
        return len(self.node)


@dataclass(frozen=True, slots=True)
class Matrix:
    """Shortest (fastest) paths between nodes: ``[len(sources), len(targets)]`` arrays.

    A path minimises travel time; ``dist_m`` is the length of that same path (ties in time go
    to the shorter one). Unreachable pairs are ``inf`` in both arrays.
    """

    sources: tuple[NodeId, ...]
    targets: tuple[NodeId, ...]
    dist_m: F64
    time_s: F64

    def unreachable(self) -> list[tuple[int, int]]:
        """``(row, column)`` of every pair with no path."""
        return [(int(i), int(j)) for i, j in np.argwhere(~np.isfinite(self.time_s))]


@dataclass(frozen=True, slots=True)
class RoadPath:
    """The fastest path between two nodes and its road geometry (lon, lat)."""

    nodes: list[NodeId]
    dist_m: float
    time_s: float
    coords: list[tuple[float, float]] = field(repr=False)

    @property
    def linestring(self) -> LineString:
        pts = self.coords if len(self.coords) >= 2 else self.coords * 2
        return LineString(pts)

    def geojson(self) -> dict[str, Any]:
        pts = self.coords if len(self.coords) >= 2 else self.coords * 2
        return {"type": "LineString", "coordinates": [[lon, lat] for lon, lat in pts]}


def decode(weight: npt.ArrayLike, *, in_place: bool = False) -> tuple[F64, F64]:
    """Encoded path weights -> ``(dist_m, time_s)``; ``inf`` stays ``inf`` in both.

    With ``in_place`` the given float64 array is overwritten (it becomes ``dist_m``), which
    keeps a 2,000 x 2,000 matrix to three arrays of its size at the peak.
    """
    w = np.asarray(weight, dtype=np.float64) if in_place else np.array(weight, dtype=np.float64)
    w = np.atleast_1d(w) if w.ndim == 0 else w
    missing = ~np.isfinite(w)
    w[missing] = 0.0
    time_s = np.divide(w, TIME_SCALE)
    np.floor(time_s, out=time_s)  # whole milliseconds (exact: every value is below 2**53)
    w -= time_s * TIME_SCALE  # whole centimetres
    w /= 100.0
    time_s /= 1000.0
    w[missing] = np.inf
    time_s[missing] = np.inf
    shape = np.shape(weight)
    return w.reshape(shape), time_s.reshape(shape)


class RoadNetwork:
    """The drivable roads of a site inside its operating area; immutable.

    Build one with :func:`load_network`. Node ids are OpenStreetMap node ids (``NodeId``).
    """

    def __init__(
        self,
        site: Site,
        van: VanSpec,
        prepared: PreparedGraph,
        area: Area,
        *,
        base: RoadNetwork | None = None,
    ) -> None:
        self.site = site
        self.van = van
        self.prepared = prepared
        self.operating_area: Area = area
        self.area_km2: float = area_km2(area)
        self._edge_u = prepared.edge_u.astype(np.int64)
        self._edge_v = prepared.edge_v.astype(np.int64)
        self._weight = prepared.edge_weight()
        self._trees: OrderedDict[int, tuple[npt.NDArray[np.int32], F64]] = OrderedDict()
        centre = area.centroid
        self._proj = LocalProjection(float(centre.x), float(centre.y))
        self._base = base  # the network this one closes roads of (shares its hierarchy)

    # -- size and lookups -------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return self.prepared.num_nodes

    @property
    def num_edges(self) -> int:
        return self.prepared.num_edges

    def __repr__(self) -> str:
        return (
            f"RoadNetwork(site={self.site.name!r}, nodes={self.num_nodes}, "
            f"edges={self.num_edges}, area_km2={self.area_km2:.1f})"
        )

    def index_of(self, nodes: Sequence[NodeId] | npt.ArrayLike) -> I64:
        """Internal indexes of OSM node ids; an id not in the graph is a :class:`RoadError`."""
        ids = np.asarray(nodes, dtype=np.int64).ravel()
        pos = np.searchsorted(self.prepared.node_id, ids)
        pos = np.minimum(pos, self.num_nodes - 1)
        bad = self.prepared.node_id[pos] != ids
        if np.any(bad):
            missing = ids[bad][:5].tolist()
            raise RoadError(
                f"node(s) {missing} are not in the road graph of site {self.site.name!r} "
                "(snap points with RoadNetwork.snap first)"
            )
        return pos.astype(np.int64)

    def node_at(self, index: int) -> NodeId:
        return NodeId(int(self.prepared.node_id[index]))

    def lonlat(self, node: NodeId) -> tuple[float, float]:
        i = int(self.index_of([node])[0])
        return float(self.prepared.node_lon[i]), float(self.prepared.node_lat[i])

    # -- the networkx view ------------------------------------------------------------------
    @cached_property
    def graph(self) -> nx.DiGraph:
        """``networkx.DiGraph``: nodes carry ``lon``/``lat``; edges ``length_m``,
        ``speed_kmh`` (capped at the van's top speed), ``time_s``, ``highway``, ``name``,
        ``geometry`` (list of (lon, lat) from the edge's start to its end)."""
        import networkx as nx  # only for callers that want the networkx view

        p = self.prepared
        g = nx.DiGraph(site=self.site.name)
        ids = p.node_id.tolist()
        g.add_nodes_from(
            (nid, {"lon": lon, "lat": lat})
            for nid, lon, lat in zip(ids, p.node_lon.tolist(), p.node_lat.tolist(), strict=True)
        )
        length_m = p.edge_len_cm / 100.0
        time_s = p.edge_time_ms / 1000.0
        speed = np.minimum(length_m / time_s * 3.6, self.van.top_speed_kmh)
        links = p.edge_link.tolist()
        rev = p.edge_reversed.tolist()
        for e, (u, v) in enumerate(zip(self._edge_u.tolist(), self._edge_v.tolist(), strict=True)):
            link = links[e]
            g.add_edge(
                ids[u],
                ids[v],
                length_m=float(length_m[e]),
                speed_kmh=float(speed[e]),
                time_s=float(time_s[e]),
                highway=p.classes[int(p.link_class[link])],
                name=p.names[int(p.link_name[link])],
                geometry=self._link_coords(link, rev[e]),
            )
        return g

    def _link_coords(self, link: int, reversed_: bool) -> list[tuple[float, float]]:
        p = self.prepared
        a, b = int(p.geom_offsets[link]), int(p.geom_offsets[link + 1])
        pts = list(zip(p.geom_lon[a:b].tolist(), p.geom_lat[a:b].tolist(), strict=True))
        return pts[::-1] if reversed_ else pts

    def edges_of_class(self, classes: Collection[str]) -> list[tuple[NodeId, NodeId]]:
        """Directed edges whose OSM highway class is one of ``classes``."""
        wanted = set(classes)
        unknown = wanted - DRIVABLE_CLASSES
        if unknown:
            raise RoadError(
                f"unknown highway class(es) {sorted(unknown)}; "
                f"drivable classes are {sorted(DRIVABLE_CLASSES)}"
            )
        p = self.prepared
        codes = [i for i, c in enumerate(p.classes) if c in wanted]
        hit = np.isin(p.link_class[p.edge_link], codes)
        ids = p.node_id
        return [
            (NodeId(int(u)), NodeId(int(v)))
            for u, v in zip(ids[self._edge_u[hit]], ids[self._edge_v[hit]], strict=True)
        ]

    # -- snapping ---------------------------------------------------------------------------
    @cached_property
    def _snap_index(self) -> tuple[shapely.STRtree, npt.NDArray[np.int64], F64]:
        """STRtree over the projected geometry of every link that can still be driven."""
        p = self.prepared
        links = np.unique(p.edge_link).astype(np.int64)
        counts = np.diff(p.geom_offsets)[links]
        starts = p.geom_offsets[links]
        take = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(
            int(counts.sum())
        )
        x, y = self._proj.to_xy(p.geom_lon[take], p.geom_lat[take])
        lines = shapely.linestrings(
            np.column_stack((x, y)), indices=np.repeat(np.arange(len(links)), counts)
        )
        return shapely.STRtree(lines), links, np.asarray(shapely.length(lines))

    def snap(self, lon: float, lat: float) -> Snap:
        """The nearest drivable road to a point; :class:`SnapError` names a refused point."""
        batch = self.snap_many(np.asarray([lon], dtype=float), np.asarray([lat], dtype=float))
        if not batch.ok[0]:
            raise SnapError(f"point ({lon:.6f}, {lat:.6f}): {batch.reason[0]}")
        return Snap(
            node=NodeId(int(batch.node[0])),
            dist_m=float(batch.dist_m[0]),
            lon=float(batch.lon[0]),
            lat=float(batch.lat[0]),
            along_m=float(batch.along_m[0]),
        )

    def snap_many(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> SnapBatch:
        """Snap every point; refused points get ``ok`` False and a reason, not an exception."""
        lon = np.asarray(lons, dtype=np.float64).ravel()
        lat = np.asarray(lats, dtype=np.float64).ravel()
        if lon.shape != lat.shape:
            raise ValueError(f"{len(lon)} longitudes but {len(lat)} latitudes")
        n = len(lon)
        node = np.full(n, -1, dtype=np.int64)
        dist = np.full(n, np.inf)
        road_lon = np.full(n, np.nan)
        road_lat = np.full(n, np.nan)
        along = np.full(n, np.nan)
        reason: list[str | None] = [None] * n
        finite = np.isfinite(lon) & np.isfinite(lat)
        for i in np.nonzero(~finite)[0].tolist():
            reason[i] = "not a finite coordinate"
        inside = np.zeros(n, dtype=np.bool_)
        inside[finite] = shapely.contains_xy(self.operating_area, lon[finite], lat[finite])
        for i in np.nonzero(finite & ~inside)[0].tolist():
            reason[i] = f"outside the operating area of site {self.site.name!r}"
        todo = np.nonzero(finite)[0]
        if len(todo):
            tree, links, proj_len = self._snap_index
            x, y = self._proj.to_xy(lon[todo], lat[todo])
            pts = shapely.points(x, y)
            qi, ti = tree.query_nearest(pts, all_matches=False)
            hit_link = np.empty(len(todo), dtype=np.int64)
            hit_link[qi] = ti
            lines = tree.geometries[hit_link]
            pos = shapely.line_locate_point(lines, pts)
            road = shapely.line_interpolate_point(lines, pos)
            rlon, rlat = self._proj.to_lonlat(shapely.get_x(road), shapely.get_y(road))
            road_lon[todo], road_lat[todo] = rlon, rlat
            dist[todo] = haversine_m(lon[todo], lat[todo], rlon, rlat)
            link = links[hit_link]
            frac = np.where(proj_len[hit_link] > 0, pos / np.maximum(proj_len[hit_link], 1e-9), 0)
            link_len_m = self.prepared.link_len_cm[link] / 100.0
            at_start = frac <= 0.5
            end = np.where(at_start, self.prepared.link_u[link], self.prepared.link_v[link])
            node[todo] = self.prepared.node_id[end]
            along[todo] = np.where(at_start, frac, 1.0 - frac) * link_len_m
        limit = self.site.snap_max_m
        for i in np.nonzero(finite & inside & (dist > limit))[0].tolist():
            reason[i] = (
                f"{dist[i]:.0f} m from the nearest drivable road "
                f"(site {self.site.name!r} allows {limit:g} m)"
            )
        ok = np.asarray([r is None for r in reason], dtype=np.bool_)
        node[~ok] = -1
        return SnapBatch(
            node=node,
            dist_m=dist,
            ok=ok,
            reason=reason,
            lon=road_lon,
            lat=road_lat,
            along_m=along,
        )

    # -- matrices and paths -----------------------------------------------------------------
    @cached_property
    def _engine(self) -> MatrixEngine:
        parent = self._base._engine if self._base is not None else None
        return MatrixEngine(self.num_nodes, self._edge_u, self._edge_v, self._weight, parent)

    def matrix(
        self,
        sources: Sequence[NodeId],
        targets: Sequence[NodeId],
        *,
        workers: int | None = None,
        progress: Progress | None = None,
    ) -> Matrix:
        """Travel time and distance between every source and every target node.

        ``workers`` processes share large matrices (default: the CPUs available, or
        ``$FLEET_ROAD_WORKERS``); ``progress(stage, fraction)`` follows the work.
        """
        src = self.index_of(list(sources)) if len(sources) else np.zeros(0, dtype=np.int64)
        tgt = self.index_of(list(targets)) if len(targets) else np.zeros(0, dtype=np.int64)

        def on_chunk(done: int, total: int) -> None:
            if progress is not None:
                progress("distance matrix", done / total)

        weights = self._engine.many_to_many(src, tgt, workers=workers, on_chunk=on_chunk)
        dist_m, time_s = decode(weights, in_place=True)
        return Matrix(
            sources=tuple(NodeId(int(s)) for s in sources),
            targets=tuple(NodeId(int(t)) for t in targets),
            dist_m=dist_m,
            time_s=time_s,
        )

    def _predecessors(self, source: int) -> tuple[npt.NDArray[np.int32], F64]:
        """Shortest-path tree from ``source`` (predecessors, encoded weights), kept for reuse."""
        tree = self._trees.get(source)
        if tree is not None:
            self._trees.move_to_end(source)
            return tree
        dist, pred = dijkstra(
            self._engine.full, directed=True, indices=source, return_predecessors=True
        )
        self._trees[source] = (pred, dist)
        while len(self._trees) > _PATH_CACHE_SOURCES:
            self._trees.popitem(last=False)
        return pred, dist

    @cached_property
    def _edge_lookup(self) -> tuple[I64, I64]:
        key = self._edge_u * self.num_nodes + self._edge_v
        order = np.argsort(key)
        return key[order], order.astype(np.int64)

    def path(self, source: NodeId, target: NodeId) -> RoadPath:
        """The fastest path; its ``dist_m``/``time_s`` equal the matrix entry for the pair."""
        s, t = (int(i) for i in self.index_of([source, target]))
        pred, dist = self._predecessors(s)
        if not np.isfinite(dist[t]):
            raise UnreachableError(
                f"no drivable path from node {source} {self.lonlat(source)} to node {target} "
                f"{self.lonlat(target)} in site {self.site.name!r}"
            )
        chain = [t]
        while chain[-1] != s:
            chain.append(int(pred[chain[-1]]))
        chain.reverse()
        keys, order = self._edge_lookup
        coords: list[tuple[float, float]] = []
        p = self.prepared
        for a, b in itertools.pairwise(chain):
            e = int(order[np.searchsorted(keys, a * self.num_nodes + b)])
            pts = self._link_coords(int(p.edge_link[e]), bool(p.edge_reversed[e]))
            coords.extend(pts if not coords else pts[1:])
        if not coords:
            coords = [(float(p.node_lon[s]), float(p.node_lat[s]))]
        dist_m, time_s = decode(dist[t])
        return RoadPath(
            nodes=[NodeId(int(p.node_id[i])) for i in chain],
            dist_m=float(dist_m),
            time_s=float(time_s),
            coords=coords,
        )

    # -- closures ---------------------------------------------------------------------------
    def with_closures(
        self,
        edges: Iterable[tuple[NodeId, NodeId]] = (),
        areas: Iterable[Polygon] = (),
    ) -> RoadNetwork:
        """A new network without the given directed edges and without every road that
        touches one of ``areas`` (lon/lat polygons). Nodes stay; some may become unreachable."""
        drop = np.zeros(self.num_edges, dtype=np.bool_)
        pairs = list(edges)
        if pairs:
            uv = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
            u = self.index_of(uv[:, 0])
            v = self.index_of(uv[:, 1])
            keys, order = self._edge_lookup
            want = u * self.num_nodes + v
            pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
            missing = keys[pos] != want
            if np.any(missing):
                bad = uv[missing][:5].tolist()
                raise RoadError(f"no road edge {bad} in site {self.site.name!r} to close")
            drop[order[pos]] = True
        polys = list(areas)
        if polys:
            p = self.prepared
            counts = np.diff(p.geom_offsets)
            lines = shapely.linestrings(
                np.column_stack((p.geom_lon, p.geom_lat)),
                indices=np.repeat(np.arange(len(counts)), counts),
            )
            closed_links = np.zeros(len(counts), dtype=np.bool_)
            for poly in polys:
                closed_links |= shapely.intersects(lines, poly)
            drop |= closed_links[p.edge_link]
        if np.all(drop):
            raise RoadError(f"the closures remove every road of site {self.site.name!r}")
        return RoadNetwork(
            self.site,
            self.van,
            self.prepared.without_edges(drop),
            self.operating_area,
            base=self._base or self,
        )


def load_network(
    site: Site,
    van: VanSpec,
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> RoadNetwork:
    """The road network of ``site`` for ``van``: from the cache when its inputs are unchanged,
    else parsed from the OSM extract (and cached)."""

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    unknown = sorted(set(site.excluded_highways) - DRIVABLE_CLASSES)
    if unknown:
        raise ConfigError(
            f"{site.config_file}: [roads] exclude_highways: unknown highway class "
            f"{unknown[0]!r}; expected some of {', '.join(sorted(DRIVABLE_CLASSES))}"
        )
    report("reading the operating area", 0.0)
    area = load_operating_area(site.operating_area_file)
    key = path = None
    if use_cache:
        report("hashing the OSM extract", 0.02)
        try:
            key = cache_key(
                file_sha256(site.osm_file),
                file_sha256(site.operating_area_file),
                site.excluded_highways,
                van.top_speed_kmh,
            )
        except OSError as exc:
            raise ConfigError(f"{site.osm_file}: cannot read: {exc}") from exc
        path = cache_path(site.name, key)
        prepared = read_cached(path, key)
        if prepared is not None:
            log.info("road graph of %s from cache %s", site.name, path)
            report("loaded from cache", 1.0)
            return RoadNetwork(site, van, prepared, area)
    report("reading the OSM extract", 0.05)
    ways = read_drivable_ways(site.osm_file, frozenset(site.excluded_highways))
    report("building the road graph", 0.55)
    try:
        prepared = prepare_graph(ways, area, van.top_speed_kmh)
    except RoadError as exc:
        raise ConfigError(
            f"{site.config_file}: {exc} (osm_file {site.osm_file}, "
            f"operating_area_file {site.operating_area_file})"
        ) from exc
    if key is not None and path is not None:
        report("writing the cache", 0.95)
        write_cached(path, key, prepared)
    report("done", 1.0)
    return RoadNetwork(site, van, prepared, area)
