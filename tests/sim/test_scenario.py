"""Scenarios: what a file says is what the simulator gets; every mistake names file, table, key."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fleet.errors import ConfigError
from fleet.model import DepotId
from fleet.planning.borrow import Sharing
from sim.scenario import (
    Breakdown,
    ControllerRestart,
    Distribution,
    Fleet,
    LinkLoss,
    RoadClosure,
    SerialCorruption,
    load_scenario,
)


def test_tiny_scenario_reads_every_table(tiny_scenario: Path) -> None:
    sc = load_scenario(tiny_scenario)
    assert sc.name == "tiny"
    assert sc.seed == 7
    assert sc.run.start_s == 7 * 3600 and sc.run.end_s == 19 * 3600
    assert sc.fleet.warehouse_vans == 1
    assert dict(sc.fleet.station_vans) == {"ST-A": 2, "ST-B": 2}
    # the fleet is applied to the site the planner sees
    assert sc.site.warehouse.vans == 1
    assert [s.vans for s in sc.site.stations] == [2, 2]
    assert sc.van_ids() == ["WH-T-01", "ST-A-01", "ST-A-02", "ST-B-01", "ST-B-02"]
    d = sc.demand
    assert d.parcels == 40
    assert d.window_slots_s == ((9 * 3600, 12 * 3600), (13 * 3600, 17 * 3600))
    assert d.weight_kg.kind == "lognormal" and d.weight_kg.median == 3.0
    assert d.urgent_share == 0.5
    # events come sorted by time, each of its kind
    kinds = [type(e) for e in sc.events_by_time()]
    assert kinds == [RoadClosure, Breakdown, LinkLoss, SerialCorruption, ControllerRestart]
    closure = sc.events[1]
    assert isinstance(closure, RoadClosure)
    assert closure.center == (-51.21, -30.04) and closure.radius_m == 300
    assert closure.until_s == 12 * 3600


def _variant(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert re.search(old, text, flags=re.M), old
    path.write_text(re.sub(old, new, text, count=1, flags=re.M))
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (r"^seed = 7$", "seed = 7\ncolour = 1", r"\[scenario\] colour: unknown key"),
        (r"^parcels = 40$", "parcels = -1", r"\[demand\] parcels: expected a whole number >= 0"),
        (r"^day = .*$", 'day = "24/11/2026"', r"\[scenario\] day: expected a date YYYY-MM-DD"),
        (r'kind = "uniform"', 'kind = "gaussian"', r"\[demand.volume_m3\] kind: expected one of"),
        (
            r"min = 0.01, max = 0.1",
            "min = 0.5, max = 0.1",
            r"\[demand.volume_m3\] max: expected max >= min",
        ),
        (
            r'"13:00-17:00"',
            '"17:00-13:00"',
            r"\[demand\] window_slots: the window '17:00-13:00' must end after",
        ),
        (
            r'"13:00-17:00"',
            '"13:00-22:00"',
            r"\[demand\] window_slots: every window must lie inside",
        ),
        (
            r'van = "ST-A-01"',
            'van = "ST-Z-09"',
            r"\[events\[\d\]\] van: no van 'ST-Z-09' in this fleet",
        ),
        (r'kind = "breakdown"', 'kind = "meteor"', r"\[events\[0\]\] kind: expected one of"),
        (r'at = "10:00"', 'at = "23:00"', r"\[events\[0\]\] at: the event must happen inside"),
        (
            r"radius_m = 300.0",
            "radius_m = 300.0\nnear = [-51.2, -30.0]",
            r"exactly one of .* \(got near, center\)",
        ),
        (r'until = "12:00"', 'until = "09:00"', r"until: a closure must end after it starts"),
        (
            r"frame_error_share = 0.05",
            "frame_error_share = 1.5",
            r"frame_error_share: expected a number < 1",
        ),
        (
            r"station_vans = 2",
            "station_vans = 2\n[fleet.by_station]\nST-Q = 3",
            r"\[fleet.by_station\] ST-Q: no station 'ST-Q'",
        ),
        (r'site = "site.toml"', 'site = "nowhere.toml"', r"nowhere.toml: file not found"),
        (r"^\[demand\]$", "[demandd]", r"demand: missing|demandd"),
    ],
    ids=[
        "unknown-key",
        "negative-parcels",
        "bad-date",
        "unknown-distribution",
        "inverted-range",
        "inverted-window",
        "window-outside-day",
        "unknown-van",
        "unknown-event",
        "event-after-day",
        "two-closure-shapes",
        "closure-ends-before-start",
        "share-above-one",
        "unknown-station",
        "missing-site",
        "misspelt-table",
    ],
)
def test_mistakes_name_file_table_and_key(
    tiny_scenario: Path, old: str, new: str, expected: str
) -> None:
    path = _variant(tiny_scenario, old, new)
    with pytest.raises(ConfigError, match=expected) as info:
        load_scenario(path)
    assert str(path.parent) in str(info.value)


def test_sharing_is_whole_fleet_unless_the_run_says_per_depot(tiny_scenario: Path) -> None:
    assert load_scenario(tiny_scenario).run.sharing is Sharing.FLEET
    path = _variant(tiny_scenario, r'^end = "19:00"$', 'end = "19:00"\nsharing = "depot"')
    assert load_scenario(path).run.sharing is Sharing.DEPOT
    _variant(path, r'^sharing = "depot"$', 'sharing = "station"')
    with pytest.raises(ConfigError, match=r"\[run\] sharing: expected one of fleet, depot"):
        load_scenario(path)


def test_area_closure_reads_a_polygon(tiny_scenario: Path) -> None:
    path = _variant(
        tiny_scenario,
        r"^center = .*\nradius_m = 300.0$",
        "area = [{lon = -51.2, lat = -30.0}, {lon = -51.19, lat = -30.0}, {lon = -51.19, lat = -30.01}]",
    )
    sc = load_scenario(path)
    closure = next(e for e in sc.events if isinstance(e, RoadClosure))
    assert closure.polygon == ((-51.2, -30.0), (-51.19, -30.0), (-51.19, -30.01))


def test_fleet_resize_keeps_shares_and_a_van_at_each_depot() -> None:
    fleet = Fleet(warehouse_vans=2, station_vans={DepotId("A"): 6, DepotId("B"): 2})
    big = fleet.resized(1000)
    assert big.total == 1000
    assert big.warehouse_vans == 200 and big.station_vans == {"A": 600, "B": 200}
    small = fleet.resized(3)
    assert small.total == 3 and small.warehouse_vans == 1 and all(small.station_vans.values())
    odd = fleet.resized(11)
    assert odd.total == 11
    with pytest.raises(ConfigError, match="--vans"):
        fleet.resized(0)


def test_overrides_resize_fleet_and_recheck_event_vans(tiny_scenario: Path) -> None:
    sc = load_scenario(tiny_scenario)
    big = sc.with_overrides(vans=20, parcels=500, seed=3, speedup=120)
    assert big.fleet.total == 20 and len(big.van_ids()) == 20
    assert sum(d.vans for d in big.site.depots) == 20
    assert big.demand.parcels == 500 and big.seed == 3 and big.run.speedup == 120
    # the serial corruption's van (ST-B-01) must still exist after shrinking; the error
    # names the event by its place in the file
    with pytest.raises(ConfigError, match=r"\[events\[3\]\] van: no van 'ST-B-01'"):
        sc.with_overrides(vans=1)


def test_distributions_stay_in_bounds_and_are_seeded() -> None:
    d = Distribution(kind="lognormal", low=0.5, high=20.0, median=3.0, sigma=1.0)
    a = d.sample(np.random.default_rng(1), 5000)
    b = d.sample(np.random.default_rng(1), 5000)
    assert (a == b).all()
    assert a.min() >= 0.5 and a.max() <= 20.0
    assert 2.5 < float(np.median(a)) < 3.5
    t = Distribution(kind="triangular", low=1.0, high=3.0, mode=2.0)
    assert abs(float(t.sample(np.random.default_rng(2), 20000).mean()) - t.mean) < 0.02


@pytest.mark.parametrize("name", ["normal", "heavy", "bad_day", "poa_small"])
def test_shipped_scenarios_load(configs_dir: Path, name: str) -> None:
    sc = load_scenario(configs_dir / "scenarios" / f"{name}.toml")
    assert sc.name == name
    assert sc.fleet.total >= 3 and sc.demand.parcels > 0


def test_bad_day_has_every_kind_of_event(configs_dir: Path) -> None:
    sc = load_scenario(configs_dir / "scenarios" / "bad_day.toml")
    kinds = {type(e) for e in sc.events}
    assert kinds == {Breakdown, RoadClosure, LinkLoss, SerialCorruption, ControllerRestart}
