"""Scenarios: a day to simulate, read strictly from ``configs/scenarios/*.toml``.

A scenario names a site and a van, the fleet at the warehouse and at each station, the day's
demand (how many parcels, their weight and volume distributions, time windows, orders that
arrive during the day, urgent ones) and events at given times (a van breakdown, a road
closure, a van's link lost for a while, serial corruption on a van, a controller restart).
``docs/simulator.md`` describes every key. Unknown keys fail naming file, table and key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from fleet.errors import ConfigError
from fleet.model import DepotId, NodeId, Site, VanId, VanSpec, load_site, load_van_spec
from fleet.model.site import MAX_VANS_PER_DEPOT
from fleet.model.toml_table import Table, parse_clock
from fleet.planning.borrow import Sharing

DistributionKind = Literal["fixed", "uniform", "lognormal", "triangular"]
_KINDS: tuple[DistributionKind, ...] = ("fixed", "uniform", "lognormal", "triangular")

MAX_FLEET = 20_000  # vans in one scenario (the speed benchmark runs 1,000)
MAX_PARCELS = 1_000_000  # parcels in one scenario's day
BUSIEST_VAN = "busiest"  # an event's van chosen at run time: the van with the most parcels aboard


@dataclass(frozen=True, slots=True)
class Distribution:
    """A bounded random quantity (a parcel's weight or volume).

    ``fixed``: always ``value``. ``uniform``: between ``low`` and ``high``.
    ``lognormal``: median ``median`` and shape ``sigma``, clipped to ``[low, high]``.
    ``triangular``: between ``low`` and ``high`` with its peak at ``mode``.
    """

    kind: DistributionKind
    low: float
    high: float
    value: float = 0.0
    median: float = 0.0
    sigma: float = 0.0
    mode: float = 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.value, dtype=np.float64)
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high, n)
        if self.kind == "triangular":
            if self.low == self.high:
                return np.full(n, self.low, dtype=np.float64)
            return rng.triangular(self.low, self.mode, self.high, n)
        draws = rng.lognormal(math.log(self.median), self.sigma, n)
        return np.clip(draws, self.low, self.high)

    @property
    def mean(self) -> float:
        """The expected value (for lognormal: before clipping), for sizing demand."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "uniform":
            return (self.low + self.high) / 2
        if self.kind == "triangular":
            return (self.low + self.mode + self.high) / 3
        return self.median * math.exp(self.sigma**2 / 2)


@dataclass(frozen=True, slots=True)
class Demand:
    """The day's parcels, drawn with the scenario's seed."""

    parcels: int
    weight_kg: Distribution
    volume_m3: Distribution
    window_share: float  # share of parcels with a delivery time window (0..1)
    window_slots_s: tuple[tuple[int, int], ...]  # the windows customers choose from
    late_share: float  # share of parcels ordered during the day rather than known at start
    late_from_s: int  # orders arriving during the day arrive uniformly in [from, until]
    late_until_s: int
    urgent_share: float  # share of the late orders that are urgent
    urgent_within_s: int  # an urgent order must be delivered within this of arriving
    road_classes: tuple[str, ...]  # OSM highway classes where delivery addresses lie
    address_offset_m: float  # a door lies up to this far beside its road


@dataclass(frozen=True, slots=True)
class Breakdown:
    """A van stops for good; its parcels must reach their doors on other vans.

    The parcels aboard come back to the van's depot ``recovery_s`` after the breakdown
    (a tow or a handover), from where the re-planner may send them out again.
    """

    at_s: int
    van: str  # a van id, or "busiest"
    recovery_s: int
    kind: Literal["breakdown"] = "breakdown"


@dataclass(frozen=True, slots=True)
class RoadClosure:
    """Roads closed from ``at_s`` (until ``until_s`` if given): named edges, the road nearest
    to a point, or every road inside a polygon or a circle."""

    at_s: int
    until_s: int | None
    edges: tuple[tuple[NodeId, NodeId], ...] = ()
    near: tuple[float, float] | None = None  # lon, lat: close the road nearest to it
    polygon: tuple[tuple[float, float], ...] = ()  # lon, lat ring
    center: tuple[float, float] | None = None  # lon, lat of a circle
    radius_m: float = 0.0
    kind: Literal["road_closure"] = "road_closure"


@dataclass(frozen=True, slots=True)
class LinkLoss:
    """A van's MQTT link drops for ``duration_s``: it finishes its released base, then holds."""

    at_s: int
    van: str
    duration_s: int
    kind: Literal["link_loss"] = "link_loss"


@dataclass(frozen=True, slots=True)
class SerialCorruption:
    """Bytes on a van's serial line are corrupted for ``duration_s``.

    Each frame between the bridge and the VCU is damaged with probability
    ``frame_error_share``; the link layer must detect it (CRC) and retry.
    """

    at_s: int
    van: str
    duration_s: int
    frame_error_share: float
    kind: Literal["serial_corruption"] = "serial_corruption"


@dataclass(frozen=True, slots=True)
class ControllerRestart:
    """The controller process stops and comes back ``down_s`` later from its store."""

    at_s: int
    down_s: int
    kind: Literal["controller_restart"] = "controller_restart"


Event = Breakdown | RoadClosure | LinkLoss | SerialCorruption | ControllerRestart
EVENT_KINDS = ("breakdown", "road_closure", "link_loss", "serial_corruption", "controller_restart")


@dataclass(frozen=True, slots=True)
class Fleet:
    """How many vans are based at the warehouse and at each station."""

    warehouse_vans: int
    station_vans: Mapping[DepotId, int]

    @property
    def total(self) -> int:
        return self.warehouse_vans + sum(self.station_vans.values())

    def resized(self, total: int) -> Fleet:
        """The same fleet scaled to ``total`` vans, shares kept by largest remainder.

        The warehouse keeps at least one van if it had any (leg 1 needs it) and so does
        every station that had one, as long as ``total`` allows.
        """
        if not 1 <= total <= MAX_FLEET:
            raise ConfigError(f"--vans: expected 1 to {MAX_FLEET:,} vans, got {total}")
        ids: list[DepotId | None] = [None, *self.station_vans]
        weights = [self.warehouse_vans, *self.station_vans.values()]
        wsum = sum(weights)
        if wsum == 0:
            weights = [1] * len(ids)
            wsum = len(ids)
        floor_min = [1 if w > 0 else 0 for w in weights]
        if sum(floor_min) > total:
            floor_min = [0] * len(ids)
        exact = [total * w / wsum for w in weights]
        counts = [max(m, math.floor(e)) for m, e in zip(floor_min, exact, strict=True)]
        # Hand out (or take back) the difference by remainder, deterministically.
        order = sorted(range(len(ids)), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
        i = 0
        while sum(counts) < total:
            counts[order[i % len(order)]] += 1
            i += 1
        for j in sorted(range(len(ids)), key=lambda k: (-counts[k], k)):
            while sum(counts) > total and counts[j] > floor_min[j]:
                counts[j] -= 1
        return Fleet(
            warehouse_vans=counts[0],
            station_vans={DepotId(str(d)): c for d, c in zip(ids[1:], counts[1:], strict=True)},
        )

    def van_ids(self, site: Site) -> list[VanId]:
        """Every van id, ``f"{depot_id}-{k:02d}"``: the warehouse's first, then by station."""
        out = [VanId(f"{site.warehouse.id}-{k:02d}") for k in range(1, self.warehouse_vans + 1)]
        for st in site.stations:
            n = self.station_vans.get(st.id, 0)
            out.extend(VanId(f"{st.id}-{k:02d}") for k in range(1, n + 1))
        return out


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How the day is run (each may be overridden on the command line)."""

    start_s: int  # simulated day starts (seconds after local midnight)
    end_s: int  # simulation stops; parcels not delivered by then have failed
    plan_time_limit_s: float  # PyVRP search time for the day's plan
    replan_time_limit_s: float  # and for each re-plan
    speedup: float  # full stack: simulated seconds per wall second
    state_period_s: float  # simulated seconds between a van's state reports (full stack)
    order_batch_s: int  # orders arriving during the day are handed in at this period
    # which vans may serve a station's doors (fleet.planning.borrow.Sharing): "fleet" (any
    # van with time) or "depot" (the station's own); the morning plan and every re-plan
    sharing: Sharing = Sharing.FLEET


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    file: Path
    site: Site  # with the scenario's fleet applied to its depots
    van: VanSpec
    day: dt.date
    seed: int
    fleet: Fleet
    demand: Demand
    run: RunSettings
    events: tuple[Event, ...] = field(default=())  # in file order

    def events_by_time(self) -> list[Event]:
        return sorted(self.events, key=lambda e: e.at_s)

    def van_ids(self) -> list[VanId]:
        return self.fleet.van_ids(self.site)

    def with_overrides(
        self,
        *,
        vans: int | None = None,
        parcels: int | None = None,
        seed: int | None = None,
        speedup: float | None = None,
    ) -> Scenario:
        """This scenario with command-line overrides applied (and checked)."""
        out = self
        if vans is not None:
            fleet = self.fleet.resized(vans)
            out = dataclasses.replace(out, fleet=fleet, site=_apply_fleet(self.site, fleet))
        if parcels is not None:
            if not 0 <= parcels <= MAX_PARCELS:
                raise ConfigError(
                    f"--parcels: expected 0 to {MAX_PARCELS:,} parcels, got {parcels}"
                )
            out = dataclasses.replace(out, demand=dataclasses.replace(out.demand, parcels=parcels))
        if seed is not None:
            out = dataclasses.replace(out, seed=seed)
        if speedup is not None:
            if not speedup > 0:
                raise ConfigError(f"--speedup: expected a factor > 0, got {speedup}")
            out = dataclasses.replace(out, run=dataclasses.replace(out.run, speedup=speedup))
        out.check_event_vans()
        return out

    def check_event_vans(self) -> None:
        """Every van an event names exists in this fleet."""
        vans = set(self.van_ids())
        for i, ev in enumerate(self.events):
            name = getattr(ev, "van", None)
            if name is not None and name != BUSIEST_VAN and name not in vans:
                raise ConfigError(
                    f"{self.file}: [events[{i}]] van: no van {name!r} in this fleet "
                    f"(vans are {_summarise_ids(sorted(vans))}; or use {BUSIEST_VAN!r})"
                )


def _summarise_ids(ids: list[str]) -> str:
    return ", ".join(ids) if len(ids) <= 8 else ", ".join(ids[:8]) + f", … ({len(ids)} in all)"


def _apply_fleet(site: Site, fleet: Fleet) -> Site:
    warehouse = dataclasses.replace(site.warehouse, vans=fleet.warehouse_vans)
    stations = tuple(
        dataclasses.replace(st, vans=fleet.station_vans.get(st.id, 0)) for st in site.stations
    )
    return dataclasses.replace(site, warehouse=warehouse, stations=stations)


# -- reading -------------------------------------------------------------------------------


def _distribution(t: Table) -> Distribution:
    kind = t.choice("kind", _KINDS)
    if kind == "fixed":
        value = t.number("value", "unit of the table", gt=0)
        dist = Distribution(kind="fixed", low=value, high=value, value=value)
    elif kind == "uniform":
        low = t.number("min", "unit of the table", gt=0)
        high = t.number("max", "unit of the table", gt=0)
        if high < low:
            raise t.error("max", f"expected max >= min ({low:g}), got {high:g}")
        dist = Distribution(kind="uniform", low=low, high=high)
    elif kind == "triangular":
        low = t.number("min", "unit of the table", gt=0)
        high = t.number("max", "unit of the table", gt=0)
        mode = t.number("mode", "unit of the table", gt=0)
        if not low <= mode <= high:
            raise t.error("mode", f"expected min <= mode <= max ({low:g}..{high:g}), got {mode:g}")
        dist = Distribution(kind="triangular", low=low, high=high, mode=mode)
    else:
        median = t.number("median", "unit of the table", gt=0)
        sigma = t.number("sigma", "shape of the log", ge=0, le=5)
        low = t.number("min", "unit of the table", gt=0)
        high = t.number("max", "unit of the table", gt=0)
        if not low <= median <= high:
            raise t.error(
                "median", f"expected min <= median <= max ({low:g}..{high:g}), got {median:g}"
            )
        dist = Distribution(kind="lognormal", low=low, high=high, median=median, sigma=sigma)
    t.finish()
    return dist


def _slot(text: str, where: str) -> tuple[int, int]:
    parts = text.split("-")
    if len(parts) != 2:
        raise ConfigError(f"{where}: expected a window 'HH:MM-HH:MM', got {text!r}")
    start, end = parse_clock(parts[0].strip(), where), parse_clock(parts[1].strip(), where)
    if end <= start:
        raise ConfigError(f"{where}: the window {text!r} must end after it starts")
    return start, end


def _demand(t: Table, run: RunSettings) -> Demand:
    parcels = t.integer("parcels", "parcels", ge=0, le=MAX_PARCELS)
    weight = _distribution(t.table("weight_kg"))
    volume = _distribution(t.table("volume_m3"))
    window_share = t.number("window_share", "share 0..1", ge=0, le=1, default=0.0)
    slots = tuple(
        _slot(s, t.where("window_slots")) for s in t.string_list("window_slots", default=[])
    )
    if window_share > 0 and not slots:
        raise t.error("window_slots", "window_share > 0 needs at least one window slot")
    for a, b in slots:
        if a < run.start_s or b > run.end_s:
            raise t.error("window_slots", "every window must lie inside the simulated day")
    late_share = t.number("late_share", "share 0..1", ge=0, le=1, default=0.0)
    late_from = parse_clock(t.string("late_from", default="09:00"), t.where("late_from"))
    late_until = parse_clock(t.string("late_until", default="14:00"), t.where("late_until"))
    if late_until < late_from:
        raise t.error("late_until", "must not be before late_from")
    if late_share > 0 and not (run.start_s <= late_from and late_until < run.end_s):
        raise t.error("late_from", "orders arriving during the day must arrive inside the day")
    urgent_share = t.number("urgent_share", "share 0..1 of late orders", ge=0, le=1, default=0.0)
    urgent_within_s = t.integer("urgent_within_s", "s", ge=600, default=3 * 3600)
    classes = tuple(
        t.string_list(
            "road_classes",
            default=["residential", "living_street", "unclassified", "tertiary"],
        )
    )
    if not classes:
        raise t.error("road_classes", "expected at least one OSM highway class")
    offset = t.number("address_offset_m", "m", ge=0, le=200, default=0.0)
    t.finish()
    return Demand(
        parcels=parcels,
        weight_kg=weight,
        volume_m3=volume,
        window_share=window_share,
        window_slots_s=slots,
        late_share=late_share,
        late_from_s=late_from,
        late_until_s=late_until,
        urgent_share=urgent_share,
        urgent_within_s=urgent_within_s,
        road_classes=classes,
        address_offset_m=offset,
    )


def _fleet(t: Table, site: Site) -> Fleet:
    warehouse_vans = t.integer(
        "warehouse_vans", "vans", ge=0, le=MAX_VANS_PER_DEPOT, default=site.warehouse.vans
    )
    default_station: int | None = None
    if t.has("station_vans"):
        default_station = t.integer(
            "station_vans", "vans at each station", ge=0, le=MAX_VANS_PER_DEPOT
        )
    by_id = t.table("by_station", optional=True)
    counts: dict[DepotId, int] = {}
    for st in site.stations:
        if by_id.has(st.id):
            counts[st.id] = by_id.integer(st.id, "vans", ge=0, le=MAX_VANS_PER_DEPOT)
        else:
            counts[st.id] = st.vans if default_station is None else default_station
    known = {st.id for st in site.stations}
    unknown = sorted(set(by_id.keys()) - known)
    if unknown:
        raise by_id.error(
            unknown[0],
            f"no station {unknown[0]!r} in {site.config_file} (stations: {', '.join(known)})",
        )
    by_id.finish()
    t.finish()
    fleet = Fleet(warehouse_vans=warehouse_vans, station_vans=counts)
    if fleet.total == 0:
        raise t.error(None, "the fleet has no vans")
    return fleet


def _lonlat(value: list[float], where: str) -> tuple[float, float]:
    if len(value) != 2:
        raise ConfigError(f"{where}: expected [lon, lat], got {value!r}")
    lon, lat = value
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ConfigError(f"{where}: expected [lon, lat] in degrees WGS84, got {value!r}")
    return lon, lat


def _event(t: Table, run: RunSettings) -> Event:
    kind = t.choice("kind", EVENT_KINDS)
    at_s = parse_clock(t.string("at"), t.where("at"))
    if not run.start_s <= at_s < run.end_s:
        raise t.error("at", "the event must happen inside the simulated day")
    ev: Event
    if kind == "breakdown":
        ev = Breakdown(
            at_s=at_s,
            van=t.string("van"),
            recovery_s=t.integer("recovery_s", "s", ge=0, default=1800),
        )
    elif kind == "link_loss":
        ev = LinkLoss(at_s=at_s, van=t.string("van"), duration_s=t.integer("duration_s", "s", ge=1))
    elif kind == "serial_corruption":
        ev = SerialCorruption(
            at_s=at_s,
            van=t.string("van"),
            duration_s=t.integer("duration_s", "s", ge=1),
            frame_error_share=t.number("frame_error_share", "share 0..1", gt=0, lt=1),
        )
    elif kind == "controller_restart":
        ev = ControllerRestart(at_s=at_s, down_s=t.integer("down_s", "s", ge=0, default=30))
    else:
        ev = _closure(t, at_s)
    t.finish()
    return ev


def _closure(t: Table, at_s: int) -> RoadClosure:
    until_s: int | None = None
    if t.has("until"):
        until_s = parse_clock(t.string("until"), t.where("until"))
        if until_s <= at_s:
            raise t.error("until", "a closure must end after it starts")
    given = [k for k in ("edge", "near", "area", "center") if t.has(k)]
    if len(given) != 1:
        raise t.error(
            None,
            "a road closure needs exactly one of edge = [from_node, to_node], "
            "near = [lon, lat], area = [{lon, lat}, ...], or center = [lon, lat] with radius_m"
            + (f" (got {', '.join(given)})" if given else ""),
        )
    if given[0] == "edge":
        raw = t.number_list("edge", "OSM node ids")
        if len(raw) != 2 or not all(v == int(v) for v in raw):
            raise t.error("edge", f"expected [from_node, to_node] OSM node ids, got {raw!r}")
        return RoadClosure(at_s, until_s, edges=((NodeId(int(raw[0])), NodeId(int(raw[1]))),))
    if given[0] == "near":
        near = _lonlat(t.number_list("near", "degrees"), t.where("near"))
        return RoadClosure(at_s, until_s, near=near)
    if given[0] == "center":
        center = _lonlat(t.number_list("center", "degrees"), t.where("center"))
        radius = t.number("radius_m", "m", gt=0, le=10_000)
        return RoadClosure(at_s, until_s, center=center, radius_m=radius)
    ring: list[tuple[float, float]] = []
    for point in t.tables("area"):
        ring.append(
            (
                point.number("lon", "degrees WGS84", ge=-180, le=180),
                point.number("lat", "degrees WGS84", ge=-90, le=90),
            )
        )
        point.finish()
    if len(ring) < 3:
        raise t.error("area", f"expected a polygon of 3 or more points, got {len(ring)}")
    return RoadClosure(at_s, until_s, polygon=tuple(ring))


def _clock_or(t: Table, key: str, default_s: int) -> int:
    if not t.has(key):
        t.string(key, default="00:00")  # marks the key as read
        return default_s
    return parse_clock(t.string(key), t.where(key))


def _run(t: Table, site: Site) -> RunSettings:
    start_s = _clock_or(t, "start", site.shift_start_s)
    end_s = _clock_or(t, "end", site.shift_end_s)
    if end_s <= start_s:
        raise t.error("end", "the simulated day must end after it starts")
    run = RunSettings(
        start_s=start_s,
        end_s=end_s,
        plan_time_limit_s=t.number("plan_time_limit_s", "s", gt=0, le=3600, default=5.0),
        replan_time_limit_s=t.number("replan_time_limit_s", "s", gt=0, le=600, default=2.0),
        speedup=t.number("speedup", "simulated s per wall s", gt=0, le=100_000, default=60.0),
        state_period_s=t.number("state_period_s", "simulated s", gt=0, le=600, default=30.0),
        order_batch_s=t.integer("order_batch_s", "simulated s", ge=60, le=4 * 3600, default=900),
        sharing=Sharing(
            t.choice("sharing", tuple(x.value for x in Sharing), default=Sharing.FLEET.value)
        ),
    )
    t.finish()
    return run


def load_scenario(path: Path) -> Scenario:
    """Read ``path``; the site and van files it names are read too (relative to it)."""
    root = Table.root(path)
    s = root.table("scenario")
    name = s.string("name")
    description = s.string("description", default="", nonempty=False)
    site_file = s.path("site")
    van_file = s.path("van")
    day_text = s.string("day")
    try:
        day = dt.date.fromisoformat(day_text)
    except ValueError as exc:
        raise s.error("day", f"expected a date YYYY-MM-DD, got {day_text!r}") from exc
    seed = s.integer("seed", "seed", ge=0, default=1)
    s.finish()
    site = load_site(site_file)
    van = load_van_spec(van_file)
    run = _run(root.table("run", optional=True), site)
    fleet = _fleet(root.table("fleet", optional=True), site)
    demand = _demand(root.table("demand"), run)
    events = tuple(_event(t, run) for t in root.tables("events", optional=True))
    root.finish()
    scenario = Scenario(
        name=name,
        description=description,
        file=path,
        site=_apply_fleet(site, fleet),
        van=van,
        day=day,
        seed=seed,
        fleet=fleet,
        demand=demand,
        run=run,
        events=events,
    )
    scenario.check_event_vans()
    return scenario


def scenarios_dir() -> Path:
    """The shipped scenarios (``configs/scenarios``)."""
    from fleet.paths import config_dir

    return config_dir() / "scenarios"


def resolve_scenario(name_or_path: str) -> Path:
    """A path as given, or the name of a shipped scenario (``normal`` → its file)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = scenarios_dir() / (name_or_path + ("" if name_or_path.endswith(".toml") else ".toml"))
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in scenarios_dir().glob("*.toml"))
    raise ConfigError(
        f"--scenario: no file {name_or_path!r} and no shipped scenario of that name "
        f"(shipped: {', '.join(names) or 'none'})"
    )
