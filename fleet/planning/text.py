"""Small formatting helpers for the sentences the planner writes (unserved details, logs)."""

from __future__ import annotations

import math


def clock(t_s: float) -> str:
    """Seconds after local midnight as ``HH:MM`` (``+1d`` past midnight)."""
    if not math.isfinite(t_s):
        return "never"
    minutes = math.floor(t_s / 60.0 + 1e-9)
    day, minutes = divmod(minutes, 24 * 60)
    text = f"{minutes // 60:02d}:{minutes % 60:02d}"
    return text + (f" +{day}d" if day else "")


def km(dist_m: float) -> str:
    return f"{dist_m / 1000.0:.1f} km"
