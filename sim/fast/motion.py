"""Closed-form van motion for the fast mode: one leg from standstill to standstill.

:class:`sim.vehicle.Vehicle` integrates the van's motion in small steps; a thousand vans
stepped that way cannot run a day at 100× real time in Python. Between two stops the vehicle
does something simple, though: it accelerates at ``max_accel_mps2`` up to the leg's speed cap
(never above the van's top speed), cruises, and brakes at the service deceleration
(``SERVICE_DECEL_SHARE × max_decel_mps2``) to stop exactly at the stop point; it drains
``consumption_kwh_per_km`` for every metre it covers. :class:`Leg` computes that trapezoid
(or triangle, for a short leg) in closed form, with the vehicle's own distance function
along the same waypoints, so the two agree to within the vehicle's integration step
(``tests/sim/test_motion.py`` checks it on real road legs: time within 0.5 s + 0.2 %,
distance and energy within 0.1 %).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.model import VanSpec
from sim.vehicle import SERVICE_DECEL_SHARE, bearing_deg, distance_m

LonLat = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Leg:
    """A drive from standstill at the first point to standstill at the last."""

    points: tuple[LonLat, ...]
    cum_m: tuple[float, ...]  # distance along the points, from 0 to ``dist_m``
    cap_mps: float  # effective cruise cap (≤ the van's top speed)
    accel_mps2: float
    decel_mps2: float
    dist_m: float
    peak_mps: float  # cruise speed, or the peak of a short leg's triangle
    duration_s: float
    energy_kwh: float

    @classmethod
    def plan(
        cls, van: VanSpec, points: Sequence[LonLat], cap_mps: float, start: LonLat | None = None
    ) -> Leg:
        """The leg through ``points`` (from ``start`` if given, as the vehicle drives from
        where it stands to the first point) at no more than ``cap_mps``."""
        pts: list[LonLat] = [start] if start is not None else []
        pts.extend(points)
        if not pts:
            raise ValueError("a leg needs at least one point")
        cum = [0.0]
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            cum.append(cum[-1] + distance_m(x0, y0, x1, y1))
        dist = cum[-1]
        cap = max(1e-6, min(cap_mps, van.top_speed_mps))
        a = van.max_accel_mps2
        d = van.max_decel_mps2 * SERVICE_DECEL_SHARE
        ramp_m = cap * cap / (2 * a) + cap * cap / (2 * d)
        if dist <= 0.0:
            peak, duration = 0.0, 0.0
        elif dist >= ramp_m:
            peak = cap
            duration = dist / cap + cap / (2 * a) + cap / (2 * d)
        else:
            peak = math.sqrt(2 * dist * a * d / (a + d))
            duration = peak / a + peak / d
        return cls(
            points=tuple(pts),
            cum_m=tuple(cum),
            cap_mps=cap,
            accel_mps2=a,
            decel_mps2=d,
            dist_m=dist,
            peak_mps=peak,
            duration_s=duration,
            energy_kwh=dist / 1000.0 * van.consumption_kwh_per_km,
        )

    def dist_at(self, t_s: float) -> float:
        """Distance covered ``t_s`` after leaving (clamped to the leg)."""
        if t_s <= 0.0 or self.dist_m <= 0.0:
            return 0.0
        if t_s >= self.duration_s:
            return self.dist_m
        v, a, d = self.peak_mps, self.accel_mps2, self.decel_mps2
        t_up = v / a
        t_down = v / d
        t_cruise = self.duration_s - t_up - t_down
        if t_s <= t_up:
            return 0.5 * a * t_s * t_s
        s_up = 0.5 * v * t_up
        if t_s <= t_up + t_cruise:
            return s_up + v * (t_s - t_up)
        left = self.duration_s - t_s
        return self.dist_m - 0.5 * d * left * left

    def time_at(self, dist_m: float) -> float:
        """When the van has covered ``dist_m`` of the leg (the inverse of :meth:`dist_at`)."""
        if dist_m <= 0.0 or self.dist_m <= 0.0:
            return 0.0
        if dist_m >= self.dist_m:
            return self.duration_s
        v, a, d = self.peak_mps, self.accel_mps2, self.decel_mps2
        s_up = v * v / (2 * a)
        s_down = v * v / (2 * d)
        if dist_m <= s_up:
            return math.sqrt(2 * dist_m / a)
        if dist_m <= self.dist_m - s_down:
            return v / a + (dist_m - s_up) / v
        left = self.dist_m - dist_m
        return self.duration_s - math.sqrt(2 * left / d)

    def speed_at(self, t_s: float) -> float:
        if t_s <= 0.0 or t_s >= self.duration_s:
            return 0.0
        v, a, d = self.peak_mps, self.accel_mps2, self.decel_mps2
        return min(v, a * t_s, d * (self.duration_s - t_s))

    def position_at(self, t_s: float) -> tuple[float, float, float]:
        """``(lon, lat, heading_deg)`` ``t_s`` after leaving."""
        s = self.dist_at(t_s)
        pts = self.points
        if len(pts) == 1:
            return pts[0][0], pts[0][1], 0.0
        i = max(0, min(bisect.bisect_right(self.cum_m, s) - 1, len(pts) - 2))
        seg = self.cum_m[i + 1] - self.cum_m[i]
        f = 0.0 if seg <= 0 else (s - self.cum_m[i]) / seg
        (x0, y0), (x1, y1) = pts[i], pts[i + 1]
        heading = bearing_deg(x0, y0, x1, y1) if seg > 0 else 0.0
        return x0 + f * (x1 - x0), y0 + f * (y1 - y0), heading

    def path_until(self, t_s: float) -> tuple[LonLat, ...]:
        """The points driven over by ``t_s`` (for the map of routes actually driven)."""
        s = self.dist_at(t_s)
        if s >= self.dist_m:
            return self.points
        i = bisect.bisect_right(self.cum_m, s)
        lon, lat, _ = self.position_at(t_s)
        return (*self.points[:i], (lon, lat))
