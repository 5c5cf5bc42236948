"""The drivable filter, one-way rules and speed limits, tag by tag."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.roads.highways import DEFAULT_SPEED_KMH, is_drivable, parse_maxspeed, way_rules


@pytest.mark.parametrize(
    ("value", "kmh"),
    [
        ("50", 50.0),
        ("50 km/h", 50.0),
        ("30 mph", 30 * 1.609344),
        ("20mph", 20 * 1.609344),
        ("10 knots", 18.52),
        ("50; 40", 40.0),
        ("80;50", 50.0),
        ("PT:urban", 50.0),
        ("PT:rural", 90.0),
        ("BR:urban", 60.0),
        ("DE:zone30", 30.0),
        ("GB:nsl_single", 96.6),
        ("walk", 7.0),
    ],
)
def test_maxspeed_values_in_use_are_read(value: str, kmh: float) -> None:
    assert parse_maxspeed(value) == pytest.approx(kmh)


@pytest.mark.parametrize("value", ["none", "signals", "variable", "fast", "", "0", "-30", "XX:zz"])
def test_maxspeed_without_a_usable_number_gives_none(value: str) -> None:
    assert parse_maxspeed(value) is None


@settings(derandomize=True)
@given(st.integers(min_value=1, max_value=240))  # limits above 400 km/h are refused
def test_any_plain_number_is_that_many_kmh(kmh: int) -> None:
    assert parse_maxspeed(str(kmh)) == kmh
    assert parse_maxspeed(f"{kmh} mph") == pytest.approx(kmh * 1.609344)


@pytest.mark.parametrize(
    ("tags", "forward", "backward"),
    [
        ({"highway": "residential"}, True, True),
        ({"highway": "residential", "oneway": "yes"}, True, False),
        ({"highway": "residential", "oneway": "true"}, True, False),
        ({"highway": "residential", "oneway": "1"}, True, False),
        ({"highway": "residential", "oneway": "-1"}, False, True),
        ({"highway": "residential", "oneway": "no"}, True, True),
        ({"highway": "primary", "junction": "roundabout"}, True, False),
        ({"highway": "primary", "junction": "circular"}, True, False),
        ({"highway": "primary", "junction": "roundabout", "oneway": "no"}, True, True),
        ({"highway": "motorway"}, True, False),
        ({"highway": "motorway", "oneway": "no"}, True, True),
        ({"highway": "motorway_link"}, True, True),
    ],
)
def test_one_way_rules(tags: dict[str, str], forward: bool, backward: bool) -> None:
    rules = way_rules(tags)
    assert (rules.forward, rules.backward) == (forward, backward)


def test_directional_speed_limits_override_maxspeed() -> None:
    rules = way_rules(
        {
            "highway": "primary",
            "maxspeed": "50",
            "maxspeed:forward": "70",
            "maxspeed:backward": "40",
        }
    )
    assert (rules.forward_speed_kmh, rules.backward_speed_kmh) == (70.0, 40.0)


def test_class_default_when_maxspeed_is_missing_or_unusable() -> None:
    assert (
        way_rules({"highway": "residential"}).forward_speed_kmh == DEFAULT_SPEED_KMH["residential"]
    )
    assert way_rules({"highway": "primary", "maxspeed": "none"}).forward_speed_kmh == 60.0
    assert (
        way_rules({"highway": "secondary", "maxspeed:type": "PT:urban"}).forward_speed_kmh == 50.0
    )


@pytest.mark.parametrize(
    ("tags", "drivable"),
    [
        ({"highway": "residential"}, True),
        ({"highway": "footway"}, False),
        ({"highway": "track"}, False),
        ({"highway": "construction"}, False),
        ({"highway": "pedestrian"}, False),
        ({"highway": "service"}, True),
        ({"highway": "service", "service": "parking_aisle"}, False),
        ({"highway": "service", "service": "driveway"}, False),
        ({"highway": "residential", "access": "private"}, False),
        ({"highway": "residential", "access": "no"}, False),
        ({"highway": "residential", "access": "destination"}, True),
        ({"highway": "residential", "access": "delivery"}, True),
        ({"highway": "residential", "access": "no", "motor_vehicle": "destination"}, True),
        ({"highway": "residential", "motor_vehicle": "no"}, False),
        ({"highway": "residential", "motor_vehicle": "yes", "motorcar": "no"}, False),
        ({"highway": "residential", "area": "yes"}, False),
        ({"highway": "primary", "oneway": "reversible"}, False),
    ],
)
def test_drivable_filter(tags: dict[str, str], drivable: bool) -> None:
    assert is_drivable(tags) is drivable


def test_excluded_classes_are_not_drivable() -> None:
    assert is_drivable({"highway": "motorway"})
    assert not is_drivable({"highway": "motorway"}, frozenset({"motorway"}))
