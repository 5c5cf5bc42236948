"""A realistic day of orders on a real city, for trying the planner at any size.

Doors are points on residential streets (OSM ``residential`` and ``living_street``) inside
the site's operating area, drawn uniformly by street length. Parcels follow the distributions
documented in ``docs/orders.md``:

* 95 % small parcels: weight lognormal with a median of 1.2 kg (``sigma`` 0.8), clipped to
  0.1–20 kg; density uniform 100–300 kg/m³, so most are under 5 kg and under 0.05 m³;
* 5 % bulky items: 15–80 kg and 0.1–0.6 m³, uniform;
* 30 % with a two-hour delivery window starting at 09:00, 11:00, 13:00, 15:00 or 17:00.

The same seed gives the same orders.
"""

from __future__ import annotations

import numpy as np

from fleet.errors import InfeasibleError
from fleet.model.ids import ParcelId
from fleet.model.parcel import Parcel
from fleet.roads import RoadNetwork

DOOR_CLASSES = ("residential", "living_street")
SMALL_MEDIAN_KG = 1.2
SMALL_SIGMA = 0.8
SMALL_KG = (0.1, 20.0)
DENSITY_KG_M3 = (100.0, 300.0)
BULKY_SHARE = 0.05
BULKY_KG = (15.0, 80.0)
BULKY_M3 = (0.1, 0.6)
WINDOW_SHARE = 0.30
WINDOW_STARTS_H = (9, 11, 13, 15, 17)
WINDOW_LENGTH_S = 2 * 3600


def sample_orders(net: RoadNetwork, parcels: int, seed: int) -> list[Parcel]:
    """``parcels`` orders with doors on the residential streets of ``net``'s site."""
    if parcels < 0:
        raise ValueError("parcels must be >= 0")
    rng = np.random.default_rng(seed)
    edges = net.edges_of_class(DOOR_CLASSES)
    if not edges:
        raise InfeasibleError(f"site {net.site.name!r} has no residential streets to put doors on")
    g = net.graph
    lengths = np.asarray([float(g.edges[u, v]["length_m"]) for u, v in edges])
    pick = rng.choice(len(edges), size=parcels, p=lengths / lengths.sum())
    along = rng.random(parcels)
    bulky = rng.random(parcels) < BULKY_SHARE
    small_kg = np.clip(rng.lognormal(np.log(SMALL_MEDIAN_KG), SMALL_SIGMA, parcels), *SMALL_KG)
    density = rng.uniform(*DENSITY_KG_M3, parcels)
    bulky_kg = rng.uniform(*BULKY_KG, parcels)
    bulky_m3 = rng.uniform(*BULKY_M3, parcels)
    windowed = rng.random(parcels) < WINDOW_SHARE
    slot = rng.integers(0, len(WINDOW_STARTS_H), parcels)
    out: list[Parcel] = []
    width = max(6, len(str(parcels)))
    for i in range(parcels):
        u, v = edges[int(pick[i])]
        lon, lat = _point_along(g.edges[u, v]["geometry"], float(along[i]))
        weight = float(bulky_kg[i]) if bulky[i] else float(small_kg[i])
        volume = float(bulky_m3[i]) if bulky[i] else float(small_kg[i] / density[i])
        earliest = latest = None
        if windowed[i]:
            earliest = WINDOW_STARTS_H[int(slot[i])] * 3600
            latest = earliest + WINDOW_LENGTH_S
        out.append(
            Parcel(
                id=ParcelId(f"P{i + 1:0{width}d}"),
                lon=round(lon, 7),
                lat=round(lat, 7),
                weight_kg=round(weight, 2),
                volume_m3=round(max(volume, 0.001), 3),
                earliest_s=earliest,
                latest_s=latest,
            )
        )
    return out


def _point_along(geometry: list[tuple[float, float]], fraction: float) -> tuple[float, float]:
    """The point at ``fraction`` of a polyline's length (planar in degrees: short edges)."""
    pts = np.asarray(geometry, dtype=np.float64)
    if len(pts) == 1:
        return float(pts[0, 0]), float(pts[0, 1])
    seg = np.hypot(*(pts[1:] - pts[:-1]).T)
    total = float(seg.sum())
    if total == 0.0:
        return float(pts[0, 0]), float(pts[0, 1])
    target = fraction * total
    cum = np.cumsum(seg)
    k = int(np.searchsorted(cum, target))
    k = min(k, len(seg) - 1)
    before = float(cum[k - 1]) if k else 0.0
    t = (target - before) / float(seg[k]) if seg[k] > 0 else 0.0
    p = pts[k] + t * (pts[k + 1] - pts[k])
    return float(p[0]), float(p[1])
