"""Vans lent between depots: a station short of vans borrows any van that has time.

Whole-fleet planning (the default, :attr:`Sharing.FLEET`) plans each depot's own vans first,
as per-depot planning does (:attr:`Sharing.DEPOT`). Where a station's vans could not take
every door stop, the stops left over are offered to every other van in service, station vans
and warehouse vans alike, once each has finished its own day (its line haul, its own doors):

* the lent van drives from its depot to the short station (charging first if it must), loads
  there, delivers in as many trips as it needs (reloading and charging at that station), and
  drives back to its own depot, charging at the station first if the way home needs it;
* the optimiser sees it as one more van of that station, free from its arrival there, due
  back there in time to still reach home within the shift, with the drive there and back as
  a fixed cost (so a lent van is used only where it serves a stop no own van can);
* its day in the plan is its own trips, then a trip from its depot to the station (nothing
  between), the trips from the station, and a trip from the station home.

A **rescue** (a re-plan after a breakdown) uses the same pieces the other way round: the
parcels of a broken-down last-mile van, back at its station ``recovery_s`` after the
breakdown, are taken in one load by the van that can be there soonest among those with the
least work of their own (any depot's, the station's own included), before its own work
(:func:`lead_in`, :func:`then`); what that one load cannot take goes to the station's vans
as any other parcel. For a van broken down where it stands, the engine also weighs a rescue
trip that takes its load over there (``_Day.transfer_option``) and keeps whichever way
delivers sooner.

This module builds those pieces (:func:`lent_slot`, :func:`join_day`, :func:`lead_in`,
:func:`then`); the engine (:mod:`fleet.planning.engine`) decides which stations are short
or have parcels to recover, and runs the optimiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from fleet.model.ids import DepotId, VanId
from fleet.model.plan import Leg, Stop, StopKind, Trip, VanRoute
from fleet.model.site import Site
from fleet.model.van import VanSpec
from fleet.planning.demand import DepotPoint
from fleet.planning.legs import VanSlot

EPS_S = 1e-6


class Sharing(StrEnum):
    """Which vans may serve a station's doors."""

    FLEET = "fleet"  # any van in service that has the time, once its own day is done
    DEPOT = "depot"  # only the station's own vans (the planner before issue 18)


@dataclass(frozen=True, slots=True)
class Drive:
    """Road distance and time between two depots."""

    dist_m: float
    time_s: float


@dataclass(frozen=True, slots=True)
class Lend:
    """A van of ``home`` lent to ``station``: where its own day ends and how it gets there."""

    van_id: VanId
    home: DepotPoint
    station: DepotPoint
    own: VanRoute | None  # its own day (None: it had no work)
    free_s: float  # at its depot, done with its own day
    soc_pct: float  # then
    leave_s: float  # leaves its depot for the station (after charging for the drive)
    leave_soc_pct: float
    there: Drive
    back: Drive
    slot: VanSlot  # as one more van of the station


def _charge_s(need_kwh: float, have_kwh: float, van: VanSpec) -> float:
    """Whole seconds of charging (one more for rounding) to go from ``have`` to ``need``."""
    if have_kwh + 1e-9 >= need_kwh:
        return 0.0
    return math.ceil((need_kwh - have_kwh) / van.charging_power_kw * 3600.0) + 1.0


def lent_slot(
    van_id: VanId,
    home: DepotPoint,
    station: DepotPoint,
    own: VanRoute | None,
    free_s: float,
    soc_pct: float,
    there: Drive,
    back: Drive,
    van: VanSpec,
    site: Site,
    max_dist_m: float,
) -> Lend | None:
    """The van as one more van of ``station``, or None if it cannot get there and back home
    with time for a trip (or cannot reach it at all)."""
    if not (math.isfinite(there.dist_m) and math.isfinite(back.dist_m)):
        return None
    battery = van.battery_kwh
    reserve = battery * van.range_reserve_pct / 100.0
    energy = battery * soc_pct / 100.0
    full_need = reserve + (there.dist_m + back.dist_m) * van.energy_per_m_kwh
    if full_need > battery:
        return None  # there and back does not fit one charge
    wait = _charge_s(reserve + there.dist_m * van.energy_per_m_kwh, energy, van)
    leave = free_s + wait
    leave_energy = min(battery, energy + van.charging_power_kw * wait / 3600.0)
    arrive = leave + there.time_s
    arrive_energy = leave_energy - there.dist_m * van.energy_per_m_kwh
    # back at the station by then, to charge for the way home if need be and drive it
    home_charge_s = back.dist_m * van.energy_per_m_kwh / van.charging_power_kw * 3600.0 + 2.0
    end = site.shift_end_s - back.time_s - home_charge_s
    if arrive + van.depot_load_s >= end:
        return None
    slot = VanSlot(
        van_id,
        arrive,
        100.0 * arrive_energy / battery,
        max_dist_m,
        fixed_cost_m=there.dist_m + back.dist_m,
        end_s=end,
    )
    return Lend(
        van_id,
        home,
        station,
        own,
        free_s,
        soc_pct,
        leave,
        100.0 * leave_energy / battery,
        there,
        back,
        slot,
    )


def _stop(
    kind: StopKind,
    at: DepotPoint,
    arrival_s: float,
    departure_s: float,
    dist_m: float,
    energy_kwh: float,
    soc_pct: float,
) -> Stop:
    return Stop(
        seq=0,
        kind=kind,
        ref=at.depot.id,
        node=at.node,
        lon=at.lon,
        lat=at.lat,
        arrival_s=arrival_s,
        departure_s=departure_s,
        parcels_loaded=(),
        parcels_delivered=(),
        load_after_kg=0.0,
        load_after_m3=0.0,
        dist_so_far_m=dist_m,
        energy_so_far_kwh=energy_kwh,
        soc_pct=soc_pct,
        geometry_in=(),
    )


def join_day(
    lend: Lend, at_station: VanRoute, leg: Leg, van: VanSpec, site: Site
) -> VanRoute | None:
    """The lent van's whole day: its own trips, the drive to the station, ``at_station`` (its
    trips from there, replayed from its arrival), and the drive home.

    None if the way home would break the shift or the reserve (the caller then leaves the
    stops it was to serve as they were). ``leg`` is the van's own leg (by its depot).
    """
    if lend.home.depot.id == lend.station.depot.id:  # the warehouse's own van, after its haul
        here = replace(at_station, leg=leg, depot=DepotId(lend.home.depot.id))
        return then(lend.own, here) if lend.own is not None else here
    battery = van.battery_kwh
    per_m = van.energy_per_m_kwh
    reserve = battery * van.range_reserve_pct / 100.0
    own_trips = lend.own.trips if lend.own is not None else ()
    dist0 = lend.own.dist_m if lend.own is not None else 0.0
    used0 = lend.own.energy_kwh if lend.own is not None else 0.0
    arrive = lend.leave_s + lend.there.time_s
    dist1 = dist0 + lend.there.dist_m
    used1 = used0 + lend.there.dist_m * per_m
    arrive_soc = lend.slot.soc_pct
    drive_there = Trip(
        index=len(own_trips),
        stops=(
            _stop(
                StopKind.DEPOT,
                lend.home,
                lend.free_s,
                lend.leave_s,
                dist0,
                used0,
                lend.leave_soc_pct,
            ),
            replace(
                _stop(StopKind.DEPOT, lend.station, arrive, arrive, dist1, used1, arrive_soc),
                seq=1,
            ),
        ),
    )
    if abs(at_station.trips[0].stops[0].arrival_s - arrive) > 1e-3:
        return None  # not replayed from its arrival: not this lend's work
    shifted: list[Trip] = []
    for trip in at_station.trips:
        shifted.append(
            Trip(
                index=len(own_trips) + 1 + len(shifted),
                stops=tuple(
                    replace(
                        s,
                        dist_so_far_m=s.dist_so_far_m + dist1,
                        energy_so_far_kwh=s.energy_so_far_kwh + used1,
                    )
                    for s in trip.stops
                ),
            )
        )
    last = shifted[-1].stops[-1]
    energy = battery * last.soc_pct / 100.0
    wait = _charge_s(reserve + lend.back.dist_m * per_m, energy, van)
    leave = last.arrival_s + wait
    energy = min(battery, energy + van.charging_power_kw * wait / 3600.0)
    home_s = leave + lend.back.time_s
    after = energy - lend.back.dist_m * per_m
    if home_s > site.shift_end_s + EPS_S or after < reserve - 1e-9:
        return None
    drive_home = Trip(
        index=len(own_trips) + 1 + len(shifted),
        stops=(
            _stop(
                StopKind.CHARGE if wait > 0 else StopKind.DEPOT,
                lend.station,
                last.arrival_s,
                leave,
                last.dist_so_far_m,
                last.energy_so_far_kwh,
                100.0 * energy / battery,
            ),
            replace(
                _stop(
                    StopKind.DEPOT,
                    lend.home,
                    home_s,
                    home_s,
                    last.dist_so_far_m + lend.back.dist_m,
                    last.energy_so_far_kwh + lend.back.dist_m * per_m,
                    100.0 * after / battery,
                ),
                seq=1,
            ),
        ),
    )
    return VanRoute(
        van_id=lend.van_id,
        leg=leg,
        depot=DepotId(lend.home.depot.id),
        trips=(*own_trips, drive_there, *shifted, drive_home),
    )


def lead_in(
    lend: Lend, at_station: VanRoute, leg: Leg, van: VanSpec, site: Site
) -> VanRoute | None:
    """A rescue before the van's own work: the drive to the station (if it is not the van's
    own), ``at_station``, and the drive home; its own trips follow (:func:`then`)."""
    if lend.home.depot.id == lend.station.depot.id:
        return replace(at_station, leg=leg, depot=DepotId(lend.home.depot.id))
    return join_day(replace(lend, own=None), at_station, leg, van, site)


def then(first: VanRoute, rest: VanRoute) -> VanRoute:
    """``first``'s trips and then ``rest``'s (which starts where and when ``first`` ends,
    with the charge it ends with), distances and energy counted on."""
    last = first.trips[-1].stops[-1]
    n = len(first.trips)
    more = tuple(
        Trip(
            index=n + k,
            stops=tuple(
                replace(
                    s,
                    dist_so_far_m=s.dist_so_far_m + last.dist_so_far_m,
                    energy_so_far_kwh=s.energy_so_far_kwh + last.energy_so_far_kwh,
                )
                for s in t.stops
            ),
        )
        for k, t in enumerate(rest.trips)
    )
    return replace(first, trips=(*first.trips, *more))
