"""The fast mode's closed-form legs agree with sim.vehicle's stepping on real roads."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fleet.model import NodeId, VanSpec, load_van_spec
from fleet.roads import RoadNetwork, load_network
from sim.fast.motion import Leg
from sim.scenario import load_scenario
from sim.vehicle import EventKind, Vehicle


@pytest.fixture(scope="module")
def poa(configs_dir: Path) -> RoadNetwork:
    sc = load_scenario(configs_dir / "scenarios" / "poa_small.toml")
    return load_network(sc.site, sc.van)


@pytest.fixture(scope="module")
def van(configs_dir: Path) -> VanSpec:
    return load_van_spec(configs_dir / "van.toml")


def _step_until_arrived(vehicle: Vehicle, dt_s: float, limit_s: float) -> float:
    t = 0.0
    while t < limit_s:
        events = vehicle.step(dt_s)
        t += dt_s
        if any(e.kind is EventKind.ARRIVED for e in events):
            return t
    raise AssertionError("the vehicle never arrived")


@pytest.mark.parametrize("cap_mps", [16.67, 8.0])
def test_closed_form_leg_matches_stepped_vehicle_on_real_roads(
    poa: RoadNetwork, van: VanSpec, cap_mps: float
) -> None:
    rng = random.Random(5)
    nodes = list(poa.graph.nodes)
    checked = 0
    while checked < 6:
        a, b = NodeId(rng.choice(nodes)), NodeId(rng.choice(nodes))
        path = poa.path(a, b)
        if path.dist_m < 50:
            continue
        pts = [(float(x), float(y)) for x, y in path.coords]
        leg = Leg.plan(van, pts, cap_mps)
        vehicle = Vehicle(van, lon=pts[0][0], lat=pts[0][1])
        vehicle.append(pts, first_index=0, speed_cap_mps=cap_mps, stop_at_end=True)
        dt = 0.05
        arrived_s = _step_until_arrived(vehicle, dt, 4 * 3600)
        assert arrived_s == pytest.approx(leg.duration_s, abs=0.5 + dt + 0.002 * leg.duration_s)
        assert vehicle.odometer_m == pytest.approx(leg.dist_m, rel=1e-3)
        used_kwh = van.battery_kwh - vehicle.energy_kwh
        assert used_kwh == pytest.approx(leg.energy_kwh, rel=1e-3)
        assert (vehicle.lon, vehicle.lat) == pytest.approx(pts[-1], abs=1e-6)
        checked += 1


def test_short_leg_is_a_triangle_and_positions_run_along_the_points(van: VanSpec) -> None:
    pts = [(-51.2, -30.0), (-51.2, -30.0 + 40 / 111_195)]  # 40 m north
    leg = Leg.plan(van, pts, 16.67)
    assert leg.peak_mps < 16.67  # never reaches the cap in 40 m
    vehicle = Vehicle(van, lon=pts[0][0], lat=pts[0][1])
    vehicle.append(pts, first_index=0, speed_cap_mps=16.67, stop_at_end=True)
    assert _step_until_arrived(vehicle, 0.02, 600) == pytest.approx(leg.duration_s, abs=0.3)
    assert leg.dist_at(0) == 0 and leg.dist_at(leg.duration_s) == pytest.approx(leg.dist_m)
    half = leg.position_at(leg.duration_s / 2)
    assert pts[0][1] < half[1] < pts[1][1] and half[2] == pytest.approx(0.0, abs=1e-6)
    assert leg.speed_at(leg.duration_s / 2) > 0 and leg.speed_at(leg.duration_s) == 0
    assert leg.path_until(leg.duration_s)[-1] == pts[-1]


def test_zero_length_leg_takes_no_time(van: VanSpec) -> None:
    leg = Leg.plan(van, [(-51.2, -30.0), (-51.2, -30.0)], 16.67)
    assert (leg.dist_m, leg.duration_s, leg.energy_kwh) == (0.0, 0.0, 0.0)
