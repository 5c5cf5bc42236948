"""The matrix engine (a customizable contraction hierarchy) is exact on any graph: trees,
chains, cycles, one-way streets, several disconnected parts, closed roads - checked against a
plain Dijkstra on the whole graph."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import dijkstra

import fleet.roads.engine as engine_module
from fleet.roads.engine import MatrixEngine


@st.composite
def road_like_graphs(draw: st.DrawFn) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Random graphs shaped like streets: a random tree (dead ends, chains) plus some extra
    links (cycles, junctions), each link two-way or one-way, integer weights."""
    n = draw(st.integers(min_value=1, max_value=40))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    pairs: set[tuple[int, int]] = set()
    parts = int(rng.integers(1, 3))  # sometimes two separate parts
    for x in range(1, n):
        if parts == 2 and x == n // 2:
            continue
        pairs.add((int(rng.integers(0, x)), x))
    for _ in range(int(rng.integers(0, n // 2 + 1))):
        a, b = (int(v) for v in rng.integers(0, n, 2))
        if a != b:
            pairs.add((min(a, b), max(a, b)))
    src: list[int] = []
    dst: list[int] = []
    for a, b in sorted(pairs):
        mode = rng.integers(0, 4)  # 0, 1: two-way; 2: a->b; 3: b->a
        if mode in (0, 1, 2):
            src.append(a)
            dst.append(b)
        if mode in (0, 1, 3):
            src.append(b)
            dst.append(a)
    w = rng.integers(1, 50, len(src)).astype(np.float64) * 1e8 + rng.integers(1, 5000, len(src))
    return n, np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64), w


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(road_like_graphs(), st.integers(min_value=0, max_value=2**32 - 1))
def test_matrix_matches_plain_dijkstra(
    graph: tuple[int, np.ndarray, np.ndarray, np.ndarray], seed: int
) -> None:
    n, src, dst, w = graph
    engine = MatrixEngine(n, src, dst, w)
    rng = np.random.default_rng(seed)
    sources = rng.integers(0, n, int(rng.integers(1, 12)))
    targets = rng.integers(0, n, int(rng.integers(1, 12)))
    want = dijkstra(engine.full, directed=True, indices=sources)[:, targets]
    assert np.array_equal(engine.many_to_many(sources, targets), want)  # plain searches
    got = engine.customized.many_to_many(sources, targets, workers=1)  # the hierarchy
    assert np.array_equal(got, want)
    h = engine.hierarchy
    assert np.all(h.level[h.arc_lo] < h.level[h.arc_hi])  # every arc climbs


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(road_like_graphs(), st.integers(min_value=0, max_value=2**32 - 1))
def test_closed_roads_reuse_the_hierarchy_and_stay_exact(
    graph: tuple[int, np.ndarray, np.ndarray, np.ndarray], seed: int
) -> None:
    n, src, dst, w = graph
    base = MatrixEngine(n, src, dst, w)
    rng = np.random.default_rng(seed)
    open_ = rng.random(len(src)) > 0.3
    closed = MatrixEngine(n, src[open_], dst[open_], w[open_], parent=base)
    everything = np.arange(n)
    got = closed.customized.many_to_many(everything, everything, workers=1)
    assert closed.hierarchy is base.hierarchy
    assert np.array_equal(got, dijkstra(closed.full, directed=True, indices=everything))


def test_dead_ends_and_chains_add_no_shortcuts() -> None:
    # two triangles joined by a long two-way chain with a dead end hanging off it
    edges = [
        (0, 1),
        (1, 2),
        (2, 0),
        (2, 3),
        (3, 4),
        (4, 5),
        (5, 6),
        (6, 7),
        (7, 8),
        (8, 6),
        (4, 9),
        (9, 10),
    ]
    src = np.array([a for a, b in edges] + [b for a, b in edges], dtype=np.int64)
    dst = np.array([b for a, b in edges] + [a for a, b in edges], dtype=np.int64)
    w = np.arange(1, len(src) + 1, dtype=np.float64) * 1e8 + 7
    engine = MatrixEngine(11, src, dst, w)
    everything = np.arange(11)
    got = engine.customized.many_to_many(everything, everything, workers=1)
    assert np.array_equal(got, dijkstra(engine.full, indices=everything))
    assert engine.hierarchy.num_arcs == len(edges)  # a tree of cycles needs no fill


def test_parallel_edges_keep_the_fastest() -> None:
    src = np.array([0, 0, 1], dtype=np.int64)
    dst = np.array([1, 1, 0], dtype=np.int64)
    w = np.array([5e8, 3e8, 4e8])
    engine = MatrixEngine(2, src, dst, w)
    for got in (
        engine.many_to_many(np.array([0, 1]), np.array([1, 0])),
        engine.customized.many_to_many(np.array([0, 1]), np.array([1, 0]), workers=1),
    ):
        assert got.tolist() == [[3e8, 0.0], [0.0, 4e8]]


def test_a_few_searches_do_not_build_the_hierarchy_and_many_do() -> None:
    n = 300
    src = np.arange(n - 1, dtype=np.int64)
    dst = src + 1
    both_src, both_dst = np.r_[src, dst], np.r_[dst, src]
    w = np.full(len(both_src), 1e8 + 100.0)
    engine = MatrixEngine(n, both_src, both_dst, w)
    few = engine.many_to_many(np.arange(5), np.arange(n))
    assert not engine.has_hierarchy
    assert few[4, 0] == 4 * (1e8 + 100)
    many = engine.many_to_many(np.arange(n), np.arange(n))
    assert engine.has_hierarchy
    assert np.array_equal(many[:5], few)
    closed = MatrixEngine(n, both_src[1:], both_dst[1:], w[1:], parent=engine)
    assert closed.has_hierarchy  # shares the parent's: customizing is cheap, so it is used
    assert np.isinf(closed.many_to_many(np.array([0]), np.array([1]))[0, 0])


def test_worker_processes_give_the_same_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    real_context = engine_module._start_context

    def recording_context() -> multiprocessing.context.BaseContext:
        context = real_context()
        started.append(context.get_start_method())
        return context

    monkeypatch.setattr(engine_module, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(engine_module, "_start_context", recording_context)
    rng = np.random.default_rng(11)
    side = 40  # a grid of two-way streets, one row one-way
    idx = np.arange(side * side).reshape(side, side)
    a = np.concatenate((idx[:, :-1].ravel(), idx[:-1, :].ravel()))
    b = np.concatenate((idx[:, 1:].ravel(), idx[1:, :].ravel()))
    one_way = a < side - 1
    src = np.concatenate((a, b[~one_way]))
    dst = np.concatenate((b, a[~one_way]))
    w = rng.integers(1, 100, len(src)).astype(np.float64) * 1e8 + rng.integers(1, 9999, len(src))
    engine = MatrixEngine(side * side, src, dst, w)
    sources = rng.integers(0, side * side, 700)
    targets = rng.integers(0, side * side, 800)
    in_workers = engine.many_to_many(sources, targets, workers=2)
    assert started, "the worker pool was not used"
    assert np.array_equal(in_workers, engine.many_to_many(sources, targets, workers=1))
    assert np.array_equal(in_workers, dijkstra(engine.full, indices=sources)[:, targets])
