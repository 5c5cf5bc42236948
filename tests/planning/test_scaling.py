"""The one place that makes PyVRP integers: rounding keeps plans valid, and round trips hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.planning import scaling

units = st.integers(min_value=0, max_value=2**40)
metres = st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False)
kilos = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)


@settings(derandomize=True)
@given(units)
def test_whole_units_survive_a_round_trip_exactly(n: int) -> None:
    assert scaling.dist_need(scaling.to_m(n)) == n
    assert scaling.dist_limit(scaling.to_m(n)) == n
    assert scaling.duration_need(scaling.to_s(n)) == n
    assert scaling.latest(scaling.to_s(n)) == n
    assert scaling.earliest(scaling.to_s(n)) == n


@settings(derandomize=True)
@given(st.integers(min_value=0, max_value=10**9))
def test_grams_and_litres_survive_a_round_trip_exactly(n: int) -> None:
    assert scaling.weight_need(scaling.to_kg(n)) == n
    assert scaling.weight_limit(scaling.to_kg(n)) == n
    assert scaling.volume_need(scaling.to_m3(n)) == n
    assert scaling.volume_limit(scaling.to_m3(n)) == n


@settings(derandomize=True)
@given(metres)
def test_needs_round_up_and_limits_round_down_by_less_than_one_unit(x: float) -> None:
    need, limit = scaling.dist_need(x), scaling.dist_limit(x)
    assert limit <= need
    assert need - x > -1e-6 and need - x < 1.0 + 1e-6
    assert x - limit > -1e-6 and x - limit < 1.0 + 1e-6


@settings(derandomize=True)
@given(kilos)
def test_a_parcel_weighs_at_least_its_weight_in_grams(kg: float) -> None:
    grams = scaling.weight_need(kg)
    assert grams >= kg * 1000 - 1e-3
    assert grams < kg * 1000 + 1.0 + 1e-3


def test_binary_noise_does_not_add_a_unit() -> None:
    assert 4.001 / 0.001 > 4001  # the noise is real ...
    assert scaling.weight_need(4.001) == 4001  # ... and absorbed
    assert scaling.weight_limit(0.57) == 570  # also downwards (0.57 / 0.001 < 570)
    assert scaling.volume_need(0.005) == 5
    assert scaling.weight_limit(1000.0) == 1_000_000
    assert scaling.volume_limit(24.0) == 24_000


def test_a_payload_sum_fits_exactly_when_the_real_sum_fits() -> None:
    parts = [0.1] * 10_000  # 1000 kg in 0.1 kg parcels
    assert sum(scaling.weight_need(p) for p in parts) == scaling.weight_limit(1000.0)


def test_matrices_round_up_and_refuse_unreachable_entries() -> None:
    m = np.array([[0.0, 10.2], [3.000000001, 0.0]])
    assert scaling.dist_matrix(m).tolist() == [[0, 11], [3, 0]]
    assert scaling.duration_matrix(m).dtype == np.int64
    with pytest.raises(ValueError, match="unreachable"):
        scaling.dist_matrix(np.array([[0.0, math.inf], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="outside"):
        scaling.dist_matrix(np.array([[0.0, -5.0], [1.0, 0.0]]))


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e20])
def test_impossible_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        scaling.dist_need(bad)
