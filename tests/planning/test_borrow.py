"""Whole-fleet sharing: vans of other depots serve what a short station cannot, and the
verifier holds such plans to where parcels are and to the lent van's range and day."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.model import Parcel, Plan, Site, StopKind, VanRoute, VanSpec
from fleet.planning import verify_plan
from fleet.planning.borrow import Sharing
from fleet.roads import RoadNetwork
from tests.planning.conftest import PlanFn

RUSH_S = 10 * 3600


@pytest.fixture(scope="module")
def rush(day40: list[Parcel]) -> list[Parcel]:
    """12 parcels for ST-CENTRO in one quarter of an hour: more than its one van can do."""
    return [
        replace(p, station="ST-CENTRO", earliest_s=RUSH_S, latest_s=RUSH_S + 900)
        for p in day40[:12]
    ]


@pytest.fixture(scope="module")
def lent_plan(plan: PlanFn, rush: list[Parcel]) -> Plan:
    return plan(rush, vans={"ST-CENTRO": 1})


def lent_route(p: Plan) -> VanRoute:
    return next(r for r in p.routes if r.depot not in ("ST-CENTRO", "WH-POA"))


def with_route(p: Plan, route: VanRoute) -> Plan:
    return replace(p, routes=tuple(route if r.van_id == route.van_id else r for r in p.routes))


def check(p: Plan, rush: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork) -> list[str]:
    return verify_plan(p, rush, site, van, net)


def test_a_lent_van_serves_the_short_station_and_goes_home(lent_plan: Plan) -> None:
    assert lent_plan.unserved == ()
    r = lent_route(lent_plan)
    assert [s.ref for s in r.trips[0].stops] == [r.depot, "ST-CENTRO"]
    assert [s.ref for s in r.trips[-1].stops] == ["ST-CENTRO", r.depot]
    loads = {s.ref for t in r.trips for s in t.stops if s.parcels_loaded}
    assert loads == {"ST-CENTRO"}


def test_a_lent_van_that_does_not_go_home_is_caught(
    lent_plan: Plan, rush: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    r = lent_route(lent_plan)
    bad = with_route(lent_plan, replace(r, trips=r.trips[:-1]))
    problems = check(bad, rush, site, van, net)
    assert any("day ends at ST-CENTRO, not its depot" in p for p in problems), problems


def test_a_lent_van_loading_at_its_own_depot_is_caught(
    lent_plan: Plan, rush: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    # the parcels of its first trip from the station, loaded at home instead
    r = lent_route(lent_plan)
    drive, work = r.trips[0], r.trips[1]
    moved = work.stops[0].parcels_loaded
    drive = replace(drive, stops=(replace(drive.stops[0], parcels_loaded=moved), *drive.stops[1:]))
    work = replace(work, stops=(replace(work.stops[0], parcels_loaded=()), *work.stops[1:]))
    bad = with_route(lent_plan, replace(r, trips=(drive, work, *r.trips[2:])))
    problems = check(bad, rush, site, van, net)
    # what is loaded at home would ride to the station and on: it is not where the plan says
    assert any("trip 0: ends with parcels still on board" in p for p in problems), problems
    assert any("hands over parcel" in p and "which is not on board" in p for p in problems)


def test_a_lent_trip_stopping_at_a_station_is_caught(
    lent_plan: Plan, rush: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    r = lent_route(lent_plan)
    work = r.trips[1]
    door = work.stops[1]
    assert door.kind is StopKind.DOOR
    work = replace(
        work, stops=(work.stops[0], replace(door, kind=StopKind.STATION), *work.stops[2:])
    )
    bad = with_route(lent_plan, replace(r, trips=(r.trips[0], work, *r.trips[2:])))
    problems = check(bad, rush, site, van, net)
    assert any("lent to ST-CENTRO stops only at doors" in p for p in problems), problems


def test_loading_a_parcel_before_it_is_at_its_station_is_caught(
    planned40: Plan, day40: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    route = next(r for r in planned40.routes if r.depot != "WH-POA")
    pid = next(pid for s in route.stops() for pid in s.parcels_loaded)
    args = (planned40, day40, site, van, net)
    assert verify_plan(*args, at_station={pid: route.depot}) == []
    problems = verify_plan(
        *args, at_station={pid: route.depot}, at_station_from_s={pid: 19.5 * 3600}
    )
    assert any(f"parcel {pid}" in p and "before it is there (19:30" in p for p in problems)


def test_without_a_line_haul_van_station_vans_take_parcels_straight_from_the_warehouse(
    plan: PlanFn, day40: list[Parcel]
) -> None:
    day = day40[:6]
    result = plan(day, vans={"WH-POA": 0})  # no line haul at all
    assert result.unserved == ()
    loads = {pid: s.ref for r in result.routes for s in r.stops() for pid in s.parcels_loaded}
    assert set(loads) == {p.id for p in day} and set(loads.values()) == {"WH-POA"}
    assert not [s for r in result.routes for s in r.stops() if s.kind is StopKind.STATION]


def test_per_depot_sharing_leaves_them_for_want_of_a_line_haul(
    plan: PlanFn, day40: list[Parcel]
) -> None:
    result = plan(day40[:6], vans={"WH-POA": 0}, sharing=Sharing.DEPOT)
    assert {u.reason.value for u in result.unserved} == {"not_enough_vans"}
    assert len(result.unserved) == 6
