"""What the fast mode's vans tell the world, written into the day's trace as they tell it:
drives, arrivals, deliveries, loads and unloads, departures, charging, an empty battery."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fleet.model import DepotId, Parcel, ParcelId, VanId, VanSpec
from fleet.protocol import NodeActionType, Order, StopKind
from sim.clock import DayTime
from sim.fast.motion import Leg
from sim.fast.van import FastVan
from sim.trace import (
    Charged,
    Delivered,
    Departure,
    Drive,
    Incident,
    Loaded,
    SocSample,
    Trace,
    Unloaded,
)
from sim.vehicle import distance_m
from sim.world import CHARGE_NOTICE_PCT

# a rescue trip's transfer: the rescuer stops at the road node nearest the broken-down van,
# which may stand this far from it along a road
TRANSFER_REACH_M = 250.0


@dataclass
class _Arrival:
    node_index: int
    t_s: float


class TraceRecorder:
    """A :class:`sim.fast.van.VanObserver` that records into ``trace``. ``keep_paths``: keep
    the geometry driven (for the map; memory grows with the fleet)."""

    def __init__(
        self,
        trace: Trace,
        spec: VanSpec,
        daytime: DayTime,
        parcels: Mapping[ParcelId, Parcel],
        *,
        keep_paths: bool,
    ) -> None:
        self.trace = trace
        self.spec = spec
        self.daytime = daytime
        self.parcels = parcels
        self.keep_paths = keep_paths
        self.delivered = 0  # parcels handed over so far
        self._arrivals: dict[str, _Arrival] = {}
        self._soc_seen: dict[str, float] = {}  # each van's state of charge last recorded
        self.vans: Mapping[str, FastVan] = {}  # the fleet, for a rescue trip's transfer
        self.now: Callable[[], float] = lambda: 0.0  # the simulated clock (epoch s)

    def drove(self, van: FastVan, t0_s: float, t1_s: float, leg: Leg, dist_m: float) -> None:
        if dist_m <= 0.0:
            return
        vid = VanId(van.van_id)
        path = leg.path_until(t1_s - t0_s) if self.keep_paths else ()
        self.trace.drives.append(
            Drive(
                vid,
                self.daytime.day_s(t0_s),
                self.daytime.day_s(t1_s),
                dist_m,
                dist_m * self.spec.energy_per_m_kwh,
                len(van.parcels_on_board),
                path,
            )
        )
        self.trace.soc.append(SocSample(vid, self.daytime.day_s(t1_s), van.soc_pct))
        self._soc_seen[van.van_id] = van.soc_pct

    def node_reached(self, van: FastVan, t_s: float, order: Order, node_index: int) -> None:
        self._arrivals[van.van_id] = _Arrival(node_index, t_s)

    def node_done(
        self,
        van: FastVan,
        t_s: float,
        order: Order,
        node_index: int,
        loaded: tuple[str, ...],
        unloaded: tuple[str, ...],
    ) -> None:
        vid = VanId(van.van_id)
        node = order.nodes[node_index]
        arrival = self._arrivals.get(van.van_id)
        t_arr = arrival.t_s if arrival is not None and arrival.node_index == node_index else t_s
        delivers = {
            p for a in node.actions if a.action_type is NodeActionType.DELIVER for p in a.parcel_ids
        }
        transfer = node.kind is StopKind.TRANSFER
        depot = DepotId(node.ref) if node.ref and not transfer else None
        from_van = VanId(node.ref) if transfer else None
        for p in unloaded:
            pid = ParcelId(p)
            if p in delivers:
                self.trace.delivered.append(Delivered(self.daytime.day_s(t_arr), vid, pid))
                self.delivered += 1
            else:
                self.trace.unloaded.append(
                    Unloaded(self.daytime.day_s(t_s), vid, pid, depot, "unloaded at its station")
                )
        for p in loaded:
            self.trace.loaded.append(
                Loaded(self.daytime.day_s(t_s), vid, ParcelId(p), depot, from_van=from_van)
            )
        self._note_charge(van, t_s)
        if loaded:
            aboard = [self.parcels[ParcelId(p)] for p in van.parcels_on_board]
            self.trace.departures.append(
                Departure(
                    vid,
                    self.daytime.day_s(t_s),
                    sum(p.weight_kg for p in aboard),
                    sum(p.volume_m3 for p in aboard),
                    len(aboard),
                )
            )

    def _note_charge(self, van: FastVan, t_s: float) -> None:
        """A van whose charge rose at a stop charged there (a ``charge`` action)."""
        vid = VanId(van.van_id)
        soc = van.soc_pct
        before = self._soc_seen.get(van.van_id)
        self._soc_seen[van.van_id] = soc
        if before is not None and soc > before + CHARGE_NOTICE_PCT:
            kwh = (soc - before) / 100.0 * self.spec.battery_kwh
            self.trace.charged.append(Charged(vid, self.daytime.day_s(t_s), kwh))
            self.trace.soc.append(SocSample(vid, self.daytime.day_s(t_s), soc))

    def take_over(self, van: FastVan, from_van: str, parcel_ids: tuple[str, ...]) -> set[str]:
        """A rescue trip's transfer: what ``from_van`` (standing beside ``van``) still has
        aboard of ``parcel_ids`` moves across; nothing if it is not within reach."""
        other = self.vans.get(from_van)
        if other is None or other is van:
            return set()
        now = self.now()
        lon, lat, _ = other.position_at(now)
        here_lon, here_lat, _ = van.position_at(now)
        if distance_m(lon, lat, here_lon, here_lat) > TRANSFER_REACH_M:
            return set()
        return set(other.book.hand_over(parcel_ids))

    def stopped(self, van: FastVan, t_s: float, why: str) -> None:
        if why == "battery empty":
            self.trace.incidents.append(
                Incident(
                    self.daytime.day_s(t_s), "battery_empty", VanId(van.van_id), "ran out of charge"
                )
            )
