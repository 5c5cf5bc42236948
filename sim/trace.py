"""What happened during a simulated day: the facts both modes record, and KPIs are made from.

Each mode writes the same kinds of record: the fast mode through
:class:`sim.fast.recorder.TraceRecorder`, the full stack through
:class:`sim.full.observer.Observer`, and both through :class:`sim.driver.ScenarioDriver` (the
scenario's events). :mod:`sim.kpi` turns the finished :class:`Trace` into KPIs and
:mod:`sim.report` into plots and a map. Times are seconds after local midnight of the
scenario's day (``t_s``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleet.model import DepotId, ParcelId, VanId

LonLat = tuple[float, float]


@dataclass(frozen=True, slots=True)
class ParcelInfo:
    """A parcel of the day's demand, as the simulator knows it."""

    id: ParcelId
    lon: float
    lat: float
    weight_kg: float
    volume_m3: float
    earliest_s: int | None
    latest_s: int | None
    ordered_s: int  # when the order became known (start of day for the morning's orders)
    urgent: bool


@dataclass(frozen=True, slots=True)
class Loaded:
    t_s: float
    van: VanId
    parcel: ParcelId
    depot: DepotId | None  # where it was loaded (None: handed over elsewhere)
    from_van: VanId | None = None  # taken over from this broken-down van beside it


@dataclass(frozen=True, slots=True)
class Unloaded:
    """A parcel taken off a van without being delivered (back at a depot)."""

    t_s: float
    van: VanId
    parcel: ParcelId
    depot: DepotId | None
    why: str


@dataclass(frozen=True, slots=True)
class Delivered:
    t_s: float
    van: VanId
    parcel: ParcelId


@dataclass(frozen=True, slots=True)
class Failed:
    """A parcel not delivered by the end of the day, and why."""

    parcel: ParcelId
    reason: str  # a planner reason code, or "not_delivered" / "stranded_on_broken_van"
    detail: str


@dataclass(frozen=True, slots=True)
class Drive:
    """A van moving between two stops (or to where it stopped)."""

    van: VanId
    t0_s: float
    t1_s: float
    dist_m: float
    energy_kwh: float
    parcels_aboard: int  # > 0: loaded km, else empty km
    path: tuple[LonLat, ...]


@dataclass(frozen=True, slots=True)
class Departure:
    """A van leaving its depot on a trip, with what it carries."""

    van: VanId
    t_s: float
    load_kg: float
    load_m3: float
    parcels: int


@dataclass(frozen=True, slots=True)
class SocSample:
    van: VanId
    t_s: float
    soc_pct: float


@dataclass(frozen=True, slots=True)
class Charged:
    van: VanId
    t_s: float
    energy_kwh: float


@dataclass(frozen=True, slots=True)
class Replan:
    t_s: float
    cause: str  # breakdown, road_closure, late_orders, link_loss, controller_restart, ...
    detail: str
    moved_parcels: int  # parcels that changed van


@dataclass(frozen=True, slots=True)
class BreakdownRecord:
    t_s: float
    van: VanId
    lon: float
    lat: float
    parcels: tuple[ParcelId, ...]  # aboard or still due on its route: they need other vans


@dataclass(frozen=True, slots=True)
class ClosureRecord:
    t_s: float
    until_s: float | None
    lines: tuple[tuple[LonLat, ...], ...]  # the closed roads
    polygon: tuple[LonLat, ...]  # the closed area (empty for closed edges only)


@dataclass(frozen=True, slots=True)
class Incident:
    """Any other event worth a line in the report (link loss, serial corruption, restart)."""

    t_s: float
    kind: str
    van: VanId | None
    detail: str


@dataclass(slots=True)
class Counters:
    """Message accounting (full stack) and link-layer effort."""

    commands_sent: int = 0  # orders and instant actions the controller published
    commands_received: int = 0  # of those, received by a bridge
    states_received: int = 0  # van state messages the controller consumed
    messages_lost: int = 0  # published at QoS 1 and never delivered
    lost_by_van: dict[str, int] = field(default_factory=dict)  # commands lost, per van
    serial_frames_corrupted: int = 0
    serial_retries: int = 0


@dataclass(slots=True)
class Trace:
    """Everything recorded about one simulated day."""

    scenario: str
    mode: str  # "fast" or "full"
    seed: int
    start_s: float
    end_s: float
    warehouse: str = ""  # where every parcel is when it is ordered
    vans: dict[VanId, DepotId] = field(default_factory=dict)  # van → its depot
    depots: dict[DepotId, LonLat] = field(default_factory=dict)
    parcels: dict[ParcelId, ParcelInfo] = field(default_factory=dict)
    loaded: list[Loaded] = field(default_factory=list)
    unloaded: list[Unloaded] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    drives: list[Drive] = field(default_factory=list)
    departures: list[Departure] = field(default_factory=list)
    soc: list[SocSample] = field(default_factory=list)
    charged: list[Charged] = field(default_factory=list)
    replans: list[Replan] = field(default_factory=list)
    breakdowns: list[BreakdownRecord] = field(default_factory=list)
    closures: list[ClosureRecord] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    wall_s: float = 0.0  # wall time the run took
    planned_routes: int = 0

    def add_parcels(self, parcels: Iterable[ParcelInfo]) -> None:
        for p in parcels:
            self.parcels[p.id] = p

    def finish(self, end_s: float, unserved: Mapping[ParcelId, tuple[str, str]]) -> None:
        """Close the day: every parcel not delivered becomes a failure with a reason.

        ``unserved`` holds the latest plan's reason (code, detail) for parcels it left out.
        """
        self.end_s = end_s
        delivered = {d.parcel for d in self.delivered}
        failed = {f.parcel for f in self.failed}
        broken = {b.van for b in self.breakdowns}
        aboard = self.aboard_at_end()
        for pid in self.parcels:
            if pid in delivered or pid in failed:
                continue
            van = aboard.get(pid)
            if van is None and pid in unserved:
                reason, detail = unserved[pid]
                self.failed.append(Failed(pid, reason, detail))
            elif van is None:
                self.failed.append(Failed(pid, "not_delivered", "still at a depot at day's end"))
            elif van in broken:
                self.failed.append(
                    Failed(pid, "stranded_on_broken_van", f"aboard {van}, broken down")
                )
            else:
                self.failed.append(Failed(pid, "not_delivered", f"still aboard {van}"))

    def aboard_at_end(self) -> dict[ParcelId, VanId]:
        """Where each parcel last was: aboard the van that loaded it last, unless delivered."""
        where: dict[ParcelId, VanId] = {}
        events: list[tuple[float, int, ParcelId, VanId | None]] = []
        events.extend((e.t_s, 0, e.parcel, e.van) for e in self.loaded)
        events.extend((e.t_s, 1, e.parcel, None) for e in self.delivered)
        events.extend((e.t_s, 1, e.parcel, None) for e in self.unloaded)
        for _, _, pid, van in sorted(events, key=lambda e: (e[0], e[1])):
            if van is None:
                where.pop(pid, None)
            else:
                where[pid] = van
        return where

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")
