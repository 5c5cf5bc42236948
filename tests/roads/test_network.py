"""The Porto Alegre road network, built from the real OSM extract: graph, snapping, matrices,
paths and closures."""

from __future__ import annotations

import itertools
import re

import networkx as nx
import numpy as np
import pytest
import shapely
from scipy.sparse.csgraph import dijkstra
from shapely.geometry import box

import fleet.roads.engine as engine_module
from fleet.errors import RoadError, SnapError, UnreachableError
from fleet.model import NodeId
from fleet.roads import RoadNetwork
from fleet.roads.geo import haversine_m
from fleet.roads.network import decode

from .conftest import (
    ANDRADAS_FROM,
    ANDRADAS_LINK_M,
    ANDRADAS_TO,
    IN_THE_LAKE,
    SOUTH_OF_AREA,
)


# -- the graph -----------------------------------------------------------------------------
def test_graph_size_is_the_central_city(poa: RoadNetwork) -> None:
    # measured: 7,966 nodes, 18,761 edges, 89.7 km² (osmnx counts 7,777 nodes for the
    # whole extract with its narrower filter; our area drops the south, we keep service roads)
    assert 7_000 < poa.num_nodes < 9_000
    assert 16_000 < poa.num_edges < 21_000
    assert poa.area_km2 == pytest.approx(89.7, abs=0.1)
    assert poa.graph.number_of_nodes() == poa.num_nodes
    assert poa.graph.number_of_edges() == poa.num_edges


def test_every_node_can_reach_every_other(poa: RoadNetwork) -> None:
    assert nx.is_strongly_connected(poa.graph)


def test_every_node_lies_inside_the_operating_area(poa: RoadNetwork) -> None:
    p = poa.prepared
    assert shapely.contains_xy(poa.operating_area, p.node_lon, p.node_lat).all()
    assert shapely.contains_xy(poa.operating_area, p.geom_lon, p.geom_lat).all()


def test_edge_attributes_follow_the_contract(poa: RoadNetwork) -> None:
    top = poa.van.top_speed_kmh
    for u, v, d in itertools.islice(poa.graph.edges(data=True), 0, None, 7):
        assert set(d) == {"length_m", "speed_kmh", "time_s", "highway", "name", "geometry"}
        assert 0 < d["speed_kmh"] <= top
        # time is length at that speed, rounded up to the millisecond
        assert d["time_s"] == pytest.approx(d["length_m"] / (d["speed_kmh"] / 3.6), abs=2e-3)
        assert d["time_s"] >= d["length_m"] / (top / 3.6) - 1e-9
        geom = d["geometry"]
        assert geom[0] == poa.lonlat(u) and geom[-1] == poa.lonlat(v)
        lon, lat = np.asarray(geom).T
        along = float(np.sum(haversine_m(lon[:-1], lat[:-1], lon[1:], lat[1:])))
        assert d["length_m"] == pytest.approx(along, abs=0.01)


def test_chains_are_merged_so_nodes_are_junctions_and_dead_ends(poa: RoadNetwork) -> None:
    g = poa.graph
    for n in g.nodes:
        neighbours = set(g.successors(n)) | set(g.predecessors(n))
        if len(neighbours) != 2:
            continue
        a, b = neighbours
        # a node with two neighbours stays only where the way through it changes direction
        # rules (e.g. a two-way street turning one-way) or to keep two links between the
        # same pair of nodes apart
        through = (g.has_edge(a, n) == g.has_edge(n, b)) and (g.has_edge(b, n) == g.has_edge(n, a))
        if through:
            assert g.has_edge(a, b) or g.has_edge(b, a) or _parallel_split(g, n, a, b)


def _parallel_split(g: nx.DiGraph, n: int, a: int, b: int) -> bool:
    # n was kept to break a loop or a second road between a and b: a path a..b avoiding n
    h = g.to_undirected(as_view=True)
    return nx.has_path(nx.restricted_view(h, [n], []), a, b)


def test_no_degree_two_chains_left_without_a_reason(poa: RoadNetwork) -> None:
    g = poa.graph
    degree2 = [n for n in g.nodes if len(set(g.successors(n)) | set(g.predecessors(n))) == 2]
    assert len(degree2) < 0.05 * g.number_of_nodes()


def test_speed_is_capped_at_the_van_top_speed(poa: RoadNetwork) -> None:
    speeds = np.array([d["speed_kmh"] for _, _, d in poa.graph.edges(data=True)])
    assert speeds.max() <= poa.van.top_speed_kmh
    assert speeds.max() > 55  # 60 km/h avenues exist in Porto Alegre


# -- one-way streets -----------------------------------------------------------------------
def test_one_way_street_gives_different_distances_each_way(poa: RoadNetwork) -> None:
    a, b = NodeId(ANDRADAS_FROM), NodeId(ANDRADAS_TO)
    assert poa.graph.has_edge(a, b) and not poa.graph.has_edge(b, a)
    assert poa.graph.edges[a, b]["name"] == "Rua dos Andradas"
    m = poa.matrix([a, b], [a, b])
    assert m.dist_m[0, 1] == pytest.approx(ANDRADAS_LINK_M)
    assert m.dist_m[1, 0] > m.dist_m[0, 1] + 50  # back round the block
    assert m.time_s[1, 0] > m.time_s[0, 1]


# -- matrices ------------------------------------------------------------------------------
def _sample_nodes(net: RoadNetwork, k: int, seed: int) -> list[NodeId]:
    rng = np.random.default_rng(seed)
    return [net.node_at(int(i)) for i in rng.integers(0, net.num_nodes, k)]


def test_matrix_matches_networkx_on_a_sample_of_pairs(poa: RoadNetwork) -> None:
    sources = _sample_nodes(poa, 12, seed=1)
    targets = _sample_nodes(poa, 10, seed=2)
    m = poa.matrix(sources, targets)
    assert m.dist_m.shape == m.time_s.shape == (12, 10)
    g = poa.graph
    for i, s in enumerate(sources[:6]):
        lengths, paths = nx.single_source_dijkstra(g, s, weight="time_s")
        for j, t in enumerate(targets):
            assert m.time_s[i, j] == pytest.approx(lengths[t], abs=1e-6)
            # distance along that same fastest path (ties in time may pick another path
            # of equal time: ours is the shortest of them)
            nx_dist = sum(g.edges[a, b]["length_m"] for a, b in itertools.pairwise(paths[t]))
            assert m.dist_m[i, j] <= nx_dist + 1e-6
            ours = poa.path(s, t)
            assert (ours.dist_m, ours.time_s) == (m.dist_m[i, j], m.time_s[i, j])
            along = sum(g.edges[a, b]["length_m"] for a, b in itertools.pairwise(ours.nodes))
            assert along == pytest.approx(m.dist_m[i, j], abs=1e-6)


def test_matrix_equals_a_plain_dijkstra_bit_for_bit(poa: RoadNetwork) -> None:
    # sources with repeats, targets with repeats and a node on both sides
    sources = [*_sample_nodes(poa, 150, seed=3), poa.node_at(5), poa.node_at(5)]
    targets = [*_sample_nodes(poa, 120, seed=4), poa.node_at(5)]
    m = poa.matrix(sources, targets, workers=1)
    full = poa._engine.full
    plain = dijkstra(full, indices=poa.index_of(sources))[:, poa.index_of(targets)]
    dist_m, time_s = decode(plain)
    assert np.array_equal(m.dist_m, dist_m)
    assert np.array_equal(m.time_s, time_s)
    assert m.time_s[-1, -1] == 0 and m.dist_m[-1, -1] == 0


def test_matrix_in_worker_processes_equals_matrix_in_process(
    poa: RoadNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PARALLEL_MIN_WORK", 0)  # small enough to share out
    sources = _sample_nodes(poa, 400, seed=5)
    targets = _sample_nodes(poa, 350, seed=6)
    seen: list[float] = []
    two = poa.matrix(sources, targets, workers=2, progress=lambda _s, f: seen.append(f))
    one = poa.matrix(sources, targets, workers=1)
    assert np.array_equal(one.time_s, two.time_s)
    assert np.array_equal(one.dist_m, two.dist_m)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


def test_wider_than_tall_matrix_is_searched_backwards_with_the_same_result(
    poa: RoadNetwork,
) -> None:
    sources = _sample_nodes(poa, 40, seed=7)
    targets = _sample_nodes(poa, 5, seed=8)
    m = poa.matrix(sources, targets)
    mt = poa.matrix(targets, sources)
    plain = dijkstra(poa._engine.full, indices=poa.index_of(sources))[:, poa.index_of(targets)]
    assert np.array_equal(m.time_s, decode(plain)[1])
    assert m.dist_m.shape == (40, 5) and mt.dist_m.shape == (5, 40)


def test_empty_matrix(poa: RoadNetwork) -> None:
    m = poa.matrix([], [poa.node_at(0)])
    assert m.dist_m.shape == (0, 1) and m.unreachable() == []


def test_unknown_node_is_refused_by_name(poa: RoadNetwork) -> None:
    with pytest.raises(RoadError, match=r"\[12345\] are not in the road graph"):
        poa.matrix([NodeId(12345)], [poa.node_at(0)])
    with pytest.raises(RoadError, match="12345"):
        poa.lonlat(NodeId(12345))


# -- unreachable ---------------------------------------------------------------------------
def test_unreachable_pairs_are_inf_and_listed(poa: RoadNetwork) -> None:
    target = NodeId(ANDRADAS_TO)
    cut = poa.with_closures(edges=list(poa.graph.in_edges(target)))
    a, b = poa.node_at(10), poa.node_at(20)
    m = cut.matrix([a, b, target], [target, a])
    assert np.isinf(m.dist_m[0, 0]) and np.isinf(m.time_s[1, 0])
    assert m.dist_m[2, 0] == 0  # from itself
    assert np.isfinite(m.dist_m[2, 1])  # leaving is still possible
    assert m.unreachable() == [(0, 0), (1, 0)]
    with pytest.raises(UnreachableError, match=rf"from node {a} .* to node {target}"):
        cut.path(a, target)
    # the original network is unchanged
    assert np.isfinite(poa.matrix([a], [target]).dist_m[0, 0])


# -- snapping ------------------------------------------------------------------------------
def test_depots_snap_within_a_few_metres(poa: RoadNetwork) -> None:
    for depot in poa.site.depots:
        snap = poa.snap(depot.lon, depot.lat)
        assert snap.dist_m < 10, depot.id
        assert snap.dist_m == pytest.approx(
            float(haversine_m(depot.lon, depot.lat, snap.lon, snap.lat)), abs=1e-6
        )
        assert snap.node in poa.graph
        assert snap.along_m >= 0


def test_point_on_a_road_snaps_at_zero_distance_to_that_road(poa: RoadNetwork) -> None:
    u, v, d = next(iter(poa.graph.edges(data=True)))
    (x0, y0), (x1, y1) = d["geometry"][0], d["geometry"][1]
    snap = poa.snap((x0 + x1) / 2, (y0 + y1) / 2)
    assert snap.dist_m < 0.5
    assert snap.node in (u, v) or snap.dist_m < 0.5


def test_snap_distance_grows_with_the_offset_from_the_road(poa: RoadNetwork) -> None:
    lon, lat = poa.lonlat(NodeId(ANDRADAS_FROM))
    near = poa.snap(lon, lat)
    assert near.dist_m < 1
    # 100 m due north of a downtown junction is at most 100 m from a road
    away = poa.snap(lon, lat + 100 / 111_195)
    assert 0 < away.dist_m <= 100.5


def test_point_outside_the_operating_area_is_refused_by_name(poa: RoadNetwork) -> None:
    lon, lat = SOUTH_OF_AREA
    with pytest.raises(SnapError, match=r"point \(-51\.200000, -30\.105000\): outside the op"):
        poa.snap(lon, lat)


def test_point_too_far_from_a_road_is_refused_with_the_distance(poa: RoadNetwork) -> None:
    lon, lat = IN_THE_LAKE
    with pytest.raises(SnapError) as info:
        poa.snap(lon, lat)
    message = str(info.value)
    assert "(-51.253000, -30.066200)" in message
    metres = int(re.search(r"(\d+) m from the nearest drivable road", message).group(1))  # type: ignore[union-attr]
    assert metres > poa.site.snap_max_m
    assert "allows 150 m" in message


def test_snap_many_reports_each_point_without_raising(poa: RoadNetwork) -> None:
    depot = poa.site.warehouse
    lons = np.array([depot.lon, SOUTH_OF_AREA[0], IN_THE_LAKE[0], np.nan])
    lats = np.array([depot.lat, SOUTH_OF_AREA[1], IN_THE_LAKE[1], 0.0])
    batch = poa.snap_many(lons, lats)
    assert batch.ok.tolist() == [True, False, False, False]
    assert batch.node.dtype == np.int64 and batch.dist_m.dtype == np.float64
    assert batch.node[0] == poa.snap(depot.lon, depot.lat).node
    assert batch.node[1:].tolist() == [-1, -1, -1]
    assert batch.reason[0] is None
    assert "outside the operating area" in (batch.reason[1] or "")
    assert "from the nearest drivable road" in (batch.reason[2] or "")
    assert batch.reason[3] == "not a finite coordinate"
    assert batch.dist_m[2] > 1000  # the distance is there even for a refused point


# -- paths ---------------------------------------------------------------------------------
def test_path_geometry_runs_along_the_roads_from_source_to_target(poa: RoadNetwork) -> None:
    wh, st = poa.site.warehouse, poa.site.stations[0]
    a, b = poa.snap(wh.lon, wh.lat).node, poa.snap(st.lon, st.lat).node
    p = poa.path(a, b)
    assert p.nodes[0] == a and p.nodes[-1] == b
    assert p.coords[0] == poa.lonlat(a) and p.coords[-1] == poa.lonlat(b)
    line = p.linestring
    assert line.geom_type == "LineString"
    lon, lat = np.asarray(line.coords).T
    # lengths are whole centimetres per edge
    assert float(np.sum(haversine_m(lon[:-1], lat[:-1], lon[1:], lat[1:]))) == pytest.approx(
        p.dist_m, abs=0.005 * len(p.nodes)
    )
    gj = p.geojson()
    assert gj["type"] == "LineString" and gj["coordinates"][0] == list(poa.lonlat(a))
    m = poa.matrix([a], [b])
    assert (p.dist_m, p.time_s) == (m.dist_m[0, 0], m.time_s[0, 0])


def test_path_to_itself_is_a_point(poa: RoadNetwork) -> None:
    n = poa.node_at(3)
    p = poa.path(n, n)
    assert p.nodes == [n] and p.dist_m == 0 and p.time_s == 0
    assert p.geojson()["coordinates"] == [list(poa.lonlat(n))] * 2


# -- closures and classes ------------------------------------------------------------------
def test_edges_of_class_and_closing_them(poa: RoadNetwork) -> None:
    living = poa.edges_of_class(["living_street"])
    assert living and all(poa.graph.edges[e]["highway"] == "living_street" for e in living)
    closed = poa.with_closures(edges=living)
    assert closed.num_edges == poa.num_edges - len(living)
    assert closed.edges_of_class(["living_street"]) == []
    assert closed.num_nodes == poa.num_nodes
    with pytest.raises(RoadError, match="unknown highway class"):
        poa.edges_of_class(["highway_to_hell"])


def test_closing_an_area_removes_every_road_touching_it(poa: RoadNetwork) -> None:
    lon, lat = poa.lonlat(NodeId(ANDRADAS_FROM))
    square = box(lon - 0.002, lat - 0.002, lon + 0.002, lat + 0.002)
    closed = poa.with_closures(areas=[square])
    assert closed.num_edges < poa.num_edges
    for _, _, d in closed.graph.edges(data=True):
        assert not shapely.intersects(shapely.linestrings(d["geometry"]), square)
    # snapping avoids the closed roads, routing avoids them too
    assert closed.snap_many([lon], [lat]).dist_m[0] > 150 > poa.snap(lon, lat).dist_m
    m = closed.matrix([NodeId(ANDRADAS_FROM)], [poa.node_at(0)])
    assert m.unreachable() == [(0, 0)]


def test_closing_an_edge_that_does_not_exist_is_refused(poa: RoadNetwork) -> None:
    with pytest.raises(RoadError, match="no road edge"):
        poa.with_closures(edges=[(NodeId(ANDRADAS_TO), NodeId(ANDRADAS_FROM))])
