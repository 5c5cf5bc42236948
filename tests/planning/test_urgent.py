"""Urgent orders in a re-plan: when the way through a station cannot meet the window, a
warehouse van takes the parcel straight to its door; when nothing can, the parcel is unserved
with the earliest time a van could have been there."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from fleet.model import Leg, Parcel, Plan, Site, StopKind, UnservedReason, VanSpec
from fleet.planning import VanNow, replan_with_state, verify_plan
from fleet.planning.legs import stop_and_go_s
from fleet.planning.text import clock
from fleet.roads import RoadNetwork
from tests.planning.conftest import ITERATIONS

NOON = 12 * 3600.0


@pytest.fixture(scope="module")
def door(day40: list[Parcel]) -> Parcel:
    return day40[0]


def direct_s(
    site: Site, van: VanSpec, net: RoadNetwork, door: Parcel, *, stops: bool = True
) -> float:
    """When a warehouse van loaded at NOON, driving straight there, reaches ``door``: pulling
    away from the warehouse and braking at the door included (``stops=False``: the road time
    alone)."""
    wh = net.snap(site.warehouse.lon, site.warehouse.lat).node
    there = net.snap(door.lon, door.lat).node
    m = net.matrix([wh], [there])
    extra = stop_and_go_s(m.dist_m, m.time_s, van)[0, 0] if stops else 0.0
    return NOON + van.depot_load_s + float(m.time_s[0, 0]) + float(extra)


def plan_urgent(
    parcels: list[Parcel],
    site: Site,
    van: VanSpec,
    net: RoadNetwork,
    vans: list[VanNow] | None = None,
    location: dict[str, str] | None = None,
) -> Plan:
    result, start = replan_with_state(
        parcels,
        vans or [],
        site,
        van,
        net,
        now_s=NOON,
        parcel_location=location,
        time_limit_s=30,
        max_iterations=ITERATIONS,
        workers=1,
    )
    problems = verify_plan(
        result,
        parcels,
        site,
        van,
        net,
        at_station=start.at_station,
        start_soc_pct=start.start_soc_pct,
    )
    assert problems == []
    return result


def test_an_urgent_order_the_station_path_would_miss_goes_straight_from_the_warehouse(
    site: Site, van: VanSpec, net: RoadNetwork, door: Parcel
) -> None:
    due = direct_s(site, van, net, door) + 300  # the line haul and a reload take far longer
    urgent = replace(door, earliest_s=int(NOON), latest_s=int(due))
    result = plan_urgent([urgent], site, van, net)
    assert result.unserved == ()
    (route,) = [r for r in result.routes if r.trips]
    assert route.leg is Leg.LINE_HAUL and route.depot == site.warehouse.id
    kinds = [s.kind for s in route.trips[0].stops]
    assert kinds == [StopKind.DEPOT, StopKind.DOOR, StopKind.DEPOT]
    assert route.trips[0].stops[0].parcels_loaded == (urgent.id,)
    assert route.trips[0].stops[1].parcels_delivered == (urgent.id,)
    assert route.trips[0].stops[1].arrival_s <= due


def test_an_urgent_order_no_van_can_meet_is_unserved_with_the_earliest_time(
    site: Site, van: VanSpec, net: RoadNetwork, door: Parcel
) -> None:
    soonest = direct_s(site, van, net, door)
    urgent = replace(door, earliest_s=int(NOON), latest_s=int(soonest) - 120)
    result = plan_urgent([urgent], site, van, net)
    (u,) = result.unserved
    assert u.reason is UnservedReason.WINDOW_IMPOSSIBLE
    assert f"the earliest a van can reach it is {clock(soonest)}" in u.detail
    assert "direct from the warehouse" in u.detail


def test_an_urgent_order_with_time_to_spare_still_goes_through_its_station(
    site: Site, van: VanSpec, net: RoadNetwork, door: Parcel
) -> None:
    relaxed = replace(door, earliest_s=int(NOON), latest_s=int(NOON) + 5 * 3600)
    result = plan_urgent([relaxed], site, van, net)
    legs = {r.leg for r in result.routes if r.trips}
    assert legs == {Leg.LINE_HAUL, Leg.LAST_MILE}
    line_haul = [s for r in result.routes if r.leg is Leg.LINE_HAUL for s in r.stops()]
    assert not any(s.kind is StopKind.DOOR for s in line_haul)


def test_a_warehouse_van_carrying_an_urgent_parcel_takes_it_to_the_door_itself(
    site: Site, van: VanSpec, net: RoadNetwork, door: Parcel
) -> None:
    due = direct_s(site, van, net, door) - van.depot_load_s + 300  # loaded already
    urgent = replace(door, earliest_s=int(NOON), latest_s=int(due))
    wh = site.warehouse
    carrier = VanNow(f"{wh.id}-01", wh.lon, wh.lat, 90.0, [urgent.id], True, NOON)
    result = plan_urgent([urgent], site, van, net, [carrier], {urgent.id: "on_board"})
    assert result.unserved == ()
    trip = result.route(carrier.van_id).trips[0]
    assert [s.kind for s in trip.stops] == [StopKind.START, StopKind.DOOR, StopKind.DEPOT]
    assert trip.stops[1].parcels_delivered == (urgent.id,)


def test_the_stop_and_go_at_either_end_of_a_drive_is_counted_before_promising_a_window(
    site: Site, van: VanSpec, net: RoadNetwork, door: Parcel
) -> None:
    """A window that the road time alone would just meet, but not with the van pulling away
    from the warehouse and braking at the door (at the speed of that road, some 10 s), is
    not promised: in the simulator such a van arrived late, and an urgent order planned to
    the last seconds of its window was delivered after it."""
    road = direct_s(site, van, net, door, stops=False)
    real = direct_s(site, van, net, door)
    assert real - road > 4.0
    urgent = replace(door, earliest_s=int(NOON), latest_s=math.ceil(road) + 1)
    assert urgent.latest_s is not None and urgent.latest_s < real
    result = plan_urgent([urgent], site, van, net)
    (u,) = result.unserved
    assert u.reason is UnservedReason.WINDOW_IMPOSSIBLE
    assert "direct from the warehouse" in u.detail
