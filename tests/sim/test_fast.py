"""The fast mode runs a whole small day in seconds, deterministically, and keeps every parcel
accounted for; a breakdown's parcels go out on other vans."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fleet.model import ParcelId, StopKind
from fleet.roads import RoadNetwork, load_network
from sim.day import PreparedDay, prepare_day
from sim.fast import FastRun
from sim.kpi import compute_kpis
from sim.scenario import (
    Breakdown,
    ControllerRestart,
    LinkLoss,
    RoadClosure,
    Scenario,
    SerialCorruption,
    load_scenario,
)

MAX_ITERATIONS = 300  # the plan must not depend on the machine's speed


@pytest.fixture(scope="module")
def small(configs_dir: Path) -> Scenario:
    # two vans at every depot, so that a broken van's parcels have somewhere to go
    return load_scenario(configs_dir / "scenarios" / "poa_small.toml").with_overrides(vans=10)


@pytest.fixture(scope="module")
def net(small: Scenario) -> RoadNetwork:
    return load_network(small.site, small.van)


@pytest.fixture(scope="module")
def day(small: Scenario, net: RoadNetwork) -> PreparedDay:
    return prepare_day(small, net=net, max_iterations=MAX_ITERATIONS, workers=1)


def _with_events(day: PreparedDay, *events: object) -> PreparedDay:
    sc = dataclasses.replace(day.scenario, events=tuple(events))  # type: ignore[arg-type]
    return dataclasses.replace(day, scenario=sc)


def test_a_small_day_runs_in_seconds_and_delivers_every_parcel_once(day: PreparedDay) -> None:
    trace = FastRun(day).run()
    k = compute_kpis(trace, day.scenario.van)
    assert trace.wall_s < 10
    assert k.parcels == 40 and k.delivered == 40 and k.failed == 0
    assert (k.delivered_twice, k.delivered_unloaded, k.lost, k.loaded_unavailable) == (0, 0, 0, 0)
    assert k.km_driven > 0 and k.energy_kwh == pytest.approx(
        k.km_driven * day.scenario.van.consumption_kwh_per_km, rel=1e-4
    )
    assert k.replans == 0
    # the day ends when there is nothing left to do, on the 5-minute grid
    assert (trace.end_s - trace.start_s) % 300 == 0 and trace.end_s < day.scenario.run.end_s
    # every door delivery happened at the door, by a van of the parcel's station
    doors = {p.id: (p.lon, p.lat) for p in day.demand.parcels}
    assert {d.parcel for d in trace.delivered} == set(doors)


def test_same_day_same_trace(day: PreparedDay) -> None:
    a = compute_kpis(FastRun(day).run(), day.scenario.van)
    b = compute_kpis(FastRun(day).run(), day.scenario.van)
    assert dataclasses.replace(a, wall_s=0.0) == dataclasses.replace(b, wall_s=0.0)


def test_a_breakdown_sends_its_parcels_out_on_other_vans(day: PreparedDay) -> None:
    # last-mile vans are out with parcels aboard: a van leaves its station at the planned
    # departure (the bridge holds it until then), so break down just after the first door
    at = (
        min(s.arrival_s for r in day.plan.routes for s in r.stops() if s.kind is StopKind.DOOR)
        + 60.0
    )
    broken_day = _with_events(day, Breakdown(at_s=at, van="busiest", recovery_s=1800))
    trace = FastRun(broken_day).run()
    k = compute_kpis(trace, day.scenario.van)
    (b,) = trace.breakdowns
    assert len(b.parcels) > 0
    assert k.replans_by_cause == {"breakdown": 1}
    delivered_by = {d.parcel: d.van for d in trace.delivered}
    assert all(delivered_by.get(ParcelId(p)) not in (None, b.van) for p in b.parcels)
    assert (k.delivered_twice, k.lost) == (0, 0)
    assert k.delivered == k.parcels == 40
    # the broken van stopped where it broke down and never moved again
    assert all(d.t1_s <= at + 1e-6 for d in trace.drives if d.van == b.van)


def test_every_other_event_kind_runs(day: PreparedDay, configs_dir: Path) -> None:
    events = (
        RoadClosure(at_s=7 * 3600, until_s=9 * 3600, center=(-51.215, -30.035), radius_m=120.0),
        LinkLoss(at_s=7 * 3600 + 600, van="busiest", duration_s=900),
        SerialCorruption(
            at_s=7 * 3600 + 700, van="ST-CENTRO-01", duration_s=600, frame_error_share=0.05
        ),
        ControllerRestart(at_s=7 * 3600 + 1200, down_s=60),
    )
    trace = FastRun(_with_events(day, *events)).run()
    k = compute_kpis(trace, day.scenario.van)
    kinds = [i.kind for i in trace.incidents]
    for kind in (
        "link_loss",
        "link_restored",
        "serial_corruption",
        "controller_restart",
        "road_reopened",
    ):
        assert kind in kinds
    (closure,) = trace.closures
    assert closure.lines and len(closure.polygon) > 10
    # every parcel is accounted for: delivered, or failed with a reason
    assert k.lost == 0 and k.delivered + k.failed == k.parcels
    assert k.replans_by_cause.get("link_loss") == 1  # offline past the controller's grace
    # the closure asks for a re-plan, and its lifting too
    assert k.replans_by_cause.get("road_closure") == 2
    assert (k.delivered_twice, k.loaded_unavailable) == (0, 0)


def test_the_report_of_a_day_maps_the_routes_driven(day: PreparedDay, tmp_path: Path) -> None:
    from sim.report import RunInfo, write_run_report

    sc = day.scenario
    broken = _with_events(day, Breakdown(at_s=7 * 3600 + 1800, van="busiest", recovery_s=1800))
    trace = FastRun(broken).run()
    k = compute_kpis(trace, sc.van)
    info = RunInfo(
        sc.name,
        sc.description,
        sc.site.name,
        sc.day.isoformat(),
        "fast",
        sc.seed,
        sc.fleet.total,
        40,
        None,
    )
    page = write_run_report(tmp_path, trace, k, net=day.net, info=info)
    text = (tmp_path / "map.html").read_text()
    for layer in ("Routes driven", "Breakdowns", "Stations", "Warehouse", "Deliveries"):
        assert layer in text
    assert "OpenStreetMap" in text
    assert "srcdoc=" in page.read_text()
    assert "| 07:30:00 | breakdown | " in (tmp_path / "report.md").read_text()


def test_a_planner_crash_in_a_replan_is_a_failed_replan_not_a_stalled_day(
    day: PreparedDay,
) -> None:
    at = 7 * 3600 + 1800
    run = FastRun(_with_events(day, Breakdown(at_s=at, van="busiest", recovery_s=1800)))

    def crash(request: object) -> object:
        raise RuntimeError("Used more than 1 vehicles of type 0.")

    run.planning.replan = crash  # type: ignore[method-assign, assignment]
    trace = run.run()
    failed = [i for i in trace.incidents if i.kind == "replan_failed"]
    assert failed and "the planner crashed" in failed[0].detail
    k = compute_kpis(trace, day.scenario.van)
    assert k.lost == 0 and k.delivered_twice == 0
    assert k.delivered > 0 and trace.end_s < day.scenario.run.end_s  # the day went on


def test_a_rescue_trip_takes_a_broken_station_vans_load_over_where_it_stands(
    day: PreparedDay,
) -> None:
    # the station van with the most parcels on its first trip breaks down after its first door
    route = max(
        (r for r in day.plan.routes if r.van_id.startswith("ST-")),
        key=lambda r: sum(len(s.parcels_loaded) for s in r.trips[0].stops),
    )
    at = next(s.arrival_s for s in route.trips[0].stops if s.kind is StopKind.DOOR) + 60.0
    trace = FastRun(_with_events(day, Breakdown(at_s=at, van=route.van_id, recovery_s=1800))).run()
    k = compute_kpis(trace, day.scenario.van)
    (b,) = trace.breakdowns
    taken = [ld for ld in trace.loaded if ld.from_van == b.van]
    assert taken, "another van met the broken one and took its load over"
    assert {ld.parcel for ld in taken} == set(b.parcels)
    assert len({ld.van for ld in taken}) == 1 and taken[0].van != b.van
    # sooner than the 30 minutes its load would take to come back to its station
    (rec,) = k.breakdowns
    assert rec.recovered == rec.parcels and rec.recovery_s is not None
    assert rec.recovery_s < 1800
    assert (k.delivered_twice, k.delivered_unloaded, k.lost, k.loaded_unavailable) == (0, 0, 0, 0)
    assert k.delivered == k.parcels == 40
