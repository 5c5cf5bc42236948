"""Distances on the Earth and a local metric projection for one city."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)

FloatArray = npt.NDArray[np.float64]


def haversine_m(
    lon1: npt.ArrayLike, lat1: npt.ArrayLike, lon2: npt.ArrayLike, lat2: npt.ArrayLike
) -> FloatArray:
    """Great-circle distance in metres, element-wise (degrees in)."""
    lam1, phi1, lam2, phi2 = (
        np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2)
    )
    h = (
        np.sin((phi2 - phi1) / 2.0) ** 2
        + np.cos(phi1) * np.cos(phi2) * np.sin((lam2 - lam1) / 2.0) ** 2
    )
    return np.asarray(2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


@dataclass(frozen=True, slots=True)
class LocalProjection:
    """Equirectangular projection centred on a city: metres east/north of ``(lon0, lat0)``.

    Within a few tens of kilometres of the centre, distances are within a fraction of a percent
    of the great-circle distance: good for nearest-road search and snap distances.
    """

    lon0: float
    lat0: float

    @property
    def _kx(self) -> float:
        return float(EARTH_RADIUS_M * np.radians(1.0) * np.cos(np.radians(self.lat0)))

    @property
    def _ky(self) -> float:
        return float(EARTH_RADIUS_M * np.radians(1.0))

    def to_xy(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        x = (np.asarray(lon, dtype=np.float64) - self.lon0) * self._kx
        y = (np.asarray(lat, dtype=np.float64) - self.lat0) * self._ky
        return x, y

    def to_lonlat(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        lon = np.asarray(x, dtype=np.float64) / self._kx + self.lon0
        lat = np.asarray(y, dtype=np.float64) / self._ky + self.lat0
        return lon, lat


def equal_area_xy(coords: npt.NDArray[np.float64], lat0: float) -> FloatArray:
    """Lon/lat rows (degrees) → metres in a cylindrical equal-area projection.

    The Lambert cylindrical equal-area projection on the sphere preserves area exactly, so a
    polygon's planar area after this transform is its area on the Earth; ``lat0`` (the
    standard parallel) only keeps shapes near the city undistorted.
    """
    k = float(np.cos(np.radians(lat0)))
    lam = np.radians(coords[:, 0])
    phi = np.radians(coords[:, 1])
    return np.column_stack((EARTH_RADIUS_M * lam * k, EARTH_RADIUS_M * np.sin(phi) / k))
