"""One van of the fast mode: the bridge's order book and the VCU's motion, event by event.

In the full stack an order reaches a van through the broker, the firmware bridge
(:mod:`firmware_bridge.bridge`) cuts its released base into drive segments and a simulated
VCU steps :class:`sim.vehicle.Vehicle` along them. :class:`FastVan` does the same in-process
without the bytes in between. Everything about the order — taking it or refusing it
(:func:`fleet.protocol.decide_order`), nodes reached and finished, parcels on board, cancel,
pause and e-stop latches, instant action ids, the action states a State reports, the rule for
a charge at an order's first node — is the bridge's own
:class:`~firmware_bridge.bridge.order_book.OrderBook`; this module keeps only motion and
timing:

* orders are turned into waypoints by the
  bridge's own :func:`firmware_bridge.bridge.base_waypoints` (released base only, positions at
  1e-7 degree, a stop with the stop's work time — its longest action — at every node that has
  actions); a stop's work does not start before its planned departure minus that time (the
  bridge holds the segment back; here the van waits for it at the stop); at a node with a
  ``charge`` action the van charges at ``charging_power_kw`` towards its target while the
  work goes on, and leaves when both are over (the VCU's CHARGE, closed form); a new order
  whose first node, where the van stands, has one (a re-plan's order for a van at its depot)
  charges from the moment it is accepted, while the van waits for the planned departure;
* the van drives from standstill to the next stop (or the end of what is released) as one
  closed-form :class:`sim.fast.motion.Leg`, passing nodes without actions without stopping, and
  dwells at stops; a node's actions are finished when the van leaves it (or passes it), as the
  bridge reports them; the load changes then;
* it reports a :class:`fleet.protocol.State` on every event (order accepted or refused, node
  reached, node finished, fault), never periodically: nothing is lost in-process, so there is
  no silence to fill. States leave out ``node_states``/``edge_states`` (the controller does
  not read them) to keep a thousand vans fast.

Differences from the full stack, by design: no link latency (a command arrives when it is
sent); a base extended while the van brakes for the end of its old base makes it stop there
first (the stepped vehicle would roll on), which costs a few seconds at most.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from firmware_bridge import wire
from firmware_bridge.bridge import base_waypoints
from firmware_bridge.bridge.mission import Waypoint
from firmware_bridge.bridge.order_book import OrderBook, ground_distance_m
from fleet.model import VanSpec
from fleet.protocol import (
    ActionStatus,
    Battery,
    ErrorLevel,
    ErrorReference,
    InstantActions,
    InstantActionType,
    Load,
    NodeActionType,
    Order,
    OrderVerdict,
    State,
    VanError,
    VanPosition,
    make_header,
)
from sim.fast.motion import Leg

log = logging.getLogger(__name__)

RECENT_ERROR_S = 300.0  # refused commands stay in state this long (as the bridge keeps them)


class Scheduler(Protocol):
    """Where a van books its next event (the fast mode's event loop)."""

    def at(self, time_s: float, action: Callable[[], None]) -> Callable[[], None]:
        """Run ``action`` at ``time_s``; returns a function that cancels it."""
        ...


class VanObserver(Protocol):
    """What the simulated world wants to know of a van, for the day's trace."""

    def drove(self, van: FastVan, t0_s: float, t1_s: float, leg: Leg, dist_m: float) -> None: ...

    def node_reached(self, van: FastVan, t_s: float, order: Order, node_index: int) -> None: ...

    def node_done(
        self,
        van: FastVan,
        t_s: float,
        order: Order,
        node_index: int,
        loaded: tuple[str, ...],
        unloaded: tuple[str, ...],
    ) -> None: ...

    def stopped(self, van: FastVan, t_s: float, why: str) -> None: ...

    def take_over(self, van: FastVan, from_van: str, parcel_ids: tuple[str, ...]) -> set[str]:
        """``van`` takes ``parcel_ids`` over from ``from_van`` beside it (a rescue trip's
        ``transfer_load``); returns those that were there to take."""
        ...


@dataclass
class _Move:
    leg: Leg
    t0_s: float
    first_wp: int  # waypoint index the leg starts towards
    stop_wp: int  # waypoint index where it stops
    cancels: list[Callable[[], None]]

    def waypoints_passed(self, dist_m: float) -> int:
        """How many of the leg's waypoints lie within ``dist_m`` of its start."""
        # the leg's points are [start, waypoint first_wp, ..., waypoint stop_wp]
        return sum(1 for c in self.leg.cum_m[1:] if c <= dist_m + 1e-9)


class FastVan:
    """A van: the bridge's order book (:attr:`book`), body as the VCU moves it (closed form)."""

    def __init__(
        self,
        van_id: str,
        spec: VanSpec,
        *,
        lon: float,
        lat: float,
        soc_pct: float,
        scheduler: Scheduler,
        observer: VanObserver,
        publish: Callable[[State], None],
    ) -> None:
        self.van_id = van_id
        self.spec = spec
        self.lon, self.lat = lon, lat
        self.heading_deg = 0.0
        self.energy_kwh = spec.battery_kwh * soc_pct / 100.0
        self.odometer_m = 0.0
        self.scheduler = scheduler
        self.observer = observer
        self.publish = publish
        # the bridge's order book, and the waypoints of its released base
        self.book = OrderBook(van_id)
        self.waypoints: list[Waypoint] = []
        self._edges_cut = 0  # released edges already turned into waypoints
        self.next_wp = 0  # first waypoint not yet reached
        self._recent: list[tuple[VanError, float]] = []
        self._faults: dict[str, VanError] = {}
        self._message_id = 0
        # the body
        self.move: _Move | None = None
        self.dwell_until_s: float | None = None
        self._dwell_cancel: Callable[[], None] | None = None
        self._dwell_left_s: float | None = None  # a dwell suspended by a pause
        self._gate: tuple[float, Callable[[], None]] | None = None  # waiting for a stop's time
        # charging at a stop: (since, energy then, target energy, kW)
        self._charging: tuple[float, float, float, float] | None = None
        self.fatal = False
        self.online = True  # the MQTT link: states are published only while it is up

    # ---- the order book, as the simulator reads it -------------------------------------------

    @property
    def order(self) -> Order | None:
        return self.book.order

    @property
    def cancelled(self) -> bool:
        return self.book.cancelled

    @property
    def paused(self) -> bool:
        return self.book.paused

    @property
    def estopped(self) -> bool:
        return self.book.estop_latched

    @property
    def last_node_seq(self) -> int | None:
        return self.book.last_node_seq

    @property
    def last_order_wp(self) -> int | None:
        return self.book.progress_wp

    @property
    def finished_nodes(self) -> set[int]:
        return self.book.finished

    @property
    def parcels_on_board(self) -> list[str]:
        return self.book.parcels_on_board

    # ---- state of the body ----------------------------------------------------------------

    @property
    def soc_pct(self) -> float:
        return max(0.0, 100.0 * self.energy_kwh / self.spec.battery_kwh)

    @property
    def battery_empty(self) -> bool:
        return self.energy_kwh <= 0.0

    def can_move(self) -> bool:
        return not (
            self.fatal or self.battery_empty or self.paused or self.estopped or self.cancelled
        )

    def position_at(self, now_s: float) -> tuple[float, float, float]:
        """Where the van is at ``now_s`` (lon, lat, heading)."""
        if self.move is None:
            return self.lon, self.lat, self.heading_deg
        return self.move.leg.position_at(now_s - self.move.t0_s)

    # ---- commands ---------------------------------------------------------------------------

    def receive_order(self, order: Order, now_s: float) -> None:
        decision = self.book.take_order(order)
        error = decision.error()
        if error is not None:
            log.warning("van %s: order refused: %s", self.van_id, error.description)
            self._recent.append((error, now_s))
            self._report(now_s)
            return
        if decision.verdict is OrderVerdict.DUPLICATE:
            return
        if decision.verdict is OrderVerdict.NEW:
            self.next_wp = 0
            self.waypoints = []
            self._edges_cut = 0
        self._extend_waypoints(order)
        if decision.verdict is OrderVerdict.NEW:
            self._charge_at_first_node(now_s)
        self._go(now_s)
        self._report(now_s)

    def _charge_at_first_node(self, now_s: float) -> None:
        """A new order whose first node (where the van stands) has a charge action: charge
        now, while waiting for the planned departure, as the plan did (a re-plan's order for a
        van at its depot). The van leaves when the charge is over and the departure is due."""
        if self.move is not None or self.dwell_until_s is not None or not self.waypoints:
            return
        wp = self.waypoints[0]
        lon, lat = wire.from_e7(wp.lon_e7), wire.from_e7(wp.lat_e7)
        if self.book.first_node_charge(ground_distance_m(self.lon, self.lat, lon, lat)) is None:
            return
        charge_s = self._start_charge(wp, now_s)
        if charge_s > 0:
            self.dwell_until_s = now_s + charge_s
            self._dwell_cancel = self.scheduler.at(self.dwell_until_s, self._dwell_done)

    def receive_instant(self, message: InstantActions, now_s: float) -> None:
        ordered = sorted(
            message.actions, key=lambda a: a.action_type is not InstantActionType.EMERGENCY_STOP
        )
        for ia in ordered:
            kind = ia.action_type
            # the book sets the latches and the cancel; an id applied before is not repeated
            if not self.book.apply_instant(ia.action_id, kind, ActionStatus.FINISHED, at_s=now_s):
                continue
            if kind in (InstantActionType.PAUSE, InstantActionType.EMERGENCY_STOP):
                estop = kind is InstantActionType.EMERGENCY_STOP
                self._halt(now_s, "emergency stop" if estop else "paused")
                self._suspend_dwell(now_s)
            elif kind is InstantActionType.RESUME:
                self._resume_dwell(now_s)
                self._go(now_s)
            elif kind is InstantActionType.CANCEL_ORDER:
                self._halt(now_s, "order cancelled")
        self._report(now_s)

    def _extend_waypoints(self, order: Order) -> None:
        """``self.waypoints`` = ``base_waypoints(order)``, computed only for what is new.

        An accepted update keeps the released base exactly (``decide_order``), and the bridge
        turns each released edge into waypoints from the node before it alone, so the
        waypoints of the old base stay and only the newly released edges are cut, by the
        bridge's own function applied to the order from the last node already cut.
        """
        released = sum(1 for e in order.edges if e.released)
        if self.waypoints and released <= self._edges_cut:
            return
        k = self._edges_cut
        tail = Order.model_construct(
            header=order.header,
            van_id=order.van_id,
            order_id=order.order_id,
            order_update_id=order.order_update_id,
            nodes=order.nodes[k:],
            edges=order.edges[k:],
        )
        new = base_waypoints(tail)
        self.waypoints.extend(new[1:] if self.waypoints else new)
        self._edges_cut = released

    # ---- faults and the link -----------------------------------------------------------------

    def break_down(self, now_s: float) -> None:
        """A fatal vehicle fault: the van stops where it is and reports it, for good."""
        self._halt(now_s, "breakdown")
        self.fatal = True
        self._faults["vcu:FATAL"] = VanError(
            error_type="vehicle_fault",
            level=ErrorLevel.FATAL,
            description="VCU fault FATAL (FATAL), detail 61453",
            references=(ErrorReference(key="fault_code", value="FATAL"),),
        )
        self._report(now_s)

    def set_online(self, online: bool, now_s: float) -> None:
        self.online = online
        if online:
            self._report(now_s)

    # ---- motion -------------------------------------------------------------------------------

    def _next_stop(self, start: int) -> int:
        for j in range(start, len(self.waypoints)):
            if self.waypoints[j].stop:
                return j
        return len(self.waypoints) - 1

    def _go(self, now_s: float) -> None:
        if (
            self.move is not None
            or self.dwell_until_s is not None
            or self._dwell_left_s is not None
            or not self.can_move()
        ):
            return
        if self.next_wp >= len(self.waypoints):
            return
        start = self.next_wp
        gate = self.waypoints[start].not_before_s
        if gate is not None and gate > now_s:
            # the bridge holds this stop's segment until its planned time: wait where we are
            self._open_gate_at(gate)
            return
        stop = self._next_stop(start)
        wps = self.waypoints[start : stop + 1]
        points = [(wire.from_e7(w.lon_e7), wire.from_e7(w.lat_e7)) for w in wps]
        cap = min(w.cap_cmps for w in wps) / 100.0
        leg = Leg.plan(self.spec, points, cap, start=(self.lon, self.lat))
        cancels: list[Callable[[], None]] = []
        duration = leg.duration_s
        if leg.energy_kwh > self.energy_kwh:  # the battery runs out on the way
            duration = leg.time_at(self.energy_kwh / self.spec.energy_per_m_kwh)
            cancels.append(self.scheduler.at(now_s + duration, self._run_dry))
        else:
            cancels.append(self.scheduler.at(now_s + duration, self._arrive))
        # nodes passed on the way (no actions, so no stop) are reached as the van passes them
        for j in range(start, stop):
            if wps[j - start].node_seq is not None:
                at_s = now_s + leg.time_at(leg.cum_m[j - start + 1])
                if at_s <= now_s + duration:
                    cancels.append(self.scheduler.at(at_s, self._passer(j, at_s)))
        self.move = _Move(leg, now_s, start, stop, cancels)

    def _open_gate_at(self, at_s: float) -> None:
        if self._gate is not None:
            if self._gate[0] == at_s:
                return
            self._gate[1]()
        self._gate = (at_s, self.scheduler.at(at_s, self._gate_open))

    def _gate_open(self) -> None:
        assert self._gate is not None
        now_s = self._gate[0]
        self._gate = None
        self._go(now_s)
        if self.move is not None:
            self._report(now_s)

    def _passer(self, j: int, at_s: float) -> Callable[[], None]:
        def passed() -> None:
            self._reach(j, at_s)
            self._report(at_s)

        return passed

    def _end_move(self, now_s: float) -> float:
        """Account for the distance covered since the move began; returns it (m)."""
        move = self.move
        assert move is not None
        elapsed = now_s - move.t0_s
        dist = move.leg.dist_at(elapsed)
        self.lon, self.lat, self.heading_deg = move.leg.position_at(elapsed)
        self.odometer_m += dist
        self.energy_kwh = max(0.0, self.energy_kwh - dist * self.spec.energy_per_m_kwh)
        self.observer.drove(self, move.t0_s, now_s, move.leg, dist)
        self.move = None
        return dist

    def _arrive(self) -> None:
        move = self.move
        assert move is not None
        now_s = move.t0_s + move.leg.duration_s
        self._end_move(now_s)
        wp = self.waypoints[move.stop_wp]
        self.lon, self.lat = wire.from_e7(wp.lon_e7), wire.from_e7(wp.lat_e7)
        self._reach(move.stop_wp, now_s)
        charge_s = self._start_charge(wp, now_s)
        hold_s = max(wp.dwell_s, charge_s) if wp.stop else 0.0
        if hold_s > 0:
            # the work and the charge run together; the van leaves when both are over
            self.dwell_until_s = now_s + hold_s
            self._dwell_cancel = self.scheduler.at(self.dwell_until_s, self._dwell_done)
        else:
            self._leave(move.stop_wp, now_s)
            self._go(now_s)
        self._report(now_s)

    def _dwell_done(self) -> None:
        assert self.dwell_until_s is not None
        now_s = self.dwell_until_s
        self.dwell_until_s = None
        self._dwell_cancel = None
        self._end_charge(now_s)
        if self.last_order_wp is not None:
            self._leave(self.last_order_wp, now_s)
        self._go(now_s)
        self._report(now_s)

    def _run_dry(self) -> None:
        move = self.move
        assert move is not None
        now_s = move.t0_s + move.leg.time_at(self.energy_kwh / self.spec.energy_per_m_kwh)
        self.next_wp = move.first_wp + move.waypoints_passed(move.leg.dist_at(now_s - move.t0_s))
        self._end_move(now_s)
        self.energy_kwh = 0.0
        self._faults["vcu:BATTERY_EMPTY"] = VanError(
            error_type="vehicle_fault",
            level=ErrorLevel.FATAL,
            description=f"VCU fault BATTERY_EMPTY (ERROR), detail {round(self.odometer_m)}",
            references=(ErrorReference(key="fault_code", value="BATTERY_EMPTY"),),
        )
        self.observer.stopped(self, now_s, "battery empty")
        self._report(now_s)

    def _halt(self, now_s: float, why: str) -> None:
        """Stop where the van is (a pause, an e-stop, a cancel or a breakdown)."""
        move = self.move
        if move is not None:
            for cancel in move.cancels:
                cancel()
            dist = self._end_move(now_s)
            self.next_wp = max(self.next_wp, move.first_wp + move.waypoints_passed(dist))
        if self._dwell_cancel is not None and why in ("breakdown", "order cancelled"):
            self._dwell_cancel()
            self._dwell_cancel = None
            self.dwell_until_s = None
            self._end_charge(now_s)
        self.observer.stopped(self, now_s, why)

    def _start_charge(self, wp: Waypoint, now_s: float) -> float:
        """At a node with a charge action: charge at ``charging_power_kw`` towards its target
        (as the bridge asks the VCU); returns how long it takes."""
        if wp.charge_pct is None or self.fatal:
            return 0.0
        target_kwh = self.spec.battery_kwh * min(100.0, max(0.0, wp.charge_pct)) / 100.0
        if target_kwh <= self.energy_kwh:
            return 0.0
        power_kw = self.spec.charging_power_kw
        duration = (target_kwh - self.energy_kwh) / power_kw * 3600.0
        self._charging = (now_s, self.energy_kwh, target_kwh, power_kw)
        return duration

    def _charged_kwh(self, now_s: float) -> float:
        """The battery's energy now, charging included."""
        if self._charging is None:
            return self.energy_kwh
        t0, e0, target, power = self._charging
        return min(target, e0 + max(0.0, now_s - t0) * power / 3600.0)

    def _end_charge(self, now_s: float) -> None:
        if self._charging is not None:
            self.energy_kwh = self._charged_kwh(now_s)
            self._charging = None

    def _suspend_dwell(self, now_s: float) -> None:
        if self.dwell_until_s is not None and self._dwell_cancel is not None:
            self._dwell_cancel()
            self._dwell_cancel = None
            self._dwell_left_s = max(0.0, self.dwell_until_s - now_s)
            self.dwell_until_s = None

    def _resume_dwell(self, now_s: float) -> None:
        if self._dwell_left_s is not None:
            self.dwell_until_s = now_s + self._dwell_left_s
            self._dwell_left_s = None
            self._dwell_cancel = self.scheduler.at(self.dwell_until_s, self._dwell_done)

    # ---- progress, told to the order book ------------------------------------------------------

    def _reach(self, j: int, now_s: float) -> None:
        self.book.advance(j)
        self.next_wp = max(self.next_wp, j + 1)
        wp = self.waypoints[j]
        order = self.book.order
        if wp.node_seq is not None and order is not None:
            self.book.reach(wp.node_seq)
            self.observer.node_reached(self, now_s, order, wp.node_seq // 2)
            if not wp.stop:
                self._finish(wp.node_seq, now_s)

    def _leave(self, j: int, now_s: float) -> None:
        wp = self.waypoints[j]
        if wp.node_seq is not None:
            self._finish(wp.node_seq, now_s)

    def _finish(self, seq: int, now_s: float) -> None:
        failed: dict[str, tuple[str, ...]] = {}
        if self.book.order is not None and seq not in self.book.finished:
            node = self.book.node(seq)
            for a in node.actions:
                if a.action_type is NodeActionType.TRANSFER_LOAD:
                    got = self.observer.take_over(self, node.ref, a.parcel_ids)
                    missing = tuple(p for p in a.parcel_ids if p not in got)
                    if missing:
                        failed[a.action_id] = missing
        why = "not aboard the van to take over from" if failed else ""
        done = self.book.finish(seq, failed=failed or None, why=why)
        order = self.book.order
        if done is not None and order is not None:
            self.observer.node_done(self, now_s, order, done.index, done.loaded, done.unloaded)

    # ---- state ----------------------------------------------------------------------------

    def state(self, now_s: float) -> State:
        """The state the bridge would publish now (node and edge states left out: the
        controller does not read them; node actions only of the nodes reached so far)."""
        self._message_id = max(self._message_id + 1, int(now_s * 1000))
        book = self.book
        order = book.order
        errors = list(self._faults.values())
        self._recent = [(e, t) for e, t in self._recent if now_s - t <= RECENT_ERROR_S]
        errors += [e for e, _ in self._recent]
        lon, lat, heading = self.position_at(now_s)
        energy = self._charged_kwh(now_s)
        speed = self.move.leg.speed_at(now_s - self.move.t0_s) if self.move else 0.0
        return State(
            header=make_header(self.van_id, self._message_id, now_s),
            van_id=self.van_id,
            order_id=order.order_id if order else None,
            order_update_id=order.order_update_id if order else 0,
            last_node_id=book.last_node_id,
            last_node_sequence_id=book.reported_node_seq,
            driving=self.move is not None,
            paused=book.paused,
            emergency_stop=book.estop_latched,
            position=VanPosition(lon=lon, lat=lat, heading_deg=heading % 360.0),
            speed_mps=speed,
            odometer_m=self.odometer_m,
            battery=Battery(
                soc_pct=min(100.0, max(0.0, 100.0 * energy / self.spec.battery_kwh)),
                remaining_range_m=max(0.0, energy / self.spec.energy_per_m_kwh),
                charging=self._charging is not None,
            ),
            load=Load(load_kg=0.0, volume_m3=0.0, parcel_ids=tuple(book.parcels_on_board)),
            action_states=tuple(book.action_states(ahead=False)),
            errors=tuple(errors[:64]),
        )

    def _report(self, now_s: float) -> None:
        if self.online:
            self.publish(self.state(now_s))
