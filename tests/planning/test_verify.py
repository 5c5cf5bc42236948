"""The independent verifier: a valid plan passes; each kind of broken plan is caught, by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from fleet.model import (
    Leg,
    Parcel,
    Plan,
    Site,
    Stop,
    StopKind,
    Unserved,
    UnservedReason,
    VanSpec,
)
from fleet.planning import verify_plan
from fleet.roads import RoadNetwork


def edit_stops(plan: Plan, pick: Callable[[Stop], bool], change: Callable[[Stop], Stop]) -> Plan:
    """A copy of ``plan`` with the first stop ``pick`` accepts changed by ``change``."""
    done = False
    routes = []
    for r in plan.routes:
        trips = []
        for t in r.trips:
            stops = []
            for s in t.stops:
                if not done and pick(s):
                    s = change(s)
                    done = True
                stops.append(s)
            trips.append(replace(t, stops=tuple(stops)))
        routes.append(replace(r, trips=tuple(trips)))
    assert done, "no stop matched"
    return replace(plan, routes=tuple(routes))


def is_door(s: Stop) -> bool:
    return s.kind is StopKind.DOOR


@pytest.fixture
def check(
    site: Site, van: VanSpec, net: RoadNetwork, day40: list[Parcel]
) -> Callable[..., list[str]]:
    def run(
        plan: Plan, parcels: list[Parcel] | None = None, spec: VanSpec | None = None
    ) -> list[str]:
        return verify_plan(plan, parcels if parcels is not None else day40, site, spec or van, net)

    return run


def assert_caught(problems: list[str], text: str) -> None:
    assert any(text in p for p in problems), f"{text!r} not in:\n" + "\n".join(problems)


def test_the_plan_the_planner_made_is_valid(
    planned40: Plan, check: Callable[..., list[str]]
) -> None:
    assert check(planned40) == []
    assert planned40.summary.served + planned40.summary.unserved == 40


def test_arriving_sooner_than_the_road_allows_is_caught(planned40: Plan, check) -> None:  # type: ignore[no-untyped-def]
    bad = edit_stops(planned40, is_door, lambda s: replace(s, arrival_s=s.arrival_s - 120))
    assert_caught(check(bad), "but the road takes until")


def test_a_missed_window_is_caught(planned40: Plan, day40: list[Parcel], check) -> None:  # type: ignore[no-untyped-def]
    door = next(s for r in planned40.routes for s in r.stops() if is_door(s))
    pid = door.parcels_delivered[0]
    tight = [
        replace(p, earliest_s=None, latest_s=int(door.arrival_s) - 60) if p.id == pid else p
        for p in day40
    ]
    assert_caught(check(planned40, tight), f"parcel {pid} arrives at")


def test_delivering_before_the_window_opens_is_caught(
    planned40: Plan, day40: list[Parcel], check
) -> None:  # type: ignore[no-untyped-def]
    door = next(s for r in planned40.routes for s in r.stops() if is_door(s))
    pid = door.parcels_delivered[0]
    later = [
        replace(p, earliest_s=int(door.departure_s) + 600, latest_s=None) if p.id == pid else p
        for p in day40
    ]
    assert_caught(check(planned40, later), "before its window opens")


def test_an_overloaded_van_is_caught(planned40: Plan, check, van: VanSpec) -> None:  # type: ignore[no-untyped-def]
    small = replace(van, payload_kg=5.0, cargo_volume_m3=0.01)
    problems = check(planned40, spec=small)
    assert_caught(problems, "more than the payload 5 kg")
    assert_caught(problems, "more than the cargo volume 0.01 m³")


def test_running_below_the_reserve_is_caught(planned40: Plan, check, van: VanSpec) -> None:  # type: ignore[no-untyped-def]
    tiny = replace(van, battery_kwh=3.0, consumption_kwh_per_km=0.3, range_km=10.0)
    assert_caught(check(planned40, spec=tiny), "below the 10 % reserve")


def test_a_road_faster_than_the_van_is_caught(planned40: Plan, check, van: VanSpec) -> None:  # type: ignore[no-untyped-def]
    slow = replace(van, top_speed_kmh=20.0)
    assert_caught(check(planned40, spec=slow), "allows more than the top speed")


def test_a_parcel_delivered_twice_is_caught(planned40: Plan, check) -> None:  # type: ignore[no-untyped-def]
    doors = [s for r in planned40.routes for s in r.stops() if is_door(s)]
    pid = doors[0].parcels_delivered[0]
    bad = edit_stops(
        planned40,
        lambda s: is_door(s) and s.node == doors[-1].node,
        lambda s: replace(s, parcels_delivered=(*s.parcels_delivered, pid)),
    )
    assert_caught(check(bad), f"hands over parcel {pid}, which is not on board")


def test_a_forgotten_parcel_is_caught(planned40: Plan, day40: list[Parcel], check) -> None:  # type: ignore[no-untyped-def]
    extra = replace(day40[0], id="FORGOTTEN")
    assert_caught(check(planned40, [*day40, extra]), "parcel FORGOTTEN: is neither delivered")


def test_delivered_and_unserved_at_once_is_caught(planned40: Plan, check) -> None:  # type: ignore[no-untyped-def]
    pid = next(pid for _, pid in planned40.delivered())
    bad = replace(
        planned40,
        unserved=(*planned40.unserved, Unserved(pid, UnservedReason.NOT_ENOUGH_VANS, "x")),
    )
    problems = check(bad)
    assert_caught(problems, "is delivered and also listed as unserved")
    assert_caught(problems, "summary: unserved")


def test_a_false_reason_is_caught(planned40: Plan, check) -> None:  # type: ignore[no-untyped-def]
    pid = next(pid for _, pid in planned40.delivered())
    bad = replace(planned40, unserved=(Unserved(pid, UnservedReason.TOO_HEAVY, "it is heavy"),))
    assert_caught(check(bad), "is listed too heavy but weighs")


def test_delivering_at_the_wrong_address_is_caught(
    planned40: Plan, day40: list[Parcel], check
) -> None:  # type: ignore[no-untyped-def]
    pid = next(pid for _, pid in planned40.delivered())
    moved = [replace(p, lon=-51.1650, lat=-30.0700) if p.id == pid else p for p in day40]
    assert_caught(check(planned40, moved), f"parcel {pid}: is delivered by")


def test_leaving_a_station_before_the_line_haul_unloaded_is_caught(planned40: Plan, check) -> None:  # type: ignore[no-untyped-def]
    late = edit_stops(
        planned40,
        lambda s: s.kind is StopKind.STATION,
        lambda s: replace(s, departure_s=s.departure_s + 12 * 3600),
    )
    assert_caught(check(late), "before the line haul has unloaded it")


def test_road_geometry_that_is_not_the_path_is_caught(planned40: Plan, check) -> None:  # type: ignore[no-untyped-def]
    bad = edit_stops(
        planned40,
        lambda s: len(s.geometry_in) > 2,
        lambda s: replace(s, geometry_in=s.geometry_in[:1] + s.geometry_in[2:]),
    )
    assert_caught(check(bad), "geometry_in is not the road path")


def test_a_trip_that_does_not_return_to_its_depot_is_caught(planned40: Plan, check) -> None:  # type: ignore[no-untyped-def]
    last = planned40.routes[-1].trips[0].stops[-1]
    bad = edit_stops(planned40, lambda s: s is last, lambda s: replace(s, kind=StopKind.DOOR))
    assert_caught(check(bad), "a trip must end at the van's depot")


def test_a_summary_that_does_not_add_up_is_caught(planned40: Plan, check) -> None:  # type: ignore[no-untyped-def]
    bad = replace(
        planned40, summary=replace(planned40.summary, served=planned40.summary.served + 1)
    )
    assert_caught(check(bad), "summary: served is")


def test_a_last_mile_van_on_the_line_haul_is_caught(planned40: Plan, check) -> None:  # type: ignore[no-untyped-def]
    lm = next(r for r in planned40.routes if r.leg is Leg.LAST_MILE)
    routes = tuple(replace(r, leg=Leg.LINE_HAUL) if r is lm else r for r in planned40.routes)
    assert_caught(check(replace(planned40, routes=routes)), "runs the last_mile leg")
