"""Parcel: impossible data is refused at construction, naming the parcel and the field."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from fleet.errors import InputError
from fleet.model import DepotId, Parcel, ParcelId

GOOD = Parcel(ParcelId("P1"), -51.2, -30.03, 2.5, 0.01, 9 * 3600, 12 * 3600, None, None)


def test_a_good_parcel_is_accepted_and_knows_it_has_a_window() -> None:
    assert GOOD.has_window
    assert not replace(GOOD, earliest_s=None, latest_s=None).has_window
    assert replace(GOOD, station=DepotId("ST-1")).station == "ST-1"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"weight_kg": -1.0}, "weight_kg"),
        ({"volume_m3": -0.1}, "volume_m3"),
        ({"weight_kg": math.nan}, "weight_kg"),
        ({"lon": 200.0}, "lon"),
        ({"lat": -95.0}, "lat"),
        ({"lat": math.inf}, "lat"),
        ({"earliest_s": 13 * 3600}, "earliest_s"),
        ({"latest_s": 90_000}, "latest_s"),
        ({"service_s": -5.0}, "service_s"),
        ({"id": ParcelId(" ")}, "parcel id"),
    ],
)
def test_impossible_values_are_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    with pytest.raises(InputError, match=field):
        replace(GOOD, **change)  # type: ignore[arg-type]
