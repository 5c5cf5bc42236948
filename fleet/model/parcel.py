"""A parcel to deliver: where, how heavy, how big, when, and through which station."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleet.errors import InputError
from fleet.model.ids import DepotId, ParcelId

DAY_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Parcel:
    """One parcel of a day's orders.

    Times are seconds after local midnight of the plan's day (``Site.timezone``).
    ``earliest_s``/``latest_s`` bound the moment the van arrives at the door; ``None`` means
    "any time in the shift". ``service_s`` replaces the van's ``per_parcel_s`` hand-over time
    for this parcel (the fixed ``door_stop_s`` is counted once per address). ``station`` is the
    station the parcel must go through; ``None`` lets the planner pick the nearest by road.
    """

    id: ParcelId
    lon: float
    lat: float
    weight_kg: float
    volume_m3: float
    earliest_s: int | None = None
    latest_s: int | None = None
    service_s: float | None = None
    station: DepotId | None = None

    def __post_init__(self) -> None:
        problem = parcel_problem(self)
        if problem is not None:
            raise InputError(f"parcel {self.id!r}: {problem}")

    @property
    def has_window(self) -> bool:
        return self.earliest_s is not None or self.latest_s is not None


def parcel_problem(p: Parcel) -> str | None:
    """What makes ``p`` impossible as data (not merely unservable), or ``None``."""
    if not p.id or not p.id.strip():
        return "empty parcel id"
    for name, value in (("lon", p.lon), ("lat", p.lat)):
        if not math.isfinite(value):
            return f"{name} must be a finite number, got {value!r}"
    if not -180.0 <= p.lon <= 180.0:
        return f"lon must be within -180..180 degrees, got {p.lon!r}"
    if not -90.0 <= p.lat <= 90.0:
        return f"lat must be within -90..90 degrees, got {p.lat!r}"
    if not math.isfinite(p.weight_kg) or p.weight_kg < 0:
        return f"weight_kg must be a number >= 0, got {p.weight_kg!r}"
    if not math.isfinite(p.volume_m3) or p.volume_m3 < 0:
        return f"volume_m3 must be a number >= 0, got {p.volume_m3!r}"
    for name, t in (("earliest_s", p.earliest_s), ("latest_s", p.latest_s)):
        if t is not None and not 0 <= t <= DAY_S:
            return f"{name} must be within 0..{DAY_S} s after local midnight, got {t!r}"
    if p.earliest_s is not None and p.latest_s is not None and p.earliest_s > p.latest_s:
        return f"earliest_s ({p.earliest_s}) is after latest_s ({p.latest_s})"
    if p.service_s is not None and (not math.isfinite(p.service_s) or p.service_s < 0):
        return f"service_s must be a number >= 0, got {p.service_s!r}"
    return None
