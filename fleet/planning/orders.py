"""The orders CSV (``docs/orders.md``): one parcel per row, every bad row reported at once.

Required columns: ``parcel_id, lon, lat, weight_kg, volume_m3``; optional: ``earliest,
latest`` (local ``HH:MM[:SS]`` or ISO 8601 date-time), ``service_s``, ``station``. A row that
cannot be a parcel (unparsable number, negative weight, unknown station, duplicate id, window
ending before it starts) is a :class:`BadRow` with its line number and field. A parcel that is
merely too heavy or too big for a van is *not* a bad row: the planner lists it as unserved.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fleet.errors import ConfigError, InputError
from fleet.identifiers import MAX_ORDERS_BYTES, MAX_ORDERS_ROWS, MAX_SERVICE_S, id_problem
from fleet.model.ids import DepotId, ParcelId
from fleet.model.parcel import DAY_S, Parcel, parcel_problem
from fleet.model.site import Site

REQUIRED_COLUMNS = ("parcel_id", "lon", "lat", "weight_kg", "volume_m3")
OPTIONAL_COLUMNS = ("earliest", "latest", "service_s", "station")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
MAX_BAD_ROWS_SHOWN = 50


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int  # 1-based line in the file (the header is line 1)
    parcel_id: str  # as written, "" if missing
    field: str
    message: str

    def __str__(self) -> str:
        who = f" (parcel {self.parcel_id})" if self.parcel_id else ""
        return f"line {self.line}{who}: {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Orders:
    file: Path
    parcels: tuple[Parcel, ...]
    bad_rows: tuple[BadRow, ...]
    day: date | None  # the plan day the file's dated times refer to (None if none is dated)

    def require_clean(self) -> None:
        """Raise one :class:`InputError` listing every bad row, if there are any."""
        if not self.bad_rows:
            return
        shown = [str(b) for b in self.bad_rows[:MAX_BAD_ROWS_SHOWN]]
        more = len(self.bad_rows) - len(shown)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise InputError(
            f"{self.file}: {len(self.bad_rows)} bad row(s) (fix them, or plan the rest with "
            "--skip-bad-rows):\n  " + "\n  ".join(shown) + tail
        )


class _RowError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def site_zone(site: Site) -> ZoneInfo:
    try:
        return ZoneInfo(site.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"{site.config_file}: [site] timezone: unknown IANA time zone {site.timezone!r}"
        ) from exc


def parse_local_time(
    raw: str, field: str, zone: ZoneInfo, day: date | None
) -> tuple[int, date | None]:
    """``HH:MM[:SS]`` or an ISO 8601 date-time → (seconds after local midnight, its date)."""
    text = raw.strip()
    if "T" in text or (len(text) >= 10 and text[4] == "-" and text[7] == "-"):
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError as exc:
            raise _RowError(field, f"expected HH:MM or an ISO 8601 date-time, got {raw!r}") from exc
        try:
            local = stamp.astimezone(zone) if stamp.tzinfo is not None else stamp
        except OverflowError as exc:
            raise _RowError(field, f"{raw!r} is outside the calendar in local time") from exc
        if day is not None and local.date() != day:
            # 24:00 of the plan day is written as the next midnight
            if (
                day != date.max
                and local.date() == date.fromordinal(day.toordinal() + 1)
                and local.time() == time()
            ):
                return DAY_S, day
            raise _RowError(
                field,
                f"{raw!r} is on {local.date().isoformat()} (local time), "
                f"but the plan is for {day.isoformat()}",
            )
        return local.hour * 3600 + local.minute * 60 + local.second, local.date()
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
            raise ValueError(text)
        h, m = int(parts[0]), int(parts[1])
        s = int(parts[2]) if len(parts) == 3 else 0
        if not (0 <= h <= 24 and 0 <= m < 60 and 0 <= s < 60) or (h == 24 and (m or s)):
            raise ValueError(text)
    except ValueError as exc:
        raise _RowError(field, f"expected HH:MM or an ISO 8601 date-time, got {raw!r}") from exc
    return h * 3600 + m * 60 + s, None


def _number(row: dict[str, str], field: str, what: str) -> float:
    raw = (row.get(field) or "").strip()
    if not raw:
        raise _RowError(field, f"missing ({what})")
    try:
        value = float(raw)
    except ValueError as exc:
        raise _RowError(field, f"expected a number ({what}), got {raw!r}") from exc
    if not math.isfinite(value):
        raise _RowError(field, f"expected a finite number ({what}), got {raw!r}")
    return value


def _parse_row(
    row: dict[str, str],
    zone: ZoneInfo,
    day: date | None,
    stations: set[str],
) -> tuple[Parcel, date | None]:
    pid = (row.get("parcel_id") or "").strip()
    if not pid:
        raise _RowError("parcel_id", "missing (every parcel needs an id)")
    problem = id_problem(pid)
    if problem is not None:
        raise _RowError("parcel_id", problem)
    lon = _number(row, "lon", "degrees WGS84")
    if not -180 <= lon <= 180:
        raise _RowError("lon", f"expected -180..180 degrees, got {lon:g}")
    lat = _number(row, "lat", "degrees WGS84")
    if not -90 <= lat <= 90:
        raise _RowError("lat", f"expected -90..90 degrees, got {lat:g}")
    weight = _number(row, "weight_kg", "kg")
    if weight < 0:
        raise _RowError("weight_kg", f"expected a weight >= 0 kg, got {weight:g}")
    volume = _number(row, "volume_m3", "m³")
    if volume < 0:
        raise _RowError("volume_m3", f"expected a volume >= 0 m³, got {volume:g}")
    times: dict[str, int | None] = {"earliest": None, "latest": None}
    seen_day = day
    for field in times:
        raw = (row.get(field) or "").strip()
        if raw:
            seconds, its_day = parse_local_time(raw, field, zone, seen_day)
            if its_day is not None:
                seen_day = its_day
            times[field] = seconds
    earliest, latest = times["earliest"], times["latest"]
    if earliest is not None and latest is not None and earliest > latest:
        raise _RowError("latest", "the delivery window ends before it starts")
    service: float | None = None
    if (row.get("service_s") or "").strip():
        service = _number(row, "service_s", "s")
        if not 0 <= service <= MAX_SERVICE_S:
            raise _RowError(
                "service_s",
                f"expected a service time of 0..{MAX_SERVICE_S:g} s at the door, got {service:g}",
            )
    station_raw = (row.get("station") or "").strip()
    if station_raw and station_raw not in stations:
        raise _RowError(
            "station",
            f"unknown station {station_raw!r} (this site has: {', '.join(sorted(stations))})",
        )
    parcel = Parcel(
        id=ParcelId(pid),
        lon=lon,
        lat=lat,
        weight_kg=weight,
        volume_m3=volume,
        earliest_s=earliest,
        latest_s=latest,
        service_s=service,
        station=DepotId(station_raw) if station_raw else None,
    )
    return parcel, seen_day


def parse_orders(
    lines: Iterable[str], file: Path, site: Site, *, day: date | None = None
) -> Orders:
    """Parse CSV text lines (the header first); see :func:`read_orders`."""
    zone = site_zone(site)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration as exc:
        raise InputError(f"{file}: empty file (expected a header line)") from exc
    except csv.Error as exc:
        raise InputError(f"{file}: line 1: not valid CSV: {exc}") from exc
    columns = [h.strip().lstrip("\ufeff") for h in header]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise InputError(
            f"{file}: line 1: unknown column(s) {', '.join(map(repr, unknown))} "
            f"(expected {', '.join(REQUIRED_COLUMNS)} and optionally "
            f"{', '.join(OPTIONAL_COLUMNS)})"
        )
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise InputError(f"{file}: line 1: column(s) given twice: {', '.join(dup)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{file}: line 1: missing required column(s): {', '.join(missing)}")
    stations: set[str] = {s.id for s in site.stations}
    parcels: list[Parcel] = []
    bad: list[BadRow] = []
    first_line: dict[str, int] = {}
    plan_day = day
    rows = 0
    try:
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            rows += 1
            if rows > MAX_ORDERS_ROWS:
                raise InputError(
                    f"{file}: line {line}: more than {MAX_ORDERS_ROWS:,} parcel rows (the limit "
                    "of parcels per day, docs/limits.md); split the file"
                )
            pid = cells[columns.index("parcel_id")].strip() if len(cells) == len(columns) else ""
            if len(cells) != len(columns):
                bad.append(
                    BadRow(line, pid, "row", f"expected {len(columns)} fields, got {len(cells)}")
                )
                continue
            row = dict(zip(columns, cells, strict=True))
            try:
                parcel, seen_day = _parse_row(row, zone, plan_day, stations)
            except _RowError as err:
                bad.append(BadRow(line, pid, err.field, err.message))
                continue
            problem = parcel_problem(parcel)
            if problem is not None:  # defensive: the row checks above should catch it
                bad.append(BadRow(line, pid, "row", problem))
                continue
            if parcel.id in first_line:
                bad.append(
                    BadRow(
                        line,
                        pid,
                        "parcel_id",
                        f"duplicate id (first used on line {first_line[parcel.id]})",
                    )
                )
                continue
            first_line[parcel.id] = line
            plan_day = seen_day
            parcels.append(parcel)
    except csv.Error as exc:
        raise InputError(f"{file}: line {reader.line_num}: not valid CSV: {exc}") from exc
    return Orders(file=file, parcels=tuple(parcels), bad_rows=tuple(bad), day=plan_day)


def check_orders_size(path: Path) -> None:
    """Refuse an orders file over :data:`MAX_ORDERS_BYTES` before reading a byte of it."""
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise InputError(f"{path}: cannot read: {exc}") from exc
    if size > MAX_ORDERS_BYTES:
        raise InputError(
            f"{path}: {size:,} bytes exceed the limit of {MAX_ORDERS_BYTES:,} bytes for an "
            "orders file (docs/limits.md); split the file"
        )


def read_orders(path: Path, site: Site, *, day: date | None = None) -> Orders:
    """Read an orders CSV. ``day`` is the plan day (local); dated times must fall on it.

    Without ``day``, the first dated time in the file fixes it and the others must agree.
    Structural problems (no header, unknown or missing columns) raise :class:`InputError`;
    row problems are collected in :attr:`Orders.bad_rows`.
    """
    check_orders_size(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return parse_orders(fh, path, site, day=day)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc


def write_orders(parcels: Iterable[Parcel], path: Path) -> None:
    """Write parcels as an orders CSV (times as local ``HH:MM:SS``)."""

    def clock(t: int | None) -> str:
        if t is None:
            return ""
        return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(COLUMNS)
            for p in parcels:
                w.writerow(
                    [
                        p.id,
                        repr(p.lon),
                        repr(p.lat),
                        repr(p.weight_kg),
                        repr(p.volume_m3),
                        clock(p.earliest_s),
                        clock(p.latest_s),
                        "" if p.service_s is None else repr(p.service_s),
                        p.station or "",
                    ]
                )
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write orders: {exc}") from exc
