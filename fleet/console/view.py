"""The console's picture of the fleet, built from what it reads (pure: no I/O, no clock).

Inputs are the messages the console receives — each van's ``state``, ``connection``,
``factsheet`` and ``order`` as the broker carries them, and the controller's event log — each
with the current time as a parameter. Out come what the page and the HTTP API show: vans
(mode, position, charge, load, current and next stop with a predicted arrival), parcels
(status, van, planned and predicted arrival, history), alerts, the event log and KPI tiles,
and :meth:`FleetView.take_delta` hands the live stream what changed since its last call.

Rules it keeps (``docs/console.md``):

* Nothing stale is shown as live: a van whose last state arrived more than the controller's
  ``stale_after_s`` ago, or whose state says its VCU data is stale or its VCU link is lost,
  is in mode ``stale`` (the position is its last known one, drawn as such).
* A parcel's status follows the controller's events (it maps what vans report to parcel
  status, never backwards); the console adds where it is going and when it will get there.
* "Late" is measured against the plan: a parcel is late when it is (or is predicted to be)
  delivered more than ``late_after_s`` after its planned arrival. Vans' orders do not carry
  the customers' windows, so the plan is the yardstick.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

from fleet.console.eta import StopEta, predict
from fleet.protocol import (
    ConnectionState,
    ErrorLevel,
    NodeActionType,
    Order,
    State,
)
from fleet.protocol.control_api import Event
from fleet.protocol.messages import Node
from fleet.protocol.timestamps import format_timestamp, parse_timestamp

STALE_ERRORS = frozenset({"vcu_telemetry_stale", "vcu_link_lost"})
MAX_EVENTS = 2000  # the event log kept for the page (the controller keeps all of it)
MAX_HISTORY = 60  # entries of one parcel's history
MAX_ALERTS = 1000

Json = dict[str, object]
AlertKind = Literal[
    "breakdown",
    "low_charge",
    "link_lost",
    "estop",
    "late_parcel",
    "urgent_unmet",
    "parcel_missing",
    "replan_failed",
    "order",
]


@dataclass(frozen=True, slots=True)
class ViewConfig:
    stale_after_s: float = 10.0  # the controller's stale bound (configs/controller.toml)
    late_after_s: float = 900.0  # a parcel this far behind its plan is late
    low_soc_pct: float = 20.0  # a van below this charge raises a low-charge alert
    battery_kwh: float = 80.0  # energy per 100 % of charge when a van sent no factsheet


def stop_name(node: Node) -> str:
    """``station ST-A (n4)``: what a stop is, for people."""
    what = node.kind.value
    return f"{what} {node.ref} ({node.node_id})" if node.ref else f"{what} {node.node_id}"


@dataclass
class VanView:
    van_id: str
    state: State | None = None
    stamp_s: float | None = None  # the state's own time stamp
    received_s: float | None = None  # when the console got it (its clock)
    connection: ConnectionState | None = None
    order: Order | None = None
    in_service: bool = True
    out_reason: str = ""
    battery_kwh: float | None = None
    reached_seq: int | None = None
    reached_s: float | None = None
    first_odometer_m: float | None = None
    energy_kwh: float = 0.0
    last_soc_pct: float | None = None
    mode: str = "unknown"
    low_charge: bool = False
    estop: bool = False
    etas: list[StopEta] | None = None  # predicted, for the current state (cached)
    etas_key: tuple[int, float] | None = None
    version: int = 0


@dataclass
class ParcelView:
    parcel_id: str
    status: str = "planned"  # the controller's: planned, loaded, at_station, delivered, ...
    van_id: str | None = None  # the van carrying it, or the one planned to
    door: tuple[float, float] | None = None  # lon, lat of the door (its deliver stop)
    deliver_node: str | None = None
    planned_s: float | None = None  # planned arrival at the door (the current plan)
    first_planned_s: float | None = None
    delivered_s: float | None = None
    detail: str = ""
    late: bool = False
    history: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))
    version: int = 0


@dataclass
class Alert:
    alert_id: int
    kind: AlertKind
    time_s: float
    text: str
    van_id: str | None = None
    parcel_id: str | None = None
    acknowledged_by: str | None = None
    acknowledged_s: float | None = None

    def json(self) -> Json:
        return {
            "id": self.alert_id,
            "kind": self.kind,
            "time": format_timestamp(self.time_s),
            "text": self.text,
            "van_id": self.van_id,
            "parcel_id": self.parcel_id,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged": format_timestamp(self.acknowledged_s)
            if self.acknowledged_s is not None
            else None,
        }


# the UI's parcel status (colour on the map), from the controller's status and lateness
def display_status(p: ParcelView) -> str:
    if p.status in ("failed", "cancelled", "unserved"):
        return p.status
    if p.late:
        return "late"
    if p.status == "delivered":
        return "delivered"
    if p.status == "loaded":
        return "loaded"
    return "waiting"  # planned, or waiting at a station for its last-mile van


_EVENT_STATUS = {
    "parcel_loaded": "loaded",
    "parcel_at_station": "at_station",
    "parcel_delivered": "delivered",
    "parcel_failed": "failed",
    "parcel_cancelled": "cancelled",
    "parcel_unserved": "unserved",
}
_FINAL = frozenset({"delivered", "failed", "cancelled"})


class FleetView:
    def __init__(self, config: ViewConfig, roster: tuple[str, ...] = ()) -> None:
        self.config = config
        self.vans: dict[str, VanView] = {v: VanView(v) for v in roster}
        self.parcels: dict[str, ParcelView] = {}
        self.events: deque[Json] = deque(maxlen=MAX_EVENTS)
        self.last_event_id = 0
        self.alerts: OrderedDict[int, Alert] = OrderedDict()
        self._open_alerts: dict[tuple[str, str | None, str | None], int] = {}
        self._next_alert = 1
        self.controller: ConnectionState | None = None
        # what changed since the stream last asked
        self._dirty_vans: set[str] = set()
        self._dirty_parcels: set[str] = set()
        self._new_events: list[Json] = []
        self._dirty_alerts: set[int] = set()
        self._kpis_dirty = True
        self.routes_version = 0

    # ---------------------------------------------------------------- inputs
    def van(self, van_id: str) -> VanView:
        v = self.vans.get(van_id)
        if v is None:
            v = self.vans[van_id] = VanView(van_id)
        return v

    def _touch_van(self, v: VanView) -> None:
        v.version += 1
        self._dirty_vans.add(v.van_id)

    def touch_parcel(self, p: ParcelView) -> None:
        p.version += 1
        self._dirty_parcels.add(p.parcel_id)

    def on_state(self, state: State, now_s: float) -> None:
        v = self.van(state.van_id)
        v.state = state
        v.stamp_s = parse_timestamp(state.header.timestamp)
        v.received_s = now_s
        if state.last_node_sequence_id != v.reached_seq:
            v.reached_seq = state.last_node_sequence_id
            v.reached_s = now_s
        if v.first_odometer_m is None:
            v.first_odometer_m = state.odometer_m
        soc = state.battery.soc_pct
        if v.last_soc_pct is not None and soc < v.last_soc_pct:
            kwh = v.battery_kwh or self.config.battery_kwh
            v.energy_kwh += (v.last_soc_pct - soc) / 100.0 * kwh
        v.last_soc_pct = soc
        if state.emergency_stop and not v.estop:
            self._raise("estop", now_s, f"{v.van_id} is emergency-stopped", van_id=v.van_id)
        v.estop = state.emergency_stop
        if soc < self.config.low_soc_pct and not v.low_charge:
            v.low_charge = True
            self._raise(
                "low_charge",
                now_s,
                f"{v.van_id} is at {soc:.0f} % charge "
                f"({state.battery.remaining_range_m / 1000:.1f} km left)",
                van_id=v.van_id,
            )
        elif soc >= self.config.low_soc_pct + 5.0:
            v.low_charge = False
        v.mode = self._mode(v, now_s)
        self._kpis_dirty = True
        self._touch_van(v)

    def on_connection(self, van_id: str, connection: ConnectionState, now_s: float) -> None:
        v = self.van(van_id)
        v.connection = connection
        v.mode = self._mode(v, now_s)
        self._touch_van(v)

    def on_factsheet(self, van_id: str, battery_kwh: float) -> None:
        self.van(van_id).battery_kwh = battery_kwh

    def on_order(self, order: Order, now_s: float) -> None:
        v = self.van(order.van_id)
        old = v.order
        if (
            old is not None
            and old.order_id == order.order_id
            and order.order_update_id <= old.order_update_id
        ):
            return  # a re-sent copy or an older update
        v.order = order
        v.etas = None
        self.routes_version += 1
        self._touch_van(v)
        before = _parcels_of(old) if old is not None else {}
        now_has = _parcels_of(order)
        for pid, (kind, node) in now_has.items():
            p = self.parcel_entry(pid)
            if kind is NodeActionType.DELIVER:
                planned = parse_timestamp(node.planned_arrival) if node.planned_arrival else None
                changed = p.van_id != order.van_id or p.deliver_node != node.node_id
                if changed or p.planned_s != planned:
                    when = f", due {format_timestamp(planned)}" if planned is not None else ""
                    p.history.append(
                        (now_s, f"planned on {order.van_id} at stop {node.node_id}{when}")
                    )
                p.van_id = order.van_id
                p.door = (node.lon, node.lat)
                p.deliver_node = node.node_id
                p.planned_s = planned
                if p.first_planned_s is None:
                    p.first_planned_s = planned
                self.touch_parcel(p)
            elif p.deliver_node is None and p.van_id != order.van_id:
                p.van_id = order.van_id  # line haul: the van taking it to its station
                p.history.append((now_s, f"planned on {order.van_id} ({kind.value})"))
                self.touch_parcel(p)
        for pid in before.keys() - now_has.keys():
            gone = self.parcels.get(pid)
            if gone is not None and gone.van_id == order.van_id and gone.status not in _FINAL:
                gone.history.append((now_s, f"taken off {order.van_id}'s route"))
                self.touch_parcel(gone)

    def parcel_entry(self, parcel_id: str) -> ParcelView:
        p = self.parcels.get(parcel_id)
        if p is None:
            p = self.parcels[parcel_id] = ParcelView(parcel_id)
            self._kpis_dirty = True
        return p

    def on_controller(self, connection: ConnectionState) -> None:
        self.controller = connection
        self._kpis_dirty = True

    def on_event(self, event: Event, now_s: float) -> None:
        """One entry of the controller's log (history first, then live; each once)."""
        if event.event_id <= self.last_event_id:
            return
        self.last_event_id = event.event_id
        t = parse_timestamp(event.time)
        entry: Json = {
            "id": event.event_id,
            "time": event.time,
            "kind": event.kind,
            "van_id": event.van_id,
            "parcel_id": event.parcel_id,
            "detail": event.detail,
        }
        self.events.append(entry)
        self._new_events.append(entry)
        kind, van, pid = event.kind, event.van_id, event.parcel_id
        if kind == "alert_acknowledged":  # by this console or another, before a restart too
            alert_kind, by = event.data.get("alert"), event.data.get("by")
            open_id = self._open_alerts.get((str(alert_kind), van, pid))
            if open_id is not None:
                self.acknowledge(open_id, str(by or "?"), t)
            return
        if pid is not None:
            p = self.parcel_entry(pid)
            status = _EVENT_STATUS.get(kind)
            text = kind.removeprefix("parcel_").replace("_", " ")
            if van:
                text += f" ({van})"
            if event.detail:
                text += f": {event.detail}"
            p.history.append((t, text))
            if status is not None:
                p.status = status
                if status == "loaded" and van:
                    p.van_id = van
                if status == "delivered":
                    p.delivered_s = t
                    if p.planned_s is not None:
                        p.late = t > p.planned_s + self.config.late_after_s
                if status in ("failed", "unserved", "cancelled"):
                    p.detail = event.detail
                    p.late = False
            if kind == "parcel_unload_failed":
                p.detail = event.detail
            self._kpis_dirty = True
            self.touch_parcel(p)
        if van is not None:
            v = self.van(van)
            if kind == "van_out_of_service":
                v.in_service = False
                v.out_reason = event.detail
                self._raise("breakdown", t, f"{van} out of service: {event.detail}", van_id=van)
                self._touch_van(v)
            elif kind == "van_in_service":
                v.in_service = True
                v.out_reason = ""
                self._touch_van(v)
            elif kind == "van_error":
                self._raise("breakdown", t, f"{van}: {event.detail}", van_id=van)
            elif kind in ("van_offline", "van_stale"):
                what = "offline" if kind == "van_offline" else "silent (stale)"
                self._raise("link_lost", t, f"{van} is {what}", van_id=van)
            elif kind in ("order_rejected", "order_gave_up", "instant_gave_up", "instant_overdue"):
                self._raise(
                    "order", t, f"{van}: {kind.replace('_', ' ')} {event.detail}", van_id=van
                )
        if kind == "parcel_missing" and event.parcel_id:
            self._raise(
                "parcel_missing",
                t,
                f"parcel {event.parcel_id}: location unknown ({event.detail})",
                parcel_id=event.parcel_id,
            )
        if kind == "replan_failed":
            self._raise("replan_failed", t, f"re-plan failed: {event.detail}")
        if kind == "urgent_unmet" and event.parcel_id:
            self._raise(
                "urgent_unmet",
                t,
                f"urgent order {event.parcel_id} cannot be met: {event.detail}",
                parcel_id=event.parcel_id,
            )

    # ---------------------------------------------------------------- alerts
    def _raise(
        self,
        kind: AlertKind,
        t: float,
        text: str,
        *,
        van_id: str | None = None,
        parcel_id: str | None = None,
    ) -> None:
        key = (kind, van_id, parcel_id)
        open_id = self._open_alerts.get(key)
        if open_id is not None and open_id in self.alerts:
            alert = self.alerts[open_id]
            alert.time_s, alert.text = t, text[:500]  # still open: brought up to date
        else:
            alert = Alert(self._next_alert, kind, t, text[:500], van_id, parcel_id)
            self._next_alert += 1
            self.alerts[alert.alert_id] = alert
            self._open_alerts[key] = alert.alert_id
            while len(self.alerts) > MAX_ALERTS:
                self.alerts.popitem(last=False)
        self._dirty_alerts.add(alert.alert_id)

    def acknowledge(self, alert_id: int, user: str, now_s: float) -> Alert | None:
        alert = self.alerts.get(alert_id)
        if alert is None:
            return None
        if alert.acknowledged_by is None:
            alert.acknowledged_by, alert.acknowledged_s = user, now_s
            key = (alert.kind, alert.van_id, alert.parcel_id)
            if self._open_alerts.get(key) == alert_id:
                del self._open_alerts[key]  # the next occurrence is a new alert
            self._dirty_alerts.add(alert_id)
        return alert

    # ---------------------------------------------------------------- derived
    def _mode(self, v: VanView, now_s: float) -> str:
        s = v.state
        if v.connection in (ConnectionState.OFFLINE, ConnectionState.CONNECTION_BROKEN):
            return "offline"
        if s is None:
            return "unknown"
        if v.received_s is None or now_s - v.received_s > self.config.stale_after_s:
            return "stale"
        if any(e.error_type in STALE_ERRORS for e in s.errors):
            return "stale"
        if any(e.level is ErrorLevel.FATAL for e in s.errors):
            return "error"
        if s.paused or s.emergency_stop:
            return "paused"
        if s.battery.charging:
            return "charging"
        if s.driving:
            return "driving"
        if v.order is not None and s.order_id == v.order.order_id and s.node_states:
            return "at_stop"
        return "idle"

    def stale_reason(self, v: VanView, now_s: float) -> str:
        if v.mode != "stale" or v.state is None:
            return ""
        errs = [e.error_type for e in v.state.errors if e.error_type in STALE_ERRORS]
        if errs:
            return f"the van reports {', '.join(errs)}"
        age = now_s - (v.received_s or now_s)
        return f"no state for {age:.0f} s (bound {self.config.stale_after_s:g} s)"

    def tick(self, now_s: float) -> None:
        """Time passes: vans that fell silent become stale (and back)."""
        for v in self.vans.values():
            mode = self._mode(v, now_s)
            if mode != v.mode:
                v.mode = mode
                self._touch_van(v)

    def etas(self, v: VanView, now_s: float) -> list[StopEta]:
        """Predicted arrivals of ``v``'s remaining stops (cached per state)."""
        if v.order is None:
            return []
        key = (v.version, round(now_s, 0))
        if v.etas is None or v.etas_key != key:
            v.etas = predict(v.order, v.state, now_s, reached_s=v.reached_s)
            v.etas_key = key
        return v.etas

    def predicted_s(self, p: ParcelView, now_s: float) -> float | None:
        if p.status in _FINAL or p.van_id is None or p.deliver_node is None:
            return None
        v = self.vans.get(p.van_id)
        if v is None or v.order is None:
            return None
        for eta in self.etas(v, now_s):
            if v.order.nodes[eta.index].node_id == p.deliver_node:
                return eta.arrival_s
        return None

    def refresh_lateness(self, now_s: float) -> None:
        """Mark parcels predicted late (and raise their alerts); every few seconds."""
        for v in self.vans.values():
            if v.order is None:
                continue
            etas = self.etas(v, now_s)
            late_nodes = {
                v.order.nodes[e.index].node_id
                for e in etas
                if e.planned_arrival_s is not None
                and e.arrival_s > e.planned_arrival_s + self.config.late_after_s
            }
            for a_node in v.order.nodes:
                for action in a_node.actions:
                    if action.action_type is not NodeActionType.DELIVER:
                        continue
                    late = a_node.node_id in late_nodes
                    for pid in action.parcel_ids:
                        p = self.parcels.get(pid)
                        if p is None or p.status in _FINAL or p.van_id != v.van_id:
                            continue
                        if late != p.late:
                            p.late = late
                            self._kpis_dirty = True
                            self.touch_parcel(p)
                            if late:
                                self._raise(
                                    "late_parcel",
                                    now_s,
                                    f"{pid} on {v.van_id} is predicted late",
                                    van_id=v.van_id,
                                    parcel_id=pid,
                                )

    # ---------------------------------------------------------------- outputs
    def van_json(self, v: VanView, now_s: float) -> Json:
        s = v.state
        cur = nxt = ""
        next_eta: str | None = None
        if v.order is not None and s is not None and s.order_id == v.order.order_id:
            idx = -1 if s.last_node_sequence_id is None else s.last_node_sequence_id // 2
            if 0 <= idx < len(v.order.nodes):
                cur = stop_name(v.order.nodes[idx])
            if 0 <= idx + 1 < len(v.order.nodes):
                nxt = stop_name(v.order.nodes[idx + 1])
                first = predict(v.order, s, now_s, reached_s=v.reached_s, max_stops=1)
                hit = next((e for e in first if e.index == idx + 1), None)
                if hit is not None:
                    next_eta = format_timestamp(hit.arrival_s)
        order = v.order
        return {
            "van_id": v.van_id,
            "mode": v.mode,
            "stale_reason": self.stale_reason(v, now_s),
            "emergency_stop": bool(s and s.emergency_stop),
            "in_service": v.in_service,
            "out_reason": v.out_reason,
            "connection": v.connection.value if v.connection else None,
            "lon": s.position.lon if s and s.position else None,
            "lat": s.position.lat if s and s.position else None,
            "heading_deg": s.position.heading_deg if s and s.position else None,
            "speed_mps": s.speed_mps if s else 0.0,
            "soc_pct": s.battery.soc_pct if s else None,
            "remaining_range_m": s.battery.remaining_range_m if s else None,
            "load_kg": s.load.load_kg if s else 0.0,
            "volume_m3": s.load.volume_m3 if s else 0.0,
            "parcels_on_board": len(s.load.parcel_ids) if s else 0,
            "order_id": order.order_id if order else None,
            "order_update_id": order.order_update_id if order else None,
            "current_stop": cur,
            "next_stop": nxt,
            "next_eta": next_eta,
            "state_time": s.header.timestamp if s else None,
            "errors": [f"{e.level.value} {e.error_type}: {e.description}" for e in s.errors]
            if s
            else [],
        }

    def route_json(self, v: VanView, now_s: float, *, geometry: bool = True) -> Json:
        """The van's order as the page draws it: stops with planned and predicted times,
        legs with their geometry, the released base and the horizon."""
        order = v.order
        if order is None:
            return {"van_id": v.van_id, "order_id": None, "stops": [], "legs": []}
        etas = {e.index: e for e in self.etas(v, now_s)}
        s = v.state
        reached = -1
        if s is not None and s.order_id == order.order_id and s.last_node_sequence_id is not None:
            reached = s.last_node_sequence_id // 2
        stops = []
        for i, node in enumerate(order.nodes):
            eta = etas.get(i)
            stops.append(
                {
                    "node_id": node.node_id,
                    "name": stop_name(node),
                    "kind": node.kind.value,
                    "lon": node.lon,
                    "lat": node.lat,
                    "released": node.released,
                    "done": i <= reached,
                    "planned_arrival": node.planned_arrival,
                    "predicted_arrival": format_timestamp(eta.arrival_s) if eta else None,
                    "actions": [
                        {"type": a.action_type.value, "parcels": len(a.parcel_ids)}
                        for a in node.actions
                    ],
                }
            )
        legs = []
        for i, edge in enumerate(order.edges):
            coords = (
                [list(p) for p in edge.trajectory]
                if geometry and edge.trajectory
                else [
                    [order.nodes[i].lon, order.nodes[i].lat],
                    [order.nodes[i + 1].lon, order.nodes[i + 1].lat],
                ]
            )
            legs.append({"released": edge.released, "done": i + 1 <= reached, "coords": coords})
        return {
            "van_id": v.van_id,
            "order_id": order.order_id,
            "order_update_id": order.order_update_id,
            "stops": stops,
            "legs": legs,
        }

    def parcel_json(self, p: ParcelView, now_s: float, *, history: bool = False) -> Json:
        predicted = self.predicted_s(p, now_s)
        out: Json = {
            "parcel_id": p.parcel_id,
            "status": p.status,
            "display_status": display_status(p),
            "late": p.late,
            "van_id": p.van_id,
            "lon": p.door[0] if p.door else None,
            "lat": p.door[1] if p.door else None,
            "planned_eta": format_timestamp(p.planned_s) if p.planned_s is not None else None,
            "first_planned_eta": format_timestamp(p.first_planned_s)
            if p.first_planned_s is not None
            else None,
            "predicted_eta": format_timestamp(predicted) if predicted is not None else None,
            "delivered": format_timestamp(p.delivered_s) if p.delivered_s is not None else None,
            "detail": p.detail,
        }
        if history:
            out["history"] = [{"time": format_timestamp(t), "text": text} for t, text in p.history]
        return out

    def parcel_brief(self, p: ParcelView) -> Json:
        """What the map needs of a parcel (the stream carries this)."""
        return {
            "id": p.parcel_id,
            "s": display_status(p),
            "van": p.van_id,
            "lon": p.door[0] if p.door else None,
            "lat": p.door[1] if p.door else None,
        }

    def kpis(self) -> Json:
        delivered = late_delivered = failed = late_open = 0
        by_status: dict[str, int] = {}
        for p in self.parcels.values():
            by_status[p.status] = by_status.get(p.status, 0) + 1
            if p.status == "delivered":
                delivered += 1
                late_delivered += p.late
            elif p.status == "failed":
                failed += 1
            elif p.late:
                late_open += 1
        km = 0.0
        kwh = 0.0
        for v in self.vans.values():
            if v.state is not None and v.first_odometer_m is not None:
                km += max(0.0, v.state.odometer_m - v.first_odometer_m) / 1000.0
            kwh += v.energy_kwh
        return {
            "parcels": len(self.parcels),
            "delivered": delivered,
            "on_time": delivered - late_delivered,
            "late": late_delivered + late_open,
            "late_delivered": late_delivered,
            "predicted_late": late_open,
            "failed": failed,
            "km": round(km, 1),
            "energy_kwh": round(kwh, 1),
            "by_status": by_status,
            "vans": len(self.vans),
            "controller": self.controller.value if self.controller else None,
        }

    def snapshot(self, now_s: float) -> Json:
        """Everything the page shows, for a client that just connected."""
        return {
            "type": "snapshot",
            "now": format_timestamp(now_s),
            "vans": [self.van_json(v, now_s) for v in self.vans.values()],
            "parcels": [self.parcel_brief(p) for p in self.parcels.values()],
            "events": list(self.events)[-200:],
            "alerts": [a.json() for a in self.alerts.values()],
            "kpis": self.kpis(),
            "routes_version": self.routes_version,
        }

    def take_delta(self, now_s: float) -> Json | None:
        """What changed since the last call (``None``: nothing)."""
        if not (
            self._dirty_vans
            or self._dirty_parcels
            or self._new_events
            or self._dirty_alerts
            or self._kpis_dirty
        ):
            return None
        delta: Json = {
            "type": "delta",
            "now": format_timestamp(now_s),
            "vans": [self.van_json(self.vans[v], now_s) for v in self._dirty_vans],
            "parcels": [self.parcel_brief(self.parcels[p]) for p in self._dirty_parcels],
            "events": self._new_events,
            "alerts": [self.alerts[a].json() for a in self._dirty_alerts if a in self.alerts],
            "routes_version": self.routes_version,
        }
        if self._kpis_dirty:
            delta["kpis"] = self.kpis()
        self._dirty_vans = set()
        self._dirty_parcels = set()
        self._new_events = []
        self._dirty_alerts = set()
        self._kpis_dirty = False
        return delta


def _parcels_of(order: Order) -> dict[str, tuple[NodeActionType, Node]]:
    """Each parcel of ``order`` with what the order does with it last (deliver wins)."""
    out: dict[str, tuple[NodeActionType, Node]] = {}
    for node in order.nodes:
        for action in node.actions:
            if action.action_type is NodeActionType.CHARGE:
                continue
            for pid in action.parcel_ids:
                if pid in out and out[pid][0] is NodeActionType.DELIVER:
                    continue
                out[pid] = (action.action_type, node)
    return out
