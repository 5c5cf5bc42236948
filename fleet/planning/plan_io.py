"""``plan.json``: the one place that turns a :class:`~fleet.model.plan.Plan` into JSON and back.

The format is documented field by field in ``docs/plan.md``. Writing is atomic (a temporary
file beside the target, then a rename), so an existing plan is never half overwritten.
Reading is strict: a missing or unknown key, a wrong type or an impossible value is an
:class:`~fleet.errors.InputError` naming the file and the JSON path, e.g.
``plan.json: routes[2].trips[0].stops[3].arrival_s: expected a number, got "9:00"``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TypeVar

from fleet.errors import InputError
from fleet.identifiers import MAX_JSON_DEPTH, MAX_PLAN_BYTES, id_problem, json_bounds_problem
from fleet.model.ids import DepotId, NodeId, ParcelId, VanId
from fleet.model.parcel import Parcel
from fleet.model.plan import (
    Leg,
    Plan,
    PlanSummary,
    Stop,
    StopKind,
    Trip,
    Unserved,
    UnservedReason,
    VanRoute,
    VanSummary,
)

FORMAT = "fleet-plan"
VERSION = 1
ATTRIBUTION = "Road geometry © OpenStreetMap contributors, ODbL 1.0"

_T = TypeVar("_T")
JsonObj = dict[str, object]


# -- writing ------------------------------------------------------------------------------


def _geometry(points: tuple[tuple[float, float], ...]) -> JsonObj | None:
    if not points:
        return None
    return {"type": "LineString", "coordinates": [[lon, lat] for lon, lat in points]}


def _stop(s: Stop) -> JsonObj:
    return {
        "seq": s.seq,
        "kind": s.kind.value,
        "ref": s.ref,
        "node": int(s.node),
        "lon": s.lon,
        "lat": s.lat,
        "arrival_s": s.arrival_s,
        "departure_s": s.departure_s,
        "parcels_loaded": list(s.parcels_loaded),
        "parcels_delivered": list(s.parcels_delivered),
        "load_after_kg": s.load_after_kg,
        "load_after_m3": s.load_after_m3,
        "dist_so_far_m": s.dist_so_far_m,
        "energy_so_far_kwh": s.energy_so_far_kwh,
        "soc_pct": s.soc_pct,
        "geometry_in": _geometry(s.geometry_in),
    }


def _van_summary(v: VanSummary) -> JsonObj:
    return {
        "van_id": v.van_id,
        "leg": v.leg.value,
        "depot": v.depot,
        "trips": v.trips,
        "stops": v.stops,
        "parcels": v.parcels,
        "dist_m": v.dist_m,
        "energy_kwh": v.energy_kwh,
        "start_s": v.start_s,
        "end_s": v.end_s,
        "min_soc_pct": v.min_soc_pct,
        "util_kg_pct": v.util_kg_pct,
        "util_m3_pct": v.util_m3_pct,
    }


def _parcel(p: Parcel) -> JsonObj:
    return {
        "id": p.id,
        "lon": p.lon,
        "lat": p.lat,
        "weight_kg": p.weight_kg,
        "volume_m3": p.volume_m3,
        "earliest_s": p.earliest_s,
        "latest_s": p.latest_s,
        "service_s": p.service_s,
        "station": p.station,
    }


def plan_to_json(plan: Plan, parcels: Sequence[Parcel] = ()) -> JsonObj:
    """The JSON document for ``plan`` (a dict ready for :func:`json.dumps`).

    ``parcels`` (the orders the plan was made for) are stored beside it, so that the plan
    file alone can be verified again (``fleet verify plan.json``).
    """
    s = plan.summary
    return {
        "format": FORMAT,
        "version": VERSION,
        "site": plan.site,
        "day": plan.day.isoformat(),
        "timezone": plan.timezone,
        "created_utc": plan.created_utc,
        "attribution": ATTRIBUTION,
        "summary": {
            "parcels": s.parcels,
            "served": s.served,
            "unserved": s.unserved,
            "vans_available": s.vans_available,
            "vans_used": s.vans_used,
            "trips": s.trips,
            "dist_m": s.dist_m,
            "energy_kwh": s.energy_kwh,
            "line_haul_dist_m": s.line_haul_dist_m,
            "last_mile_dist_m": s.last_mile_dist_m,
            "vans": [_van_summary(v) for v in s.vans],
        },
        "routes": [
            {
                "van_id": r.van_id,
                "leg": r.leg.value,
                "depot": r.depot,
                "trips": [
                    {"index": t.index, "stops": [_stop(st) for st in t.stops]} for t in r.trips
                ],
            }
            for r in plan.routes
        ],
        "unserved": [
            {"parcel_id": u.parcel_id, "reason": u.reason.value, "detail": u.detail}
            for u in plan.unserved
        ],
        "parcels": [_parcel(p) for p in parcels],
    }


def write_plan(plan: Plan, path: Path, *, parcels: Sequence[Parcel] = ()) -> None:
    """Write ``plan`` (and the ``parcels`` it was made for) to ``path`` atomically: an old
    file stays whole if this fails."""
    text = json.dumps(plan_to_json(plan, parcels), ensure_ascii=False, allow_nan=False, indent=1)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the plan: {exc}") from exc
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it private; a plan is an ordinary file
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write the plan: {exc}") from exc


# -- reading ------------------------------------------------------------------------------


class _Node:
    """A JSON object being read: typed access by key, unknown keys refused, paths in errors."""

    def __init__(self, file: Path, where: str, value: object) -> None:
        self.file = file
        self.where = where
        if not isinstance(value, dict):
            raise self.error(None, f"expected an object, got {_show(value)}")
        self._data: Mapping[str, object] = value
        self._used: set[str] = set()

    def _path(self, key: str | None) -> str:
        if key is None:
            return self.where or "(top level)"
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str | None, message: str) -> InputError:
        return InputError(f"{self.file}: {self._path(key)}: {message}")

    def _get(self, key: str) -> object:
        self._used.add(key)
        if key not in self._data:
            raise self.error(key, "missing (required key)")
        return self._data[key]

    def number(self, key: str, *, ge: float | None = None, le: float | None = None) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.error(key, f"expected a finite number, got {_show(value)}")
        if ge is not None and number < ge:
            raise self.error(key, f"expected a number >= {ge:g}, got {_show(value)}")
        if le is not None and number > le:
            raise self.error(key, f"expected a number <= {le:g}, got {_show(value)}")
        return number

    def optional_int(self, key: str) -> int | None:
        if self._data.get(key) is None:
            self._used.add(key)
            if key not in self._data:
                raise self.error(key, "missing (required key; null if none)")
            return None
        return self.integer(key)

    def optional_number(self, key: str) -> float | None:
        if self._data.get(key) is None:
            self._used.add(key)
            if key not in self._data:
                raise self.error(key, "missing (required key; null if none)")
            return None
        return self.number(key)

    def optional_string(self, key: str) -> str | None:
        if self._data.get(key) is None:
            self._used.add(key)
            if key not in self._data:
                raise self.error(key, "missing (required key; null if none)")
            return None
        return self.string(key, nonempty=True)

    def integer(self, key: str, *, ge: int | None = None) -> int:
        """A whole number; every one in a plan fits a signed 64-bit integer (an OSM node id)."""
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected a whole number, got {_show(value)}")
        if ge is not None and value < ge:
            raise self.error(key, f"expected a whole number >= {ge}, got {_show(value)}")
        if not -_INT64 <= value < _INT64:
            raise self.error(
                key, f"expected a whole number within ±2**63 (docs/limits.md), got {_show(value)}"
            )
        return value

    def ident(self, key: str) -> str:
        """An identifier (``docs/limits.md``: one rule for every id)."""
        value = self.string(key)
        problem = id_problem(value)
        if problem is not None:
            raise self.error(key, problem)
        return value

    def idents(self, key: str) -> tuple[str, ...]:
        values = self.strings(key)
        for i, v in enumerate(values):
            problem = id_problem(v)
            if problem is not None:
                raise self.error(f"{key}[{i}]", problem)
        return values

    def string(self, key: str, *, nonempty: bool = False) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_show(value)}")
        if nonempty and not value:
            raise self.error(key, "expected a non-empty string")
        return value

    def has_text(self, key: str) -> bool:
        return bool(self._data.get(key))

    def choice(self, key: str, parse: Callable[[str], _T], options: list[str]) -> _T:
        raw = self.string(key)
        try:
            return parse(raw)
        except ValueError as exc:
            raise self.error(key, f"expected one of {', '.join(options)}, got {raw!r}") from exc

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {_show(value)}")
        return tuple(value)

    def objects(self, key: str) -> list[_Node]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_show(value)}")
        return [_Node(self.file, f"{self._path(key)}[{i}]", v) for i, v in enumerate(value)]

    def object(self, key: str) -> _Node:
        return _Node(self.file, self._path(key), self._get(key))

    def geometry(self, key: str) -> tuple[tuple[float, float], ...]:
        value = self._get(key)
        if value is None:
            return ()
        g = _Node(self.file, self._path(key), value)
        if g.string("type") != "LineString":
            raise g.error("type", f"expected 'LineString', got {_show(g._data['type'])}")
        coords = g._get("coordinates")
        g.finish()
        points: list[tuple[float, float]] = []
        if not isinstance(coords, list) or len(coords) < 2:
            raise g.error("coordinates", "expected a list of at least two [lon, lat] positions")
        for i, c in enumerate(coords):
            if (
                not isinstance(c, list)
                or len(c) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in c)
                or not (-180 <= c[0] <= 180 and -90 <= c[1] <= 90)
            ):
                raise g.error(f"coordinates[{i}]", f"expected [lon, lat], got {_show(c)}")
            points.append((float(c[0]), float(c[1])))
        return tuple(points)

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _show(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_KINDS = [k.value for k in StopKind]
_LEGS = [leg.value for leg in Leg]
_REASONS = [r.value for r in UnservedReason]


_INT64 = 2**63


def _read_stop(n: _Node) -> Stop:
    stop = Stop(
        seq=n.integer("seq", ge=0),
        kind=n.choice("kind", StopKind, _KINDS),
        ref=n.ident("ref") if n.has_text("ref") else n.string("ref"),
        node=NodeId(n.integer("node")),
        lon=n.number("lon", ge=-180, le=180),
        lat=n.number("lat", ge=-90, le=90),
        arrival_s=n.number("arrival_s"),
        departure_s=n.number("departure_s"),
        parcels_loaded=tuple(ParcelId(p) for p in n.idents("parcels_loaded")),
        parcels_delivered=tuple(ParcelId(p) for p in n.idents("parcels_delivered")),
        load_after_kg=n.number("load_after_kg"),
        load_after_m3=n.number("load_after_m3"),
        dist_so_far_m=n.number("dist_so_far_m"),
        energy_so_far_kwh=n.number("energy_so_far_kwh"),
        soc_pct=n.number("soc_pct"),
        geometry_in=n.geometry("geometry_in"),
    )
    n.finish()
    return stop


def _read_van_summary(n: _Node) -> VanSummary:
    v = VanSummary(
        van_id=VanId(n.ident("van_id")),
        leg=n.choice("leg", Leg, _LEGS),
        depot=DepotId(n.ident("depot")),
        trips=n.integer("trips", ge=0),
        stops=n.integer("stops", ge=0),
        parcels=n.integer("parcels", ge=0),
        dist_m=n.number("dist_m", ge=0),
        energy_kwh=n.number("energy_kwh", ge=0),
        start_s=n.number("start_s"),
        end_s=n.number("end_s"),
        min_soc_pct=n.number("min_soc_pct"),
        util_kg_pct=n.number("util_kg_pct", ge=0),
        util_m3_pct=n.number("util_m3_pct", ge=0),
    )
    n.finish()
    return v


def _read_summary(n: _Node) -> PlanSummary:
    s = PlanSummary(
        parcels=n.integer("parcels", ge=0),
        served=n.integer("served", ge=0),
        unserved=n.integer("unserved", ge=0),
        vans_available=n.integer("vans_available", ge=0),
        vans_used=n.integer("vans_used", ge=0),
        trips=n.integer("trips", ge=0),
        dist_m=n.number("dist_m", ge=0),
        energy_kwh=n.number("energy_kwh", ge=0),
        line_haul_dist_m=n.number("line_haul_dist_m", ge=0),
        last_mile_dist_m=n.number("last_mile_dist_m", ge=0),
        vans=tuple(_read_van_summary(v) for v in n.objects("vans")),
    )
    n.finish()
    return s


def _read_route(n: _Node) -> VanRoute:
    trips = []
    for t in n.objects("trips"):
        trips.append(
            Trip(index=t.integer("index", ge=0), stops=tuple(map(_read_stop, t.objects("stops"))))
        )
        t.finish()
    route = VanRoute(
        van_id=VanId(n.ident("van_id")),
        leg=n.choice("leg", Leg, _LEGS),
        depot=DepotId(n.ident("depot")),
        trips=tuple(trips),
    )
    n.finish()
    return route


def _read_unserved(n: _Node) -> Unserved:
    u = Unserved(
        parcel_id=ParcelId(n.ident("parcel_id")),
        reason=n.choice("reason", UnservedReason, _REASONS),
        detail=n.string("detail"),
    )
    n.finish()
    return u


def _read_parcel(n: _Node) -> Parcel:
    try:
        station = n.optional_string("station")
        p = Parcel(
            id=ParcelId(n.ident("id")),
            lon=n.number("lon"),
            lat=n.number("lat"),
            weight_kg=n.number("weight_kg"),
            volume_m3=n.number("volume_m3"),
            earliest_s=n.optional_int("earliest_s"),
            latest_s=n.optional_int("latest_s"),
            service_s=n.optional_number("service_s"),
            station=DepotId(station) if station is not None else None,
        )
    except InputError as exc:
        if str(exc).startswith(str(n.file)):
            raise
        raise n.error(None, str(exc)) from exc
    n.finish()
    return p


def plan_from_json(document: object, file: Path) -> Plan:
    """Build a :class:`Plan` from a parsed JSON document; ``file`` is named in errors."""
    return plan_and_parcels_from_json(document, file)[0]


def plan_and_parcels_from_json(document: object, file: Path) -> tuple[Plan, tuple[Parcel, ...]]:
    """The plan and the parcels stored with it (empty if the file has none)."""
    root = _Node(file, "", document)
    fmt = root.string("format")
    if fmt != FORMAT:
        raise root.error("format", f"expected {FORMAT!r}, got {fmt!r} (not a fleet plan)")
    version = root.integer("version")
    if version != VERSION:
        raise root.error("version", f"this fleet reads plan version {VERSION}, got {version}")
    day_raw = root.string("day")
    try:
        day = date.fromisoformat(day_raw)
    except ValueError as exc:
        raise root.error("day", f"expected a date YYYY-MM-DD, got {day_raw!r}") from exc
    root.string("attribution")
    plan = Plan(
        site=root.string("site", nonempty=True),
        day=day,
        timezone=root.string("timezone", nonempty=True),
        created_utc=root.string("created_utc"),
        routes=tuple(_read_route(r) for r in root.objects("routes")),
        unserved=tuple(_read_unserved(u) for u in root.objects("unserved")),
        summary=_read_summary(root.object("summary")),
    )
    parcels = tuple(_read_parcel(p) for p in root.objects("parcels"))
    root.finish()
    return plan, parcels


def read_plan(path: Path) -> Plan:
    """Read and check the structure of ``plan.json`` (limits are checked by the verifier)."""
    return read_plan_and_parcels(path)[0]


def read_plan_and_parcels(path: Path) -> tuple[Plan, tuple[Parcel, ...]]:
    """``plan.json`` and the parcels stored with it (what ``fleet verify`` needs)."""
    return plan_and_parcels_from_json(read_plan_document(path), path)


def read_plan_document(path: Path) -> dict[str, object]:
    """``plan.json`` parsed, its size and nesting checked before parsing (docs/limits.md);
    NaN and Infinity (not JSON) are refused."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PLAN_BYTES + 1)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise InputError(f"{path}: cannot read: {exc}") from exc
    return parse_plan_document(data, path)


def parse_plan_document(data: bytes, path: Path) -> dict[str, object]:
    problem = json_bounds_problem(data, MAX_PLAN_BYTES)
    if problem is not None:
        raise InputError(f"{path}: {problem}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc

    def no_constant(name: str) -> object:
        raise ValueError(f"{name} is not a JSON number")

    try:
        document = json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}"
        ) from exc
    except ValueError as exc:  # NaN, Infinity; a number too long to convert
        raise InputError(f"{path}: not valid JSON: {exc}") from exc
    except RecursionError as exc:  # defensive: the depth was checked above
        raise InputError(f"{path}: nested deeper than {MAX_JSON_DEPTH}") from exc
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected a JSON object (docs/plan.md), got {_show(document)}")
    return document
