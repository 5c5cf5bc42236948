"""The day's demand: seeded, on the roads given, with the scenario's shares and windows."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.roads import load_network
from sim.demand import day_demand, sample_demand
from sim.scenario import load_scenario

# two straight streets: a 1 km one (east-west) and a 3 km one (north-south)
SHORT = [(-51.20, -30.05), (-51.20 + 1000 / (111_320 * math.cos(math.radians(30.05))), -30.05)]
LONG = [(-51.10, -30.00), (-51.10, -30.00 + 3000 / 111_320)]


def test_same_seed_same_parcels_other_seed_other_parcels(tiny_scenario: Path) -> None:
    d = load_scenario(tiny_scenario).demand
    a = sample_demand(d, 7, 7 * 3600, 19 * 3600, [SHORT, LONG])
    b = sample_demand(d, 7, 7 * 3600, 19 * 3600, [SHORT, LONG])
    c = sample_demand(d, 8, 7 * 3600, 19 * 3600, [SHORT, LONG])
    assert a == b
    assert a.parcels != c.parcels
    assert len(a.parcels) == d.parcels and [p.id for p in a.parcels] == [i.id for i in a.info]


def test_addresses_lie_on_the_roads_in_proportion_to_length(tiny_scenario: Path) -> None:
    d = dataclasses.replace(load_scenario(tiny_scenario).demand, parcels=4000)
    day = sample_demand(d, 1, 7 * 3600, 19 * 3600, [SHORT, LONG])
    on_short = sum(1 for p in day.parcels if abs(p.lat - (-30.05)) < 1e-6)
    on_long = sum(1 for p in day.parcels if abs(p.lon - (-51.10)) < 1e-6)
    assert on_short + on_long == 4000
    assert 0.21 < on_short / 4000 < 0.29  # 1 km of 4 km


def test_offsets_move_doors_beside_the_road(tiny_scenario: Path) -> None:
    d = dataclasses.replace(load_scenario(tiny_scenario).demand, parcels=500, address_offset_m=20.0)
    day = sample_demand(d, 1, 7 * 3600, 19 * 3600, [LONG])
    off_m = [abs(p.lon - (-51.10)) * 111_320 * math.cos(math.radians(p.lat)) for p in day.parcels]
    assert max(off_m) <= 20.01 and max(off_m) > 10


def test_shares_windows_late_and_urgent_orders(tiny_scenario: Path) -> None:
    sc = load_scenario(tiny_scenario)
    d = dataclasses.replace(sc.demand, parcels=3000)
    day = sample_demand(d, 3, sc.run.start_s, sc.run.end_s, [SHORT, LONG])
    late = [i for i in day.info if i.ordered_s > sc.run.start_s]
    assert 0.17 < len(late) / 3000 < 0.23
    assert all(9 * 3600 <= i.ordered_s <= 13 * 3600 for i in late)
    urgent = [i for i in day.info if i.urgent]
    assert 0.4 < len(urgent) / len(late) < 0.6
    assert all(i.earliest_s == i.ordered_s and i.latest_s == i.ordered_s + 3 * 3600 for i in urgent)
    windowed = [i for i in day.info if i.latest_s is not None and not i.urgent]
    slots = set(d.window_slots_s)
    assert all(
        (i.earliest_s, i.latest_s) in slots for i in windowed if i.ordered_s == sc.run.start_s
    )
    assert all(i.latest_s is not None and i.latest_s >= i.ordered_s + 3600 for i in windowed)
    early = [i for i in day.info if i.ordered_s == sc.run.start_s]
    assert 0.25 < sum(1 for i in early if i.latest_s is not None) / len(early) < 0.35
    # what the morning plan knows, and what arrives later
    assert len(day.known_by(sc.run.start_s)) == len(early)
    arrivals = day.arrivals_after(sc.run.start_s)
    assert sum(len(g) for _, g in arrivals) == len(late)
    assert [t for t, _ in arrivals] == sorted(t for t, _ in arrivals)


def test_urgent_orders_are_handed_in_the_second_they_arrive_the_others_in_batches(
    tiny_scenario: Path,
) -> None:
    sc = load_scenario(tiny_scenario)
    d = dataclasses.replace(sc.demand, parcels=600)
    day = sample_demand(d, 3, sc.run.start_s, sc.run.end_s, [SHORT, LONG])
    info = {i.id: i for i in day.info}
    batch_s = 900
    hand_ins = day.hand_ins(sc.run.start_s, batch_s)
    assert [t for t, _ in hand_ins] == sorted({t for t, _ in hand_ins})
    given = [p.id for _, ps in hand_ins for p in ps]
    assert sorted(given) == sorted(i.id for i in day.info if i.ordered_s > sc.run.start_s)
    urgent = 0
    for t, parcels in hand_ins:
        for p in parcels:
            ordered = info[p.id].ordered_s
            if info[p.id].urgent:
                urgent += 1
                assert t == ordered  # not a second later
            else:
                assert t >= ordered and t - ordered < batch_s
                assert (t - sc.run.start_s) % batch_s == 0
    assert urgent > 10


def test_no_roads_of_the_classes_is_a_config_error(tiny_scenario: Path) -> None:
    d = load_scenario(tiny_scenario).demand
    with pytest.raises(ConfigError, match=r"\[demand\] road_classes"):
        sample_demand(d, 1, 7 * 3600, 19 * 3600, [])


def test_shipped_small_scenario_draws_plain_parcels_on_its_city(configs_dir: Path) -> None:
    sc = load_scenario(configs_dir / "scenarios" / "poa_small.toml")
    net = load_network(sc.site, sc.van)
    day = day_demand(sc, net)
    assert len(day.parcels) == sc.demand.parcels
    assert all(type(p.lon) is float and type(p.lat) is float for p in day.parcels)
    snaps = net.snap_many([p.lon for p in day.parcels], [p.lat for p in day.parcels])
    assert bool(snaps.ok.all())  # every address is on a road the van may use
