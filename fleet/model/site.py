"""A site: one warehouse, its stations, their vans, a road network and an operating area."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fleet.identifiers import depot_id_problem
from fleet.model.ids import DepotId
from fleet.model.toml_table import Table, parse_clock

MAX_VANS_PER_DEPOT = 10_000  # a bound on configs: far above any depot, far below memory trouble


class Departure(StrEnum):
    """When a van leaves its depot for a trip (``[shift] departure``, docs/plan.md).

    ``early``: as soon as its parcels are released and loaded (and it has charged what the
    trip needs). ``late``: as late as it can without ending the trip later or coming within
    15 minutes of a closing window (it waits at the depot, charging, not at a door)."""

    EARLY = "early"
    LATE = "late"


DEFAULT_DEPARTURE = Departure.EARLY  # measured: docs/plan.md, "Departure policy"


@dataclass(frozen=True, slots=True)
class Depot:
    """The warehouse or a station: where vans are based, load, and charge."""

    id: DepotId
    name: str
    lon: float
    lat: float
    vans: int  # vans based here


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    config_file: Path
    osm_file: Path  # OpenStreetMap extract (.osm.pbf)
    operating_area_file: Path  # GeoJSON polygon(s): where the van is approved to drive
    timezone: str  # IANA name; order times are local to it
    snap_max_m: float  # a point farther than this from a drivable road is refused
    shift_start_s: int  # seconds after local midnight
    shift_end_s: int
    warehouse: Depot
    stations: tuple[Depot, ...]
    excluded_highways: tuple[str, ...]  # road classes outside the van's design domain
    departure: Departure = DEFAULT_DEPARTURE  # when trips leave their depot

    @property
    def depots(self) -> tuple[Depot, ...]:
        """The warehouse first, then the stations in config order."""
        return (self.warehouse, *self.stations)

    def station(self, station_id: str) -> Depot:
        for st in self.stations:
            if st.id == station_id:
                return st
        raise KeyError(station_id)


def _depot(t: Table) -> Depot:
    depot_id = t.string("id")
    problem = depot_id_problem(depot_id)
    if problem is not None:
        raise t.error("id", problem)
    depot = Depot(
        id=DepotId(depot_id),
        name=t.string("name"),
        lon=t.number("lon", "degrees WGS84", ge=-180, le=180),
        lat=t.number("lat", "degrees WGS84", ge=-90, le=90),
        vans=t.integer("vans", "vans", ge=0, le=MAX_VANS_PER_DEPOT),
    )
    t.finish()
    return depot


def load_site(path: Path) -> Site:
    """Read a site config (``configs/sites/<city>.toml``); paths are relative to it."""
    root = Table.root(path)
    s = root.table("site")
    roads = root.table("roads", optional=True)
    shift = root.table("shift")
    name = s.string("name")
    osm_file = s.path("osm_file")
    area_file = s.path("operating_area_file")
    timezone = s.string("timezone")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise s.error(
            "timezone", f"expected an IANA time zone such as 'Europe/Lisbon', got {timezone!r}"
        ) from exc
    snap_max_m = s.number("snap_max_m", "m", gt=0)
    s.finish()
    excluded = tuple(roads.string_list("exclude_highways", default=[]))
    roads.finish()
    start_s = parse_clock(shift.string("start"), shift.where("start"))
    end_s = parse_clock(shift.string("end"), shift.where("end"))
    if end_s <= start_s:
        raise shift.error("end", f"the shift must end after it starts ({shift.string('start')})")
    departure = Departure(
        shift.choice(
            "departure", tuple(d.value for d in Departure), default=DEFAULT_DEPARTURE.value
        )
    )
    shift.finish()
    warehouse_t = root.table("warehouse")
    warehouse = _depot(warehouse_t)
    stations = tuple(_depot(t) for t in root.tables("stations"))
    root.finish()
    if not stations:
        raise root.error("stations", "a site needs at least one [[stations]] entry")
    seen: set[str] = {warehouse.id}
    for i, st in enumerate(stations):
        if st.id in seen:
            raise root.error(f"stations[{i}].id", f"duplicate depot id {st.id!r}")
        seen.add(st.id)
    for f, key in ((osm_file, "osm_file"), (area_file, "operating_area_file")):
        try:
            found = f.is_file()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise root.error(f"site.{key}", f"cannot use {str(f)[:80]!r}…: {exc.strerror}") from exc
        if not found:
            raise root.error(f"site.{key}", f"file not found: {f}")
    return Site(
        name=name,
        config_file=path,
        osm_file=osm_file,
        operating_area_file=area_file,
        timezone=timezone,
        snap_max_m=snap_max_m,
        shift_start_s=start_s,
        shift_end_s=end_s,
        warehouse=warehouse,
        stations=stations,
        excluded_highways=excluded,
        departure=departure,
    )
