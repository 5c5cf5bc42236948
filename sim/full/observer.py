"""The full stack's trace, from what the fleet says on the broker.

The :class:`Observer` reads what any subscriber may: every van's state, every order the
controller sends, and the controller's event stream. From it, the same facts the fast mode
records directly: a node is *reached* at the stamp of the first state naming it; a parcel is
*loaded* when it appears in a van's load and *handed over* when it leaves it (delivered at
the time its door was reached, or unloaded at a station); distance is the odometer's, driven
road geometry is the order's edges between the nodes reached.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleet.model import DepotId, Parcel, ParcelId, VanId, VanSpec
from fleet.protocol import NodeActionType, Order, State, parse_timestamp
from fleet.protocol.control_api import Event
from sim.clock import DayTime
from sim.trace import (
    Charged,
    Delivered,
    Departure,
    Drive,
    Loaded,
    LonLat,
    Replan,
    SocSample,
    Trace,
    Unloaded,
)
from sim.world import CHARGE_NOTICE_PCT, replan_cause

log = logging.getLogger(__name__)


@dataclass
class VanView:
    """What the observer knows of one van."""

    van_id: str
    orders: dict[str, Order] = field(default_factory=dict)  # order id → latest update
    order_id: str | None = None
    reached_seq: int | None = None
    arrivals: dict[tuple[str, int], float] = field(default_factory=dict)  # (order, seq) → t
    aboard: list[str] = field(default_factory=list)
    odometer_m: float | None = None
    last: State | None = None
    states: int = 0
    leg_m: float = 0.0  # driven since the last node reached
    leg_t0_s: float | None = None


class Observer:
    def __init__(
        self,
        trace: Trace,
        daytime: DayTime,
        parcels: Mapping[ParcelId, Parcel],
        spec: VanSpec,
        *,
        keep_paths: bool = True,
    ) -> None:
        self.trace = trace
        self.daytime = daytime
        self.parcels = parcels
        self.spec = spec
        self.keep_paths = keep_paths
        self.vans: dict[str, VanView] = {}
        self.commands_seen: set[tuple[str, str, int]] = set()
        self.states_seen = 0
        self._assigned: dict[str, str] = {}  # parcel → van delivering it (latest order)
        self._current_replan: Replan | None = None
        self._moved = 0
        self.replans_open = 0  # started and not yet applied, failed or dropped

    def view(self, van_id: str) -> VanView:
        v = self.vans.get(van_id)
        if v is None:
            v = self.vans[van_id] = VanView(van_id)
        return v

    def _day_s(self, stamp: str) -> float:
        return self.daytime.day_s(parse_timestamp(stamp))

    # ---- commands ---------------------------------------------------------------------------

    def on_command(self, van_id: str, kind: str, message_id: int) -> None:
        self.commands_seen.add((van_id, kind, message_id))

    def on_order(self, order: Order) -> None:
        v = self.view(order.van_id)
        known = v.orders.get(order.order_id)
        if known is not None and known.order_update_id >= order.order_update_id:
            return  # a re-send
        v.orders[order.order_id] = order
        for node in order.nodes:
            for a in node.actions:
                if a.action_type is not NodeActionType.DELIVER:
                    continue
                for p in a.parcel_ids:
                    before = self._assigned.get(p)
                    if before is not None and before != order.van_id:
                        self._moved += 1
                    self._assigned[p] = order.van_id

    # ---- controller events ------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if event.kind == "controller_started":
            self.replans_open = 0  # a new controller: what its predecessor planned is gone
        if event.kind in ("replan_applied", "replan_failed", "replan_dropped"):
            self.replans_open = max(0, self.replans_open - 1)
        if event.kind != "replan_started":
            return
        self.replans_open += 1
        self._close_replan()
        cause = event.detail.rsplit(": ", 1)[0] if ": " in event.detail else event.detail
        self._current_replan = Replan(
            self.daytime.day_s(parse_timestamp(event.time)), replan_cause(cause), cause[:300], 0
        )
        self._moved = 0

    def _close_replan(self) -> None:
        if self._current_replan is not None:
            r = self._current_replan
            self.trace.replans.append(Replan(r.t_s, r.cause, r.detail, self._moved))
            self._current_replan = None

    def finish(self) -> None:
        """End of the day: close the legs still open (a van that stopped between nodes)."""
        self._close_replan()
        for v in self.vans.values():
            if v.last is not None:
                self._close_leg(v, self._day_s(v.last.header.timestamp), ())

    # ---- states --------------------------------------------------------------------------------

    def on_state(self, state: State) -> None:
        self.states_seen += 1
        v = self.view(state.van_id)
        v.states += 1
        if state.position is None:
            return  # the bridge has not heard from its VCU yet: nothing physical to say
        t = self._day_s(state.header.timestamp)
        vid = VanId(state.van_id)
        order = v.orders.get(state.order_id) if state.order_id else None
        if state.order_id != v.order_id:
            v.order_id = state.order_id
            v.reached_seq = None
        if v.odometer_m is not None and state.odometer_m > v.odometer_m:
            if v.leg_t0_s is None:
                v.leg_t0_s = self._day_s(v.last.header.timestamp) if v.last is not None else t
            v.leg_m += state.odometer_m - v.odometer_m
        if state.odometer_m >= (v.odometer_m or 0.0):
            v.odometer_m = state.odometer_m
        seq = state.last_node_sequence_id
        if order is not None and seq is not None and (v.reached_seq is None or seq > v.reached_seq):
            first = 0 if v.reached_seq is None else v.reached_seq // 2
            for k in range(first, seq // 2 + 1):
                v.arrivals.setdefault((order.order_id, 2 * k), t)
            path: tuple[LonLat, ...] = ()
            if self.keep_paths and seq // 2 > first:
                pts: list[LonLat] = []
                for edge in order.edges[first : seq // 2]:
                    traj = [(float(x), float(y)) for x, y in edge.trajectory]
                    pts.extend(traj if not pts else traj[1:])
                path = tuple(pts)
            self._close_leg(v, t, path)  # one drive per leg, as the fast mode records
            v.reached_seq = seq
        before_soc = v.last.battery.soc_pct if v.last is not None else None
        soc = state.battery.soc_pct
        if before_soc is not None and soc > before_soc + CHARGE_NOTICE_PCT:
            kwh = (soc - before_soc) / 100.0 * self.spec.battery_kwh
            self.trace.charged.append(Charged(vid, t, kwh))
        self.trace.soc.append(SocSample(vid, t, soc))
        self._load_changes(v, state, order, t)
        v.last = state

    def _close_leg(self, v: VanView, t: float, path: tuple[LonLat, ...]) -> None:
        if v.leg_m > 0 and v.leg_t0_s is not None:
            self.trace.drives.append(
                Drive(
                    VanId(v.van_id),
                    v.leg_t0_s,
                    t,
                    v.leg_m,
                    v.leg_m * self.spec.energy_per_m_kwh,
                    len(v.aboard),
                    path,
                )
            )
        v.leg_m, v.leg_t0_s = 0.0, None

    def _load_changes(self, v: VanView, state: State, order: Order | None, t: float) -> None:
        vid = VanId(v.van_id)
        now_ids = list(state.load.parcel_ids)
        now_set = set(now_ids)
        before = set(v.aboard)
        added = [p for p in now_ids if p not in before]
        removed = [p for p in v.aboard if p not in now_set]
        node_ref: str | None = None
        if order is not None and state.last_node_sequence_id is not None:
            index = state.last_node_sequence_id // 2
            if 0 <= index < len(order.nodes):
                node_ref = order.nodes[index].ref or None
        for p in removed:
            where = self._delivering_node(v, p)
            if where is not None:
                order_id, seq = where
                t_arr = v.arrivals.get((order_id, seq), t)
                self.trace.delivered.append(Delivered(t_arr, vid, ParcelId(p)))
            else:
                depot = DepotId(node_ref) if node_ref else None
                self.trace.unloaded.append(
                    Unloaded(t, vid, ParcelId(p), depot, "unloaded at its station")
                )
        for p in added:
            self.trace.loaded.append(
                Loaded(t, vid, ParcelId(p), DepotId(node_ref) if node_ref else None)
            )
        if added:
            aboard = [self.parcels[ParcelId(p)] for p in now_ids if ParcelId(p) in self.parcels]
            self.trace.departures.append(
                Departure(
                    vid,
                    t,
                    sum(p.weight_kg for p in aboard),
                    sum(p.volume_m3 for p in aboard),
                    len(aboard),
                )
            )
        v.aboard = now_ids

    @staticmethod
    def _delivering_node(v: VanView, parcel: str) -> tuple[str, int] | None:
        """The (order, node) where ``parcel`` is handed over at a door, in the van's orders."""
        for order in reversed(list(v.orders.values())):
            for node in order.nodes:
                for a in node.actions:
                    if a.action_type is NodeActionType.DELIVER and parcel in a.parcel_ids:
                        return order.order_id, node.sequence_id
        return None

    def busiest(self, candidates: list[str]) -> str | None:
        """The van with the most parcels aboard (ties: driving first, then by id)."""
        best: tuple[int, bool, str] | None = None
        for van_id in candidates:
            v = self.vans.get(van_id)
            aboard = len(v.aboard) if v is not None else 0
            driving = bool(v is not None and v.last is not None and v.last.driving)
            key = (aboard, driving, van_id)
            if best is None or key > best:
                best = key
        return best[2] if best is not None else None
