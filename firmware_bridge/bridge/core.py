"""The bridge's decisions, sans I/O: MQTT commands and VCU reports in, serial frames and
MQTT states out. The asyncio service (:mod:`firmware_bridge.bridge.service`) only carries
bytes and time; everything here is tested without a broker, a port or a clock.

Rules (``docs/bridge.md``):

* every command is decoded, then verified (signed for this van, fresh, not replayed); a
  refused one becomes an error in state and changes nothing;
* an accepted order (or update) sends the VCU the released base only, as drive segments,
  at most :data:`SEGMENTS_AHEAD` ahead of what the VCU acknowledged; the horizon never leaves
  the bridge;
* instant actions map to STOP(HOLD) / RESUME / STOP(ABORT) / EMERGENCY_STOP / DOOR;
* telemetry becomes State at 1 Hz (``tick``) and on every event (node reached, drive state,
  door, faults, e-stop, command accepted or refused);
* the VCU link lost → a ``warning`` ``vcu_link_lost`` error and no further segments; still
  lost after ``vcu_grace_s`` → the same error turns ``fatal``; when the link comes back the
  error clears and the bridge re-syncs from the VCU's telemetry (same mission: continue where
  it stands; rebooted VCU: a new mission from the first stop not yet finished).
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from dataclasses import dataclass, field

from firmware_bridge import wire
from firmware_bridge.bridge.mission import Mission, Waypoint, base_waypoints, distance_m
from fleet.protocol import (
    ActionState,
    ActionStatus,
    Battery,
    CommandVerifier,
    DecodeError,
    EdgeState,
    ErrorLevel,
    ErrorReference,
    InstantActions,
    InstantActionType,
    Load,
    NodeActionType,
    NodeState,
    Order,
    OrderVerdict,
    State,
    VanError,
    VanPosition,
    decide_order,
    decode,
    make_header,
)
from fleet.protocol.errors import SignatureError

log = logging.getLogger(__name__)

SEGMENTS_AHEAD = 32  # drive segments queued on the link beyond what the VCU acknowledged
STATE_PERIOD_S = 1.0  # default period of the unprompted state (``BridgeCore.state_period_s``)
VCU_GRACE_S = 5.0  # default time a lost VCU link is a warning before it turns fatal
RECENT_ERRORS = 8  # refused commands kept in state
# the protocol's bounds on what a state reports (fleet.protocol State/Battery); a VCU reading
# beyond them (valid on the wire: u16 cm/s, u32 m) is reported at the bound, with a warning
MAX_STATE_SPEED_MPS = 100.0
MAX_STATE_RANGE_M = 10_000_000.0
RECENT_ERROR_S = 300.0
# A van this close to an order's first node stands there: its charge may start before the
# order's first segment is released (the VCU's fix against the node's snapped position)
AT_NODE_M = 30.0


# ---- what the core asks the service to do ----------------------------------------------


@dataclass(frozen=True, slots=True)
class SendSerial:
    message: wire.Message
    tag: str  # reported back through on_delivered / on_send_failed


@dataclass(frozen=True, slots=True)
class EmergencyStopSerial:
    tag: str


@dataclass(frozen=True, slots=True)
class DiscardSerial:
    pass


@dataclass(frozen=True, slots=True)
class PublishState:
    state: State


@dataclass(frozen=True, slots=True)
class SaveCounters:
    """Persist the verifier's anti-replay counters (before the next command is accepted)."""

    counters: dict[str, int]


Action = SendSerial | EmergencyStopSerial | DiscardSerial | PublishState | SaveCounters


@dataclass(frozen=True, slots=True)
class BridgeCounters:
    commands_accepted: int = 0
    commands_refused: int = 0
    segments_sent: int = 0


@dataclass
class _InstantState:
    action_id: str
    action_type: str
    status: ActionStatus
    description: str = ""


@dataclass
class _Charge:
    """A node's ``charge`` action: CHARGE sent when the van stands at the node, running while
    the VCU reports ``charging``, finished when it stops reporting it."""

    target_pct: float
    status: ActionStatus = ActionStatus.WAITING
    sent: bool = False
    delivered: bool = False
    why: str = ""

    @property
    def over(self) -> bool:
        return self.status in (ActionStatus.FINISHED, ActionStatus.FAILED)


@dataclass
class _Recent:
    error: VanError
    at_s: float


@dataclass
class BridgeCore:
    van_id: str
    verifier: CommandVerifier
    mission_ids: int = field(default_factory=lambda: secrets.randbits(31) or 1)
    state_period_s: float = STATE_PERIOD_S
    vcu_grace_s: float = VCU_GRACE_S

    def __post_init__(self) -> None:
        if not self.state_period_s > 0:
            raise ValueError(f"state_period_s {self.state_period_s}: expected > 0")
        if not self.vcu_grace_s >= 0:
            raise ValueError(f"vcu_grace_s {self.vcu_grace_s}: expected ≥ 0")
        self.order: Order | None = None
        self.cancelled = False
        self.waypoints: list[Waypoint] = []
        self.mission: Mission | None = None
        self.telemetry: wire.Telemetry | None = None
        self.link_up = False
        self.awaiting_sync = True
        self.last_node_seq: int | None = None
        self.last_order_wp: int | None = None
        self.parcels_on_board: list[str] = []
        self._finished_nodes: set[int] = set()
        self._charges: dict[int, _Charge] = {}  # node sequence id → its charge action
        self._instant: deque[_InstantState] = deque(maxlen=32)
        self._recent: deque[_Recent] = deque(maxlen=RECENT_ERRORS)
        self._vcu_faults: dict[str, VanError] = {}
        self._link_lost: tuple[float, str] | None = None  # since when, why
        self._now_s = float("-inf")  # the latest time an entry point was given
        self._link_fatal_told = False
        self._last_estop_sent = 0
        self._message_id = 0
        self._last_state_s = float("-inf")
        self._state_key: tuple[object, ...] = ()
        self.spool_dropped = 0
        self.accepted = 0
        self.refused = 0
        self.segments_sent = 0

    # ---- MQTT commands -------------------------------------------------------------------

    def on_order_payload(self, payload: bytes, now_s: float, *, topic: str = "") -> list[Action]:
        self._now_s = max(self._now_s, now_s)
        try:
            order = decode(Order, payload, topic=topic)
            self.verifier.verify(order, now_s, topic=topic)
        except SignatureError as exc:
            return self._refuse("signature_error", exc.reason, str(exc), now_s)
        except DecodeError as exc:
            return self._refuse("validation_error", exc.reason, str(exc), now_s)
        actions: list[Action] = [SaveCounters(self.verifier.last_message_ids)]
        decision = decide_order(
            self.order,
            order,
            van_id=self.van_id,
            last_node_sequence_id=self.last_node_seq,
            cancelled=self.cancelled,
        )
        error = decision.error()
        if error is not None:
            self.refused += 1
            log.warning("van %s: order refused: %s", self.van_id, error.description)
            self._recent.append(_Recent(error, now_s))
            return [*actions, *self._state_now(now_s)]
        self.accepted += 1
        if decision.verdict is OrderVerdict.DUPLICATE:
            return actions
        if decision.verdict is OrderVerdict.NEW:
            self._start_order(order)
        else:
            self._update_order(order)
        actions += self._pump()
        return [*actions, *self._state_now(now_s)]

    def on_instant_payload(self, payload: bytes, now_s: float, *, topic: str = "") -> list[Action]:
        """:meth:`instant_commands` followed by :meth:`state_after_command`."""
        return [
            *self.instant_commands(payload, now_s, topic=topic),
            *self.state_after_command(now_s),
        ]

    def instant_commands(self, payload: bytes, now_s: float, *, topic: str = "") -> list[Action]:
        """Decode and verify an instant-actions message; the serial commands it asks for,
        an emergency stop first, then SaveCounters. The state that reports it comes from
        :meth:`state_after_command`, so a caller can put the e-stop on the line before
        spending time on the state (a refused message yields no action, only that state)."""
        try:
            msg = decode(InstantActions, payload, topic=topic)
            self.verifier.verify(msg, now_s, topic=topic)
        except SignatureError as exc:
            self._record_refusal("signature_error", exc.reason, str(exc), now_s)
            return []
        except DecodeError as exc:
            self._record_refusal("validation_error", exc.reason, str(exc), now_s)
            return []
        self.accepted += 1
        actions: list[Action] = []
        # an emergency stop goes out before anything else in the same message
        ordered = sorted(
            msg.actions, key=lambda a: a.action_type is not InstantActionType.EMERGENCY_STOP
        )
        for ia in ordered:
            actions += self._instant_action(ia.action_id, ia.action_type)
        actions.append(SaveCounters(self.verifier.last_message_ids))
        return actions

    def state_after_command(self, now_s: float) -> list[Action]:
        """The state published at once after a command was accepted or refused."""
        return self._state_now(now_s)

    def _instant_action(self, action_id: str, kind: InstantActionType) -> list[Action]:
        tag = f"ia:{action_id}"
        self._instant.append(_InstantState(action_id, kind.value, ActionStatus.RUNNING))
        if kind is InstantActionType.EMERGENCY_STOP:
            return [EmergencyStopSerial(tag)]
        if kind is InstantActionType.PAUSE:
            return [SendSerial(wire.Stop(wire.StopMode.HOLD), tag)]
        if kind is InstantActionType.RESUME:
            # name the newest e-stop this bridge knows of: its own last one, else the one the
            # VCU reports latched (e.g. from before a bridge restart)
            latched = self.telemetry.estop_id if self.telemetry is not None else 0
            estop_id = self._last_estop_sent or latched
            return [SendSerial(wire.Resume(estop_id), tag)]
        if kind is InstantActionType.CANCEL_ORDER:
            self.cancelled = True
            self.mission = None
            return [SendSerial(wire.Stop(wire.StopMode.ABORT), tag)]
        if kind is InstantActionType.OPEN_DOOR:
            return [SendSerial(wire.Door(open=True), tag)]
        return [SendSerial(wire.Door(open=False), tag)]

    def estop_sent(self, estop_id: int) -> None:
        self._last_estop_sent = estop_id

    def _refuse(self, error_type: str, reason: str, detail: str, now_s: float) -> list[Action]:
        self._record_refusal(error_type, reason, detail, now_s)
        return self._state_now(now_s)

    def _record_refusal(self, error_type: str, reason: str, detail: str, now_s: float) -> None:
        self.refused += 1
        log.warning("van %s: command refused (%s): %s", self.van_id, reason, detail)
        error = VanError(
            error_type=error_type,
            level=ErrorLevel.WARNING,
            description=detail[:500],
            references=(ErrorReference(key="reason", value=reason[:200]),),
        )
        self._recent.append(_Recent(error, now_s))

    # ---- orders and missions ---------------------------------------------------------------

    def _start_order(self, order: Order) -> None:
        self.order = order
        self.cancelled = False
        self.last_node_seq = None
        self.last_order_wp = None
        self._finished_nodes = set()
        self._charges = {}
        self.waypoints = base_waypoints(order)
        self._new_mission(0)

    def _update_order(self, order: Order) -> None:
        self.order = order
        self.waypoints = base_waypoints(order)
        if self.mission is not None:
            self.mission.extend(self.waypoints)
        elif not self.cancelled:
            self._new_mission(self._first_unreached())

    def _first_unreached(self) -> int:
        """Where a new mission starts: after the last waypoint reached, or at it when it is a
        stop whose actions were not finished (the van was there when the VCU went away: it
        stops there again and dwells for the whole actions' time)."""
        last = self.last_order_wp
        if last is None:
            return 0
        if last < len(self.waypoints):
            wp = self.waypoints[last]
            if wp.stop and wp.node_seq is not None and wp.node_seq not in self._finished_nodes:
                return last
        return last + 1

    def _new_mission(self, start: int) -> None:
        self.mission_ids = (self.mission_ids % 0xFFFF_FFFE) + 1
        self.mission = Mission.cut(self.waypoints, self.mission_ids, start)

    def next_gate_s(self) -> float | None:
        """When the next segment held back for its stop's planned time may go (epoch s)."""
        m = self.mission
        if m is None or self.cancelled:
            return None
        return m.gate(m.sent)

    def _pump(self) -> list[Action]:
        m = self.mission
        if m is None or not self.link_up or self.awaiting_sync or self.cancelled:
            return []
        out: list[Action] = []
        while m.sent < len(m.segments) and m.sent - m.delivered < SEGMENTS_AHEAD:
            gate = m.gate(m.sent)
            if gate is not None and gate > self._now_s:
                break  # the stop's work may not start yet: the van waits at the stop
            hold = m.hold(m.sent)
            if hold is not None and not self._charge_of(hold).over:
                break  # charging at the node before: the van stays on the cable
            seg = m.segments[m.sent]
            out.append(SendSerial(seg, f"seg:{m.mission_id}:{m.sent}"))
            m.sent += 1
            self.segments_sent += 1
        return out

    # ---- link and VCU ----------------------------------------------------------------------

    def on_link_up(self) -> list[Action]:
        self.link_up = True
        self.awaiting_sync = True  # wait for the VCU to say what it holds
        self._link_lost = None
        self._link_fatal_told = False
        return []

    def on_link_down(self, reason: str, now_s: float) -> list[Action]:
        self.link_up = False
        if self._link_lost is None:
            self._link_lost = (now_s, reason)
        if self.mission is not None:
            self.mission.sent = self.mission.delivered
        return [DiscardSerial(), *self._state_now(now_s)]

    def link_lost_fatal(self, now_s: float) -> bool:
        """The VCU link has been lost for ``vcu_grace_s`` or longer."""
        return self._link_lost is not None and now_s - self._link_lost[0] >= self.vcu_grace_s

    def _link_lost_error(self, now_s: float) -> VanError | None:
        if self._link_lost is None:
            return None
        since, reason = self._link_lost
        fatal = self.link_lost_fatal(now_s)
        lost_s = max(0.0, now_s - since)
        what = "given up" if fatal else f"fatal after {self.vcu_grace_s:g} s"
        return VanError(
            error_type="vcu_link_lost",
            level=ErrorLevel.FATAL if fatal else ErrorLevel.WARNING,
            description=(
                f"no heartbeat from the vehicle control unit for {lost_s:.1f} s ({what}): {reason}"
            )[:500],
        )

    def _charge_of(self, node_seq: int) -> _Charge:
        charge = self._charges.get(node_seq)
        if charge is None:
            target = 100.0
            for wp in self.waypoints:
                if wp.node_seq == node_seq and wp.charge_pct is not None:
                    target = wp.charge_pct
            charge = self._charges[node_seq] = _Charge(target)
        return charge

    def _charge_step(self, t: wire.Telemetry) -> list[Action]:
        """Start the charge of the node the van stands at; follow the one under way."""
        out: list[Action] = []
        charging = bool(t.fault_bits & wire.FaultBit.CHARGING)
        for seq, charge in self._charges.items():
            if charge.sent and not charge.over:
                if charging:
                    charge.status = ActionStatus.RUNNING
                elif charge.delivered:
                    charge.status = ActionStatus.FINISHED  # the VCU is done (or had enough)
                    out += self._pump()
                    log.info("van %s: charge at node %d finished", self.van_id, seq)
        m = self.mission
        last = self.last_order_wp
        if m is None or t.speed_cmps != 0:
            return out
        if last is None:
            # Nothing of the order driven yet. A charge at its first node, where the van
            # stands (a re-plan's order for a van at its depot), starts now and runs while
            # the van waits for the planned departure, as the plan has it — not after it.
            first = self.waypoints[0] if self.waypoints else None
            if first is None or first.charge_pct is None:
                return out
            if distance_m((t.lon_e7, t.lat_e7), (first.lon_e7, first.lat_e7)) > AT_NODE_M:
                return out
            last = 0
        elif t.mission_id != m.mission_id:
            return out
        wp = self.waypoints[last] if last < len(self.waypoints) else None
        if wp is None or wp.charge_pct is None or wp.node_seq is None:
            return out
        charge = self._charge_of(wp.node_seq)
        if not charge.sent and not charge.over:
            charge.sent = True
            charge.status = ActionStatus.RUNNING
            target = min(10000, max(0, round(charge.target_pct * 100)))
            out.append(SendSerial(wire.Charge(target, 0), f"charge:{wp.node_seq}"))
        return out

    def on_delivered(self, tag: str) -> list[Action]:
        kind, _, rest = tag.partition(":")
        if kind == "charge":
            charge = self._charges.get(int(rest))
            if charge is not None:
                charge.delivered = True
            return []
        if kind == "seg":
            mission_id, _, index = rest.partition(":")
            m = self.mission
            if m is not None and str(m.mission_id) == mission_id:
                m.delivered = max(m.delivered, int(index) + 1)
            return self._pump()
        self._instant_status(rest, ActionStatus.FINISHED)
        return []

    def on_send_failed(self, tag: str, why: str) -> list[Action]:
        kind, _, rest = tag.partition(":")
        if kind == "ia":
            self._instant_status(rest, ActionStatus.FAILED, why)
        elif kind == "charge":
            charge = self._charges.get(int(rest))
            if charge is not None and not charge.over:
                if self.link_up:  # refused by the VCU: the van goes on without it
                    charge.status, charge.why = ActionStatus.FAILED, why
                    return self._pump()
                charge.sent = charge.delivered = False  # link lost: asked again when back
                charge.status = ActionStatus.WAITING
        return []

    def _instant_status(self, action_id: str, status: ActionStatus, why: str = "") -> None:
        for st in self._instant:
            if st.action_id == action_id:
                st.status = status
                st.description = why

    def on_telemetry(self, t: wire.Telemetry, now_s: float) -> list[Action]:
        self._now_s = max(self._now_s, now_s)
        self.telemetry = t
        out: list[Action] = []
        if self.awaiting_sync and self.link_up:
            self.awaiting_sync = False
            out += self._resync(t)
        self._track_progress(t)
        out += self._charge_step(t)
        out += self._pump()
        key = self._event_key(t)
        if key != self._state_key or now_s - self._last_state_s >= self.state_period_s:
            out += self._state_now(now_s)
        return out

    def on_fault_report(self, f: wire.FaultReport, now_s: float) -> list[Action]:
        code = f.code
        if code in (wire.FaultCode.LINK_LOST, wire.FaultCode.LINK_RESTORED):
            return []
        released: list[Action] = []
        if code is wire.FaultCode.CHARGE_REFUSED:
            for charge in self._charges.values():
                if charge.sent and not charge.over:
                    charge.status = ActionStatus.FAILED
                    charge.why = "the VCU refused to charge (not standing still)"
            released = self._pump()  # the van goes on without the charge
        level = ErrorLevel.FATAL if f.severity >= wire.Severity.ERROR else ErrorLevel.WARNING
        error = VanError(
            error_type="vehicle_fault",
            level=level,
            description=f"VCU fault {code.name} ({f.severity.name}), detail {f.arg}",
            references=(ErrorReference(key="fault_code", value=code.name),),
        )
        if level is ErrorLevel.FATAL:
            self._vcu_faults[f"vcu:{code.name}"] = error
        else:
            self._recent.append(_Recent(error, now_s))
        return [*released, *self._state_now(now_s)]

    def _resync(self, t: wire.Telemetry) -> list[Action]:
        m = self.mission
        if m is None:
            return []
        if t.mission_id == m.mission_id:
            m.resync(t.wp_queued)
            return []
        # the VCU holds something else (it rebooted): a new mission from where the van is
        log.warning(
            "van %s: VCU holds mission %d, expected %d; starting a new mission",
            self.van_id,
            t.mission_id,
            m.mission_id,
        )
        start = self._first_unreached()
        if start >= len(self.waypoints):
            self.mission = None
            return []
        self._new_mission(start)
        return []

    def _track_progress(self, t: wire.Telemetry) -> None:
        m = self.mission
        if m is None or t.mission_id != m.mission_id or t.last_wp == wire.WP_NONE:
            return
        reached = m.order_wp(t.last_wp)
        if self.last_order_wp is None or reached > self.last_order_wp:
            self.last_order_wp = reached
        dwelling = t.drive_state is wire.DriveState.DWELLING
        for idx in range(len(self.waypoints)):
            wp = self.waypoints[idx]
            if idx > self.last_order_wp:
                break
            if wp.node_seq is None:
                continue
            if self.last_node_seq is None or wp.node_seq > self.last_node_seq:
                self.last_node_seq = wp.node_seq
            done = idx < self.last_order_wp or not (dwelling and idx == self.last_order_wp)
            if done and wp.node_seq not in self._finished_nodes:
                self._finish_node(wp.node_seq)

    def _finish_node(self, seq: int) -> None:
        self._finished_nodes.add(seq)
        assert self.order is not None
        node = self.order.nodes[seq // 2]
        for action in node.actions:
            if action.action_type is NodeActionType.LOAD:
                for p in action.parcel_ids:
                    if p not in self.parcels_on_board:
                        self.parcels_on_board.append(p)
            elif action.action_type in (NodeActionType.DELIVER, NodeActionType.UNLOAD):
                gone = set(action.parcel_ids)
                self.parcels_on_board = [p for p in self.parcels_on_board if p not in gone]

    # ---- state -----------------------------------------------------------------------------

    def _event_key(self, t: wire.Telemetry) -> tuple[object, ...]:
        return (
            t.drive_state,
            t.door,
            t.fault_bits,
            t.estop_id,
            self.last_node_seq,
            self.link_up,
            len(self._vcu_faults),
            self._link_lost is not None,
        )

    def tick(self, now_s: float) -> list[Action]:
        """Call at least once per state period: the periodic state (1 Hz by default), and at
        once when a lost VCU link outlasts its grace and turns fatal; segments held back for
        a stop's planned time go out once it has come."""
        self._now_s = max(self._now_s, now_s)
        gated = self._pump()
        if gated:
            return [*gated, *self._state_now(now_s)]
        if not self._link_fatal_told and self.link_lost_fatal(now_s):
            self._link_fatal_told = True
            log.error(
                "van %s: VCU link lost for %.1f s or more: fatal", self.van_id, self.vcu_grace_s
            )
            return self._state_now(now_s)
        if now_s - self._last_state_s >= self.state_period_s:
            return self._state_now(now_s)
        return []

    def _state_now(self, now_s: float) -> list[Action]:
        if self.telemetry is None:
            # nothing from the VCU yet: no position, no battery to report (a state would say
            # 0 % and send the controller's planning astray). What happens meanwhile (a
            # refused command) is in the first state, once the VCU has spoken.
            return []
        self._last_state_s = now_s
        self._state_key = self._event_key(self.telemetry)
        return [PublishState(self.build_state(now_s))]

    def next_message_id(self, now_s: float) -> int:
        # strictly increasing, also across restarts: never below the time in milliseconds
        self._message_id = max(self._message_id + 1, int(now_s * 1000))
        return self._message_id

    def build_state(self, now_s: float) -> State:
        t = self.telemetry
        order = self.order
        errors = list(self._vcu_faults.values())
        link_error = self._link_lost_error(now_s)
        if link_error is not None:
            errors.insert(0, link_error)
        errors += [r.error for r in self._recent if now_s - r.at_s <= RECENT_ERROR_S]
        if (
            t is not None
            and t.fault_bits & wire.FaultBit.FATAL
            and not any(
                e.error_type == "vehicle_fault" and e.level is ErrorLevel.FATAL for e in errors
            )
        ):
            errors.append(
                VanError(
                    error_type="vehicle_fault",
                    level=ErrorLevel.FATAL,
                    description="the VCU reports a fatal fault",
                )
            )
        speed_mps = range_m = 0.0
        if t is not None:
            speed_mps = t.speed_cmps / 100.0
            range_m = float(t.range_m)
            if speed_mps > MAX_STATE_SPEED_MPS:
                errors.append(_implausible("speed_cmps", t.speed_cmps, "speed_mps", speed_mps))
                speed_mps = MAX_STATE_SPEED_MPS
            if range_m > MAX_STATE_RANGE_M:
                errors.append(_implausible("range_m", t.range_m, "remaining_range_m", range_m))
                range_m = MAX_STATE_RANGE_M
        if self.spool_dropped:
            errors.append(
                VanError(
                    error_type="spool_overflow",
                    level=ErrorLevel.WARNING,
                    description=f"{self.spool_dropped} state messages made while the broker "
                    "was unreachable were dropped (oldest first)",
                )
            )
        node_states: list[NodeState] = []
        edge_states: list[EdgeState] = []
        action_states: list[ActionState] = []
        last_node_id = None
        if order is not None and not self.cancelled:
            reached = -1 if self.last_node_seq is None else self.last_node_seq
            for node in order.nodes:
                if node.sequence_id > reached:
                    node_states.append(
                        NodeState(
                            node_id=node.node_id,
                            sequence_id=node.sequence_id,
                            released=node.released,
                        )
                    )
                elif node.sequence_id == reached:
                    last_node_id = node.node_id
                for a in node.actions:
                    status = (
                        ActionStatus.FINISHED
                        if node.sequence_id in self._finished_nodes
                        else ActionStatus.RUNNING
                        if node.sequence_id == reached
                        else ActionStatus.WAITING
                    )
                    why = ""
                    if a.action_type is NodeActionType.CHARGE:
                        charge = self._charges.get(node.sequence_id)
                        status = ActionStatus.WAITING if charge is None else charge.status
                        why = "" if charge is None else charge.why
                    action_states.append(
                        ActionState(
                            action_id=a.action_id,
                            action_type=a.action_type.value,
                            status=status,
                            result_description=why,
                        )
                    )
            for edge in order.edges:
                if edge.sequence_id > reached:
                    edge_states.append(
                        EdgeState(
                            edge_id=edge.edge_id,
                            sequence_id=edge.sequence_id,
                            released=edge.released,
                        )
                    )
        elif order is not None:
            last_node_id = None
        for ia in self._instant:
            action_states.append(
                ActionState(
                    action_id=ia.action_id,
                    action_type=ia.action_type,
                    status=ia.status,
                    result_description=ia.description[:500],
                )
            )
        if t is None:
            # for a caller that asks anyway: the core never publishes this (see _state_now)
            return State(
                header=make_header(self.van_id, self.next_message_id(now_s), now_s),
                van_id=self.van_id,
                order_id=order.order_id if order else None,
                order_update_id=order.order_update_id if order else 0,
                node_states=tuple(node_states),
                edge_states=tuple(edge_states),
                battery=Battery(soc_pct=0.0, remaining_range_m=0.0),
                load=Load(load_kg=0.0, volume_m3=0.0, parcel_ids=tuple(self.parcels_on_board)),
                action_states=tuple(action_states),
                errors=tuple(errors[:64]),
            )
        return State(
            header=make_header(self.van_id, self.next_message_id(now_s), now_s),
            van_id=self.van_id,
            order_id=order.order_id if order else None,
            order_update_id=order.order_update_id if order else 0,
            last_node_id=last_node_id,
            last_node_sequence_id=self.last_node_seq if order and not self.cancelled else None,
            node_states=tuple(node_states),
            edge_states=tuple(edge_states),
            driving=t.drive_state is wire.DriveState.DRIVING,
            paused=t.drive_state is wire.DriveState.PAUSED,
            emergency_stop=bool(t.fault_bits & wire.FaultBit.ESTOP_LATCHED),
            door_open=t.door is not wire.DoorState.CLOSED,
            position=VanPosition(lon=t.lon, lat=t.lat, heading_deg=t.heading_cdeg / 100.0),
            speed_mps=speed_mps,
            odometer_m=float(t.odometer_m),
            battery=Battery(
                soc_pct=t.soc_cpct / 100.0,
                remaining_range_m=range_m,
                charging=bool(t.fault_bits & wire.FaultBit.CHARGING),
            ),
            load=Load(load_kg=0.0, volume_m3=0.0, parcel_ids=tuple(self.parcels_on_board)),
            action_states=tuple(action_states),
            errors=tuple(errors[:64]),
        )


def _implausible(wire_field: str, raw: int, state_field: str, value: float) -> VanError:
    bound = MAX_STATE_SPEED_MPS if state_field == "speed_mps" else MAX_STATE_RANGE_M
    return VanError(
        error_type="implausible_reading",
        level=ErrorLevel.WARNING,
        description=(
            f"TELEMETRY.{wire_field} = {raw} from the VCU is {value:g} beyond the protocol's "
            f"bound for {state_field} ({bound:g}): reported as {bound:g}"
        ),
        references=(ErrorReference(key="field", value=state_field),),
    )
