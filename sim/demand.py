"""The day's demand: parcels drawn from a scenario with its seed, on the real road network.

Delivery addresses lie along roads of the scenario's classes (residential streets by
default), picked with probability proportional to road length, optionally a few metres off
the road. Weights and volumes come from the scenario's distributions; a share of parcels get
a delivery window from the scenario's slots; a share are ordered during the day (unknown to
the morning plan) and some of those are urgent: they must arrive within ``urgent_within_s``.

The same scenario, seed and road network always give the same parcels: each aspect draws
from its own child of one ``numpy.random.SeedSequence``, so changing, say, the window share
does not move the addresses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fleet.errors import ConfigError, RoadError
from fleet.model import Parcel, ParcelId
from fleet.roads import RoadNetwork
from sim.scenario import Demand, Scenario
from sim.trace import LonLat, ParcelInfo

_EARTH_M_PER_DEG = 111_320.0


@dataclass(frozen=True, slots=True)
class DayDemand:
    """Every parcel of the day and when each becomes known."""

    parcels: tuple[Parcel, ...]
    info: tuple[ParcelInfo, ...]  # same order as ``parcels``

    def known_by(self, t_s: float) -> list[Parcel]:
        """Parcels whose order has arrived by ``t_s``."""
        return [p for p, i in zip(self.parcels, self.info, strict=True) if i.ordered_s <= t_s]

    def arrivals_after(self, t_s: float) -> list[tuple[int, list[Parcel]]]:
        """Orders arriving after ``t_s``, grouped by arrival second, in time order."""
        groups: dict[int, list[Parcel]] = {}
        for p, i in zip(self.parcels, self.info, strict=True):
            if i.ordered_s > t_s:
                groups.setdefault(i.ordered_s, []).append(p)
        return sorted(groups.items())

    def hand_ins(self, start_s: float, batch_s: int) -> list[tuple[int, list[Parcel]]]:
        """When the dispatcher hands the orders arriving after ``start_s`` to the controller:
        an urgent order at once (the second it arrives), the others batched at the next
        multiple of ``batch_s`` after ``start_s``. In time order; an urgent order arriving
        on a batch's second goes in with that batch."""
        urgent = {i.id for i in self.info if i.urgent}
        groups: dict[int, list[Parcel]] = {}
        for t_s, parcels in self.arrivals_after(start_s):
            for p in parcels:
                slot = t_s if p.id in urgent else start_s + -(-(t_s - start_s) // batch_s) * batch_s
                groups.setdefault(int(slot), []).append(p)
        return sorted(groups.items())


def _line_lengths_m(lines: Sequence[Sequence[LonLat]]) -> list[np.ndarray]:
    """Per line, the cumulative length (m) at each point (equirectangular, fine at city scale)."""
    out: list[np.ndarray] = []
    for line in lines:
        pts = np.asarray(line, dtype=np.float64)
        k = math.cos(math.radians(float(pts[:, 1].mean())))
        dx = np.diff(pts[:, 0]) * k * _EARTH_M_PER_DEG
        dy = np.diff(pts[:, 1]) * _EARTH_M_PER_DEG
        out.append(np.concatenate([[0.0], np.cumsum(np.hypot(dx, dy))]))
    return out


def _point_along(line: Sequence[LonLat], cum_m: np.ndarray, at_m: float, offset_m: float) -> LonLat:
    """The point ``at_m`` along ``line``, moved ``offset_m`` to its left (negative: right)."""
    i = int(np.searchsorted(cum_m, at_m, side="right")) - 1
    i = min(max(i, 0), len(line) - 2)
    seg = cum_m[i + 1] - cum_m[i]
    f = 0.0 if seg <= 0 else (at_m - cum_m[i]) / seg
    (x0, y0), (x1, y1) = line[i], line[i + 1]
    lon, lat = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
    if offset_m and seg > 0:
        k = math.cos(math.radians(lat))
        ex, ey = (x1 - x0) * k * _EARTH_M_PER_DEG, (y1 - y0) * _EARTH_M_PER_DEG
        norm = math.hypot(ex, ey)
        lon += -ey / norm * offset_m / (k * _EARTH_M_PER_DEG)
        lat += ex / norm * offset_m / _EARTH_M_PER_DEG
    return float(lon), float(lat)


def sample_demand(
    demand: Demand,
    seed: int,
    start_s: int,
    end_s: int,
    lines: Sequence[Sequence[LonLat]],
) -> DayDemand:
    """Draw the day's parcels along ``lines`` (road geometries as lon/lat points)."""
    usable = [line for line in lines if len(line) >= 2]
    n = demand.parcels
    if n and not usable:
        raise ConfigError(
            f"[demand] road_classes: no road of the classes {', '.join(demand.road_classes)} "
            "in the operating area to put delivery addresses on"
        )
    ss = np.random.SeedSequence(seed)
    r_where, r_weight, r_window, r_late = (np.random.default_rng(s) for s in ss.spawn(4))

    cum = _line_lengths_m(usable)
    lengths = np.array([c[-1] for c in cum], dtype=np.float64)
    total = float(lengths.sum())
    if n and total <= 0:
        raise ConfigError("[demand] road_classes: the candidate roads have no length")
    which = r_where.choice(len(usable), size=n, p=lengths / total) if n else np.array([], int)
    along = r_where.uniform(0.0, 1.0, n)
    offsets = r_where.uniform(-demand.address_offset_m, demand.address_offset_m, n)

    weights = np.round(demand.weight_kg.sample(r_weight, n), 3)
    volumes = np.round(demand.volume_m3.sample(r_weight, n), 4)

    has_window = r_window.uniform(0.0, 1.0, n) < demand.window_share
    slot_pick = r_window.integers(0, max(1, len(demand.window_slots_s)), n)

    is_late = r_late.uniform(0.0, 1.0, n) < demand.late_share
    ordered = r_late.integers(demand.late_from_s, demand.late_until_s + 1, n)
    is_urgent = r_late.uniform(0.0, 1.0, n) < demand.urgent_share

    parcels: list[Parcel] = []
    info: list[ParcelInfo] = []
    width = max(5, len(str(n)))
    for i in range(n):
        line_i = int(which[i])
        lon, lat = _point_along(
            usable[line_i], cum[line_i], float(along[i]) * lengths[line_i], float(offsets[i])
        )
        ordered_s = int(ordered[i]) if is_late[i] else start_s
        urgent = bool(is_late[i] and is_urgent[i])
        earliest: int | None = None
        latest: int | None = None
        if urgent:
            earliest, latest = ordered_s, min(end_s, ordered_s + demand.urgent_within_s)
        elif has_window[i]:
            a, b = demand.window_slots_s[int(slot_pick[i])]
            if b >= ordered_s + 3600:  # a slot already (nearly) over when ordered is dropped
                earliest, latest = max(a, ordered_s), b
        pid = ParcelId(f"P{i + 1:0{width}d}")
        parcels.append(
            Parcel(
                id=pid,
                lon=round(lon, 7),
                lat=round(lat, 7),
                weight_kg=float(weights[i]),
                volume_m3=float(volumes[i]),
                earliest_s=earliest,
                latest_s=latest,
            )
        )
        info.append(
            ParcelInfo(
                id=pid,
                lon=round(lon, 7),
                lat=round(lat, 7),
                weight_kg=float(weights[i]),
                volume_m3=float(volumes[i]),
                earliest_s=earliest,
                latest_s=latest,
                ordered_s=ordered_s,
                urgent=urgent,
            )
        )
    return DayDemand(parcels=tuple(parcels), info=tuple(info))


def road_lines(net: RoadNetwork, classes: Sequence[str]) -> list[list[LonLat]]:
    """The geometry of every drivable road link of ``net`` whose class is in ``classes``."""
    p = net.prepared
    known_codes = [i for i, c in enumerate(p.classes) if c in set(classes)]
    drivable = np.zeros(len(p.link_u), dtype=np.bool_)
    drivable[p.edge_link] = True
    chosen = np.nonzero(drivable & np.isin(p.link_class, known_codes))[0]
    out: list[list[LonLat]] = []
    for link in chosen.tolist():
        a, b = int(p.geom_offsets[link]), int(p.geom_offsets[link + 1])
        out.append(list(zip(p.geom_lon[a:b].tolist(), p.geom_lat[a:b].tolist(), strict=True)))
    return out


def day_demand(scenario: Scenario, net: RoadNetwork) -> DayDemand:
    """The scenario's parcels on ``net``, drawn with the scenario's seed."""
    try:
        net.edges_of_class(scenario.demand.road_classes)
    except RoadError as exc:
        raise ConfigError(f"{scenario.file}: [demand] road_classes: {exc}") from exc
    lines = road_lines(net, scenario.demand.road_classes)
    return sample_demand(
        scenario.demand, scenario.seed, scenario.run.start_s, scenario.run.end_s, lines
    )
