"""The PyVRP model on integer matrices: capacities, reloads, release times, optional clients."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.errors import InfeasibleError
from fleet.planning import vrp


def line_problem(demand: list[int], *, count: int, capacity: int, **vt: object) -> vrp.Problem:
    """Depot at 0 and clients at 1..n on a line, 100 m apart; time = distance."""
    n = len(demand) + 1
    pos = np.arange(n) * 100
    dist = np.abs(pos[:, None] - pos[None, :]).astype(np.int64)
    return vrp.Problem(
        dist=dist,
        dur=dist,
        depots=(vrp.Depot(0),),
        clients=tuple(vrp.Client(i, (d,)) for i, d in enumerate(demand, start=1)),
        vehicle_types=(vrp.VehicleType(count, (capacity,), 0, 0, **vt),),  # type: ignore[arg-type]
    )


def test_capacity_splits_clients_over_vehicles_optimally() -> None:
    result = vrp.solve(
        line_problem([1, 1, 1, 1], count=2, capacity=2),
        time_limit_s=5,
        max_iterations=300,
        workers=1,
    )
    assert result.feasible and result.unvisited == ()
    # {1,2} and {3,4}: 2*200 + 2*400
    assert result.distance == 1200
    assert sorted(sorted(t.clients) for r in result.routes for t in r.trips) == [[0, 1], [2, 3]]


def test_one_vehicle_reloads_at_its_depot_for_a_second_trip() -> None:
    p = line_problem([1, 1, 1, 1], count=1, capacity=2, reload_depots=(0,))
    result = vrp.solve(p, time_limit_s=5, max_iterations=300, workers=1)
    assert result.feasible and result.unvisited == ()
    (route,) = result.routes
    assert len(route.trips) == 2 and all(len(t.clients) == 2 for t in route.trips)


def test_a_release_time_holds_the_trip_at_the_depot() -> None:
    base = line_problem([1], count=1, capacity=5)
    late = vrp.Client(1, (1,), release_s=5000)
    p = vrp.Problem(base.dist, base.dur, base.depots, (late,), base.vehicle_types)
    (route,) = vrp.solve(p, time_limit_s=5, max_iterations=100, workers=1).routes
    assert route.start_s >= 5000


def test_an_optional_client_that_cannot_be_served_is_left_out() -> None:
    base = line_problem([1, 1], count=1, capacity=5)
    clients = (vrp.Client(1, (1,), prize=10_000), vrp.Client(2, (1,), tw_late=50, prize=10_000))
    p = vrp.Problem(base.dist, base.dur, base.depots, clients, base.vehicle_types)
    result = vrp.solve(p, time_limit_s=5, max_iterations=200, workers=1)
    assert result.feasible and result.unvisited == (1,)


def test_two_workers_search_in_parallel_and_keep_a_valid_best() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 10_000, (31, 2))
    dist = np.rint(np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))).astype(np.int64)
    p = vrp.Problem(
        dist,
        dist,
        (vrp.Depot(0),),
        tuple(vrp.Client(i, (int(rng.integers(1, 10)),)) for i in range(1, 31)),
        (vrp.VehicleType(10, (30,), 0, 0),),
    )
    result = vrp.solve(p, time_limit_s=1.0, seed=4, workers=2)
    assert result.feasible and result.unvisited == ()
    assert result.seed in (4, 5)
    seen = sorted(c for r in result.routes for t in r.trips for c in t.clients)
    assert seen == list(range(30))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dist": np.zeros((2, 3), dtype=np.int64)}, "distance matrix is"),
        ({"dur": np.zeros((2, 2), dtype=np.float64)}, "must be int64"),
        ({"clients": (vrp.Client(7, (1,)),)}, "location 7 out of range"),
        ({"clients": (vrp.Client(1, (1, 2)),)}, "load dimensions"),
        ({"depots": ()}, "no depot"),
    ],
)
def test_a_malformed_problem_is_refused(change: dict[str, object], message: str) -> None:
    base = line_problem([1], count=1, capacity=5)
    fields = {
        "dist": base.dist,
        "dur": base.dur,
        "depots": base.depots,
        "clients": base.clients,
        "vehicle_types": base.vehicle_types,
    } | change
    with pytest.raises(InfeasibleError, match=message):
        vrp.Problem(**fields).check()  # type: ignore[arg-type]


def test_a_warm_start_with_more_vehicles_than_now_available_is_only_a_hint() -> None:
    """A re-plan of the heavy day warm-started from a solve that had used two vans of a
    type that now has one: PyVRP refused the start ('Used more than 1 vehicles of type 0')
    and the re-plan crashed."""
    two = vrp.solve(
        line_problem([1, 1, 1, 1], count=2, capacity=2), time_limit_s=5, max_iterations=300
    )
    assert len(two.routes) == 2
    one = line_problem([1, 1, 1, 1], count=1, capacity=4)
    result = vrp.solve_in_process(one, 5.0, 1, max_iterations=300, initial=two)
    assert result.feasible and result.unvisited == () and len(result.routes) == 1
