"""The site's departure policy: ``early`` trips leave as soon as they are loaded (and charged);
``late`` ones as late as they can without ending later."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.model import Leg, Parcel, Plan, Site, StopKind, VanSpec
from fleet.model.site import Departure
from fleet.planning import plan_day, verify_plan
from fleet.roads import RoadNetwork
from tests.planning.conftest import ITERATIONS


def _plan(day40: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork, d: Departure) -> Plan:
    s = replace(site, departure=d)
    result = plan_day(day40, s, van, net, time_limit_s=30, max_iterations=ITERATIONS, workers=1)
    assert verify_plan(result, day40, s, van, net) == []
    return result


@pytest.fixture(scope="module")
def plans(day40: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork) -> dict[Departure, Plan]:
    return {d: _plan(day40, site, van, net, d) for d in Departure}


def _released(plan: Plan) -> dict[str, float]:
    """When each parcel is unloaded at its station (the last mile may load it from then)."""
    return {
        pid: s.departure_s
        for r in plan.routes
        if r.leg is Leg.LINE_HAUL
        for s in r.stops()
        if s.kind is StopKind.STATION
        for pid in s.parcels_delivered
    }


def test_early_trips_leave_as_soon_as_their_parcels_are_there_and_loaded(
    plans: dict[Departure, Plan], van: VanSpec
) -> None:
    plan = plans[Departure.EARLY]
    released = _released(plan)
    for r in plan.routes:
        for trip in r.trips:
            first = trip.stops[0]
            if first.kind is not StopKind.DEPOT:
                continue  # a charge stop stays as long as the charge needs
            ready = first.arrival_s  # a line haul's parcels are at the warehouse from 06:00
            if r.leg is Leg.LAST_MILE:
                ready = max([ready, *(released[p] for p in first.parcels_loaded)])
            assert first.departure_s == pytest.approx(ready + van.depot_load_s, abs=1e-6)


def test_late_trips_wait_at_the_depot_instead_of_at_a_door_and_end_no_later(
    plans: dict[Departure, Plan],
) -> None:
    early, late = plans[Departure.EARLY], plans[Departure.LATE]
    assert [r.van_id for r in early.routes] == [r.van_id for r in late.routes]
    later = 0
    for a, b in zip(early.routes, late.routes, strict=True):
        assert [[s.node for s in t.stops] for t in a.trips] == [
            [s.node for s in t.stops] for t in b.trips
        ]
        for ta, tb in zip(a.trips, b.trips, strict=True):
            assert tb.stops[0].departure_s >= ta.stops[0].departure_s - 1e-6
            assert tb.stops[-1].arrival_s <= ta.stops[-1].arrival_s + 1e-6
            later += tb.stops[0].departure_s > ta.stops[0].departure_s + 1.0
    assert later > 0  # the day has windows that open after the first trips could be there
