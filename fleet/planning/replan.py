"""``replan``: a new verified plan from the fleet as it is (contract section 2).

The controller calls it when a van breaks down, goes offline, is cancelled, or an urgent order
arrives. It gives the state of every van it knows (:class:`VanNow`: where, state of charge,
parcels on board, in service or not, free from when) and every parcel not yet delivered,
with where each one is. The new plan:

* keeps every parcel on board an in-service van with that van: the van's first trip (a
  ``start`` stop where it is, then the doors or stations of what it carries, then its depot)
  delivers what it can in time and brings the rest back to its depot;
* gives nothing to a van out of service; what it carries is taken as recovered to its depot
  ``recovery_s`` after ``now_s`` (a station for a last-mile van, else the warehouse), and
  planned from there on other vans; for a last-mile van named in ``transfer_from`` (broken
  down where it stands), a rescue trip that takes its load over there is planned instead
  when it delivers sooner (docs/plan.md, "Breakdowns");
* plans from each van's position, time and state of charge; parcels at stations go out on
  the last mile directly, parcels at the warehouse through the line haul first;
* a parcel still on its way to a station (a line-haul van's released base unloads it there)
  is given as at that station from ``ready_at`` (when the unload is due), so no van is
  planned to load it before it is there; a parcel said to be "at the station" of the
  warehouse's id is back at the warehouse;
* with ``sharing="fleet"`` (the default) door stops a station's own vans cannot take go to
  vans of other depots, warehouse vans included, that have time after their own work
  (:mod:`fleet.planning.borrow`); ``sharing="depot"`` keeps each station to its own vans.

Vans of the site that ``vans`` does not mention are taken as idle at their depot, full, from
``now_s``. Every plan returned has passed the verifier (with the same starting state).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import date
from typing import Protocol

from fleet.errors import InputError, SnapError
from fleet.model.ids import DepotId, ParcelId, VanId
from fleet.model.parcel import Parcel
from fleet.model.plan import Plan
from fleet.model.site import Site
from fleet.model.van import VanSpec
from fleet.planning.borrow import Sharing
from fleet.planning.engine import (
    ParcelState,
    Progress,
    StartingState,
    VanState,
    Where,
    plan_fleet,
    van_ids,
)
from fleet.roads import RoadNetwork

RECOVERY_S = 1800.0


class VanNowLike(Protocol):
    """What a re-plan needs to know of a van (any object with these attributes will do)."""

    @property
    def van_id(self) -> str: ...
    @property
    def lon(self) -> float: ...
    @property
    def lat(self) -> float: ...
    @property
    def soc_pct(self) -> float: ...
    @property
    def parcels_on_board(self) -> Sequence[str]: ...
    @property
    def in_service(self) -> bool: ...
    @property
    def free_from_s(self) -> float: ...


class VanNow:
    """A van as a re-plan must take it. Times are seconds after local midnight."""

    __slots__ = (
        "free_from_s",
        "in_service",
        "lat",
        "lon",
        "parcels_on_board",
        "soc_pct",
        "van_id",
    )

    def __init__(
        self,
        van_id: str,
        lon: float,
        lat: float,
        soc_pct: float,
        parcels_on_board: Sequence[str],
        in_service: bool,
        free_from_s: float,
    ) -> None:
        self.van_id = van_id
        self.lon = lon
        self.lat = lat
        self.soc_pct = soc_pct
        self.parcels_on_board = tuple(parcels_on_board)
        self.in_service = in_service
        self.free_from_s = free_from_s

    def __repr__(self) -> str:
        return (
            f"VanNow({self.van_id!r}, lon={self.lon}, lat={self.lat}, soc={self.soc_pct}, "
            f"on_board={len(self.parcels_on_board)}, in_service={self.in_service}, "
            f"free_from_s={self.free_from_s})"
        )


def depot_of(van_id: str, site: Site) -> DepotId:
    """The depot a van id names (``ST-BAIXA-03`` → ``ST-BAIXA``)."""
    head, sep, tail = van_id.rpartition("-")
    depots = {d.id for d in site.depots}
    if not sep or not tail.isdigit() or head not in depots:
        raise InputError(
            f"van {van_id!r}: expected <depot id>-<number> with a depot of site "
            f"{site.name!r} ({', '.join(sorted(depots))})"
        )
    return DepotId(head)


def replan(
    parcels: Sequence[Parcel],
    vans: Sequence[VanNowLike],
    site: Site,
    van: VanSpec,
    net: RoadNetwork,
    *,
    now_s: float,
    parcel_location: Mapping[str, str] | None = None,
    at_station: Mapping[str, str] | None = None,
    ready_at: Mapping[str, float] | None = None,
    recovered_at: Mapping[str, float] | None = None,
    time_limit_s: float = 10.0,
    seed: int = 1,
    progress: Progress | None = None,
    day: date | None = None,
    created_utc: str = "",
    workers: int | None = None,
    max_iterations: int | None = None,
    recovery_s: float = RECOVERY_S,
    sharing: Sharing = Sharing.FLEET,
    transfer_from: Collection[str] = (),
) -> Plan:
    """A new verified plan for ``parcels`` (all not yet delivered) from the fleet as it is.

    ``now_s`` is the time of the re-plan (seconds after local midnight of ``day``).
    ``parcel_location`` says where each parcel is: ``"warehouse"``, ``"station"`` or
    ``"on_board"`` (default: on board if a van lists it, else at the warehouse);
    ``at_station`` names the station of parcels at one (default: the parcel's configured
    station, else the nearest by road, as the day plan chose); ``ready_at`` gives, for
    parcels not yet where they are said to be, when they will be (seconds after local
    midnight; default ``now_s``); ``recovered_at``, for parcels aboard a van out of service,
    when they are back at its depot (default ``now_s + recovery_s``: a controller passes the
    time it assumed when the van was declared lost, so later re-plans agree);
    ``transfer_from`` names vans out of service (broken down where they stand, reachable)
    whose load a rescue trip may take over there until then (with ``sharing="fleet"``). See
    :func:`replan_with_state` for the starting state to verify the plan again with.
    """
    return replan_with_state(
        parcels,
        vans,
        site,
        van,
        net,
        now_s=now_s,
        parcel_location=parcel_location,
        at_station=at_station,
        ready_at=ready_at,
        recovered_at=recovered_at,
        time_limit_s=time_limit_s,
        seed=seed,
        progress=progress,
        day=day,
        created_utc=created_utc,
        workers=workers,
        max_iterations=max_iterations,
        recovery_s=recovery_s,
        sharing=sharing,
        transfer_from=transfer_from,
    )[0]


def replan_with_state(
    parcels: Sequence[Parcel],
    vans: Sequence[VanNowLike],
    site: Site,
    van: VanSpec,
    net: RoadNetwork,
    *,
    now_s: float,
    parcel_location: Mapping[str, str] | None = None,
    at_station: Mapping[str, str] | None = None,
    ready_at: Mapping[str, float] | None = None,
    recovered_at: Mapping[str, float] | None = None,
    time_limit_s: float = 10.0,
    seed: int = 1,
    progress: Progress | None = None,
    day: date | None = None,
    created_utc: str = "",
    workers: int | None = None,
    max_iterations: int | None = None,
    recovery_s: float = RECOVERY_S,
    sharing: Sharing = Sharing.FLEET,
    transfer_from: Collection[str] = (),
) -> tuple[Plan, StartingState]:
    """:func:`replan`, also returning the starting state the plan was verified from:
    ``verify_plan(plan, parcels, site, van, net, at_station=state.at_station,
    start_soc_pct=state.start_soc_pct)`` checks it again (the controller does before a
    dispatch)."""
    where = dict(parcel_location or {})
    ready_by = ready_at or {}
    stations = {s.id for s in site.stations}
    names = {p.id for p in parcels}
    carried: dict[ParcelId, VanId] = {}
    fleet: list[VanState] = []
    given: set[str] = set()
    depot_nodes = {d.id: net.snap(d.lon, d.lat).node for d in site.depots}
    for v in vans:
        if v.van_id in given:
            raise InputError(f"van {v.van_id!r} is given twice")
        given.add(v.van_id)
        depot = depot_of(v.van_id, site)
        for raw in v.parcels_on_board:
            pid = ParcelId(raw)
            if pid not in names:
                raise InputError(
                    f"van {v.van_id} has parcel {pid!r} on board, which is not among the "
                    "parcels to plan"
                )
            if pid in carried:
                raise InputError(f"parcel {pid!r} is on board both {carried[pid]} and {v.van_id}")
            carried[pid] = VanId(v.van_id)
        try:
            snap = net.snap(v.lon, v.lat)
        except SnapError as exc:
            raise InputError(f"van {v.van_id}: its position cannot be planned from: {exc}") from exc
        lon, lat = net.lonlat(snap.node)
        at_home = snap.node == depot_nodes[depot]
        fleet.append(
            VanState(
                van_id=VanId(v.van_id),
                depot=depot,
                in_service=bool(v.in_service),
                free_s=max(now_s, float(v.free_from_s)),
                soc_pct=max(0.0, min(100.0, float(v.soc_pct))),
                away=None if at_home else (snap.node, lon, lat),
                on_board=tuple(ParcelId(p) for p in v.parcels_on_board),
            )
        )
    for d in site.depots:
        for vid in van_ids(d.id, d.vans):
            if vid not in given:
                fleet.append(VanState(vid, d.id, True, now_s, 100.0, None))
    in_service = {v.van_id: v.in_service for v in fleet}
    states: dict[ParcelId, ParcelState] = {}
    for p in parcels:
        loc = where.get(p.id, "on_board" if p.id in carried else "warehouse")
        sid = (at_station or {}).get(p.id)
        if loc == "station" and sid == site.warehouse.id:
            loc, sid = "warehouse", None  # brought back to the warehouse (a line haul's return)
        at_s = max(now_s, float(ready_by.get(p.id, now_s)))
        if loc == "on_board":
            holder = carried.get(p.id)
            if holder is None:
                raise InputError(f"parcel {p.id!r} is said to be on board, but no van carries it")
            back = (recovered_at or {}).get(p.id, now_s + recovery_s)
            ready = now_s if in_service[holder] else max(now_s, float(back))
            states[p.id] = ParcelState(Where.ON_BOARD, ready, None, holder)
        elif loc == "station":
            if sid is not None and sid not in stations:
                raise InputError(
                    f"parcel {p.id!r} is said to be at unknown station {sid!r} (stations of "
                    f"site {site.name!r}: {', '.join(sorted(stations))})"
                )
            states[p.id] = ParcelState(
                Where.STATION, at_s, DepotId(sid) if sid is not None else None
            )
        elif loc == "warehouse":
            states[p.id] = ParcelState(Where.WAREHOUSE, at_s)
        else:
            raise InputError(
                f"parcel {p.id!r}: location {loc!r} is not one of warehouse, station, on_board"
            )
        if loc != "on_board" and p.id in carried:
            raise InputError(
                f"parcel {p.id!r} is said to be at the {loc} but {carried[p.id]} carries it"
            )
    return plan_fleet(
        parcels,
        site,
        van,
        net,
        vans=fleet,
        states=states,
        now_s=now_s,
        time_limit_s=time_limit_s,
        seed=seed,
        progress=progress,
        day=day,
        created_utc=created_utc,
        workers=workers,
        max_iterations=max_iterations,
        already_unserved=(),
        verify=True,
        sharing=sharing,
        transfer_from=frozenset(VanId(v) for v in transfer_from if v in in_service),
    )
