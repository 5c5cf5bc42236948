"""Which OpenStreetMap ways a van may drive, in which direction, and how fast.

Pure functions on a way's tags (a ``Mapping[str, str]``); :mod:`fleet.roads.osm` applies them
while it reads an extract. ``docs/roads.md`` shows the same tables for users.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

# Highway classes a motor vehicle may use, with the speed assumed when a way has no usable
# ``maxspeed`` tag (km/h). Footways, paths, tracks, steps, cycleways, pedestrian zones,
# bus-only ways, raceways, and roads under construction or proposed are not drivable.
DEFAULT_SPEED_KMH: dict[str, float] = {
    "motorway": 120.0,
    "motorway_link": 60.0,
    "trunk": 90.0,
    "trunk_link": 50.0,
    "primary": 60.0,
    "primary_link": 40.0,
    "secondary": 50.0,
    "secondary_link": 40.0,
    "tertiary": 50.0,
    "tertiary_link": 30.0,
    "unclassified": 40.0,
    "residential": 30.0,
    "living_street": 10.0,
    "service": 20.0,
    "road": 30.0,  # unknown class: tagged by mappers who could not tell
}
DRIVABLE_CLASSES: frozenset[str] = frozenset(DEFAULT_SPEED_KMH)

# ``service=*`` values that are not public roads for a delivery van (parking lots, private
# driveways, emergency-only links, drive-through lanes).
EXCLUDED_SERVICE: frozenset[str] = frozenset(
    {"parking_aisle", "driveway", "emergency_access", "drive-through"}
)

# Access values (on the most specific of motorcar, motor_vehicle, vehicle, access) that keep a
# delivery van out. ``destination``, ``delivery`` and ``customers`` let it in: delivering is
# exactly what it does there.
ACCESS_KEYS: tuple[str, ...] = ("motorcar", "motor_vehicle", "vehicle", "access")
DENIED_ACCESS: frozenset[str] = frozenset(
    {
        "no",
        "private",
        "agricultural",
        "forestry",
        "emergency",
        "military",
        "psv",
        "bus",
        "permit",
        "discouraged",
    }
)

# ``maxspeed`` zone values (``"PT:urban"``, ``"DE:zone30"``): the part after the colon, in km/h.
ZONE_SPEED_KMH: dict[str, float] = {
    "urban": 50.0,
    "rural": 90.0,
    "trunk": 100.0,
    "motorway": 120.0,
    "living_street": 10.0,
    "pedestrian_zone": 10.0,
    "bicycle_road": 30.0,
    "walk": 7.0,
    "zone10": 10.0,
    "zone20": 20.0,
    "zone30": 30.0,
    "zone40": 40.0,
}
# Country-specific zone values that differ from the table above.
COUNTRY_ZONE_SPEED_KMH: dict[str, float] = {
    "BR:urban": 60.0,  # Código de Trânsito Brasileiro art. 61: arterial default
    "BR:rural": 80.0,
    "GB:nsl_single": 96.6,  # 60 mph
    "GB:nsl_dual": 112.7,  # 70 mph
    "GB:motorway": 112.7,
    "PT:rural": 90.0,
    "PT:trunk": 100.0,
    "PT:motorway": 120.0,
}
# Plain words in ``maxspeed``.
WORD_SPEED_KMH: dict[str, float] = {"walk": 7.0, "living_street": 10.0}

_KMH_PER_MPH = 1.609344
_KMH_PER_KNOT = 1.852
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(km/h|kmh|kph|mph|knots)?\s*$")


def parse_maxspeed(value: str) -> float | None:
    """A ``maxspeed`` value in km/h, or ``None`` when it gives no usable number.

    Numbers (``"50"``), numbers with a unit (``"30 mph"``, ``"50 km/h"``, ``"10 knots"``),
    zone values (``"PT:urban"``, ``"DE:zone30"``), ``"walk"``; several values separated by
    ``;`` give the lowest. ``"none"``, ``"signals"``, ``"variable"`` and anything unparsable
    give ``None`` (the class default applies).
    """
    speeds = [s for s in (_parse_one(part) for part in value.split(";")) if s is not None]
    return min(speeds) if speeds else None


def _parse_one(raw: str) -> float | None:
    text = raw.strip()
    if not text:
        return None
    match = _NUMBER_UNIT.match(text.lower())
    if match:
        number = float(match.group(1))
        unit = match.group(2)
        if unit == "mph":
            number *= _KMH_PER_MPH
        elif unit == "knots":
            number *= _KMH_PER_KNOT
        return number if 0 < number < 400 else None
    if text in COUNTRY_ZONE_SPEED_KMH:
        return COUNTRY_ZONE_SPEED_KMH[text]
    if ":" in text:
        zone = text.split(":", 1)[1].lower()
        if zone in ZONE_SPEED_KMH:
            return ZONE_SPEED_KMH[zone]
        return None
    return WORD_SPEED_KMH.get(text.lower())


def is_drivable(tags: Mapping[str, str], excluded_classes: frozenset[str] = frozenset()) -> bool:
    """Whether a delivery van may drive this way at all (either direction)."""
    highway = tags.get("highway", "")
    if highway not in DRIVABLE_CLASSES or highway in excluded_classes:
        return False
    if tags.get("area") == "yes" or tags.get("service", "") in EXCLUDED_SERVICE:
        return False
    if tags.get("oneway") in ("reversible", "alternating"):
        return False  # direction changes by the hour: never planned
    for key in ACCESS_KEYS:  # the most specific tag present decides
        value = tags.get(key)
        if value is not None:
            return value not in DENIED_ACCESS
    return True


@dataclass(frozen=True, slots=True)
class WayRules:
    """How a drivable way may be driven: directions, speeds (km/h, before the van's cap)."""

    forward: bool  # along the way's node order
    backward: bool
    forward_speed_kmh: float
    backward_speed_kmh: float


def way_rules(tags: Mapping[str, str]) -> WayRules:
    """Directions and speed limits of a drivable way.

    One-way: ``oneway=yes|true|1`` (forward only), ``oneway=-1|reverse`` (backward only),
    ``oneway=no`` (both, even on a roundabout); without ``oneway``, roundabouts
    (``junction=roundabout|circular``) and ``highway=motorway`` are one-way forward.
    Speed: ``maxspeed:forward`` / ``maxspeed:backward``, else ``maxspeed``, else a zone in
    ``maxspeed:type`` / ``source:maxspeed`` / ``zone:maxspeed``, else the class default.
    """
    highway = tags.get("highway", "road")
    oneway = tags.get("oneway", "").strip().lower()
    forward = backward = True
    if oneway in ("yes", "true", "1"):
        backward = False
    elif oneway in ("-1", "reverse"):
        forward = False
    elif oneway != "no" and (
        tags.get("junction") in ("roundabout", "circular") or highway == "motorway"
    ):
        backward = False
    base = _first_speed(tags, ("maxspeed", "maxspeed:type", "source:maxspeed", "zone:maxspeed"))
    if base is None:
        base = DEFAULT_SPEED_KMH.get(highway, DEFAULT_SPEED_KMH["road"])
    fwd = _first_speed(tags, ("maxspeed:forward",))
    bwd = _first_speed(tags, ("maxspeed:backward",))
    return WayRules(
        forward=forward,
        backward=backward,
        forward_speed_kmh=fwd if fwd is not None else base,
        backward_speed_kmh=bwd if bwd is not None else base,
    )


def _first_speed(tags: Mapping[str, str], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = tags.get(key)
        if value is not None:
            speed = parse_maxspeed(value)
            if speed is not None and math.isfinite(speed):
                return speed
    return None
