"""The bridge's decisions, sans I/O: MQTT commands and VCU reports in, serial frames and
MQTT states out. The asyncio service (:mod:`firmware_bridge.bridge.service`) only carries
bytes, files and time; everything here is tested without a broker, a port or a clock.

Rules (``docs/bridge.md``):

* every command is decoded, then verified (signed for this van, fresh, not replayed — a
  safer-only instant message is checked for its signature and van only); a refused one
  becomes an error in state and changes nothing;
* the van's order logic is the :class:`~firmware_bridge.bridge.order_book.OrderBook`; the
  bridge persists it (:class:`SaveBook`) on every change, before the state that reports the
  change, and restores it at start (:meth:`BridgeCore.restore`);
* an accepted order (or update) sends the VCU the released base only, as drive segments,
  at most :data:`SEGMENTS_AHEAD` ahead of what the VCU acknowledged; the horizon never leaves
  the bridge;
* instant actions map to STOP(HOLD) / RESUME / STOP(ABORT) / EMERGENCY_STOP / DOOR; each
  ``action_id`` is applied once (a copy is confirmed again, not re-applied); one whose frame
  was lost with the VCU link is sent again once the link is back (see :meth:`_flush_pending`);
* the bridge keeps its own e-stop latch (and pause): while it is set and the VCU's telemetry
  does not show ESTOP_LATCHED, EMERGENCY_STOP goes out again at once (a VCU that rebooted
  and forgot it); only an accepted ``resume`` clears it;
* telemetry becomes State at 1 Hz (``tick``) and on every event (node reached, drive state,
  door, faults, e-stop, command accepted or refused, the VCU's data turning stale);
* TELEMETRY older than ``telemetry_stale_s`` is stale: a ``vcu_telemetry_stale`` error (a
  warning, fatal after ``vcu_grace_s``); the state keeps the last values, never guesses;
* the VCU link lost → a ``warning`` ``vcu_link_lost`` error and no further segments; still
  lost after ``vcu_grace_s`` → the same error turns ``fatal``; when the link comes back the
  error clears and the bridge re-syncs from the VCU's telemetry (same mission: continue where
  it stands; rebooted VCU: a new mission from the first stop not yet finished), sends again
  what was lost, and releases a VCU that holds after losing its bridge (RESUME) unless a
  pause or an e-stop is held;
* a VCU whose protocol version range excludes ours: a ``fatal`` ``vcu_version_mismatch``.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge import wire
from firmware_bridge.bridge.mission import Mission, Waypoint, base_waypoints, distance_m
from firmware_bridge.bridge.order_book import OrderBook, OrderBookError
from fleet.protocol import (
    ActionStatus,
    Battery,
    CommandVerifier,
    DecodeError,
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
    decode,
    make_header,
)
from fleet.protocol.errors import SignatureError

log = logging.getLogger(__name__)

SEGMENTS_AHEAD = 32  # drive segments queued on the link beyond what the VCU acknowledged
STATE_PERIOD_S = 1.0  # default period of the unprompted state (``BridgeCore.state_period_s``)
VCU_GRACE_S = 5.0  # default time a lost VCU link is a warning before it turns fatal
TELEMETRY_STALE_S = 0.5  # default age beyond which the VCU's TELEMETRY is stale
# a latched e-stop the VCU's telemetry does not show is sent again at once, then at most this
# often while the VCU still does not show it (the link repeats each one until acknowledged)
ESTOP_REASSERT_S = 0.25
# state message ids are reserved this far ahead in the state dir, so that a restart after a
# clock step back still starts above every id used before (at most one write a minute)
MESSAGE_ID_RESERVE = 60_000
RECENT_ERRORS = 8  # refused commands kept in state
# the protocol's bounds on what a state reports (fleet.protocol State/Battery); a VCU reading
# beyond them (valid on the wire: u16 cm/s, u32 m) is reported at the bound, with a warning
MAX_STATE_SPEED_MPS = 100.0
MAX_STATE_RANGE_M = 10_000_000.0
RECENT_ERROR_S = 300.0
# instant actions that set the van moving (or open it): a frame of one lost with the link is
# not sent again once the link has been lost longer than the grace (the controller has given
# the van up by then); the others (pause, cancel, close the door) are always sent again
_LATE_REFUSED = frozenset({InstantActionType.RESUME, InstantActionType.OPEN_DOOR})


_ORDER_TOPIC = (ErrorReference(key="topic", value="order"),)
_INSTANT_TOPIC = (ErrorReference(key="topic", value="instant"),)


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


@dataclass(frozen=True, slots=True)
class SaveBook:
    """Persist :meth:`BridgeCore.book_document` crash-safely, now (before what follows)."""


Action = SendSerial | EmergencyStopSerial | DiscardSerial | PublishState | SaveCounters | SaveBook


@dataclass(frozen=True, slots=True)
class BridgeCounters:
    commands_accepted: int = 0
    commands_refused: int = 0
    segments_sent: int = 0


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
class _Pending:
    """An instant action waiting for the VCU link (its frame was lost, or it came while the
    link was down): sent, in order, once the link is back and re-synced."""

    action_id: str
    kind: InstantActionType
    since_s: float


@dataclass
class BridgeCore:
    van_id: str
    verifier: CommandVerifier
    mission_ids: int = field(default_factory=lambda: secrets.randbits(31) or 1)
    state_period_s: float = STATE_PERIOD_S
    vcu_grace_s: float = VCU_GRACE_S
    telemetry_stale_s: float = TELEMETRY_STALE_S

    def __post_init__(self) -> None:
        if not self.state_period_s > 0:
            raise ValueError(f"state_period_s {self.state_period_s}: expected > 0")
        if not self.vcu_grace_s >= 0:
            raise ValueError(f"vcu_grace_s {self.vcu_grace_s}: expected ≥ 0")
        if not self.telemetry_stale_s > 0:
            raise ValueError(f"telemetry_stale_s {self.telemetry_stale_s}: expected > 0")
        self.book = OrderBook(self.van_id)
        self.waypoints: list[Waypoint] = []
        self.mission: Mission | None = None
        self.telemetry: wire.Telemetry | None = None
        self.link_up = False
        self.awaiting_sync = True
        self._telemetry_at_s = float("-inf")  # when the latest TELEMETRY arrived
        self._charges: dict[int, _Charge] = {}  # node sequence id → its charge action
        self._recent: deque[_Recent] = deque(maxlen=RECENT_ERRORS)
        self._vcu_faults: dict[str, VanError] = {}
        self._link_lost: tuple[float, str] | None = None  # since when, why
        self._version_mismatch: tuple[int, int] | None = None  # the VCU's version range
        self._book_error: VanError | None = None  # the saved order book could not be read
        self._started_s: float | None = None  # the first time an entry point was given
        self._now_s = float("-inf")  # the latest time an entry point was given
        self._told: tuple[int, int] = (0, 0)  # link-lost and stale levels last logged
        self._pending: list[_Pending] = []
        self._estop_sent_at = float("-inf")
        self._link_resume_due = False  # a VCU that held while the link was lost: RESUME it
        self._message_id = 0
        self._message_id_reserved = 0  # persisted: no id at or below it is ever used again
        self._last_state_s = float("-inf")
        self._state_key: tuple[object, ...] = ()
        self._saved_key: tuple[object, ...] = self._persist_key()
        self.bad_frames = 0
        self.ignored_telemetry = 0  # TELEMETRY dropped while a version mismatch stands
        self.spool_dropped = 0
        self.accepted = 0
        self.refused = 0
        self.segments_sent = 0

    # ---- the order book, as the bridge's callers and tests read it ------------------------

    @property
    def order(self) -> Order | None:
        return self.book.order

    @property
    def cancelled(self) -> bool:
        return self.book.cancelled

    @property
    def last_node_seq(self) -> int | None:
        return self.book.last_node_seq

    @property
    def last_order_wp(self) -> int | None:
        return self.book.progress_wp

    @property
    def parcels_on_board(self) -> list[str]:
        return self.book.parcels_on_board

    def _see(self, now_s: float) -> None:
        if self._started_s is None:
            self._started_s = now_s
            if not self.link_up and self._link_lost is None:
                self._link_lost = (now_s, "no answer from the VCU since the bridge started")
        self._now_s = max(self._now_s, now_s)

    # ---- persistence -----------------------------------------------------------------------

    def _persist_key(self) -> tuple[object, ...]:
        m = self.mission
        return (
            self.book.version,
            None if m is None else (m.mission_id, m.start),
            self._message_id_reserved,
        )

    def save_if_changed(self) -> list[Action]:
        """[SaveBook] when something persisted changed since the last save, else []."""
        key = self._persist_key()
        if key == self._saved_key:
            return []
        self._saved_key = key
        return [SaveBook()]

    def book_document(self) -> dict[str, Any]:
        """What ``--state-dir/order-book.json`` holds (``docs/bridge.md``, "Restarts")."""
        doc = self.book.to_dict()
        m = self.mission
        doc["bridge"] = {
            "mission_id": None if m is None else m.mission_id,
            "mission_start_wp": None if m is None else m.start,
            "message_id_reserved": self._message_id_reserved,
        }
        return doc

    def restore(self, data: object, *, where: str = "order book") -> None:
        """Carry on from a document :meth:`book_document` made (a restart); raises
        :class:`OrderBookError` if it is not one (then nothing changes)."""
        book = OrderBook.from_dict(data, van_id=self.van_id, where=where)
        assert isinstance(data, dict)
        bridge = data.get("bridge")
        if not isinstance(bridge, dict):
            raise OrderBookError(f"{where}: field 'bridge': expected an object")
        mission_id = bridge.get("mission_id")
        start = bridge.get("mission_start_wp")
        reserved = bridge.get("message_id_reserved")
        if not isinstance(reserved, int) or isinstance(reserved, bool) or reserved < 0:
            raise OrderBookError(f"{where}: field 'bridge.message_id_reserved': expected ≥ 0")
        waypoints = base_waypoints(book.order) if book.order is not None else []
        mission = None
        if mission_id is not None:
            if not (
                isinstance(mission_id, int)
                and isinstance(start, int)
                and 1 <= mission_id <= 0xFFFF_FFFE
                and 0 <= start <= len(waypoints)
            ):
                raise OrderBookError(
                    f"{where}: fields 'bridge.mission_id' / 'bridge.mission_start_wp': "
                    f"{mission_id!r} / {start!r} do not fit the order's "
                    f"{len(waypoints)} waypoints"
                )
            if book.active:
                mission = Mission.cut(waypoints, mission_id, start)
                self.mission_ids = mission_id
        self.book = book
        self.waypoints = waypoints
        self.mission = mission
        self._charges = {}
        self._message_id = max(self._message_id, reserved)
        self._message_id_reserved = max(self._message_id_reserved, reserved)
        if self.mission is None and book.active:
            start_wp = self._first_unreached()
            if start_wp < len(self.waypoints):
                self._new_mission(start_wp)
        # instant actions not acknowledged by the VCU before the restart go out again once
        # the link is up (idempotent), as after a link loss; a latched e-stop is re-asserted
        self._pending = [
            _Pending(r.action_id, InstantActionType(r.action_type), r.at_s or float("-inf"))
            for r in book.instants
            if r.status is ActionStatus.RUNNING
            and r.action_type != InstantActionType.EMERGENCY_STOP.value
        ]
        self._saved_key = self._persist_key()
        order = book.order
        log.info(
            "van %s: order book restored: order %s update %s, last node %s, %d parcels on "
            "board%s%s%s",
            self.van_id,
            order.order_id if order else None,
            order.order_update_id if order else None,
            book.last_node_seq,
            len(book.parcels_on_board),
            ", cancelled" if book.cancelled else "",
            ", paused" if book.paused else "",
            ", e-stop latched" if book.estop_latched else "",
        )

    def restore_failed(self, detail: str) -> None:
        """The saved order book could not be read: start without an order, and say so in state
        (until a new order is accepted)."""
        self._book_error = VanError(
            error_type="order_book_unreadable",
            level=ErrorLevel.WARNING,
            description=detail[:500],
        )

    # ---- MQTT commands -------------------------------------------------------------------

    def on_order_payload(self, payload: bytes, now_s: float, *, topic: str = "") -> list[Action]:
        self._see(now_s)
        try:
            order = decode(Order, payload, topic=topic)
        except DecodeError as exc:
            return self._refuse("validation_error", exc.reason, str(exc), now_s, named=_ORDER_TOPIC)
        try:
            self.verifier.verify(order, now_s, topic=topic)
        except SignatureError as exc:
            named = (
                ErrorReference(key="order_id", value=order.order_id),
                ErrorReference(key="order_update_id", value=str(order.order_update_id)),
            )
            return self._refuse(
                "signature_error",
                exc.reason,
                str(exc),
                now_s,
                message_id=exc.message_id,
                named=named,
            )
        actions: list[Action] = [SaveCounters(self.verifier.last_message_ids)]
        decision = self.book.take_order(order)
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
            self._book_error = None
            self._start_order()
        else:
            self._update_order()
        actions += self._pump()
        return [*actions, *self.save_if_changed(), *self._state_now(now_s)]

    def on_instant_payload(self, payload: bytes, now_s: float, *, topic: str = "") -> list[Action]:
        """:meth:`instant_commands` followed by :meth:`state_after_command`."""
        return [
            *self.instant_commands(payload, now_s, topic=topic),
            *self.state_after_command(now_s),
        ]

    def instant_commands(self, payload: bytes, now_s: float, *, topic: str = "") -> list[Action]:
        """Decode and verify an instant-actions message; the serial commands it asks for,
        an emergency stop first, then SaveCounters and SaveBook. The state that reports it
        comes from :meth:`state_after_command`, so a caller can put the e-stop on the line
        before spending time on the state (a refused message yields no action, only that
        state). An action whose ``action_id`` was applied before is not applied again: the
        state confirms it."""
        self._see(now_s)
        try:
            msg = decode(InstantActions, payload, topic=topic)
        except DecodeError as exc:
            self._record_refusal(
                "validation_error", exc.reason, str(exc), now_s, named=_INSTANT_TOPIC
            )
            return []
        try:
            self.verifier.verify(msg, now_s, topic=topic)
        except SignatureError as exc:
            named = tuple(
                ErrorReference(key="action_id", value=a.action_id) for a in msg.actions[:32]
            )
            self._record_refusal(
                "signature_error",
                exc.reason,
                str(exc),
                now_s,
                message_id=exc.message_id,
                named=named,
            )
            return []
        self.accepted += 1
        actions: list[Action] = []
        # an emergency stop goes out before anything else in the same message
        ordered = sorted(
            msg.actions, key=lambda a: a.action_type is not InstantActionType.EMERGENCY_STOP
        )
        for ia in ordered:
            kind = ia.action_type
            if not self.book.apply_instant(ia.action_id, kind, ActionStatus.RUNNING, at_s=now_s):
                log.info(
                    "van %s: instant action %s (%s) was applied before: confirmed, not repeated",
                    self.van_id,
                    ia.action_id,
                    ia.action_type.value,
                )
                continue
            actions += self._instant_action(ia.action_id, ia.action_type, now_s)
        actions.append(SaveCounters(self.verifier.last_message_ids))
        actions += self.save_if_changed()
        return actions

    def state_after_command(self, now_s: float) -> list[Action]:
        """The state published at once after a command was accepted or refused."""
        return [*self.save_if_changed(), *self._state_now(now_s)]

    def _instant_action(
        self, action_id: str, kind: InstantActionType, now_s: float
    ) -> list[Action]:
        tag = f"ia:{action_id}"
        if kind is InstantActionType.EMERGENCY_STOP:
            self._estop_sent_at = now_s
            return [EmergencyStopSerial(tag)]
        if kind is InstantActionType.CANCEL_ORDER:
            self.mission = None
        if not self.link_up or self._pending:
            # in order behind what already waits for the link (docs/bridge.md, "Instant
            # actions and the VCU link")
            self._pending.append(_Pending(action_id, kind, now_s))
            self.book.instant_status(
                action_id, ActionStatus.RUNNING, "waiting for the VCU link to send it"
            )
            return []
        return [SendSerial(self._instant_message(kind), tag)]

    def _instant_message(self, kind: InstantActionType) -> wire.Message:
        if kind is InstantActionType.PAUSE:
            return wire.Stop(wire.StopMode.HOLD)
        if kind is InstantActionType.RESUME:
            return wire.Resume(self._resume_id())
        if kind is InstantActionType.CANCEL_ORDER:
            return wire.Stop(wire.StopMode.ABORT)
        if kind is InstantActionType.OPEN_DOOR:
            return wire.Door(open=True)
        if kind is InstantActionType.CLOSE_DOOR:
            return wire.Door(open=False)
        raise ValueError(f"{kind.value} has no serial command of its own")

    def _resume_id(self) -> int:
        """The e-stop a RESUME names: the newest this bridge sent (its latch's), else the one
        the VCU reports latched (e.g. from before the book was lost)."""
        latched = self.telemetry.estop_id if self.telemetry is not None else 0
        return self.book.estop_id or latched

    def estop_sent(self, estop_id: int) -> None:
        """The service put e-stop ``estop_id`` on the line (the id a RESUME names)."""
        self.book.estop_sent(estop_id)

    def _refuse(
        self,
        error_type: str,
        reason: str,
        detail: str,
        now_s: float,
        *,
        message_id: int | None = None,
        named: tuple[ErrorReference, ...] = (),
    ) -> list[Action]:
        self._record_refusal(error_type, reason, detail, now_s, message_id=message_id, named=named)
        return self._state_now(now_s)

    def _record_refusal(
        self,
        error_type: str,
        reason: str,
        detail: str,
        now_s: float,
        *,
        message_id: int | None = None,
        named: tuple[ErrorReference, ...] = (),
    ) -> None:
        """A refused command, listed in the next states: ``reason``, the command's
        ``message_id`` where it could be read, and what it was (``named``: its ``order_id`` and
        ``order_update_id``, its actions' ``action_id``, or only its ``topic`` when it could
        not be decoded that far)."""
        self.refused += 1
        log.warning("van %s: command refused (%s): %s", self.van_id, reason, detail)
        refs = [ErrorReference(key="reason", value=reason[:200])]
        if message_id is not None:  # tells two refusals of one reason apart
            refs.append(ErrorReference(key="message_id", value=str(message_id)))
        refs.extend(named)
        error = VanError(
            error_type=error_type,
            level=ErrorLevel.WARNING,
            description=detail[:500],
            references=tuple(refs),
        )
        self._recent.append(_Recent(error, now_s))

    # ---- orders and missions ---------------------------------------------------------------

    def _start_order(self) -> None:
        assert self.book.order is not None
        self._charges = {}
        self.waypoints = base_waypoints(self.book.order)
        self._new_mission(0)

    def _update_order(self) -> None:
        assert self.book.order is not None
        self.waypoints = base_waypoints(self.book.order)
        if self.mission is not None:
            self.mission.extend(self.waypoints)
        elif not self.book.cancelled:
            start = self._first_unreached()
            if start < len(self.waypoints):
                self._new_mission(start)

    def _first_unreached(self) -> int:
        """Where a new mission starts: after the last waypoint reached, or at it when it is a
        stop whose actions were not finished (the van was there when the VCU went away: it
        stops there again and dwells for the whole actions' time)."""
        last = self.book.progress_wp
        if last is None:
            return 0
        if last < len(self.waypoints):
            wp = self.waypoints[last]
            if wp.stop and wp.node_seq is not None and wp.node_seq not in self.book.finished:
                return last
        return last + 1

    def _new_mission(self, start: int) -> None:
        self.mission_ids = (self.mission_ids % 0xFFFF_FFFE) + 1
        self.mission = Mission.cut(self.waypoints, self.mission_ids, start)

    def next_gate_s(self) -> float | None:
        """When the next segment held back for its stop's planned time may go (epoch s)."""
        m = self.mission
        if m is None or self.book.cancelled:
            return None
        return m.gate(m.sent)

    def next_deadline_s(self) -> float | None:
        """The next time :meth:`tick` has something to do besides the periodic state: a held
        segment's time, the VCU's telemetry turning stale or fatal, a lost link turning fatal."""
        times = [t for t in (self.next_gate_s(),) if t is not None]
        at = self._telemetry_at_s
        if at > float("-inf"):
            times += [at + self.telemetry_stale_s, at + self.telemetry_stale_s + self.vcu_grace_s]
        if self._link_lost is not None:
            times.append(self._link_lost[0] + self.vcu_grace_s)
        future = [t for t in times if t > self._now_s]
        return min(future) if future else None

    def _pump(self) -> list[Action]:
        m = self.mission
        if m is None or not self.link_up or self.awaiting_sync or self.book.cancelled:
            return []
        out: list[Action] = []
        while m.sent < len(m.segments) and m.sent - m.delivered < SEGMENTS_AHEAD:
            gate = m.gate(m.sent)
            if gate is not None and gate > self._now_s:
                break  # the stop's work may not start yet: the van waits at the stop
            hold = m.hold(m.sent)
            if hold is not None and not self._charge_of(hold).over:
                break  # charging at the node before: the van stays on the cable
            if m.start + m.segments[m.sent].first_wp == 0 and self._first_node_charging():
                break  # charging where it stands, near the first node: not away from it

            seg = m.segments[m.sent]
            out.append(SendSerial(seg, f"seg:{m.mission_id}:{m.sent}"))
            m.sent += 1
            self.segments_sent += 1
        return out

    def _first_node_charging(self) -> bool:
        """A charge at the order's first node, started where the van stands (within
        :data:`~firmware_bridge.bridge.order_book.AT_FIRST_NODE_M`), is under way."""
        seq = self.waypoints[0].node_seq if self.waypoints else None
        charge = None if seq is None else self._charges.get(seq)
        return charge is not None and charge.sent and not charge.over

    # ---- link and VCU ----------------------------------------------------------------------

    def on_link_up(self) -> list[Action]:
        self.link_up = True
        self.awaiting_sync = True  # wait for the VCU to say what it holds
        self._link_lost = None
        self._told = (0, self._told[1])
        self._link_resume_due = True
        if self._version_mismatch is not None:
            log.info("van %s: the VCU now speaks our protocol version", self.van_id)
            self._version_mismatch = None
        return []

    def on_link_down(self, reason: str, now_s: float) -> list[Action]:
        self._see(now_s)
        self.link_up = False
        if self._link_lost is None:
            self._link_lost = (now_s, reason)
        if self.mission is not None:
            self.mission.sent = self.mission.delivered
        return [DiscardSerial(), *self.save_if_changed(), *self._state_now(now_s)]

    def on_version_mismatch(self, peer_min: int, peer_max: int, now_s: float) -> list[Action]:
        """The VCU's HELLO offers protocol versions ``peer_min .. peer_max``, without ours: the
        link stays down; a fatal error in state at once (the serial link logs it as an ERROR,
        once per change)."""
        self._see(now_s)
        if self._version_mismatch == (peer_min, peer_max):
            return []
        self._version_mismatch = (peer_min, peer_max)
        return self._state_now(now_s)

    def on_bad_frame(self, fault: wire.FrameFault, now_s: float) -> list[Action]:
        """A chunk from the VCU that was no usable frame: counted (the serial link logs line
        faults, at most every 10 s)."""
        self._see(now_s)
        self.bad_frames += 1
        return []

    def link_lost_fatal(self, now_s: float) -> bool:
        """The VCU link has been lost for ``vcu_grace_s`` or longer."""
        return self._link_lost is not None and now_s - self._link_lost[0] >= self.vcu_grace_s

    def telemetry_age_s(self, now_s: float) -> float:
        return max(0.0, now_s - self._telemetry_at_s)

    def _stale_level(self, now_s: float) -> int:
        """0: the VCU's telemetry is fresh; 1: stale (a warning); 2: stale past the grace."""
        if self.telemetry is None:
            started = self._started_s if self._started_s is not None else now_s
            return 2 if now_s - started >= self.vcu_grace_s else 1
        age = now_s - self._telemetry_at_s
        if age <= self.telemetry_stale_s:
            return 0
        return 2 if age >= self.telemetry_stale_s + self.vcu_grace_s else 1

    def _link_level(self, now_s: float) -> int:
        if self._link_lost is None:
            return 0
        return 2 if self.link_lost_fatal(now_s) else 1

    def _age_ref(self, now_s: float) -> ErrorReference:
        if self.telemetry is None:
            return ErrorReference(key="telemetry_age_s", value="none received")
        return ErrorReference(key="telemetry_age_s", value=f"{self.telemetry_age_s(now_s):.2f}")

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
            references=(self._age_ref(now_s),),
        )

    def _stale_error(self, now_s: float) -> VanError | None:
        level = self._stale_level(now_s)
        if level == 0:
            return None
        if self.telemetry is None:
            what = "no TELEMETRY from the vehicle control unit since the bridge started"
        else:
            what = (
                f"the vehicle control unit's latest TELEMETRY is "
                f"{self.telemetry_age_s(now_s):.2f} s old (bound {self.telemetry_stale_s:g} s): "
                "position, speed, driving and battery are its last values, not live"
            )
        return VanError(
            error_type="vcu_telemetry_stale",
            level=ErrorLevel.FATAL if level == 2 else ErrorLevel.WARNING,
            description=what[:500],
            references=(self._age_ref(now_s),),
        )

    def _version_error(self) -> VanError | None:
        if self._version_mismatch is None:
            return None
        lo, hi = self._version_mismatch
        return VanError(
            error_type="vcu_version_mismatch",
            level=ErrorLevel.FATAL,
            description=(
                f"the vehicle control unit speaks serial protocol versions {lo}..{hi}; this "
                f"bridge speaks {wire.PROTOCOL_VERSION}: no link"
            ),
            references=(
                ErrorReference(key="peer_min", value=str(lo)),
                ErrorReference(key="peer_max", value=str(hi)),
            ),
        )

    def _charge_of(self, node_seq: int) -> _Charge:
        charge = self._charges.get(node_seq)
        if charge is None:
            target = 100.0
            for wp in self.waypoints:
                if wp.node_seq == node_seq and wp.charge_pct is not None:
                    target = wp.charge_pct
            charge = self._charges[node_seq] = _Charge(target)
            # after a restart: a charge the book knows is over stays over
            for action_id in self._charge_action_ids(node_seq):
                status = self.book.action_status(action_id)
                if status in (ActionStatus.FINISHED, ActionStatus.FAILED):
                    charge.status = status
        return charge

    def _charge_action_ids(self, node_seq: int) -> list[str]:
        if self.book.order is None:
            return []
        node = self.book.node(node_seq)
        return [a.action_id for a in node.actions if a.action_type is NodeActionType.CHARGE]

    def _set_charge(self, node_seq: int, status: ActionStatus, why: str = "") -> None:
        charge = self._charge_of(node_seq)
        charge.status, charge.why = status, why
        for action_id in self._charge_action_ids(node_seq):
            self.book.set_action(action_id, NodeActionType.CHARGE.value, status, why)

    def _charge_step(self, t: wire.Telemetry) -> list[Action]:
        """Start the charge of the node the van stands at; follow the one under way."""
        out: list[Action] = []
        charging = bool(t.fault_bits & wire.FaultBit.CHARGING)
        for seq, charge in list(self._charges.items()):
            if charge.sent and not charge.over:
                if charging:
                    self._set_charge(seq, ActionStatus.RUNNING)
                elif charge.delivered:
                    self._set_charge(seq, ActionStatus.FINISHED)  # the VCU is done (or had enough)
                    out += self._pump()
                    log.info("van %s: charge at node %d finished", self.van_id, seq)
        m = self.mission
        last = self.book.progress_wp
        if m is None or t.speed_cmps != 0 or not self.waypoints:
            return out
        if last is None:
            # Nothing of the order driven yet. A charge at its first node, where the van
            # stands (a re-plan's order for a van at its depot), starts now and runs while
            # the van waits for the planned departure, as the plan has it — not after it.
            first = self.waypoints[0]
            dist = distance_m((t.lon_e7, t.lat_e7), (first.lon_e7, first.lat_e7))
            if self.book.first_node_charge(dist) is None:
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
            self._set_charge(wp.node_seq, ActionStatus.RUNNING)
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
        if kind == "ia":
            self.book.instant_status(rest, ActionStatus.FINISHED)
            return self.save_if_changed()
        if kind == "latch":
            self._estops_in_effect()  # a repeat of the latch took effect: so did the e-stop
            return self.save_if_changed()
        return []  # the bridge's own repeats (pause, resume after a link loss)

    def _estops_in_effect(self) -> None:
        """The VCU holds an e-stop the bridge sent: every emergency_stop still running is
        finished (its brake command is on the vehicle, whichever copy got there)."""
        for record in self.book.instants:
            if (
                record.status is ActionStatus.RUNNING
                and record.action_type == InstantActionType.EMERGENCY_STOP.value
            ):
                self.book.instant_status(record.action_id, ActionStatus.FINISHED)

    def on_send_failed(self, tag: str, why: str, *, link_lost: bool = False) -> list[Action]:
        """A serial command did not get through: refused by the VCU (``link_lost`` False), or
        dropped with the link (True: an instant action is sent again once the link is back;
        a charge is asked for again)."""
        kind, _, rest = tag.partition(":")
        if kind == "ia":
            record = self.book.instant(rest)
            if record is None or record.status is not ActionStatus.RUNNING:
                return []
            if link_lost:
                kind_ = InstantActionType(record.action_type)
                self._pending.append(_Pending(rest, kind_, self._now_s))
                self.book.instant_status(
                    rest,
                    ActionStatus.RUNNING,
                    "its frame was lost with the VCU link: sent again once the link is back",
                )
            else:
                log.warning("van %s: instant action %s failed: %s", self.van_id, rest, why)
                self.book.instant_status(rest, ActionStatus.FAILED, why)
            return self.save_if_changed()
        if kind == "charge":
            seq = int(rest)
            charge = self._charges.get(seq)
            if charge is not None and not charge.over:
                if not link_lost:  # refused by the VCU: the van goes on without it
                    self._set_charge(seq, ActionStatus.FAILED, why)
                    return [*self._pump(), *self.save_if_changed()]
                charge.sent = charge.delivered = False  # link lost: asked again when back
                self._set_charge(seq, ActionStatus.WAITING)
            return self.save_if_changed()
        if not link_lost:
            log.warning("van %s: the VCU refused %s: %s", self.van_id, tag, why)
        return []

    def _expire_pending(self, now_s: float) -> None:
        """Instant actions that would set the van moving, waiting longer than the grace for
        the link, fail: the controller has given the van up (its link is fatal) by then."""
        keep: list[_Pending] = []
        for p in self._pending:
            waited = now_s - p.since_s
            if p.kind in _LATE_REFUSED and waited >= self.vcu_grace_s:
                self.book.instant_status(
                    p.action_id,
                    ActionStatus.FAILED,
                    f"link lost: the VCU link was down for {waited:.1f} s; {p.kind.value} is "
                    "not sent that late",
                )
            else:
                keep.append(p)
        self._pending = keep

    def _flush_pending(self, now_s: float) -> list[Action]:
        self._expire_pending(now_s)
        out: list[Action] = []
        for p in self._pending:
            self.book.instant_status(p.action_id, ActionStatus.RUNNING)
            out.append(SendSerial(self._instant_message(p.kind), f"ia:{p.action_id}"))
        if self._pending:
            log.info(
                "van %s: %d instant action(s) sent again after the VCU link came back: %s",
                self.van_id,
                len(self._pending),
                ", ".join(f"{p.action_id} ({p.kind.value})" for p in self._pending),
            )
        self._pending = []
        return out

    def on_telemetry(self, t: wire.Telemetry, now_s: float) -> list[Action]:
        self._see(now_s)
        if self._version_mismatch is not None:
            # a VCU announced firmware we cannot speak with: until a handshake succeeds, no
            # frame is taken as what the vehicle does (it may be a session that is gone)
            self.ignored_telemetry += 1
            return []
        self.telemetry = t
        self._telemetry_at_s = now_s
        if self.book.estop_latched and t.fault_bits & wire.FaultBit.ESTOP_LATCHED:
            self._estops_in_effect()
        out: list[Action] = self._reassert_estop(t, now_s)
        if self.awaiting_sync and self.link_up:
            self.awaiting_sync = False
            out += self._resync(t, now_s)
        self._track_progress(t)
        out += self._charge_step(t)
        out += self._pump()
        out += self.save_if_changed()
        if (
            self._event_key(now_s) != self._state_key
            or now_s - self._last_state_s >= self.state_period_s
        ):
            out += self._state_now(now_s)
        return out

    def _reassert_estop(self, t: wire.Telemetry, now_s: float) -> list[Action]:
        """The bridge's latch is set but the VCU does not show ESTOP_LATCHED (it rebooted and
        forgot, or never got it): EMERGENCY_STOP again, at once."""
        if (
            not self.link_up
            or not self.book.estop_latched
            or t.fault_bits & wire.FaultBit.ESTOP_LATCHED
            or now_s - self._estop_sent_at < ESTOP_REASSERT_S
        ):
            return []
        self._estop_sent_at = now_s
        log.warning(
            "van %s: e-stop latched but the VCU does not show it (drive state %s): "
            "EMERGENCY_STOP sent again",
            self.van_id,
            t.drive_state.name,
        )
        return [EmergencyStopSerial("latch:")]

    def on_fault_report(self, f: wire.FaultReport, now_s: float) -> list[Action]:
        self._see(now_s)
        code = f.code
        name = _fault_name(code)
        released: list[Action] = []
        if code == wire.FaultCode.CHARGE_REFUSED:
            for seq, charge in list(self._charges.items()):
                if charge.sent and not charge.over:
                    self._set_charge(
                        seq, ActionStatus.FAILED, "the VCU refused to charge (not standing still)"
                    )
            released = self._pump()  # the van goes on without the charge
        if code in (wire.FaultCode.LINK_LOST, wire.FaultCode.LINK_RESTORED):
            # the VCU's own view of the link: listed, never fatal (our side reports the link)
            what = "lost the bridge" if code == wire.FaultCode.LINK_LOST else "has the bridge back"
            error = VanError(
                error_type="vehicle_fault",
                level=ErrorLevel.WARNING,
                description=(
                    f"VCU fault {name} ({_severity_name(f.severity)}): the VCU {what}, {f.arg} ms"
                ),
                references=(ErrorReference(key="fault_code", value=name),),
            )
            self._recent.append(_Recent(error, now_s))
            return [*self.save_if_changed(), *self._state_now(now_s)]
        level = ErrorLevel.FATAL if f.severity >= wire.Severity.ERROR else ErrorLevel.WARNING
        error = VanError(
            error_type="vehicle_fault",
            level=level,
            description=(f"VCU fault {name} ({_severity_name(f.severity)}), detail {f.arg}"),
            references=(
                ErrorReference(key="fault_code", value=name),
                ErrorReference(key="fault_code_number", value=str(int(code))),
            ),
        )
        if level is ErrorLevel.FATAL:
            self._vcu_faults[f"vcu:{name}"] = error
        else:
            self._recent.append(_Recent(error, now_s))
        return [*released, *self.save_if_changed(), *self._state_now(now_s)]

    def _resync(self, t: wire.Telemetry, now_s: float) -> list[Action]:
        """The link is up and the VCU said where it stands: what was lost goes out again
        (instant actions, in order), a held pause is asserted again, a VCU holding after it
        lost its bridge is resumed (no pause, no e-stop held), and the mission continues."""
        out = self._flush_pending(now_s)
        book = self.book
        standing = t.drive_state in (wire.DriveState.PAUSED, wire.DriveState.ESTOPPED)
        if book.paused and not standing:
            log.warning(
                "van %s: paused, but the VCU reports %s (rebooted?): STOP(HOLD) sent again",
                self.van_id,
                t.drive_state.name,
            )
            out.append(SendSerial(wire.Stop(wire.StopMode.HOLD), "pause:"))
        if self._link_resume_due:
            self._link_resume_due = False
            if (
                t.drive_state is wire.DriveState.HOLDING
                and not book.paused
                and not book.estop_latched
                and not t.fault_bits & wire.FaultBit.ESTOP_LATCHED
            ):
                log.info("van %s: link back: RESUME for a VCU holding since", self.van_id)
                out.append(SendSerial(wire.Resume(self._resume_id()), "resume:"))
        m = self.mission
        if m is None:
            return out
        if t.mission_id == m.mission_id:
            m.resync(t.wp_queued)
            return out
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
            return out
        self._new_mission(start)
        return out

    def _track_progress(self, t: wire.Telemetry) -> None:
        m = self.mission
        if m is None or t.mission_id != m.mission_id or t.last_wp == wire.WP_NONE:
            return
        book = self.book
        book.advance(m.order_wp(t.last_wp))
        last = book.progress_wp
        assert last is not None
        dwelling = t.drive_state is wire.DriveState.DWELLING
        for idx in range(min(last + 1, len(self.waypoints))):
            wp = self.waypoints[idx]
            if wp.node_seq is None:
                continue
            book.reach(wp.node_seq)
            done = idx < last or not (dwelling and idx == last)
            if done and wp.node_seq not in book.finished:
                book.finish(wp.node_seq)

    # ---- state -----------------------------------------------------------------------------

    def _event_key(self, now_s: float) -> tuple[object, ...]:
        t = self.telemetry
        book = self.book
        return (
            None if t is None else (t.drive_state, t.door, t.fault_bits, t.estop_id),
            book.last_node_seq,
            book.estop_latched,
            book.paused,
            self.link_up,
            len(self._vcu_faults),
            self._link_level(now_s),
            self._stale_level(now_s),
            self._version_mismatch,
            self._book_error is not None,
        )

    def tick(self, now_s: float) -> list[Action]:
        """Call at least once per state period (and at :meth:`next_deadline_s`): the periodic
        state (1 Hz by default), a state at once when the VCU's data turns stale or a lost
        link outlasts its grace; segments held back for a stop's planned time go out once it
        has come."""
        self._see(now_s)
        self._expire_pending(now_s)
        gated = self._pump()
        if gated:
            return [*gated, *self.save_if_changed(), *self._state_now(now_s)]
        self._log_health(now_s)
        if (
            self._event_key(now_s) != self._state_key
            or now_s - self._last_state_s >= self.state_period_s
        ):
            return [*self.save_if_changed(), *self._state_now(now_s)]
        return self.save_if_changed()

    def _log_health(self, now_s: float) -> None:
        link, stale = self._link_level(now_s), self._stale_level(now_s)
        told_link, told_stale = self._told
        if link == 2 and told_link < 2:
            log.error(
                "van %s: VCU link lost for %.1f s or more: fatal", self.van_id, self.vcu_grace_s
            )
        if self.telemetry is not None and stale != told_stale:
            age = self.telemetry_age_s(now_s)
            if stale == 0:
                log.info("van %s: VCU telemetry live again", self.van_id)
            elif stale == 1:
                log.warning("van %s: VCU telemetry stale: %.2f s old", self.van_id, age)
            else:
                log.error("van %s: VCU telemetry stale for %.1f s: fatal", self.van_id, age)
        self._told = (link, stale)

    def _fatal(self, now_s: float) -> bool:
        return (
            self._version_mismatch is not None
            or self._link_level(now_s) == 2
            or self._stale_level(now_s) == 2
        )

    def _state_now(self, now_s: float) -> list[Action]:
        if self.telemetry is None and not self._fatal(now_s):
            # nothing from the VCU yet: no position, no battery to report (a state would say
            # 0 % and send the controller's planning astray). What happens meanwhile (a
            # refused command) is in the first state, once the VCU has spoken — or in the
            # first fatal error's state (a VCU that never answers, a version mismatch).
            return []
        self._last_state_s = now_s
        self._state_key = self._event_key(now_s)
        state = self.build_state(now_s)
        return [*self.save_if_changed(), PublishState(state)]

    def next_message_id(self, now_s: float) -> int:
        # strictly increasing, also across restarts: never below the time in milliseconds,
        # nor below the reservation persisted in the state dir (a clock stepped back)
        self._message_id = max(self._message_id + 1, int(now_s * 1000))
        if self._message_id > self._message_id_reserved:
            self._message_id_reserved = self._message_id + MESSAGE_ID_RESERVE
        return self._message_id

    def _errors(self, now_s: float) -> list[VanError]:
        t = self.telemetry
        errors: list[VanError] = []
        for made in (
            self._version_error(),
            self._link_lost_error(now_s),
            self._stale_error(now_s),
            self._book_error,
        ):
            if made is not None:
                errors.append(made)
        errors += self._vcu_faults.values()
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
        if self.spool_dropped:
            errors.append(
                VanError(
                    error_type="spool_overflow",
                    level=ErrorLevel.WARNING,
                    description=f"{self.spool_dropped} state messages made while the broker "
                    "was unreachable were dropped (oldest first)",
                )
            )
        return errors

    def build_state(self, now_s: float) -> State:
        t = self.telemetry
        book = self.book
        order = book.order
        errors = self._errors(now_s)
        header = make_header(self.van_id, self.next_message_id(now_s), now_s)
        load = Load(load_kg=0.0, volume_m3=0.0, parcel_ids=tuple(book.parcels_on_board))
        common: dict[str, Any] = dict(
            header=header,
            van_id=self.van_id,
            order_id=order.order_id if order else None,
            order_update_id=order.order_update_id if order else 0,
            last_node_id=book.last_node_id,
            last_node_sequence_id=book.reported_node_seq,
            node_states=tuple(book.node_states()),
            edge_states=tuple(book.edge_states()),
            action_states=tuple(book.action_states()),
            load=load,
        )
        if t is None:
            # a fatal error before the VCU ever spoke: nothing known of the vehicle (the
            # errors say so; the battery is not a reading)
            return State(
                **common,
                paused=book.paused,
                emergency_stop=book.estop_latched,
                battery=Battery(soc_pct=0.0, remaining_range_m=0.0),
                errors=tuple(errors[:64]),
            )
        speed_mps = t.speed_cmps / 100.0
        range_m = float(t.range_m)
        if speed_mps > MAX_STATE_SPEED_MPS:
            errors.append(_implausible("speed_cmps", t.speed_cmps, "speed_mps", speed_mps))
            speed_mps = MAX_STATE_SPEED_MPS
        if range_m > MAX_STATE_RANGE_M:
            errors.append(_implausible("range_m", t.range_m, "remaining_range_m", range_m))
            range_m = MAX_STATE_RANGE_M
        return State(
            **common,
            driving=t.drive_state is wire.DriveState.DRIVING,
            paused=t.drive_state is wire.DriveState.PAUSED or book.paused,
            emergency_stop=bool(t.fault_bits & wire.FaultBit.ESTOP_LATCHED) or book.estop_latched,
            door_open=t.door is not wire.DoorState.CLOSED,
            position=VanPosition(lon=t.lon, lat=t.lat, heading_deg=t.heading_cdeg / 100.0),
            speed_mps=speed_mps,
            odometer_m=float(t.odometer_m),
            battery=Battery(
                soc_pct=t.soc_cpct / 100.0,
                remaining_range_m=range_m,
                charging=bool(t.fault_bits & wire.FaultBit.CHARGING),
            ),
            errors=tuple(errors[:64]),
        )


def _fault_name(code: int) -> str:
    """A fault code's name; one outside the listed codes is a vendor's (``docs/serial.md``)."""
    try:
        return wire.FaultCode(code).name
    except ValueError:
        return f"VENDOR_0x{int(code):04X}"


def _severity_name(severity: int) -> str:
    try:
        return wire.Severity(severity).name
    except ValueError:
        return f"SEVERITY_{int(severity)}"


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
