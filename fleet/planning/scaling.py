"""The one place where physical quantities become PyVRP's integers and back.

PyVRP works in integers. Our units: distance in whole **metres**, time in whole **seconds**,
weight in **grams**, volume in **litres**. Every conversion rounds in the direction that keeps
a plan valid in the real, unrounded world:

* what the van needs (a leg's distance or duration, a service time, a parcel's weight or
  volume, an earliest start) is rounded **up**;
* what the van has (payload, cargo volume, range, a latest arrival) is rounded **down**.

So a solution that PyVRP calls feasible with these integers is also feasible with the exact
floats the verifier recomputes. Values are first rounded to a millionth of a unit so that
binary noise (``0.29 * 1000 == 290.00000000000006``) does not add a whole unit.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

M_PER_UNIT = 1.0  # one distance unit is one metre
S_PER_UNIT = 1.0  # one duration unit is one second
G_PER_KG = 1000.0  # weight unit: gram
L_PER_M3 = 1000.0  # volume unit: litre
_NOISE_DIGITS = 6

# PyVRP accepts values up to about 2**44; we refuse anything near it.
MAX_INT = 2**40

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _up(value: float, per_unit: float) -> int:
    if not math.isfinite(value):
        raise ValueError(f"cannot scale a non-finite value {value!r}")
    scaled = math.ceil(round(value / per_unit, _NOISE_DIGITS))
    if abs(scaled) > MAX_INT:
        raise ValueError(f"{value!r} is too large to scale ({scaled} > {MAX_INT})")
    return scaled


def _down(value: float, per_unit: float) -> int:
    if not math.isfinite(value):
        raise ValueError(f"cannot scale a non-finite value {value!r}")
    scaled = math.floor(round(value / per_unit, _NOISE_DIGITS))
    if abs(scaled) > MAX_INT:
        raise ValueError(f"{value!r} is too large to scale ({scaled} > {MAX_INT})")
    return scaled


# -- what the van needs: rounded up --------------------------------------------------------
def dist_need(dist_m: float) -> int:
    return _up(dist_m, M_PER_UNIT)


def duration_need(time_s: float) -> int:
    return _up(time_s, S_PER_UNIT)


def weight_need(weight_kg: float) -> int:
    return _up(weight_kg, 1.0 / G_PER_KG)


def volume_need(volume_m3: float) -> int:
    return _up(volume_m3, 1.0 / L_PER_M3)


def earliest(time_s: float) -> int:
    """An earliest start: rounded up (never earlier than asked)."""
    return _up(time_s, S_PER_UNIT)


# -- what the van has: rounded down --------------------------------------------------------
def dist_limit(dist_m: float) -> int:
    return _down(dist_m, M_PER_UNIT)


def weight_limit(weight_kg: float) -> int:
    return _down(weight_kg, 1.0 / G_PER_KG)


def volume_limit(volume_m3: float) -> int:
    return _down(volume_m3, 1.0 / L_PER_M3)


def latest(time_s: float) -> int:
    """A latest arrival: rounded down (never later than asked)."""
    return _down(time_s, S_PER_UNIT)


# -- matrices -----------------------------------------------------------------------------
def _matrix_up(values: FloatArray, per_unit: float, name: str) -> IntArray:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} matrix has unreachable (infinite) or NaN entries")
    scaled = np.ceil(np.round(values / per_unit, _NOISE_DIGITS))
    if scaled.size and (scaled.max() > MAX_INT or scaled.min() < 0):
        raise ValueError(f"{name} matrix has values outside 0..{MAX_INT} after scaling")
    return scaled.astype(np.int64)


def dist_matrix(dist_m: FloatArray) -> IntArray:
    """Metres → whole metres, rounded up; every entry must be finite and >= 0."""
    return _matrix_up(dist_m, M_PER_UNIT, "distance")


def duration_matrix(time_s: FloatArray) -> IntArray:
    """Seconds → whole seconds, rounded up; every entry must be finite and >= 0."""
    return _matrix_up(time_s, S_PER_UNIT, "duration")


# -- back to physical units (exact: every integer is representable) -------------------------
def to_m(units: int) -> float:
    return units * M_PER_UNIT


def to_s(units: int) -> float:
    return units * S_PER_UNIT


def to_kg(grams: int) -> float:
    return grams / G_PER_KG


def to_m3(litres: int) -> float:
    return litres / L_PER_M3
