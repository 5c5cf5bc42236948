"""The pure vehicle model: speed caps, braking to stops, energy, door, faults, step invariance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.wire import DoorState, DriveState
from fleet.model import VanSpec, load_van_spec
from sim.vehicle import EventKind, Vehicle, distance_m

REPO = Path(__file__).resolve().parents[2]
LON0, LAT0 = -8.6100, 41.1500
M_PER_DEG_LAT = math.radians(1.0) * 6_371_008.8


@pytest.fixture(scope="module")
def spec() -> VanSpec:
    return load_van_spec(REPO / "configs" / "van.toml")


def north(m: float) -> tuple[float, float]:
    return (LON0, LAT0 + m / M_PER_DEG_LAT)


def run_until_arrived(v: Vehicle, dt_s: float, limit_s: float = 10_000) -> tuple[float, float]:
    """(time to arrive at the end, the highest speed seen)."""
    t = 0.0
    vmax = 0.0
    while t < limit_s:
        events = v.step(dt_s)
        t += dt_s
        vmax = max(vmax, v.speed_mps)
        if any(e.kind is EventKind.ARRIVED for e in events) and not v.queued:
            return t, vmax
    raise AssertionError("never arrived")


def test_drives_a_straight_kilometre_within_the_cap_and_stops_exactly_at_the_end(
    spec: VanSpec,
) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0)
    v.append([north(500), north(1000)], first_index=1, speed_cap_mps=10.0)
    t, vmax = run_until_arrived(v, 0.05)
    assert vmax <= 10.0 + 1e-9
    assert v.speed_mps == 0.0
    assert distance_m(v.lon, v.lat, *north(1000)) < 0.06
    assert v.odometer_m == pytest.approx(1000.0, abs=0.1)
    # 100 s at the cap, plus what acceleration (1.2 m/s²) and service braking (1.5 m/s²) cost
    expected = 1000 / 10 + 10 / (2 * 1.2) + 10 / (2 * 1.5)
    assert t == pytest.approx(expected, abs=0.5)
    assert v.last_wp == 2
    assert v.state is DriveState.HOLDING


def test_never_exceeds_60_kmh_even_if_the_cap_says_more(spec: VanSpec) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0)
    v.append([north(3000)], first_index=0, speed_cap_mps=40.0)
    _, vmax = run_until_arrived(v, 0.1)
    assert vmax == pytest.approx(60 / 3.6)


def test_slows_before_a_lower_cap_begins(spec: VanSpec) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0)
    v.append([north(1000)], first_index=0, speed_cap_mps=15.0)
    v.append([north(1200), north(1500)], first_index=1, speed_cap_mps=5.0)
    seen_at_slow_part = []
    while v.queued:
        v.step(0.05)
        if v.last_wp is not None and v.last_wp >= 0 and v.queued <= 2:
            seen_at_slow_part.append(v.speed_mps)
    assert max(seen_at_slow_part) <= 5.0 + 0.05


def test_a_full_charge_lasts_160_km(spec: VanSpec) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0)
    assert v.remaining_range_km == pytest.approx(160.0)
    v.append([north(20_000)], first_index=0, speed_cap_mps=16.0)
    run_until_arrived(v, 1.0)
    assert v.soc_pct == pytest.approx(100 * (1 - 20 / 160), abs=0.01)
    assert v.remaining_range_km == pytest.approx(140.0, abs=0.01)


def test_an_empty_battery_stops_the_van_and_says_so(spec: VanSpec) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0, soc_pct=1.0)  # 1.6 km left
    v.append([north(5000)], first_index=0, speed_cap_mps=16.0)
    kinds = [e.kind for _ in range(2000) for e in v.step(0.5)]
    assert EventKind.BATTERY_LOW not in kinds  # was already low at the start
    assert EventKind.BATTERY_EMPTY in kinds
    assert v.speed_mps == 0.0 and v.state is DriveState.FAULT
    assert 1600 <= v.odometer_m <= 1700


def test_emergency_stop_brakes_at_max_deceleration(spec: VanSpec) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0)
    v.append([north(5000)], first_index=0, speed_cap_mps=15.0)
    for _ in range(400):
        v.step(0.05)
    assert v.speed_mps == pytest.approx(15.0)
    odo = v.odometer_m
    v.emergency_stop()
    t = 0.0
    while v.speed_mps > 0:
        v.step(0.01)
        t += 0.01
    assert t == pytest.approx(15.0 / spec.max_decel_mps2, abs=0.02)
    assert v.odometer_m - odo == pytest.approx(15.0**2 / (2 * spec.max_decel_mps2), abs=0.3)
    v.step(5.0)
    assert v.speed_mps == 0.0 and v.state is DriveState.ESTOPPED
    v.release_estop()
    v.step(5.0)
    assert v.speed_mps > 0


def test_dwells_at_a_stop_point_then_goes_on(spec: VanSpec) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0)
    v.append([north(200)], first_index=0, speed_cap_mps=10.0, stop_at_end=True, dwell_s=30)
    v.append([north(400)], first_index=1, speed_cap_mps=10.0)
    events = []
    for _ in range(1200):
        events += v.step(0.1)
    kinds = [(e.kind, e.wp) for e in events if e.kind is not EventKind.STOPPED]
    assert kinds.index((EventKind.ARRIVED, 0)) < kinds.index((EventKind.DWELL_DONE, 0))
    assert (EventKind.ARRIVED, 1) in kinds
    assert v.last_wp == 1


def test_the_door_opens_only_standing_and_the_van_waits_for_it_to_close(spec: VanSpec) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0)
    assert v.open_door()
    v.append([north(100)], first_index=0, speed_cap_mps=10.0)
    v.step(1.0)
    assert v.door is DoorState.OPENING and v.speed_mps == 0.0
    v.step(5.0)
    assert v.door is DoorState.OPEN and v.odometer_m == 0.0
    v.close_door()
    v.step(3.0)
    assert v.door is DoorState.CLOSED
    v.step(3.0)
    assert v.speed_mps > 0
    assert not v.open_door()  # refused while moving


@settings(max_examples=20, deadline=None)
@given(
    legs=st.lists(st.floats(5.0, 400.0), min_size=1, max_size=6),
    cap=st.floats(2.0, 20.0),
    dt_s=st.sampled_from([0.02, 0.1, 1.0, 7.0]),
)
def test_a_coarse_step_drives_like_a_fine_one(
    spec: VanSpec, legs: list[float], cap: float, dt_s: float
) -> None:
    """The simulator's fast mode takes big steps: arrival time and energy must not change."""
    pts = []
    total = 0.0
    for i, leg in enumerate(legs):
        total += leg
        pts.append(((LON0 + (0.001 if i % 2 else 0.0)), LAT0 + total / M_PER_DEG_LAT))
    fine = Vehicle(spec, lon=LON0, lat=LAT0)
    coarse = Vehicle(spec, lon=LON0, lat=LAT0)
    for v in (fine, coarse):
        v.append(pts, first_index=0, speed_cap_mps=cap)
    t_fine, _ = run_until_arrived(fine, 0.01)
    t_coarse, _ = run_until_arrived(coarse, dt_s)
    assert abs(t_coarse - t_fine) <= dt_s + 0.5
    assert coarse.odometer_m == pytest.approx(fine.odometer_m, rel=1e-6, abs=0.01)
    assert coarse.energy_kwh == pytest.approx(fine.energy_kwh, rel=1e-6)


def _cruise(v: Vehicle, until_mps: float) -> None:
    for _ in range(10_000):
        v.step(0.05)
        if v.speed_mps >= until_mps - 1e-6:
            return
    raise AssertionError("never reached its speed")


def test_a_minimal_risk_stop_ends_at_the_roadside_when_no_stop_point_is_near(
    spec: VanSpec,
) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0)
    v.append([north(200), north(2000)], first_index=0, speed_cap_mps=12.0, stop_at_end=True)
    _cruise(v, 12.0)
    at_m = v.odometer_m
    assert v.stop_at_next_safe_place() is None  # no stop point within reach
    assert v.state is DriveState.HOLDING
    for _ in range(400):
        v.step(0.05)
    braking_m = 12.0**2 / (2 * v.service_decel_mps2)
    assert v.speed_mps == 0.0 and v.held
    assert v.odometer_m - at_m == pytest.approx(braking_m, abs=0.5)  # a controlled stop
    v.step(30.0)
    assert v.speed_mps == 0.0 and v.state is DriveState.HOLDING  # and it holds
    v.release_hold()
    v.step(2.0)
    assert v.speed_mps > 0.0 and v.state is DriveState.DRIVING


def test_a_minimal_risk_stop_pulls_up_at_a_stop_point_just_beyond_the_braking_distance(
    spec: VanSpec,
) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0)
    v.append([north(300)], first_index=0, speed_cap_mps=10.0, stop_at_end=True, dwell_s=60.0)
    v.append([north(900)], first_index=1, speed_cap_mps=10.0)
    braking_m = 10.0**2 / (2 * v.service_decel_mps2)  # 33 m
    while v.odometer_m < 300 - braking_m - 20:  # the door is 20 m beyond the braking distance
        v.step(0.05)
    assert v.speed_mps == pytest.approx(10.0)
    assert v.stop_at_next_safe_place() == 0  # the door, not the roadside 20 m before it
    assert v.state is DriveState.HOLDING
    events = [e for _ in range(2000) for e in v.step(0.05)]
    assert any(e.kind is EventKind.ARRIVED and e.wp == 0 for e in events)
    assert distance_m(v.lon, v.lat, *north(300)) < 0.1 and v.speed_mps == 0.0
    assert v.held and v.state is DriveState.HOLDING  # past its dwell too, until released
    v.release_hold()
    v.step(2.0)
    assert v.speed_mps > 0.0


def test_a_charging_van_with_segments_waiting_is_holding(spec: VanSpec) -> None:
    v = Vehicle(spec, lon=LON0, lat=LAT0, soc_pct=50.0)
    assert v.start_charging(60.0, 50.0)
    v.append([north(100)], first_index=0, speed_cap_mps=10.0)
    v.step(1.0)
    assert v.speed_mps == 0.0 and v.state is DriveState.HOLDING
