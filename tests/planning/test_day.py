"""plan_day on the real Porto Alegre streets: both legs, every limit, every reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from fleet.errors import ConfigError, InputError
from fleet.model import Leg, Parcel, Plan, Site, StopKind, UnservedReason, VanSpec
from fleet.planning import plan_day, verify_plan
from fleet.planning.borrow import Sharing
from fleet.roads import RoadNetwork
from tests.planning.conftest import PlanFn, parcel

CENTRO = (-51.22697, -30.03105)
NEAR_CENTRO = (-51.2245, -30.0335)
EAST_EDGE = (-51.1480, -30.0350)
IN_THE_LAKE = (-51.2530, -30.0662)
SOUTH_OF_AREA = (-51.2000, -30.1050)


def reasons(plan: Plan) -> dict[str, UnservedReason]:
    return {u.parcel_id: u.reason for u in plan.unserved}


def delivered(plan: Plan) -> Counter[str]:
    return Counter(pid for _, pid in plan.delivered())


def test_every_parcel_is_delivered_once_or_listed_with_a_reason(
    planned40: Plan, day40: list[Parcel]
) -> None:
    got = delivered(planned40)
    listed = reasons(planned40)
    for p in day40:
        assert (got[p.id] == 1) != (p.id in listed), p.id
    assert planned40.summary.served == sum(got.values())
    legs = {r.leg for r in planned40.routes}
    assert legs == {Leg.LINE_HAUL, Leg.LAST_MILE}


def test_the_same_seed_and_iterations_give_the_same_plan(
    plan: PlanFn, day40: list[Parcel], planned40: Plan
) -> None:
    assert plan(day40, seed=1) == planned40


def test_what_no_van_can_serve_is_listed_with_its_reason(plan: PlanFn) -> None:
    day = [
        parcel("OK", *NEAR_CENTRO),
        parcel("HEAVY", *NEAR_CENTRO, weight_kg=1200.0),
        parcel("BULKY", *NEAR_CENTRO, volume_m3=30.0),
        parcel("LAKE", *IN_THE_LAKE),
        parcel("SOUTH", *SOUTH_OF_AREA),
        parcel("TOO-EARLY", *NEAR_CENTRO, latest_s=6 * 3600 + 300),
        parcel("TOO-LATE", *NEAR_CENTRO, earliest_s=19 * 3600 + 59 * 60),
    ]
    result = plan(day)
    got = reasons(result)
    assert delivered(result) == {"OK": 1}
    assert got == {
        "HEAVY": UnservedReason.TOO_HEAVY,
        "BULKY": UnservedReason.TOO_LARGE,
        "LAKE": UnservedReason.OUTSIDE_AREA,
        "SOUTH": UnservedReason.OUTSIDE_AREA,
        "TOO-EARLY": UnservedReason.WINDOW_IMPOSSIBLE,
        "TOO-LATE": UnservedReason.WINDOW_IMPOSSIBLE,
    }
    detail = {u.parcel_id: u.detail for u in result.unserved}
    assert "1200 kg is more than the van's payload of 1000 kg" in detail["HEAVY"]
    assert "outside the operating area" in detail["SOUTH"]
    assert "from the nearest drivable road" in detail["LAKE"]
    assert "after its window closes at 06:05" in detail["TOO-EARLY"]


def test_a_parcel_beyond_one_charge_from_its_station_is_out_of_range(
    plan: PlanFn, van: VanSpec
) -> None:
    short = replace(van, battery_kwh=4.0, range_km=13.3333)  # 12 km after the reserve
    day = [
        parcel("NEAR", *NEAR_CENTRO, station="ST-CENTRO"),
        parcel("FAR", *EAST_EDGE, station="ST-CENTRO"),
    ]
    result = plan(day, spec=short)
    assert reasons(result) == {"FAR": UnservedReason.OUT_OF_RANGE}
    assert "more than one charge allows (12.0 km)" in result.unserved[0].detail


def test_an_address_with_no_way_back_is_unreachable(
    plan: PlanFn, net: RoadNetwork, site: Site, van: VanSpec
) -> None:
    g = net.graph
    node = next(
        n for n in sorted(g.nodes) if g.out_degree(n) >= 2 and g.in_degree(n) >= 2 and n % 7 == 3
    )
    closed = net.with_closures(edges=[(node, m) for m in g.successors(node)])
    lon, lat = net.lonlat(node)
    day = [parcel("TRAPPED", lon, lat), parcel("OK", *NEAR_CENTRO)]
    result = plan_day(day, site, van, closed, time_limit_s=30, max_iterations=300, workers=1)
    assert verify_plan(result, day, site, van, closed) == []
    assert reasons(result) == {"TRAPPED": UnservedReason.UNREACHABLE}


def test_too_few_vans_for_a_busy_window_leaves_parcels_with_not_enough_vans(
    plan: PlanFn, day40: list[Parcel]
) -> None:
    rush = [
        replace(p, station="ST-CENTRO", earliest_s=10 * 3600, latest_s=10 * 3600 + 900)
        for p in day40[:12]
    ]
    result = plan(rush, vans={"ST-CENTRO": 1}, sharing=Sharing.DEPOT)
    got = reasons(result)
    assert got and set(got.values()) == {UnservedReason.NOT_ENOUGH_VANS}
    assert 0 < result.summary.served < 12
    assert "no van of station ST-CENTRO had room or time" in result.unserved[0].detail


def test_vans_of_other_depots_serve_what_a_short_station_cannot(
    plan: PlanFn, day40: list[Parcel]
) -> None:
    rush = [
        replace(p, station="ST-CENTRO", earliest_s=10 * 3600, latest_s=10 * 3600 + 900)
        for p in day40[:12]
    ]
    result = plan(rush, vans={"ST-CENTRO": 1})  # whole-fleet sharing is the default
    assert result.unserved == ()
    lent = [r for r in result.routes if r.depot != "ST-CENTRO" and r.leg is Leg.LAST_MILE]
    assert lent
    for r in lent:
        trips = r.trips
        # drive to the station, trips from it (loading only there), drive home
        assert [s.ref for s in trips[0].stops] == [r.depot, "ST-CENTRO"]
        assert trips[-1].stops[-1].ref == r.depot
        for t in trips[1:-1]:
            assert t.stops[0].ref == "ST-CENTRO"
            assert all(s.kind is StopKind.DOOR for s in t.stops[1:-1])
        assert all(not s.parcels_loaded for t in trips for s in t.stops if s.ref != "ST-CENTRO")


def test_a_station_without_vans_serves_nothing_and_says_so(plan: PlanFn) -> None:
    result = plan([parcel("A", *NEAR_CENTRO, station="ST-CENTRO")], vans={"ST-CENTRO": 0})
    assert reasons(result) == {"A": UnservedReason.NOT_ENOUGH_VANS}
    assert "station ST-CENTRO has no van" in result.unserved[0].detail


def test_heavy_line_haul_takes_several_trips_reloading_at_the_warehouse(
    plan: PlanFn, day40: list[Parcel]
) -> None:
    heavy = [replace(p, weight_kg=300.0, earliest_s=None, latest_s=None) for p in day40[:10]]
    result = plan(heavy, vans={"WH-POA": 1})
    (haul,) = [r for r in result.routes if r.leg is Leg.LINE_HAUL]
    assert len(haul.trips) >= 3  # 3,000 kg in a 1,000 kg van
    for trip in haul.trips:
        assert trip.stops[0].load_after_kg <= 1000.0
        assert trip.stops[0].kind in (StopKind.DEPOT, StopKind.CHARGE)
    assert result.summary.served == 10


def test_a_van_charges_at_its_depot_when_the_next_trip_needs_it(
    plan: PlanFn, day40: list[Parcel], van: VanSpec
) -> None:
    # a slow charger and a small battery: loading alone does not refill what a trip uses
    weak = replace(van, battery_kwh=7.5, range_km=25.0, charging_power_kw=1.0)
    heavy = [replace(p, weight_kg=300.0, earliest_s=None, latest_s=None) for p in day40[:12]]
    result = plan(heavy, spec=weak, vans={"WH-POA": 1})
    (haul,) = [r for r in result.routes if r.leg is Leg.LINE_HAUL]
    kinds = [t.stops[0].kind for t in haul.trips]
    assert StopKind.CHARGE in kinds
    assert min(s.soc_pct for s in haul.stops()) >= weak.range_reserve_pct


def test_the_last_mile_leaves_a_station_only_after_the_line_haul_unloaded(
    planned40: Plan,
) -> None:
    unloaded = {
        pid: s.departure_s
        for r in planned40.routes
        if r.leg is Leg.LINE_HAUL
        for s in r.stops()
        if s.kind is StopKind.STATION
        for pid in s.parcels_delivered
    }
    checked = 0
    for r in planned40.routes:
        if r.leg is not Leg.LAST_MILE:
            continue
        for t in r.trips:
            first = t.stops[0]
            for pid in first.parcels_loaded:
                assert first.departure_s - 900 >= unloaded[pid] - 1e-6
                checked += 1
    assert checked == planned40.summary.served


def test_windows_are_met_at_every_door(planned40: Plan, day40: list[Parcel]) -> None:
    by_id = {p.id: p for p in day40}
    windows = 0
    for r in planned40.routes:
        for s in r.stops():
            for pid in s.parcels_delivered if s.kind is StopKind.DOOR else ():
                p = by_id[pid]
                if p.latest_s is not None:
                    assert s.arrival_s <= p.latest_s
                    windows += 1
                if p.earliest_s is not None:
                    assert s.departure_s >= p.earliest_s
    assert windows > 5


def test_progress_reports_stages_up_to_done(plan: PlanFn, day40: list[Parcel]) -> None:
    seen: list[tuple[str, float]] = []
    plan(day40[:6], progress=lambda stage, f: seen.append((stage, f)))
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and seen[-1] == ("done", 1.0)
    assert {"line haul", "last mile", "verifying"} <= {s for s, _ in seen}


def test_an_empty_day_is_an_empty_valid_plan(plan: PlanFn) -> None:
    result = plan([])
    assert result.routes == () and result.summary.served == 0


def test_bad_arguments_are_refused_by_name(
    site: Site, van: VanSpec, net: RoadNetwork, day40: list[Parcel]
) -> None:
    with pytest.raises(ConfigError, match="no depot 'ST-NOWHERE'"):
        plan_day(day40, site, van, net, vans={"ST-NOWHERE": 2})
    with pytest.raises(InputError, match="given twice"):
        plan_day([day40[0], day40[0]], site, van, net)
