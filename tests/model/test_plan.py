"""Plan helpers: routes by van, deliveries, trip and stop figures."""

from __future__ import annotations

from datetime import date

import pytest

from fleet.model import (
    DepotId,
    Leg,
    NodeId,
    ParcelId,
    Plan,
    PlanSummary,
    Stop,
    StopKind,
    Trip,
    VanId,
    VanRoute,
)


def stop(seq: int, kind: StopKind, t: float, dist: float, delivered: tuple[str, ...] = ()) -> Stop:
    return Stop(
        seq,
        kind,
        "",
        NodeId(seq),
        0.0,
        0.0,
        t,
        t + 60,
        (),
        tuple(ParcelId(p) for p in delivered),
        0.0,
        0.0,
        dist,
        dist * 0.0003,
        90.0,
        (),
    )


TRIP = Trip(
    0,
    (
        stop(0, StopKind.DEPOT, 100.0, 0.0),
        stop(1, StopKind.DOOR, 400.0, 900.0, ("P1", "P2")),
        stop(2, StopKind.DEPOT, 900.0, 2000.0),
    ),
)
ROUTE = VanRoute(VanId("ST-A-01"), Leg.LAST_MILE, DepotId("ST-A"), (TRIP,))
SUMMARY = PlanSummary(2, 2, 0, 1, 1, 1, 2000.0, 0.6, 0.0, 2000.0, ())
PLAN = Plan("Test", date(2026, 11, 24), "UTC", "", (ROUTE,), (), SUMMARY)


def test_routes_trips_and_stops_answer_the_obvious_questions() -> None:
    assert PLAN.route("ST-A-01") is ROUTE
    with pytest.raises(KeyError):
        PLAN.route("ST-B-01")
    assert list(PLAN.delivered()) == [("ST-A-01", "P1"), ("ST-A-01", "P2")]
    assert ROUTE.dist_m == 2000.0 and ROUTE.energy_kwh == pytest.approx(0.6)
    assert (TRIP.start_s, TRIP.end_s) == (160.0, 900.0)
    assert list(TRIP.parcels_delivered()) == ["P1", "P2"]
    assert TRIP.stops[1].dwell_s == 60.0
    assert [s.seq for s in ROUTE.stops()] == [0, 1, 2]
