"""The controller's decisions, without I/O: inputs in, writes and messages out.

Every input is a method taking the current time (``now_s``, epoch seconds from the caller's
clock): a plan to dispatch, a van's state, connection or factsheet, a bad message, a tick of
the clock, a dispatcher command, the result of a re-plan. The core updates its picture of the
fleet and queues what must happen; :meth:`ControllerCore.drain` hands it over as an
:class:`Output`: the :class:`~fleet.store.records.Changes` to write in one transaction, then
the messages to send (unsigned, with a placeholder header the sender replaces), then the
re-plans to run. The asyncio service (``fleet.control.service``) and the simulator's fast
mode both drive this same object.

Order life cycle, per van: a route becomes an order whose released base reaches
``release_ahead_stops`` beyond the last stop the van reached; a stop where the van loads
parcels that a line-haul van has yet to bring is not released until they are at the station.
Each change of the base or horizon is a new ``order_update_id``. An order is re-sent with
exponential backoff until the van's state echoes it, and given up after a bound (with an
event).

Re-planning (``docs/controller.md``): a van is declared lost (out of service) when a fatal
error lasts ``fatal_grace_s`` or it is offline mid-route for ``offline_replan_after_s``; a
dispatcher cancels it; an urgent parcel arrives; a dispatcher or the simulator asks for one.
Parcels in a van's released base stay that van's until it reports them done or failed or it
is lost (an offline van keeps driving its base, so even then its base stays its own); only
the rest is re-planned. What a lost van carries is re-planned as recovered to its depot, each
parcel with an event. A re-plan that counted a van out which is back in service before the
result arrives is dropped (``replan_dropped``) and made again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date

from fleet.control import battery
from fleet.control.config import ControllerConfig
from fleet.control.orders import (
    ROAD_DETOUR,
    RoutePath,
    base_path,
    epoch_to_local,
    join,
    local_to_epoch,
    make_order,
    path_of,
    released,
    resume_path,
    return_path,
    route_path,
    straight_m,
)
from fleet.errors import ControlError, VerificationError
from fleet.identifiers import MAX_CLOCK_AHEAD_S, MAX_CLOCK_BEHIND_S, id_problem
from fleet.model.parcel import Parcel
from fleet.model.plan import Leg, Plan, StopKind
from fleet.model.plan import Stop as PlanStop
from fleet.model.van import VanSpec
from fleet.planning.replan import RECOVERY_S, VanNow
from fleet.protocol import (
    ActionStatus,
    Connection,
    ConnectionState,
    ErrorLevel,
    Factsheet,
    InstantAction,
    InstantActions,
    InstantActionType,
    Node,
    NodeAction,
    NodeActionType,
    Order,
    State,
    VanError,
    format_timestamp,
    make_header,
    parse_timestamp,
)
from fleet.protocol import StopKind as NodeKind
from fleet.protocol.control_api import StatusResult, VanMode, VanStatus
from fleet.store.records import (
    TERMINAL_STATUSES,
    Changes,
    EventRecord,
    ParcelRecord,
    ParcelStatus,
    PendingInstant,
    PlanRecord,
    Snapshot,
    VanRecord,
    VanStateRecord,
)

log = logging.getLogger(__name__)

BAD_MESSAGE_EVENT_EVERY_S = 60.0
SCAN_EVERY_S = 1.0  # silence and offline checks over every van
OFFLINE_STATES = frozenset(
    {ConnectionState.OFFLINE.value, ConnectionState.CONNECTION_BROKEN.value}
)  # at most one bad_message event per van and reason per minute
# a state carrying one of these errors holds data that is not live (C5): the bridge keeps the
# last telemetry's values, which the controller never shows or uses as current
STALE_DATA_ERRORS = frozenset({"vcu_telemetry_stale", "vcu_link_lost"})
REFUSAL_ERRORS = frozenset({"signature_error", "validation_error"})  # a command refused
SIGNED_IDS_KEPT = 64  # per van: the commands a refusal may name by message id
MAX_CHARGES_ADDED = 4  # charges the battery check may add to one release
CANCEL_REQUESTED, CANCEL_CONFIRMED, CANCEL_UNCONFIRMED = "requested", "confirmed", "unconfirmed"


def _lateness(node: Node, reached_s: float, *, first: bool) -> float:
    """How late (negative: early) a van that reached ``node`` at ``reached_s`` (epoch s) is
    on its plan, with "reached" as the bridge reports it.

    A node is due at its planned arrival; where the van waits for a window, when its work
    starts (the planned departure less the work's time, as the bridge holds it), so a van
    that waited at a door is not counted late. An order's ``first`` node with work, where the
    van already stands (its depot in the morning: the work's time there is all the time from
    arrival, waiting included), is left at the planned departure, never before: the bridge
    reaches it then, and a van there sooner is not ahead of its plan.
    """
    arrival = parse_timestamp(node.planned_arrival or "")
    if not node.planned_departure or not node.actions:
        return reached_s - arrival
    departure = parse_timestamp(node.planned_departure)
    if first and node.kind is not NodeKind.START:
        return max(0.0, reached_s - departure)
    work_s = max(a.duration_s for a in node.actions)
    return reached_s - max(arrival, departure - work_s)


@dataclass(frozen=True, slots=True)
class CheckedPlan:
    """A plan with the verifier's verdict on it; the core dispatches only these.

    Verifying takes seconds on a big plan, so the caller runs it (off the event loop) with
    :func:`check_plan`; the core refuses a plan whose ``problems`` are not empty.
    """

    plan: Plan
    parcels: tuple[Parcel, ...]
    plan_id: str
    document: str  # the plan.json text, kept in the store
    problems: tuple[str, ...]


def plan_id_of(document: str, prefix: str = "P") -> str:
    """A plan's id: a hash of its document, so the same plan dispatched twice is one plan."""
    return f"{prefix}-{hashlib.sha256(document.encode()).hexdigest()[:12]}"


def check_plan(
    plan: Plan,
    parcels: Sequence[Parcel],
    document: str,
    verify: Callable[[Plan, Sequence[Parcel]], list[str]],
    *,
    plan_id: str = "",
) -> CheckedPlan:
    return CheckedPlan(
        plan,
        tuple(parcels),
        plan_id or plan_id_of(document),
        document,
        tuple(verify(plan, parcels)),
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    van_id: str
    message: Order | InstantActions
    urgent: bool = False  # emergency stops go out ahead of everything else


@dataclass(frozen=True, slots=True)
class ReplanRequest:
    replan_id: str
    cause: str
    day: date
    timezone: str
    now_s: float
    vans: tuple[VanNow, ...]
    parcels: tuple[Parcel, ...]  # every parcel still to deliver, on board ones included
    # where each of those parcels is: "warehouse", "station" or "on_board"
    parcel_location: Mapping[str, str]
    at_station: Mapping[str, str]  # the station of each parcel that is at one
    # parcels not there yet (a released line haul unloads them): when they will be (epoch s)
    ready_at: Mapping[str, float] = field(default_factory=dict)
    out_of_service: frozenset[str] = frozenset()  # vans the request counts out
    # of those, vans in service counted out only because they are not reachable now (never
    # reported, offline, stale): a re-plan when they are back gives them work again
    unreachable: frozenset[str] = frozenset()
    # parcels aboard those vans: not re-planned (they are aboard, not at a depot), they stay
    # with their van until it is heard from again
    held: frozenset[str] = frozenset()
    # parcels aboard a van out of service for good: when they are taken as back at its depot
    # (epoch s), fixed when the van was declared lost so that every later re-plan agrees
    recovered_at: Mapping[str, float] = field(default_factory=dict)
    # of the vans out of service for good, those broken down where they stand (a lasting
    # fatal error, online, with a position): a rescue trip may take their load over there
    transfer_from: frozenset[str] = frozenset()


@dataclass(slots=True)
class Output:
    changes: Changes
    sends: list[Outgoing]
    replans: list[ReplanRequest]


@dataclass(slots=True)
class _Breakdown:
    """A van taken out of service with parcels aboard: since when, which are still aboard
    it, and how many went on by each way (``rescue_trip``, ``depot``)."""

    since_s: float
    waiting: set[str] = field(default_factory=set)
    ways: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Retired:
    """An order replaced by a recovery or return order, kept for the van's late reports."""

    order: Order  # every node, as the controller last built it
    index: dict[str, tuple[int, NodeActionType, tuple[str, ...]]]
    done: set[str]
    near: set[int]  # stops the van was seen at


@dataclass(slots=True)
class _Van:
    """Mutable working copy of a van; persisted as a VanRecord when it changes."""

    rec: VanRecord
    path: RoutePath | None = None
    state: State | None = None
    state_json: bytes = b""  # the state as the van sent it, stored as is (b"": not known)
    seen_s: float | None = None
    stale: bool = False
    done_actions: set[str] = field(default_factory=set)
    action_index: dict[str, tuple[int, NodeActionType, tuple[str, ...]]] = field(
        default_factory=dict
    )
    factsheet: Factsheet | None = None
    held: str = ""  # why releases are held for this van ("" when they are not)
    # the van's states lack the order it confirmed: since when, and in how many states
    missing_since_s: float | None = None
    missing_states: int = 0
    lost_noted: bool = False  # an order_lost event says the recovery waits for a position
    state_since_online: bool = False  # a state came after the van last said ONLINE
    retired: _Retired | None = None  # the order it held before its current one
    # a dispatcher's cancel: (confirmed, what happened) once settled; parcels it delivered
    # between the cancel and its confirmation
    cancel_outcome: tuple[bool, str] | None = None
    delivered_since_cancel: list[str] = field(default_factory=list)
    battery_replanned: bool = False  # a re-plan was asked for because of the battery
    refusals_seen: set[tuple[str, str]] = field(default_factory=set)  # listed by its state
    signed: dict[int, str] = field(default_factory=dict)  # message id -> the command signed
    near: set[int] = field(default_factory=set)  # stops of its order it was seen at
    # (order id, node index) of progress refused as implausible (one event each)
    refused_progress: set[tuple[str, int]] = field(default_factory=set)
    # the order of another controller's store this van holds (an order_unknown event told)
    unknown_order: str = ""
    # header.message_id of the last state taken: a state must be above it (C4); None after
    # the van's connection said ONLINE (it restarted or reconnected: any id is taken)
    last_state_id: int | None = None

    @property
    def van_id(self) -> str:
        return self.rec.van_id

    @property
    def order(self) -> Order | None:
        return self.rec.order

    @property
    def active(self) -> bool:
        """Holds an order it is (or will be) driving."""
        r = self.rec
        return r.order is not None and r.released > 0 and not r.finished and not r.cancelled


class ControllerCore:
    def __init__(
        self,
        *,
        config: ControllerConfig,
        van: VanSpec,
        roster: Mapping[str, tuple[float, float]],
        snapshot: Snapshot | None = None,
        now_s: float = 0.0,
    ) -> None:
        """``roster`` maps each van of the site to its home depot (lon, lat)."""
        self.config = config
        self.van_spec = van
        self.roster = dict(roster)
        self._vans: dict[str, _Van] = {}
        self._parcels: dict[str, ParcelRecord] = {}
        self._plans: dict[str, PlanRecord] = {}
        self._day: date | None = None
        self._timezone = "UTC"
        self.counters: Counter[str] = Counter()
        self._changes = Changes()
        self._sends: list[Outgoing] = []
        self._replans: list[ReplanRequest] = []
        self._replan_in_flight: str | None = None
        self._inflight_request: ReplanRequest | None = None
        self._replan_seq = 0  # re-plans started (dropped and failed ones have no plan record)
        self._replan_waiting: list[str] = []
        # van -> when its state first changed since it was last written; oldest first
        self._dirty_states: dict[str, float] = {}
        self._bad_event_at: dict[tuple[str, str], float] = {}
        self._instant_seq = 0
        self._lag = LagMeter()
        self._next_scan_s = 0.0
        self._waiting: set[str] = set()  # vans with a command not yet confirmed
        # vans in service the last applied re-plan counted out as unreachable, and parcels
        # it left unplanned that wait for them to be back
        self._counted_out: set[str] = set()
        # parcels stranded on a van out of service: when they are due back at its depot
        self._recovery_due: dict[str, float] = {}
        # per van out of service: its stranded parcels not yet aboard another van (in memory)
        self._breakdowns: dict[str, _Breakdown] = {}
        self._wait_for_vans: set[str] = set()
        self._urgent_unmet: set[str] = set()  # urgent parcels already reported unmet
        # silence is counted from here at most: a van is not stale for the time this
        # controller was not listening (restarted, or cut from the broker)
        self._listening_since_s = now_s
        if snapshot is not None:
            self._restore(snapshot, now_s)

    # ------------------------------------------------------------------ restore / persist
    def _restore(self, snap: Snapshot, now_s: float) -> None:
        for p in snap.parcels:
            self._parcels[p.parcel.id] = p
        for plan in snap.plans:
            self._plans[plan.plan_id] = plan
            self._day = date.fromisoformat(plan.day)
            self._timezone = plan.timezone
        for rec in snap.vans:
            v = _Van(rec=rec)
            if rec.order is not None:
                v.path = path_of(rec.order)
                self._index_actions(v)
            self._vans[rec.van_id] = v
            self._drop_moving_instants(v, now_s)
        for s in snap.van_states:
            v = self._van(s.van_id)
            v.state, v.seen_s = s.state, s.seen_s
            v.last_state_id = s.state.header.message_id
            if v.order is not None and s.state.order_id == v.order.order_id:
                for a in s.state.action_states:
                    if a.status in (ActionStatus.FINISHED, ActionStatus.FAILED):
                        v.done_actions.add(a.action_id)
        # Everything unconfirmed is re-sent once the broker is reached (on_link_up): a van
        # ignores an order update it already has.
        self._event(
            "controller_started",
            now_s,
            detail=f"{len(self._vans)} vans, {len(self._parcels)} parcels restored",
        )
        waiting = [v.rec.replan_cause for v in self._vans.values() if v.rec.replan_cause]
        if waiting or self._unassigned_parcels():
            self._start_replan("resume: " + ("; ".join(waiting) or "unassigned parcels"), now_s)

    def has_output(self) -> bool:
        """Something was decided since the last :meth:`drain`."""
        return bool(self._changes or self._sends or self._replans)

    def drain(self) -> Output:
        """Everything decided since the last drain: write ``changes``, then send, then re-plan."""
        out = Output(self._changes, self._sends, self._replans)
        self._changes, self._sends, self._replans = Changes(), [], []
        return out

    def _save(self, v: _Van) -> None:
        self._changes.vans[v.van_id] = v.rec

    def _set(self, v: _Van, **changes: object) -> None:
        v.rec = replace(v.rec, **changes)  # type: ignore[arg-type]
        self._save(v)

    def _set_parcel(self, rec: ParcelRecord, **changes: object) -> ParcelRecord:
        new = replace(rec, **changes)  # type: ignore[arg-type]
        self._parcels[rec.parcel.id] = new
        self._changes.parcels[rec.parcel.id] = new
        return new

    def _event(
        self,
        kind: str,
        now_s: float,
        *,
        van_id: str | None = None,
        parcel_id: str | None = None,
        detail: str = "",
        **data: str | int | float | bool | None,
    ) -> None:
        self._changes.events.append(
            EventRecord(kind, now_s, van_id, parcel_id, detail[:2000], dict(data))
        )
        log.info(
            "%s %s %s %s", kind, van_id or "", parcel_id or "", detail, extra={"van_id": van_id}
        )

    def _van(self, van_id: str) -> _Van:
        v = self._vans.get(van_id)
        if v is None:
            v = self._vans[van_id] = _Van(rec=VanRecord(van_id=van_id))
        return v

    def knows_van(self, van_id: str) -> bool:
        return van_id in self.roster or van_id in self._vans

    def all_van_ids(self) -> list[str]:
        return sorted(set(self.roster) | set(self._vans))

    @property
    def day(self) -> date | None:
        """The day of the plans being run (None before the first dispatch)."""
        return self._day

    def on_link_up(self, now_s: float) -> None:
        """(Re)connected to the broker: re-send every unconfirmed command now."""
        self._listening_since_s = now_s
        for v in self._vans.values():
            r = v.rec
            if (
                r.sent
                and not r.confirmed
                and not r.gave_up
                and not r.rejected
                and not r.cancelled
                and v.order
            ):
                self._set(v, first_sent_s=now_s, next_send_s=now_s + self.config.resend_first_s)
                self._queue_order(v, now_s, resend=True)
            for pending in r.pending_instants:
                self._sends.append(Outgoing(v.van_id, pending.message, _urgent(pending.message)))
                self._waiting.add(v.van_id)

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, checked: CheckedPlan, now_s: float) -> str:
        """Send each van of a verified plan its order; refuse with a :class:`FleetError`."""
        plan, parcels, plan_id, document = (
            checked.plan,
            checked.parcels,
            checked.plan_id,
            checked.document,
        )
        if plan_id in self._plans:
            return f"plan {plan_id} was already dispatched; nothing sent again"
        if checked.problems:
            self._event(
                "plan_refused", now_s, detail="; ".join(checked.problems[:20]), plan=plan_id
            )
            raise VerificationError(checked.problems)
        refusal = self._dispatch_refusal(plan, parcels)
        if refusal:
            self._event("plan_refused", now_s, detail=refusal, plan=plan_id)
            raise ControlError(f"plan {plan_id} refused: {refusal}")
        refusal = self._unsendable(plan, parcels)
        if refusal:
            self._event("plan_refused", now_s, detail=refusal, plan=plan_id)
            raise ControlError(f"plan {plan_id} refused, nothing stored: {refusal}")
        self._day, self._timezone = plan.day, plan.timezone
        record = PlanRecord(
            plan_id, "plan", "dispatch", now_s, plan.day.isoformat(), plan.timezone, document
        )
        self._plans[plan_id] = record
        self._changes.plans.append(record)
        for p in parcels:
            self._parcels[p.id] = ParcelRecord(p, ParcelStatus.PLANNED, plan_id)
        self._assign_parcels(plan, plan_id)
        for u in plan.unserved:
            rec = self._parcels.get(u.parcel_id)
            if rec is not None:
                self._set_parcel(
                    rec, status=ParcelStatus.UNSERVED, detail=f"{u.reason.value}: {u.detail}"
                )
        for p in parcels:
            self._changes.parcels[p.id] = self._parcels[p.id]
        to_epoch = local_to_epoch(plan.day, plan.timezone)
        for route in plan.routes:
            if not route.trips:
                continue
            v = self._van(route.van_id)
            path = route_path(
                route,
                to_epoch,
                top_speed_mps=self.van_spec.top_speed_mps,
                door_work_s=self._door_work_s,
                van=self.van_spec,
            )
            self._new_order(v, plan_id, path, plan_id, now_s)
        self._event(
            "plan_dispatched",
            now_s,
            detail=f"{len(plan.routes)} vans, {len(parcels)} parcels, "
            f"{len(plan.unserved)} unserved",
            plan=plan_id,
        )
        return (
            f"plan {plan_id}: {len(plan.routes)} orders, {len(parcels)} parcels "
            f"({len(plan.unserved)} unserved)"
        )

    def _dispatch_refusal(self, plan: Plan, parcels: Sequence[Parcel]) -> str:
        known = [p.id for p in parcels if p.id in self._parcels]
        if known:
            rec = self._parcels[known[0]]
            return (
                f"{len(known)} parcel(s) are already known to the controller, e.g. {known[0]!r} "
                f"({rec.status.value}, from {rec.source})"
            )
        for route in plan.routes:
            if self.roster and route.van_id not in self.roster:
                return f"van {route.van_id!r} is not in this site's fleet"
            v = self._vans.get(route.van_id)
            if v is not None and v.active:
                assert v.order is not None
                return (
                    f"van {route.van_id} is still running order {v.order.order_id}; cancel it "
                    "(fleet cancel --van) or wait until it finishes"
                )
        return ""

    def _unsendable(self, plan: Plan, parcels: Sequence[Parcel]) -> str:
        """Why a plan cannot become orders, found before anything is stored (all or nothing):
        an id outside the rule (docs/limits.md), or an order the protocol would refuse."""
        for p in parcels:
            problem = id_problem(p.id)
            if problem is not None:
                return f"parcel id {problem}"
        to_epoch = local_to_epoch(plan.day, plan.timezone)
        for route in plan.routes:
            problem = id_problem(route.van_id)
            if problem is not None:
                return f"van id {problem}"
            if not route.trips:
                continue
            try:
                path = route_path(
                    route,
                    to_epoch,
                    top_speed_mps=self.van_spec.top_speed_mps,
                    door_work_s=self._door_work_s,
                    van=self.van_spec,
                )
                header = make_header(self.config.name, 0, 0.0)
                make_order(header, route.van_id, "check", 0, released(path, 1))
            except (ValueError, OverflowError) as exc:  # pydantic's ValidationError too
                detail = str(exc).splitlines()
                return f"van {route.van_id}'s order cannot be built: {' '.join(detail[:3])}"
        return ""

    def _assign_parcels(self, plan: Plan, source: str) -> None:
        for route in plan.routes:
            for trip in route.trips:
                # the depot the trip loads at: the van's own, or a station it is lent to
                base = trip.stops[0].ref if trip.stops[0].kind is not StopKind.START else ""
                for stop in trip.stops:
                    for pid in stop.parcels_delivered:
                        rec = self._parcels.get(pid)
                        if rec is None:
                            continue
                        # a parcel at a station (or back at the warehouse) keeps naming where
                        # it lies until a van loads it: a load elsewhere waits for its line haul
                        lies = rec.station if rec.status is ParcelStatus.AT_STATION else None
                        if stop.kind is StopKind.STATION or (
                            route.leg is Leg.LINE_HAUL and stop.kind is not StopKind.DOOR
                        ):
                            self._set_parcel(
                                rec,
                                line_haul_van=route.van_id,
                                source=source,
                                station=lies or stop.ref,
                            )
                        elif route.leg is Leg.LINE_HAUL and base in ("", route.depot):
                            # a warehouse van takes it straight to its door (a direct trip)
                            self._set_parcel(
                                rec,
                                line_haul_van=route.van_id,
                                last_mile_van=route.van_id,
                                source=source,
                                station=lies,
                            )
                        else:
                            lent = stop.kind is StopKind.DOOR and base
                            self._set_parcel(
                                rec,
                                last_mile_van=route.van_id,
                                source=source,
                                station=lies or (base if lent else route.depot),
                            )

    # ------------------------------------------------------------------ orders
    def _new_order(
        self, v: _Van, order_id: str, path: RoutePath, source: str, now_s: float
    ) -> None:
        """Give ``v`` a new order; it is held back (a draft) until its first stop may go."""
        v.path = path
        v.done_actions.clear()
        v.near = set()
        draft = make_order(
            make_header(self.config.name, 0, now_s), v.van_id, order_id, 0, released(path, 1)
        )
        self._set(
            v,
            order=draft,
            source=source,
            released=0,
            sent=False,
            confirmed=False,
            echoed=False,
            gave_up=False,
            rejected="",
            cancelled=False,
            finished=False,
            reached_seq=None,
            lateness_s=0.0,
            attempts=0,
        )
        self._index_actions(v)
        self._release(v, now_s, force=False)

    def _index_actions(self, v: _Van) -> None:
        v.action_index = {}
        if v.path is None:
            return
        for i, node in enumerate(v.path.nodes):
            for a in node.actions:
                v.action_index[a.action_id] = (i, a.action_type, a.parcel_ids)

    def _release_target(self, v: _Van) -> int:
        assert v.path is not None
        r = v.rec
        if r.returning and r.cancel_state == CANCEL_UNCONFIRMED:
            return 0  # the van may still run its old order: it would refuse this one
        if self._replan_in_flight is not None and r.released > 0:
            return r.released  # hold the bases still while a re-plan is being made
        reached_idx = 0 if r.reached_seq is None else r.reached_seq // 2
        want = min(len(v.path.nodes), reached_idx + 1 + self.config.release_ahead_stops)
        # a stop the van has reached waits for nothing (a controller on an older copy of its
        # store learns from the van that it loaded there already)
        ahead = r.released if r.reached_seq is None else max(r.released, reached_idx + 1)
        for i in range(ahead, want):
            if self._waits_for_line_haul(v, v.path.nodes[i]):
                want = i
                break
        return max(r.released, want)

    def _within_battery(self, v: _Van, target: int, now_s: float) -> int:
        """How far ``v``'s base may be released, ``target`` at most, so that its reported
        battery finishes it above the reserve, and the road on to its next charge
        (``fleet.control.battery``). Short of it, a charge is added at the first stop with a
        charger the controller may still change; failing that, releases are held where they
        are (the van holds at its stop, with ``release_held`` saying why) and the van's work
        is re-planned from its reported charge, once."""
        assert v.path is not None
        r, spec, state = v.rec, self.van_spec, v.state
        start = 0 if r.reached_seq is None else r.reached_seq // 2
        lead_m = 0.0
        if r.reached_seq is None and state is not None and state.position is not None:
            first = v.path.nodes[0]
            away_m = straight_m((state.position.lon, state.position.lat), (first.lon, first.lat))
            if away_m > first.allowed_deviation_m + self.config.gps_tolerance_m:
                lead_m = away_m * ROAD_DETOUR
        have_m = battery.usable_m(state, spec)
        first_changeable = r.released if r.sent else 0
        for _ in range(MAX_CHARGES_ADDED):
            check = battery.check_range(
                v.path.nodes,
                v.path.edges,
                start=start,
                lead_m=lead_m,
                have_m=have_m,
                through=target - 1,
                spec=spec,
                done=v.done_actions,
            )
            if check.ok:
                if v.held:
                    v.held, v.battery_replanned = "", False
                    self._event("release_resumed", now_s, van_id=v.van_id, detail="battery")
                return target
            added = battery.charge_to_add(
                v.path.nodes,
                v.path.edges,
                check,
                start=start,
                first_changeable=first_changeable,
                through=target - 1,
                spec=spec,
                done=v.done_actions,
            )
            if added is None:
                break
            self._add_charge(v, added, check, now_s)
        reported = (
            "it never reported its battery"
            if state is None
            else f"it reports {state.battery.soc_pct:.1f} % / "
            f"{state.battery.remaining_range_m / 1000:.1f} km"
        )
        why = (
            f"battery: {reported}; the road to its next charge is {check.need_m / 1000:.1f} km "
            f"and {battery.reserve_m(spec) / 1000:.1f} km must stay in reserve; no stop it may "
            "still be given a charge at comes first"
        )
        if why != v.held:
            v.held = why
            self.counters["releases_held"] += 1
            self._event(
                "release_held",
                now_s,
                van_id=v.van_id,
                detail=f"order {r.order.order_id if r.order else ''}: {r.released} of "
                f"{len(v.path.nodes)} stops stay released: {why}",
                reason="battery",
            )
        if not v.battery_replanned and r.in_service:
            v.battery_replanned = True
            self._start_replan(f"{v.van_id}: {why}", now_s)
        return r.released

    def _add_charge(
        self, v: _Van, added: battery.AddedCharge, check: battery.RangeCheck, now_s: float
    ) -> None:
        """Give node ``added.index`` of ``v``'s path a charge to ``added.target_pct`` (or
        raise the one it has)."""
        assert v.path is not None
        nodes = list(v.path.nodes)
        node = nodes[added.index]
        actions = list(node.actions)
        for k, a in enumerate(actions):
            if a.action_type is NodeActionType.CHARGE and a.action_id not in v.done_actions:
                actions[k] = a.model_copy(
                    update={"target_soc_pct": added.target_pct, "duration_s": added.duration_s}
                )
                break
        else:
            taken = {a.action_id for a in actions}
            action_id = next(
                f"{node.node_id}.{k}"
                for k in range(len(actions), len(actions) + 100)
                if f"{node.node_id}.{k}" not in taken
            )
            actions.append(
                NodeAction(
                    action_id=action_id,
                    action_type=NodeActionType.CHARGE,
                    duration_s=added.duration_s,
                    target_soc_pct=added.target_pct,
                )
            )
        nodes[added.index] = node.model_copy(update={"actions": tuple(actions)})
        v.path = RoutePath(tuple(nodes), v.path.edges)
        self._index_actions(v)
        state = v.state
        reported = (
            "no battery reported"
            if state is None
            else f"the van reports {state.battery.soc_pct:.1f} % / "
            f"{state.battery.remaining_range_m / 1000:.1f} km"
        )
        self.counters["charges_added"] += 1
        self._event(
            "charge_added",
            now_s,
            van_id=v.van_id,
            detail=f"node {node.node_id} ({_stop_name(node)}): charge to "
            f"{added.target_pct:.0f} % ({reported}; {check.need_m / 1000:.1f} km to its next "
            f"charge, {battery.reserve_m(self.van_spec) / 1000:.1f} km reserve)",
            node_id=node.node_id,
            target_soc_pct=added.target_pct,
        )

    def _waits_for_line_haul(self, v: _Van, node: Node) -> bool:
        """A stop where ``v`` loads a parcel that is not there yet: a line-haul van has still
        to bring it, or another van in service still carries it."""
        for action in node.actions:
            if action.action_type is not NodeActionType.LOAD:
                continue
            for pid in action.parcel_ids:
                rec = self._parcels.get(pid)
                if rec is None:
                    continue
                if rec.line_haul_van not in (None, v.van_id) and rec.status in (
                    ParcelStatus.PLANNED,
                    ParcelStatus.LOADED,
                ):
                    return True
                if (
                    rec.status is ParcelStatus.AT_STATION
                    and rec.station
                    and node.ref
                    and rec.station != node.ref
                ):
                    return True  # it lies elsewhere (back at the warehouse): not here yet
                if rec.status is ParcelStatus.LOADED and rec.holder not in (None, v.van_id):
                    holder = self._vans.get(rec.holder or "")
                    if holder is not None and self._keeps_load(holder):
                        return True
        return False

    def _release(self, v: _Van, now_s: float, *, force: bool) -> None:
        """Release as far as allowed; send an update if anything changed (or ``force``)."""
        if v.path is None or v.rec.cancelled or v.rec.finished:
            return
        r = v.rec
        assert r.order is not None
        target = self._release_target(v)
        if target > 0 and (target != r.released or force):
            target = self._within_battery(v, target, now_s)
        if target == 0:  # held back: keep the draft (it may have changed) for a restart
            if not r.sent and (r.order.nodes, r.order.edges) != (v.path.nodes, v.path.edges):
                draft = make_order(
                    r.order.header, v.van_id, r.order.order_id, 0, released(v.path, 1)
                )
                self._set(v, order=draft)
            return
        if target == r.released and not force:
            return
        update_id = r.order.order_update_id + 1 if r.sent else 0
        if not r.sent:
            self._set(v, order_started_s=now_s)
        order = make_order(
            make_header(self.config.name, 0, now_s),
            v.van_id,
            r.order.order_id,
            update_id,
            released(v.path, target),
        )
        self._set(
            v,
            order=order,
            released=target,
            sent=True,
            confirmed=False,
            gave_up=False,
            rejected="",
            first_sent_s=now_s,
            next_send_s=now_s + self.config.resend_first_s,
            attempts=1,
        )
        self._changes.orders_sent.append((v.van_id, r.source, order))
        self._queue_order(v, now_s, resend=False)
        self._event(
            "order_sent",
            now_s,
            van_id=v.van_id,
            detail=f"order {order.order_id} update {update_id}: {target} of "
            f"{len(order.nodes)} stops released",
            order_id=order.order_id,
            order_update_id=update_id,
        )

    def _queue_order(self, v: _Van, now_s: float, *, resend: bool) -> None:
        assert v.order is not None
        self._waiting.add(v.van_id)
        if not self._may_send_order(v, v.order):
            return
        self._sends.append(Outgoing(v.van_id, v.order))
        if resend:
            self.counters["orders_resent"] += 1

    def _may_send_order(self, v: _Van, order: Order) -> bool:
        """An order the van has held (its states carried it) goes to it again only while its
        latest state, made since it last said ONLINE, still carries it: a van that restarted
        without it would take it as new and do its finished stops again. It gets a recovery
        order instead (:meth:`_check_order_held`)."""
        if not v.rec.echoed:
            return True
        state = v.state
        return v.state_since_online and state is not None and state.order_id == order.order_id

    def _replace_horizon(self, v: _Van, tail: RoutePath | None, source: str, now_s: float) -> None:
        """Keep ``v``'s released base, follow it with ``tail`` (None: nothing), send the update."""
        assert v.order is not None
        base = base_path(v.order)
        v.path = base if tail is None else join(base, tail)
        if v.path.nodes == v.order.nodes and v.path.edges == v.order.edges:
            return
        self._set(v, source=source)
        self._index_actions(v)
        self._release(v, now_s, force=True)

    # ------------------------------------------------------------------ van messages
    def order_published(self, van_id: str, order: Order, at_s: float) -> None:
        """The service handed ``order`` to the broker link at ``at_s``: round trips and
        re-send timers count from the first publish of an update, not from the decision."""
        v = self._vans.get(van_id)
        if v is None or v.rec.order is not order or v.rec.confirmed or v.rec.attempts != 1:
            return
        if v.rec.first_sent_s < at_s:
            v.rec = replace(v.rec, first_sent_s=at_s, next_send_s=at_s + self.config.resend_first_s)

    def on_state(self, van_id: str, state: State, now_s: float, raw: bytes = b"") -> None:
        """``raw``: the JSON ``state`` was decoded from, if it is at hand (the store keeps it
        as it came instead of encoding the state again)."""
        self.counters["states"] += 1
        stamp_s = parse_timestamp(state.header.timestamp)
        if not now_s - MAX_CLOCK_BEHIND_S <= stamp_s <= now_s + MAX_CLOCK_AHEAD_S:
            # a van clock that far off makes every age and ETA it reports a lie (docs/limits.md)
            ahead = stamp_s > now_s
            self.on_bad_message(
                f"vans/{van_id}/state",
                "clock_skew",
                f"timestamp {state.header.timestamp} is {abs(stamp_s - now_s):.0f} s "
                f"{'ahead of' if ahead else 'behind'} the controller's clock (bounds: "
                f"{MAX_CLOCK_AHEAD_S:g} s ahead, {MAX_CLOCK_BEHIND_S:g} s behind)",
                van_id,
                now_s,
            )
            return
        self._lag.record(now_s - stamp_s)
        v = self._van(van_id)
        floor = v.last_state_id
        if floor is not None and state.header.message_id <= floor:
            # older than (or a copy of) the state already taken: it would turn the van back
            self.on_bad_message(
                f"vans/{van_id}/state",
                "stale_state",
                f"message_id {state.header.message_id} is not above the last accepted {floor}",
                van_id,
                now_s,
            )
            return
        v.last_state_id = state.header.message_id
        first_since_online = not v.state_since_online
        v.state_since_online = True
        previous = v.state
        v.state, v.seen_s, v.state_json = state, now_s, raw
        self._dirty_states.setdefault(van_id, now_s)
        if v.stale:
            v.stale = False
            self._event("van_fresh", now_s, van_id=van_id, detail="reporting again")
        r = v.rec
        order = r.order
        retired = v.retired
        if retired is not None and state.order_id == retired.order.order_id:
            # late news of the order this van held before (cancelled, or replaced after it
            # was lost): what it did is still taken, where it is plausible
            implausible = self._implausible_progress(v, retired.order, state, previous, retired)
            if implausible:
                self._refuse_progress(v, retired.order, implausible, now_s)
            elif state.action_states:
                self._apply_actions(v, state, now_s, retired)
        ahead = (
            order is not None
            and state.order_id is not None
            and state.order_id != order.order_id
            and (retired is None or state.order_id != retired.order.order_id)
            and not self._of_this_store(state.order_id)
            and not r.cancelled
        )
        if ahead:
            # the van holds an order this controller never sent: a controller with a newer
            # store sent it (this one's is lost or an older copy). Sending this store's order
            # again would have the van redo, or undo, work done since; it drives its own
            # released base and holds, out of service here, its load taken from its state
            self._note_unknown_order(v, state, now_s)
            if v.rec.in_service:
                self._take_out_of_service(
                    v,
                    f"holds order {state.order_id}, which this controller never sent (its "
                    "store is lost or an older copy)",
                    now_s,
                )
            self._reconcile_load(v, state, now_s)
        elif order is not None and r.echoed and not r.finished and not r.cancelled:
            self._check_order_held(v, order, state, now_s)
            if (
                first_since_online
                and state.order_id == order.order_id
                and v.rec.sent
                and not v.rec.confirmed
            ):
                # held back until the van said what it holds (:meth:`_may_send_order`)
                self._set(v, next_send_s=now_s)
                self._waiting.add(van_id)
        # the van holds a later update of its order than this controller built, or one it
        # never sent at all: the controller of a newer store sent them (this one is a copy)
        behind = (
            order is not None
            and state.order_id == order.order_id
            and (not r.sent or state.order_update_id > order.order_update_id)
            and not r.cancelled
            and not r.finished
            and v.path is not None
        )
        if order is not None and (r.sent or behind) and state.order_id == order.order_id:
            renumbered = behind
            if renumbered:
                self._renumber_order(v, state.order_update_id, now_s)
                r, order = v.rec, v.rec.order
                assert order is not None
            if not r.echoed:
                self._set(v, echoed=True)
            if not r.confirmed and state.order_update_id >= order.order_update_id:
                self._set(v, confirmed=True)
                self.counters["orders_confirmed"] += 1
                self._event(
                    "order_confirmed",
                    now_s,
                    van_id=van_id,
                    detail=f"order {order.order_id} update {order.order_update_id}",
                    rtt_s=round(now_s - r.first_sent_s, 4),
                )
            self._note_near(v, order, state)
            implausible = self._implausible_progress(v, order, state, previous)
            if implausible:
                self._refuse_progress(v, order, implausible, now_s)
            else:
                if state.action_states:
                    self._apply_actions(v, state, now_s)
                seq = state.last_node_sequence_id
                if seq is not None and (v.rec.reached_seq is None or seq > v.rec.reached_seq):
                    self._reached(v, seq, now_s)
            if renumbered and v.rec.order is order:  # nothing released since: send it now
                self._release(v, now_s, force=True)
        if state.errors and (previous is None or previous.errors != state.errors):
            self._check_errors(v, state, now_s)
        elif not state.errors and v.rec.fatal:
            self._fatal_cleared(v, now_s)
        if not state.errors and v.refusals_seen:
            v.refusals_seen = set()
        if v.rec.pending_instants:
            self._confirm_instants(v, state, now_s)
        if (
            v.held
            and v.rec.order is not None
            and (previous is None or previous.battery != state.battery)
        ):
            self._release(v, now_s, force=False)  # charged meanwhile? try again
        if order is None and state.order_id is not None and state.node_states:
            self._note_unknown_order(v, state, now_s)
        if van_id in self._counted_out:
            self._maybe_available_again(v, now_s)
        elif not v.rec.in_service and v.rec.out_reason.startswith("unavailable"):
            self._back_in_service(v, "reporting again", now_s)

    def _renumber_order(self, v: _Van, van_update_id: int, now_s: float) -> None:
        """The van holds update ``van_update_id`` of its order, later than any this
        controller built or sent (it may not have sent the order at all): its store is an
        older copy. Updates numbered at or below the van's
        would be refused as stale (protocol.md 4.4) and its work beyond its base stranded,
        so the order is renumbered as the van's update: what this controller releases next —
        once the van's state has told it the stops reached, so that the van's released base
        is kept — goes out numbered above it (:meth:`on_state` sends it at once)."""
        r = v.rec
        assert r.order is not None
        ours = f"{r.order.order_update_id}" if r.sent else "none (it never sent the order)"
        if not r.sent:
            self._set(v, order_started_s=now_s)
        self._set(
            v,
            order=r.order.model_copy(update={"order_update_id": van_update_id}),
            sent=True,
            confirmed=True,  # the van holds that update id: nothing to wait for
        )
        self._event(
            "order_renumbered",
            now_s,
            van_id=v.van_id,
            detail=f"the van holds update {van_update_id} of order {r.order.order_id}, later "
            f"than this controller's {ours} (its store is an older copy): sending what it "
            f"releases now as update {van_update_id + 1}",
            order_id=r.order.order_id,
        )

    def _of_this_store(self, order_id: str) -> bool:
        """``order_id`` comes from a plan or re-plan this store holds (or is a recovery or
        return order made from one): a van holding it holds an order of this controller's
        day, an older one or one not yet replaced, not one a newer store sent."""
        found = _DERIVED_ID.fullmatch(order_id)
        return (found.group(1) if found else order_id) in self._plans

    def _note_unknown_order(self, v: _Van, state: State, now_s: float) -> None:
        """The van drives an order this controller never sent it: its store was lost or
        replaced by an older copy. Nothing of that order is known here (its stops, its
        parcels), so none of it is released, re-planned or counted; the van drives its
        released base and holds there. Told once per order (``order_unknown``), and shown
        as the van's mode reason, so that a dispatcher takes its parcels over."""
        if v.unknown_order == state.order_id:
            return
        v.unknown_order = state.order_id or ""
        self._event(
            "order_unknown",
            now_s,
            van_id=v.van_id,
            detail=f"the van holds order {state.order_id} ({len(state.node_states)} stop(s) "
            f"ahead, {len(state.load.parcel_ids)} parcel(s) aboard), which this controller "
            "never sent (its store was lost or is an older copy): the van drives its released "
            "base, then holds",
            order_id=state.order_id or "",
        )

    def _check_order_held(self, v: _Van, order: Order, state: State, now_s: float) -> None:
        """The van's states must carry the order it confirmed (C9). One that reports an older
        update of it is sent the current one again at once; one whose states carry no order
        (or another one) for ``order_lost_after_s`` and at least two states lost it (a van or
        bridge restarted without it) and gets a recovery order."""
        r = v.rec
        if state.order_id == order.order_id:
            v.missing_since_s, v.missing_states = None, 0
            if state.order_update_id < order.order_update_id and r.confirmed:
                self._set(v, confirmed=False, first_sent_s=now_s, next_send_s=now_s, attempts=0)
                self._waiting.add(v.van_id)
                self._event(
                    "order_lost",
                    now_s,
                    van_id=v.van_id,
                    detail=f"the van holds update {state.order_update_id} of order "
                    f"{order.order_id}, not {order.order_update_id}: sending it again",
                    order_id=order.order_id,
                )
            return
        if v.missing_since_s is None:
            v.missing_since_s = now_s
        v.missing_states += 1
        if now_s - v.missing_since_s < self.config.order_lost_after_s or v.missing_states < 2:
            return
        self._recover_order(v, order, state, now_s)

    def _recover_order(self, v: _Van, order: Order, state: State, now_s: float) -> None:
        """A recovery order for a van that lost its order: from where it stands over the
        stops it has not finished (a stop it reached keeps only the work not reported done),
        never one it finished. Without a live position it waits for one (the van holds); a
        van that lost its order with nothing left to do is only noted."""
        assert v.path is not None
        r = v.rec
        held = state.order_id or "no order"
        since = now_s - (v.missing_since_s or now_s)
        reached = -1 if r.reached_seq is None else r.reached_seq // 2
        start = reached + 1
        if 0 <= reached < len(v.path.nodes) and any(
            a.action_id not in v.done_actions for a in v.path.nodes[reached].actions
        ):
            start = reached  # reached, its work not all reported done
        not_live = self._not_live(v, now_s)
        position = state.position
        why = f"its states carry {held} instead of order {order.order_id} for {since:.0f} s"
        if start >= len(v.path.nodes) or (
            start == len(v.path.nodes) - 1 and not v.path.nodes[start].actions
        ):
            self._set(v, finished=True)
            self._event("order_lost", now_s, van_id=v.van_id, detail=f"{why}; nothing left to do")
            return
        if position is None or not_live:
            if not v.lost_noted:
                v.lost_noted = True
                self._event(
                    "order_lost",
                    now_s,
                    van_id=v.van_id,
                    detail=f"{why}; waiting for a live position to send a recovery order "
                    f"({not_live or 'no position'}); the van holds",
                )
            return
        path = resume_path(
            v.path,
            start,
            at=(position.lon, position.lat),
            done=v.done_actions,
            top_speed_mps=self.van_spec.top_speed_mps,
        )
        new_id = _derived_order_id(order.order_id, "r")
        self._retire(v, order)
        self.counters["orders_recovered"] += 1
        self._event(
            "order_recovered",
            now_s,
            van_id=v.van_id,
            detail=f"{why}: recovery order {new_id} from where it stands over the "
            f"{len(path.nodes) - 1} stop(s) it has not finished (from {v.path.nodes[start].node_id}"
            f" of {order.order_id})",
            order_id=new_id,
        )
        self._new_order(v, new_id, path, "recovery", now_s)

    def _retire(self, v: _Van, order: Order) -> None:
        """Keep what is needed to take late reports of ``order`` once another replaces it."""
        assert v.path is not None
        index = dict(v.action_index)
        full = make_order(
            order.header,
            v.van_id,
            order.order_id,
            order.order_update_id,
            released(v.path, max(1, v.rec.released)),
        )
        v.retired = _Retired(full, index, set(v.done_actions), set(v.near))
        v.missing_since_s, v.missing_states, v.lost_noted = None, 0, False

    def _maybe_available_again(self, v: _Van, now_s: float) -> None:
        """A van the last re-plan counted out while it was unreachable (never seen, offline,
        stale) is reachable again: re-plan if that gives work to anyone — it is idle, carries
        parcels beyond its base, or parcels were left waiting for vans like it — so that it
        gets work and what it carries is its own once more."""
        if not self._available(v, now_s):
            return
        self._counted_out.discard(v.van_id)
        if not self._wanted_again(v):
            return
        request = self._inflight_request
        if request is not None and v.van_id in request.unreachable:
            self._replan_waiting.append(f"{v.van_id}: available again")
        else:
            self._start_replan(f"{v.van_id}: available again", now_s)

    def _wanted_again(self, v: _Van) -> bool:
        if self._wait_for_vans or not v.active:
            return True
        kept = self._base_parcels(v)
        return any(
            rec.status is ParcelStatus.LOADED
            and rec.holder == v.van_id
            and rec.parcel.id not in kept
            for rec in self._parcels.values()
        )

    def _implausible_progress(
        self,
        v: _Van,
        order: Order,
        state: State,
        previous: State | None,
        book: _Retired | None = None,
    ) -> tuple[int, str] | None:
        """A stop is finished only where the van is (issue 14, item 9). For each stop with
        parcel work (load, unload, deliver) this state newly reports reached, or whose work it
        newly reports done: the van must have been seen there — a state of this order put it
        within the stop's ``allowed_deviation_m`` + ``gps_tolerance_m`` — or be that close now,
        give or take what it could have driven at its top speed since its previous state (or,
        with none known, since its order was first released). The (node index, why) of the
        first that is not; None when every such report is plausible.

        (A van reports a stop's work finished when it leaves; its position comes from its
        VCU's latest telemetry, so it may already be well past the stop: having been seen
        there is what counts.)"""
        actions_at = v.action_index if book is None else book.index
        done = v.done_actions if book is None else book.done
        near = v.near if book is None else book.near
        nodes: set[int] = set()
        seq = state.last_node_sequence_id
        if (
            book is None
            and seq is not None
            and (v.rec.reached_seq is None or seq > v.rec.reached_seq)
            and 0 <= seq // 2 < len(order.nodes)
            and _moves_parcels(order.nodes[seq // 2])
        ):
            nodes.add(seq // 2)
        for a in state.action_states:
            if a.status not in (ActionStatus.FINISHED, ActionStatus.FAILED):
                continue
            if a.action_id in done or a.action_id not in actions_at:
                continue
            index, kind, _ = actions_at[a.action_id]
            if kind is not NodeActionType.CHARGE:
                nodes.add(index)
        nodes -= near
        if not nodes:
            return None
        position = state.position
        # since when the van may have been doing it: its previous state (a later one would
        # have said so), else the order's first release (nothing of it before that)
        since_s = v.rec.order_started_s if book is None else 0.0
        if previous is not None:
            since_s = parse_timestamp(previous.header.timestamp)
        gap_s = parse_timestamp(state.header.timestamp) - since_s if since_s > 0 else 0.0
        drove_m = max(0.0, gap_s) * self.van_spec.top_speed_mps
        for index in sorted(nodes):
            if not 0 <= index < len(order.nodes):
                continue
            node = order.nodes[index]
            if position is None:
                return index, "the state reports it without a position"
            away_m = straight_m((position.lon, position.lat), (node.lon, node.lat))
            allowed_m = node.allowed_deviation_m + self.config.gps_tolerance_m + drove_m
            if away_m > allowed_m:
                return index, (
                    f"the van was never seen there and reports it at {away_m:,.0f} m from it; "
                    f"allowed {node.allowed_deviation_m:g} m + {self.config.gps_tolerance_m:g} m "
                    f"GPS tolerance + {drove_m:,.0f} m it could have driven since its last state"
                )
        return None

    def _note_near(self, v: _Van, order: Order, state: State) -> None:
        """Remember the stops of ``order`` this state puts the van at (within their
        ``allowed_deviation_m`` + ``gps_tolerance_m``): the one it reports reached, the one
        before it and the next one."""
        position = state.position
        if position is None:
            return
        reached = v.rec.reached_seq
        here = [-1 if reached is None else reached // 2]
        if state.last_node_sequence_id is not None:
            here.append(state.last_node_sequence_id // 2)
        for index in {i + d for i in here for d in (0, 1)}:
            if 0 <= index < len(order.nodes) and index not in v.near:
                node = order.nodes[index]
                away_m = straight_m((position.lon, position.lat), (node.lon, node.lat))
                if away_m <= node.allowed_deviation_m + self.config.gps_tolerance_m:
                    v.near.add(index)

    def _refuse_progress(
        self, v: _Van, order: Order, implausible: tuple[int, str], now_s: float
    ) -> None:
        """Nothing of the state's progress is taken: no parcel changes, no release."""
        index, why = implausible
        self.counters["implausible_progress"] += 1
        key = (order.order_id, index)
        if key in v.refused_progress:
            return
        v.refused_progress.add(key)
        node = order.nodes[index]
        self._event(
            "implausible_progress",
            now_s,
            van_id=v.van_id,
            detail=f"order {order.order_id} node {node.node_id} ({_stop_name(node)}) "
            f"reached or done: refused, {why}",
            order_id=order.order_id,
            node_id=node.node_id,
        )

    def _reached(self, v: _Van, seq: int, now_s: float) -> None:
        order = v.rec.order
        assert order is not None
        index = seq // 2
        lateness = v.rec.lateness_s
        if 0 <= index < len(order.nodes) and order.nodes[index].planned_arrival:
            lateness = _lateness(order.nodes[index], now_s, first=index == 0)
        finished = seq >= order.last_sequence_id
        self._set(v, reached_seq=seq, lateness_s=lateness, finished=finished)
        if finished:
            self._event("order_finished", now_s, van_id=v.van_id, detail=f"order {order.order_id}")
            return
        self._release(v, now_s, force=False)

    def _apply_actions(
        self, v: _Van, state: State, now_s: float, book: _Retired | None = None
    ) -> None:
        """What the van reports done (``book``: of an order it held before its current one)."""
        index = v.action_index if book is None else book.index
        done = v.done_actions if book is None else book.done
        nodes = (v.path.nodes if v.path is not None else ()) if book is None else book.order.nodes
        for a in state.action_states:
            if a.status not in (ActionStatus.FINISHED, ActionStatus.FAILED):
                continue
            if a.action_id in done or a.action_id not in index:
                continue
            done.add(a.action_id)
            i, kind, parcel_ids = index[a.action_id]
            where = nodes[i].ref if 0 <= i < len(nodes) and nodes[i].ref else None
            failed = (
                set(parcel_ids) if a.status is ActionStatus.FAILED else set(a.failed_parcel_ids)
            )
            why = a.result_description or f"{kind.value} failed"
            aboard = set(state.load.parcel_ids)
            for pid in parcel_ids:
                rec = self._parcels.get(pid)
                if rec is None or rec.status in TERMINAL_STATUSES:
                    continue
                if (
                    pid in failed
                    and kind in (NodeActionType.UNLOAD, NodeActionType.DELIVER)
                    and pid not in aboard
                ):
                    # the van was to hand it over and does not carry it: where it is, no
                    # one here knows (docs/controller.md, "Parcel truth")
                    self._parcel_missing(
                        v, rec, f"{v.van_id} was to {kind.value} it and does not carry it", now_s
                    )
                elif pid in failed:
                    self._parcel_failed(v, rec, kind, why, now_s)
                else:
                    self._parcel_done(v, rec, kind, now_s, where)

    def _parcel_done(
        self,
        v: _Van,
        rec: ParcelRecord,
        kind: NodeActionType,
        now_s: float,
        where: str | None = None,
    ) -> None:
        """``where``: the depot or station the action was at (an unload leaves it there)."""
        pid = rec.parcel.id
        if kind is NodeActionType.TRANSFER_LOAD and self._recovered(rec, v.van_id):
            # taken over from a broken-down van where it stands (a rescue trip)
            self._set_parcel(rec, status=ParcelStatus.LOADED, holder=v.van_id)
            self._event("parcel_loaded", now_s, van_id=v.van_id, parcel_id=pid, detail=where or "")
            self._note_recovered(pid, "rescue_trip", now_s)
        elif kind is NodeActionType.LOAD and (
            rec.status in (ParcelStatus.PLANNED, ParcelStatus.AT_STATION)
            or self._recovered(rec, v.van_id)
        ):
            self._set_parcel(rec, status=ParcelStatus.LOADED, holder=v.van_id)
            self._event("parcel_loaded", now_s, van_id=v.van_id, parcel_id=pid)
            self._note_recovered(pid, "depot", now_s)
        elif (
            kind is NodeActionType.UNLOAD
            and rec.status is ParcelStatus.LOADED
            and rec.holder == v.van_id
        ):
            self._set_parcel(
                rec, status=ParcelStatus.AT_STATION, holder=None, station=where or rec.station
            )
            self._event(
                "parcel_at_station", now_s, van_id=v.van_id, parcel_id=pid, detail=where or ""
            )
            waiting = self._vans.get(rec.last_mile_van or "")
            if waiting is not None and waiting.rec.in_service:
                self._release(waiting, now_s, force=False)
        elif (
            kind is NodeActionType.DELIVER
            and rec.status is ParcelStatus.LOADED
            and rec.holder == v.van_id
        ):
            planned_for = rec.last_mile_van
            self._set_parcel(rec, status=ParcelStatus.DELIVERED)
            if v.rec.cancel_state == CANCEL_REQUESTED:
                v.delivered_since_cancel.append(pid)
            self.counters["parcels_delivered"] += 1
            self._event("parcel_delivered", now_s, van_id=v.van_id, parcel_id=pid)
            other = self._vans.get(planned_for or "")
            if other is not None and other is not v and self._drop_from_horizon(other, pid):
                # a re-plan gave it to another van meanwhile (a cancelled van finished the
                # stop after all): it leaves that van's horizon
                self._index_actions(other)
                self._release(other, now_s, force=other.active)

    def _note_recovered(self, pid: str, way: str, now_s: float) -> None:
        """``pid``, stranded by a breakdown, is aboard another van (``way``: ``rescue_trip``
        or ``depot``); once the last of that breakdown's parcels is, a ``breakdown_recovered``
        event with the time it took (from the van's being declared out of service)."""
        for van_id, b in list(self._breakdowns.items()):
            if pid not in b.waiting:
                continue
            b.waiting.discard(pid)
            b.ways[way] = b.ways.get(way, 0) + 1
            if not b.waiting:
                del self._breakdowns[van_id]
                recovery_s = round(now_s - b.since_s, 3)
                ways = ", ".join(f"{n} by {w.replace('_', ' ')}" for w, n in sorted(b.ways.items()))
                self._event(
                    "breakdown_recovered",
                    now_s,
                    van_id=van_id,
                    detail=f"{sum(b.ways.values())} parcels aboard other vans after "
                    f"{recovery_s:.0f} s ({ways})",
                    recovery_s=recovery_s,
                    way="rescue_trip" if b.ways.get("rescue_trip") else "depot",
                    parcels=sum(b.ways.values()),
                )

    def _recovered(self, rec: ParcelRecord, van_id: str) -> bool:
        """On board a van out of service, and now loaded by another: it was recovered."""
        holder = self._vans.get(rec.holder or "")
        return (
            rec.status is ParcelStatus.LOADED
            and holder is not None
            and holder.van_id != van_id
            and not self._keeps_load(holder)
        )

    def _keeps_load(self, holder: _Van) -> bool:
        """What ``holder`` carries stays with it until it hands it over: it is in service,
        on its way home after a cancel, or cancelled and not yet stopped."""
        r = holder.rec
        return r.in_service or r.returning or r.cancel_state == CANCEL_REQUESTED

    def _parcel_missing(self, v: _Van, rec: ParcelRecord, why: str, now_s: float) -> None:
        """Where the parcel is, nothing reported to this controller says (a van that should
        carry it does not list it aboard): it is held out of planning — no van is sent to
        load it where it may not be — until a person finds it."""
        detail = f"location unknown: {why} (its state lists it nowhere); a person must find it"
        self._set_parcel(rec, status=ParcelStatus.FAILED, holder=None, detail=detail)
        self.counters["parcels_missing"] += 1
        self._event("parcel_missing", now_s, van_id=v.van_id, parcel_id=rec.parcel.id, detail=why)
        for other in self._vans.values():
            if other is not v and self._drop_from_horizon(other, rec.parcel.id):
                self._index_actions(other)
                self._release(other, now_s, force=other.active)

    def _reconcile_load(self, v: _Van, state: State, now_s: float) -> None:
        """``v`` drives an order this controller never sent: what its state lists aboard is
        the truth about what it carries. A parcel it lists is on it; one this controller had
        on it that it no longer lists was handed over under that order, somewhere unknown."""
        aboard = set(state.load.parcel_ids)
        for pid in sorted(aboard):
            rec = self._parcels.get(pid)
            if rec is None or rec.status in TERMINAL_STATUSES:
                continue
            if rec.status is ParcelStatus.LOADED and rec.holder == v.van_id:
                continue
            was = rec.holder if rec.status is ParcelStatus.LOADED else rec.status.value
            self._set_parcel(rec, status=ParcelStatus.LOADED, holder=v.van_id)
            self._event(
                "parcel_relocated",
                now_s,
                van_id=v.van_id,
                parcel_id=pid,
                detail=f"the van lists it aboard; this controller had it {was}",
            )
            for other in self._vans.values():
                if other is not v and self._drop_from_horizon(other, pid):
                    self._index_actions(other)
                    self._release(other, now_s, force=other.active)
        for rec in list(self._parcels.values()):
            if (
                rec.status is ParcelStatus.LOADED
                and rec.holder == v.van_id
                and rec.parcel.id not in aboard
            ):
                self._parcel_missing(
                    v,
                    rec,
                    f"{v.van_id}, under an order this controller never sent, no longer "
                    "lists it aboard",
                    now_s,
                )

    def _parcel_failed(
        self, v: _Van, rec: ParcelRecord, kind: NodeActionType, why: str, now_s: float
    ) -> None:
        if kind is NodeActionType.UNLOAD:  # still on board: the van brings it back
            self._event(
                "parcel_unload_failed", now_s, van_id=v.van_id, parcel_id=rec.parcel.id, detail=why
            )
            return
        self._set_parcel(rec, status=ParcelStatus.FAILED, detail=f"{kind.value}: {why}")
        self._event("parcel_failed", now_s, van_id=v.van_id, parcel_id=rec.parcel.id, detail=why)

    def _check_errors(self, v: _Van, state: State, now_s: float) -> None:
        self._check_refusals(v, state, now_s)
        order = v.rec.order
        for e in state.errors:
            refs = {r.key: r.value for r in e.references}
            if (
                e.error_type == "order_update_error"
                and order is not None
                and refs.get("order_id") == order.order_id
                and refs.get("order_update_id") == str(order.order_update_id)
                and not v.rec.rejected
                and not v.rec.confirmed
            ):
                self._set(v, rejected=e.description or "rejected")
                self._event(
                    "order_rejected",
                    now_s,
                    van_id=v.van_id,
                    detail=f"order {order.order_id} update {order.order_update_id}: "
                    f"{e.description}",
                )
        fatal = [e for e in state.errors if e.level is ErrorLevel.FATAL]
        if fatal and not v.rec.fatal:
            what = "; ".join(f"{e.error_type}: {e.description}" for e in fatal)
            self._set(v, fatal=True, fatal_since_s=now_s)
            self._event(
                "van_error",
                now_s,
                van_id=v.van_id,
                detail=f"{what} (declared broken down if it lasts {self.config.fatal_grace_s:g} s)",
            )
            if self.config.fatal_grace_s <= 0:
                self._declare_broken_down(v, now_s)
        elif not fatal and v.rec.fatal:
            self._fatal_cleared(v, now_s)

    def _check_refusals(self, v: _Van, state: State, now_s: float) -> None:
        """A command the van refused (a ``signature_error`` or ``validation_error`` in its
        state naming it) is an event at once: ``instant_refused`` or ``order_refused``, with
        the van's reason. A refusal names its command by the references ``action_id`` (an
        instant action), ``order_id`` + ``order_update_id`` (an order) or ``message_id``
        (either); one naming none of them counts for every command still awaiting
        confirmation of the kind its ``topic`` reference names, or else its description (as
        ``fleet.protocol.SignatureError`` words it: ``.../instant: replayed: instant ...``).
        A refused order is not re-sent; a refused emergency stop is re-sent all the same
        (each copy freshly signed) until the van confirms it; other instant actions are
        dropped."""
        current = {
            (e.error_type, e.description) for e in state.errors if e.error_type in REFUSAL_ERRORS
        }
        new = [
            e for e in state.errors if (e.error_type, e.description) in current - v.refusals_seen
        ]
        v.refusals_seen = current
        for e in new:
            refs: dict[str, list[str]] = {}
            for ref in e.references:
                refs.setdefault(ref.key, []).append(ref.value)
            reason = (refs.get("reason") or [e.error_type])[0]
            ids = [int(m) for m in refs.get("message_id", ()) if m.isdigit()]
            signed = {v.signed[m] for m in ids if m in v.signed}
            named = bool(refs.get("action_id") or refs.get("order_id") or ids)
            kind = "" if named else _refused_kind(e.description, refs.get("topic", []))
            self._refuse_instants(v, e, reason, set(refs.get("action_id", ())), signed, kind, now_s)
            order = v.rec.order
            if order is None or not v.rec.sent or v.rec.confirmed or v.rec.rejected:
                continue
            key = f"order:{order.order_id}:{order.order_update_id}"
            if (
                (
                    refs.get("order_id") == [order.order_id]
                    and refs.get("order_update_id") == [str(order.order_update_id)]
                )
                or key in signed
                or kind == "order"
            ):
                self._set(v, rejected=f"{reason}: {e.description}"[:500])
                self.counters["orders_refused"] += 1
                self._event(
                    "order_refused",
                    now_s,
                    van_id=v.van_id,
                    detail=f"order {order.order_id} update {order.order_update_id} refused by "
                    f"the van: {reason}: {e.description}",
                    reason=reason,
                    order_id=order.order_id,
                )

    def _refuse_instants(
        self,
        v: _Van,
        error: VanError,
        reason: str,
        action_ids: set[str],
        signed: set[str],
        kind: str,
        now_s: float,
    ) -> None:
        keep: list[PendingInstant] = []
        for p in v.rec.pending_instants:
            ids = [a.action_id for a in p.message.actions]
            if not (
                action_ids.intersection(ids)
                or "instant:" + ",".join(ids) in signed
                or kind == "instant"
            ):
                keep.append(p)
                continue
            action = p.message.actions[0]
            self.counters["instants_refused"] += 1
            urgent = _urgent(p.message)
            self._event(
                "instant_refused",
                now_s,
                van_id=v.van_id,
                detail=f"{action.action_type.value} ({action.action_id}) refused by the van: "
                f"{reason}: {error.description}"
                + ("; re-sending it until the van confirms it" if urgent else ""),
                action=action.action_type.value,
                action_id=action.action_id,
                reason=reason,
            )
            if urgent:
                keep.append(replace(p, refused=f"{reason}: {error.description}"[:500]))
        if keep != list(v.rec.pending_instants):
            self._set(v, pending_instants=tuple(keep))

    def command_signed(self, van_id: str, message: Order | InstantActions, message_id: int) -> None:
        """The service signed ``message`` for ``van_id`` with ``message_id``: a refusal that
        names the id is matched to the command (the last ``SIGNED_IDS_KEPT`` per van)."""
        v = self._vans.get(van_id)
        if v is None:
            return
        if isinstance(message, Order):
            key = f"order:{message.order_id}:{message.order_update_id}"
        else:
            key = "instant:" + ",".join(a.action_id for a in message.actions)
        v.signed[message_id] = key
        if len(v.signed) > SIGNED_IDS_KEPT:
            del v.signed[next(iter(v.signed))]

    def _declare_broken_down(self, v: _Van, now_s: float) -> None:
        """The fatal error outlasted its grace: the van is out of service for good."""
        s = v.state
        what = "; ".join(
            f"{e.error_type}: {e.description}"
            for e in (s.errors if s is not None else ())
            if e.level is ErrorLevel.FATAL
        )
        lasted = now_s - v.rec.fatal_since_s
        self._take_out_of_service(v, f"fatal error for {lasted:.0f} s: {what}", now_s)

    def _fatal_cleared(self, v: _Van, now_s: float) -> None:
        self._set(v, fatal=False)
        self._event("van_error_cleared", now_s, van_id=v.van_id)
        if not v.rec.in_service and v.rec.out_reason.startswith("fatal error"):
            self._back_in_service(v, "fatal error cleared", now_s)

    def _back_in_service(self, v: _Van, why: str, now_s: float) -> None:
        """A van declared lost is back: in service again, and (if the day was re-planned
        around it) re-planned again, so that what it still carries is its own once more."""
        self._set(v, in_service=True, out_reason="", replan_cause="")
        self._breakdowns.pop(v.van_id, None)  # what it still carries is its own again
        self._event("van_in_service", now_s, van_id=v.van_id, detail=why)
        self._start_replan(f"{v.van_id}: back in service ({why})", now_s)

    def on_connection(self, van_id: str, message: Connection, now_s: float) -> None:
        self.counters["connections"] += 1
        v = self._van(van_id)
        state = message.connection_state
        if state is ConnectionState.ONLINE:
            v.last_state_id = None  # the van (re)started or reconnected: its ids may restart
            v.state_since_online = False  # what it holds now is known from its next state
        if state.value == v.rec.connection:
            return
        self._set(v, connection=state.value, connection_since_s=now_s)
        if state is ConnectionState.ONLINE:
            self._event("van_online", now_s, van_id=van_id)
            r = v.rec
            if r.sent and not r.confirmed and not r.gave_up and v.order is not None:
                self._set(v, first_sent_s=now_s, next_send_s=now_s, attempts=0)
            if not r.in_service and r.out_reason.startswith("offline"):
                self._back_in_service(v, "back online", now_s)
        else:
            self._event("van_offline", now_s, van_id=van_id, detail=state.value)

    def on_factsheet(self, van_id: str, message: Factsheet, now_s: float) -> None:
        self.counters["factsheets"] += 1
        v = self._van(van_id)
        if v.factsheet is None or v.factsheet.model_dump(exclude={"header"}) != message.model_dump(
            exclude={"header"}
        ):
            self._event(
                "van_factsheet",
                now_s,
                van_id=van_id,
                detail=f"{message.model} firmware {message.firmware_version}",
            )
        v.factsheet = message

    def on_bad_message(
        self, topic: str, reason: str, detail: str, van_id: str | None, now_s: float
    ) -> None:
        """A message that could not be used: counted; an event at most once a minute per cause."""
        self.counters[f"rejected_{reason}"] += 1
        key = (van_id or topic, reason)
        if now_s - self._bad_event_at.get(key, -1e18) >= BAD_MESSAGE_EVENT_EVERY_S:
            self._bad_event_at[key] = now_s
            self._event(
                "bad_message",
                now_s,
                van_id=van_id,
                detail=f"{topic}: {reason}: {detail}"[:2000],
                reason=reason,
            )

    def on_throttled(self, van_id: str, dropped: int, now_s: float) -> None:
        self.counters["throttled"] += dropped
        self._event(
            "van_throttled",
            now_s,
            van_id=van_id,
            detail=f"{dropped} messages dropped above {self.config.max_messages_per_van_per_s:g}/s",
            dropped=dropped,
        )

    # ------------------------------------------------------------------ the clock
    def tick(self, now_s: float) -> None:
        """Timers: silence and offline checks over every van once a second; re-sends for the
        vans waiting on a confirmation at every tick; the latest states that are due to the
        store."""
        cfg = self.config
        if now_s >= self._next_scan_s:
            self._next_scan_s = now_s + SCAN_EVERY_S
            for v in self._vans.values():
                self._check_silence(v, now_s)
        for van_id in list(self._waiting):
            v = self._vans[van_id]
            r = v.rec
            order_waits = (
                r.sent and not r.confirmed and not r.gave_up and not r.rejected and not r.cancelled
            )
            if not order_waits and not r.pending_instants:
                self._waiting.discard(van_id)
            elif r.connection not in OFFLINE_STATES:
                if order_waits:
                    self._maybe_resend(v, now_s)
                if v.rec.pending_instants:
                    self._resend_instants(v, now_s)
        # Each van's latest state is written within flush_interval_s of changing, a few vans
        # at each tick rather than the whole fleet at once (one long write a second held up
        # what arrived meanwhile).
        due_s = now_s - cfg.flush_interval_s + cfg.tick_s
        dirty = self._dirty_states
        while dirty:
            van_id, since_s = next(iter(dirty.items()))
            if since_s > due_s:
                break
            del dirty[van_id]
            v = self._vans[van_id]
            assert v.state is not None and v.seen_s is not None
            self._changes.van_states[van_id] = VanStateRecord(
                van_id, v.state, v.seen_s, v.state_json
            )

    def _check_silence(self, v: _Van, now_s: float) -> None:
        r = v.rec
        if r.fatal and r.in_service and now_s - r.fatal_since_s >= self.config.fatal_grace_s:
            self._declare_broken_down(v, now_s)
        if r.in_service and r.sent and not r.echoed and not r.cancelled and r.order is not None:
            self._check_unconfirmed(v, r.order, now_s)
        if (
            r.cancel_state == CANCEL_REQUESTED
            and now_s - r.cancel_since_s >= self.config.cancel_confirm_s
        ):
            self._cancel_settled(v, False, now_s)
        if r.connection in OFFLINE_STATES:
            if (
                r.in_service
                and v.active
                and now_s - r.connection_since_s >= self.config.offline_replan_after_s
            ):
                self._take_out_of_service(
                    v, f"offline for {now_s - r.connection_since_s:.0f} s mid-route", now_s
                )
        elif (
            not v.stale
            and v.seen_s is not None
            and now_s - max(v.seen_s, self._listening_since_s) > self.config.stale_after_s
        ):
            v.stale = True
            self._event(
                "van_stale", now_s, van_id=v.van_id, detail=f"silent for {now_s - v.seen_s:.0f} s"
            )

    def _check_unconfirmed(self, v: _Van, order: Order, now_s: float) -> None:
        """A van that has not confirmed its order by the first stop's planned departure (or
        its sending, if later) plus ``confirm_by_departure_s`` is unavailable (issue 14,
        item 7): its order is cancelled
        (never re-sent: a late copy must not start it) and its parcels re-planned; it comes
        back into service with its next state."""
        departure = order.nodes[0].planned_departure
        if departure is None:
            return
        # an order sent late (after its departure) gets the same time from its sending
        due_s = (
            max(parse_timestamp(departure), v.rec.first_sent_s) + self.config.confirm_by_departure_s
        )
        if now_s < due_s:
            return
        why = (
            f"order {order.order_id} not confirmed by its planned departure "
            f"{departure} + {self.config.confirm_by_departure_s:g} s"
        )
        self._event("order_unconfirmed", now_s, van_id=v.van_id, detail=why)
        self._set(v, cancelled=True)
        self.instant(InstantActionType.CANCEL_ORDER, [v.van_id], now_s, reason=why)
        self._take_out_of_service(v, f"unavailable: {why}", now_s, truncate=False)

    def _available(self, v: _Van, now_s: float) -> bool:
        """In service and reachable with live data: connected, reporting, not stale. Only such
        a van counts as in service for a re-plan (issue 14, item 7): one that never reported,
        is offline or stale gets no new work."""
        r = v.rec
        if not r.in_service or r.cancelled or r.connection in OFFLINE_STATES:
            return False
        return not self._not_live(v, now_s)

    def _maybe_resend(self, v: _Van, now_s: float) -> None:
        r = v.rec
        if now_s < r.next_send_s or v.order is None:
            return
        if now_s - r.first_sent_s >= self.config.resend_give_up_s:
            self._set(v, gave_up=True)
            self._event(
                "order_gave_up",
                now_s,
                van_id=v.van_id,
                detail=f"order {v.order.order_id} update {v.order.order_update_id} unconfirmed "
                f"after {r.attempts} sends in {now_s - r.first_sent_s:.0f} s",
            )
            return
        delay = min(self.config.resend_max_s, self.config.resend_first_s * 2**r.attempts)
        self._set(v, attempts=r.attempts + 1, next_send_s=now_s + delay)
        self._queue_order(v, now_s, resend=True)

    # ------------------------------------------------------------------ instant actions
    def instant(
        self, action: InstantActionType, van_ids: Iterable[str], now_s: float, *, reason: str = ""
    ) -> list[str]:
        """Send ``action`` to each van; returns the vans it went to."""
        sent: list[str] = []
        for van_id in van_ids:
            if not self.knows_van(van_id):
                raise ControlError(f"unknown van {van_id!r} (not in the site's fleet)")
        for van_id in van_ids:
            v = self._van(van_id)
            message = self._instant_message(van_id, action, reason, now_s)
            action_id = message.actions[0].action_id
            urgent = _urgent(message)
            if urgent:
                self._drop_pending_resumes(v, action_id, now_s)
            elif action is InstantActionType.RESUME:
                self._drop_pending_stops(v, action_id, now_s)
            pending = PendingInstant(
                message,
                now_s,
                now_s + (self.config.estop_resend_s if urgent else self.config.resend_first_s),
                1,
            )
            self._set(v, pending_instants=(*v.rec.pending_instants, pending))
            self._waiting.add(van_id)
            self._sends.append(Outgoing(van_id, message, urgent))
            self._event(
                "instant_sent",
                now_s,
                van_id=van_id,
                detail=f"{action.value} ({action_id})" + (f": {reason}" if reason else ""),
                action=action.value,
                action_id=action_id,
            )
            if (
                action is InstantActionType.RESUME
                and not v.rec.in_service
                and (v.rec.out_reason.startswith("cancelled"))
            ):
                self._set(v, returning=False)
                self._back_in_service(v, "resumed by dispatcher", now_s)
            sent.append(van_id)
        return sent

    def _drop_moving_instants(self, v: _Van, now_s: float) -> None:
        """After a restart, a resume (or an open door) not yet confirmed is not sent again:
        the store may be an older copy, and an emergency stop given after it (by the
        controller before this one) would be released by it. Safer commands are re-sent."""
        self._supersede(
            v,
            frozenset({InstantActionType.RESUME, InstantActionType.OPEN_DOOR}),
            lambda a: (
                f"{a.action_type.value} ({a.action_id}) given before the controller "
                "restarted, not confirmed: not sent again (give it again)"
            ),
            now_s,
        )

    def _drop_pending_resumes(self, v: _Van, estop_id: str, now_s: float) -> None:
        """An emergency stop supersedes every resume not yet confirmed: re-sent after it (a
        fresh message id the van accepts), a resume would release the newer e-stop."""
        self._supersede(
            v,
            frozenset({InstantActionType.RESUME}),
            lambda a: (
                f"resume ({a.action_id}) not confirmed: no longer sent, the emergency "
                f"stop {estop_id} came after it"
            ),
            now_s,
        )

    def _drop_pending_stops(self, v: _Van, resume_id: str, now_s: float) -> None:
        """A dispatcher's resume supersedes every emergency stop, pause and cancel of that van
        not yet confirmed: they are never given up (:meth:`_resend_instants`), and sent on after
        the resume they would stop the van the dispatcher has just let go, again and again."""
        self._supersede(
            v,
            _NEVER_GIVEN_UP,
            lambda a: (
                f"{a.action_type.value} ({a.action_id}) not confirmed: no longer sent, "
                f"the resume {resume_id} came after it"
            ),
            now_s,
        )

    def _supersede(
        self,
        v: _Van,
        kinds: frozenset[InstantActionType],
        detail: Callable[[InstantAction], str],
        now_s: float,
    ) -> None:
        """Stop sending ``v``'s pending instant actions of ``kinds`` (``instant_superseded``,
        with ``detail`` of each)."""
        keep: list[PendingInstant] = []
        for p in v.rec.pending_instants:
            action = p.message.actions[0]
            if action.action_type not in kinds:
                keep.append(p)
                continue
            self._event(
                "instant_superseded",
                now_s,
                van_id=v.van_id,
                detail=detail(action),
                action=action.action_type.value,
                action_id=action.action_id,
            )
        if len(keep) != len(v.rec.pending_instants):
            self._set(v, pending_instants=tuple(keep))

    def _instant_message(
        self, van_id: str, action: InstantActionType, reason: str, now_s: float
    ) -> InstantActions:
        self._instant_seq += 1
        action_id = f"I{int(now_s * 1000):x}.{self._instant_seq}"
        return InstantActions(
            header=make_header(self.config.name, 0, now_s),
            van_id=van_id,
            actions=(InstantAction(action_id=action_id, action_type=action, reason=reason[:500]),),
        )

    def _confirm_instants(self, v: _Van, state: State, now_s: float) -> None:
        """An instant action is confirmed when the van lists it ``finished`` (done); one it
        lists ``failed`` is an ``instant_failed`` event — an emergency stop that failed is
        sent again under a new action id, which the van must obey anew."""
        seen = {a.action_id: a for a in state.action_states}
        keep: list[PendingInstant] = []
        for p in v.rec.pending_instants:
            action = p.message.actions[0]
            reported = seen.get(action.action_id)
            if reported is None or reported.status not in (
                ActionStatus.FINISHED,
                ActionStatus.FAILED,
            ):
                keep.append(p)
                continue
            if reported.status is ActionStatus.FINISHED:
                self._event(
                    "instant_confirmed",
                    now_s,
                    van_id=v.van_id,
                    detail=f"{action.action_type.value} ({action.action_id})",
                    rtt_s=round(now_s - p.first_sent_s, 4),
                    action=action.action_type.value,
                    action_id=action.action_id,
                )
                self._instant_confirmed(v, action.action_type, now_s)
                continue
            urgent = _urgent(p.message)
            self._event(
                "instant_failed",
                now_s,
                van_id=v.van_id,
                detail=f"{action.action_type.value} ({action.action_id}) failed on the van: "
                f"{reported.result_description}"
                + ("; sending a new emergency stop" if urgent else ""),
                action=action.action_type.value,
                action_id=action.action_id,
            )
            if urgent:
                again = self._instant_message(v.van_id, action.action_type, action.reason, now_s)
                keep.append(
                    PendingInstant(
                        again,
                        p.first_sent_s,
                        now_s + self.config.estop_resend_s,
                        1,
                        f"failed: {reported.result_description}"[:500],
                    )
                )
                self._sends.append(Outgoing(v.van_id, again, True))
        if keep != list(v.rec.pending_instants):
            self._set(v, pending_instants=tuple(keep))

    def _instant_confirmed(self, v: _Van, action: InstantActionType, now_s: float) -> None:
        """A confirmed ``cancel_order`` settles the van's cancel (C10), or releases the
        return order held for it."""
        if action is not InstantActionType.CANCEL_ORDER:
            return
        if v.rec.cancel_state == CANCEL_REQUESTED:
            self._cancel_settled(v, True, now_s)
        elif v.rec.cancel_state == CANCEL_UNCONFIRMED:
            self._set(v, cancel_state=CANCEL_CONFIRMED)
            self._event("van_cancelled", now_s, van_id=v.van_id, detail="cancel confirmed late")
            if v.rec.returning:
                self._release(v, now_s, force=False)

    def _resend_instants(self, v: _Van, now_s: float) -> None:
        keep: list[PendingInstant] = []
        changed = False
        for p in v.rec.pending_instants:
            if now_s < p.next_send_s:
                keep.append(p)
                continue
            changed = True
            urgent = _urgent(p.message)
            kind = p.message.actions[0].action_type
            if now_s - p.first_sent_s >= self.config.resend_give_up_s and kind in _NEVER_GIVEN_UP:
                # a command that makes the van safer is never given up: it goes on being
                # sent, every resend_max_s, until the van confirms it or a dispatcher's
                # resume supersedes it (docs/safety.md)
                if not p.overdue:
                    self._event(
                        "instant_overdue",
                        now_s,
                        van_id=v.van_id,
                        detail=f"{kind.value} unconfirmed after {p.attempts} sends in "
                        f"{now_s - p.first_sent_s:.0f} s: still sent every "
                        f"{self.config.resend_max_s:g} s until the van confirms it",
                        action=kind.value,
                        action_id=p.message.actions[0].action_id,
                    )
                keep.append(
                    replace(
                        p,
                        next_send_s=now_s + self.config.resend_max_s,
                        attempts=p.attempts + 1,
                        overdue=True,
                    )
                )
                self._sends.append(Outgoing(v.van_id, p.message, urgent))
                continue
            if now_s - p.first_sent_s >= self.config.resend_give_up_s:
                self._event(
                    "instant_gave_up",
                    now_s,
                    van_id=v.van_id,
                    detail=f"{p.message.actions[0].action_type.value} unconfirmed after "
                    f"{p.attempts} sends",
                    action=p.message.actions[0].action_type.value,
                    action_id=p.message.actions[0].action_id,
                )
                continue
            step = (
                self.config.estop_resend_s
                if urgent
                else min(self.config.resend_max_s, self.config.resend_first_s * 2**p.attempts)
            )
            keep.append(replace(p, next_send_s=now_s + step, attempts=p.attempts + 1))
            self._sends.append(Outgoing(v.van_id, p.message, urgent))
        if changed:
            self._set(v, pending_instants=tuple(keep))

    # ------------------------------------------------------------------ dispatcher commands
    def cancel_vans(self, van_ids: Sequence[str], now_s: float) -> str:
        """Cancel each van (C10): ``cancel_order`` goes out and the van is out of service at
        once (it gets no more work), but its parcels are re-planned only once it confirmed the
        cancel (its state lists the action finished: it stands, and nothing of the order runs
        any more) or ``cancel_confirm_s`` passed — :meth:`_cancel_settled`. The caller waits
        for :meth:`cancel_outcome`."""
        for van_id in van_ids:
            if not self.knows_van(van_id):
                raise ControlError(f"unknown van {van_id!r} (not in the site's fleet)")
        self.instant(
            InstantActionType.CANCEL_ORDER, van_ids, now_s, reason="cancelled by dispatcher"
        )
        for van_id in van_ids:
            v = self._van(van_id)
            v.cancel_outcome, v.delivered_since_cancel = None, []
            self._set(
                v,
                cancelled=True,
                cancel_state=CANCEL_REQUESTED,
                cancel_since_s=now_s,
                in_service=False,
                out_reason="cancelled by dispatcher",
                returning=False,
            )
            self._event(
                "van_out_of_service",
                now_s,
                van_id=van_id,
                detail="cancelled by dispatcher: waiting for the van to confirm the cancel "
                f"(at most {self.config.cancel_confirm_s:g} s) before re-planning its parcels",
            )
        return f"cancel_order sent to {len(van_ids)} van(s)"

    def cancel_outcome(self, van_id: str) -> tuple[bool, str] | None:
        """(confirmed by the van, what happened) once a cancel settled; None while waiting."""
        v = self._vans.get(van_id)
        return None if v is None else v.cancel_outcome

    def _cancel_settled(self, v: _Van, confirmed: bool, now_s: float) -> None:
        """The van confirmed its cancel, or ``cancel_confirm_s`` passed: what it reported done
        meanwhile is already applied (a parcel it delivered is not re-planned); it is sent a
        **return order** home with what it still carries (unloaded there: ``at_station``), and
        the rest of its work is re-planned. Unconfirmed, the return order is held until the
        van confirms the cancel (it would refuse a new order while it still runs the old one)."""
        r = v.rec
        van_id = v.van_id
        self._set(v, cancel_state=CANCEL_CONFIRMED if confirmed else CANCEL_UNCONFIRMED)
        how = (
            "confirmed by the van"
            if confirmed
            else f"not confirmed within {self.config.cancel_confirm_s:g} s"
        )
        carrying = sorted(
            rec.parcel.id
            for rec in self._parcels.values()
            if rec.status is ParcelStatus.LOADED and rec.holder == van_id
        )
        delivered = list(v.delivered_since_cancel)
        parts = [f"{van_id}: cancel {how}"]
        if delivered:
            parts.append(
                f"{len(delivered)} parcel(s) delivered meanwhile ({', '.join(delivered[:5])})"
            )
        back = self._return_home(v, carrying, now_s) if not r.in_service else None
        if back is not None:
            parts.append(
                f"return order {back} home with {len(carrying)} parcel(s)"
                + ("" if confirmed else ", sent once the van confirms the cancel")
            )
        self._event(
            "van_cancelled", now_s, van_id=van_id, detail="; ".join(parts), confirmed=confirmed
        )
        v.cancel_outcome = (confirmed, "; ".join(parts))
        self._start_replan(f"{van_id}: cancelled by dispatcher ({how})", now_s)

    def _return_home(self, v: _Van, carrying: Sequence[str], now_s: float) -> str | None:
        """Give a cancelled van an order home (its depot: ``unload`` of ``carrying``); None
        when it needs none (no order, nothing on board) or its position was never heard."""
        r = v.rec
        home = self.roster.get(v.van_id)
        state = v.state
        if home is None or state is None or state.position is None:
            return None
        if not carrying and (r.order is None or r.finished):
            return None
        at = (state.position.lon, state.position.lat)
        spec = self.van_spec
        arrive_s = now_s + straight_m(at, home) * ROAD_DETOUR / (spec.top_speed_mps / 2)
        path = return_path(
            at=at,
            home=home,
            depot=v.van_id.rpartition("-")[0],
            parcels=carrying,
            arrive_s=arrive_s,
            unload_s=spec.station_unload_s,
            top_speed_mps=spec.top_speed_mps,
        )
        old = r.order
        new_id = _derived_order_id(old.order_id if old is not None else v.van_id, "h")
        if old is not None and v.path is not None:
            self._retire(v, old)
        self._set(v, returning=True)
        self._new_order(v, new_id, path, "return", now_s)
        return new_id

    def cancel_parcels(self, parcel_ids: Sequence[str], now_s: float) -> str:
        unknown = [p for p in parcel_ids if p not in self._parcels]
        if unknown:
            raise ControlError(f"unknown parcel(s): {', '.join(unknown[:10])}")
        problems: list[str] = []
        for pid in parcel_ids:
            rec = self._parcels[pid]
            if rec.status in TERMINAL_STATUSES:
                problems.append(f"{pid} is already {rec.status.value}")
                continue
            for v in self._vans.values():
                spot = self._base_action_of(v, pid)
                if spot:
                    problems.append(
                        f"{pid} is in van {v.van_id}'s released stop {spot}; cancel the van "
                        "(fleet cancel --van) to stop it"
                    )
        if problems:
            raise ControlError("cannot cancel: " + "; ".join(problems))
        touched: set[str] = set()
        for pid in parcel_ids:
            rec = self._parcels[pid]
            on_board = rec.status is ParcelStatus.LOADED
            self._set_parcel(
                rec,
                status=ParcelStatus.CANCELLED,
                detail="cancelled by dispatcher"
                + (f"; stays on board of {rec.holder}" if on_board else ""),
            )
            self._event("parcel_cancelled", now_s, parcel_id=pid, van_id=rec.holder)
            for v in self._vans.values():
                if self._drop_from_horizon(v, pid):
                    touched.add(v.van_id)
        for van_id in sorted(touched):
            v = self._vans[van_id]
            self._index_actions(v)
            self._release(v, now_s, force=v.active)
        return f"cancelled {len(parcel_ids)} parcel(s); {len(touched)} order(s) updated"

    def _base_action_of(self, v: _Van, pid: str) -> str:
        """The released, not yet reached node holding an action on ``pid`` ("" if none)."""
        if not v.active or v.path is None:
            return ""
        reached = v.rec.reached_seq if v.rec.reached_seq is not None else -1
        for node in v.path.nodes[: v.rec.released]:
            if node.sequence_id > reached and any(pid in a.parcel_ids for a in node.actions):
                return node.node_id
        return ""

    def _door_work_s(self, stop: PlanStop) -> float:
        """A door stop's service time as the planner counts it (the stop, then each parcel's
        hand-over), without any wait for a window."""
        spec = self.van_spec
        hand_over = 0.0
        for pid in stop.parcels_delivered:
            rec = self._parcels.get(pid)
            own = rec.parcel.service_s if rec is not None else None
            hand_over += own if own is not None else spec.per_parcel_s
        return spec.door_stop_s + hand_over

    def _drop_from_horizon(self, v: _Van, pid: str) -> bool:
        if v.path is None or v.rec.cancelled or v.rec.finished:
            return False
        start = v.rec.released
        nodes = v.path.nodes
        if not any(pid in a.parcel_ids for n in nodes[start:] for a in n.actions):
            return False
        tail = _without(RoutePath(tuple(nodes[start:]), ()), {pid}).nodes
        v.path = RoutePath((*nodes[:start], *tail), v.path.edges)
        return True

    def add_parcels(self, parcels: Sequence[Parcel], now_s: float) -> str:
        """Urgent parcels: recorded, then re-planned onto the running fleet."""
        if self._day is None:
            raise ControlError("no plan has been dispatched yet: plan and dispatch first")
        known = [p.id for p in parcels if p.id in self._parcels]
        if known:
            raise ControlError(f"parcel(s) already known: {', '.join(known[:10])}")
        if not parcels:
            raise ControlError("no parcels to add")
        for p in parcels:
            rec = ParcelRecord(p, ParcelStatus.PLANNED, "urgent")
            self._parcels[p.id] = rec
            self._changes.parcels[p.id] = rec
        self._event("parcels_added", now_s, detail=f"{len(parcels)} urgent parcel(s)")
        self._start_replan(f"urgent order: {len(parcels)} parcel(s)", now_s)
        return f"added {len(parcels)} parcel(s); re-planning"

    # ------------------------------------------------------------------ re-planning
    def _take_out_of_service(
        self, v: _Van, reason: str, now_s: float, *, truncate: bool = True
    ) -> None:
        """Declare ``v`` lost (or cancelled): it gets no more work; what it carries beyond its
        released base is re-planned as recovered to its depot, with an event per parcel."""
        if not v.rec.in_service and v.rec.replan_cause:
            return
        self._set(v, in_service=False, out_reason=reason, replan_cause=reason)
        self._event("van_out_of_service", now_s, van_id=v.van_id, detail=reason)
        if truncate and v.active and v.order is not None:
            self._replace_horizon(v, None, v.rec.source, now_s)
        kept = self._base_parcels(v) if self._drives_base(v) else set()
        for rec in list(self._parcels.values()):
            pid = rec.parcel.id
            if rec.status is ParcelStatus.LOADED and rec.holder == v.van_id and pid not in kept:
                self._recovery_due.setdefault(pid, now_s + RECOVERY_S)
                stranded = self._breakdowns.setdefault(v.van_id, _Breakdown(now_s))
                stranded.waiting.add(pid)
                self._event(
                    "parcel_stranded",
                    now_s,
                    van_id=v.van_id,
                    parcel_id=pid,
                    detail=f"on board of {v.van_id} ({reason}): re-planned as recovered to "
                    "its depot",
                )
        self._start_replan(f"{v.van_id}: {reason}", now_s)

    def _drives_base(self, v: _Van) -> bool:
        """``v`` will still drive its released base: in service, or offline (a van that loses
        the broker finishes its released base, then holds), not broken down nor cancelled."""
        r = v.rec
        if r.order is None or r.released == 0 or v.path is None:
            return False
        if r.cancelled:
            # cancelled, not yet confirmed: it may still be finishing a stop of its base
            return r.cancel_state == CANCEL_REQUESTED
        if r.finished and not self._base_parcels(v):
            return False  # done, its last stop's hand-overs too (until then it is driving it)
        if r.in_service:
            return True
        if r.returning and not r.fatal:
            return True  # a cancelled van's way home
        return r.connection in OFFLINE_STATES and not r.fatal

    def _base_parcels(self, v: _Van) -> set[str]:
        """Parcels with an action in ``v``'s released base that it has not reported yet."""
        out: set[str] = set()
        if v.path is None:
            return out
        reached = v.rec.reached_seq if v.rec.reached_seq is not None else -1
        for node in v.path.nodes[: v.rec.released]:
            if node.sequence_id < reached:
                continue  # passed; the stop it is at may still be busy
            for a in node.actions:
                if a.action_id not in v.done_actions:
                    out.update(a.parcel_ids)
        return out

    def _unassigned_parcels(self) -> list[ParcelRecord]:
        return [
            r
            for r in self._parcels.values()
            if r.status is ParcelStatus.PLANNED
            and r.line_haul_van is None
            and r.last_mile_van is None
            and r.source == "urgent"
        ]

    def acknowledge(
        self, alert: str, by: str, now_s: float, *, van_id: str | None, parcel_id: str | None
    ) -> str:
        """A dispatcher acknowledged an alert: an ``alert_acknowledged`` event (the consoles
        read it from the log; nothing else changes)."""
        who = " ".join(by.split())[:64] or "?"
        self._event(
            "alert_acknowledged",
            now_s,
            van_id=van_id,
            parcel_id=parcel_id,
            detail=f"{alert} acknowledged by {who}",
            alert=alert,
            by=who,
        )
        return f"{alert} alert acknowledged"

    def request_replan(self, reason: str, now_s: float) -> str:
        """A dispatcher, an engineer or the simulator (a road closure) asks for a re-plan."""
        reason = " ".join(reason.split())[:500] or "requested"
        if self._day is None:
            raise ControlError("no plan has been dispatched yet: nothing to re-plan")
        self._event("replan_requested", now_s, detail=reason)
        queued = self._replan_in_flight is not None
        self._start_replan(f"requested: {reason}", now_s)
        if queued:
            return f"re-plan queued after {self._replan_in_flight} ({reason})"
        return f"re-plan started ({reason})"

    def _start_replan(self, cause: str, now_s: float) -> None:
        if self._day is None:
            self._event("replan_skipped", now_s, detail=f"{cause}: no plan dispatched")
            return
        if self._replan_in_flight is not None:
            self._replan_waiting.append(cause)
            return
        self._replan_seq = max(self._replan_seq, len(self._plans)) + 1
        replan_id = f"R{self._replan_seq:04d}-{int(now_s) % 100000:05d}"
        request = self._replan_request(replan_id, cause, now_s)
        self._replan_in_flight = replan_id
        self._inflight_request = request
        self._replans.append(request)
        self.counters["replans"] += 1
        self._event(
            "replan_started",
            now_s,
            detail=f"{cause}: {len(request.parcels)} parcels, "
            f"{sum(v.in_service for v in request.vans)} vans in service",
            replan=replan_id,
        )

    def _replan_request(self, replan_id: str, cause: str, now_s: float) -> ReplanRequest:
        """The fleet as the planner must take it: every van's released base is driven first
        (what it delivers there is not re-planned; what it loads there is its own); parcels a
        base unloads at a station are at that station once the unload is due."""
        assert self._day is not None
        to_local = epoch_to_local(self._day, self._timezone)
        now_local = to_local(now_s)
        committed: set[str] = set()  # delivered by a base that will still be driven
        unloaded: dict[str, tuple[str, float]] = {}  # unloaded by a base: station, when (epoch)
        boards: dict[str, list[str]] = {}
        ends: dict[str, tuple[float, float, float, float]] = {}
        van_list = sorted(set(self.roster) | set(self._vans))
        for van_id in van_list:
            v = self._vans.get(van_id)
            boards[van_id] = [
                r.parcel.id
                for r in self._parcels.values()
                if r.status is ParcelStatus.LOADED and r.holder == van_id
            ]
            if v is not None and self._drives_base(v):
                ends[van_id] = self._walk_base(v, boards[van_id], committed, unloaded, to_local)
        # Each parcel is on board one van at most, and only if it is still to deliver: a
        # van driving its base before one that does not (a lost van's parcel, recovered and
        # loaded by another); a parcel some base delivers is on board nobody's after it.
        claimed: set[str] = set(committed)
        for van_id in sorted(van_list, key=lambda w: w not in ends):
            kept: list[str] = []
            for p in boards[van_id]:
                rec = self._parcels.get(p)
                if p in claimed or rec is None or rec.status in TERMINAL_STATUSES:
                    continue
                claimed.add(p)
                kept.append(p)
            boards[van_id] = kept
        vans = [
            self._van_now(
                van_id, self._vans.get(van_id), boards[van_id], ends.get(van_id), now_local, now_s
            )
            for van_id in van_list
        ]
        # A van in service that is only out of reach (stale, offline, never heard from) still
        # has what it carries: those parcels are not at its depot, so no other van may be
        # sent to load them there; they stay with it, out of this re-plan.
        unreachable = frozenset(
            v.van_id
            for v in vans
            if not v.in_service and ((w := self._vans.get(v.van_id)) is None or w.rec.in_service)
        )
        held = frozenset(p for van_id in unreachable for p in boards[van_id])
        vans = [
            VanNow(v.van_id, v.lon, v.lat, v.soc_pct, (), False, v.free_from_s)
            if v.van_id in unreachable
            else v
            for v in vans
        ]
        on_board = {p for ps in boards.values() for p in ps} - held
        recovered_at = {
            p: self._recovery_due[p]
            for v in vans
            if not v.in_service and v.van_id not in unreachable
            for p in v.parcels_on_board
            if p in self._recovery_due
        }
        location: dict[str, str] = {}
        at_station: dict[str, str] = {}
        ready_at: dict[str, float] = {}
        parcels: list[Parcel] = []
        for rec in self._parcels.values():
            pid = rec.parcel.id
            if rec.status in TERMINAL_STATUSES or pid in committed or pid in held:
                continue
            if id_problem(pid) is not None:  # stored before ids were checked: never blocks others
                continue
            parcels.append(rec.parcel)
            if pid in on_board:
                location[pid] = "on_board"
            elif pid in unloaded:
                location[pid] = "station"
                at_station[pid], ready_at[pid] = unloaded[pid]
            elif rec.status in (ParcelStatus.AT_STATION, ParcelStatus.LOADED):
                location[pid] = "station"
                if rec.station:
                    at_station[pid] = rec.station
            else:
                location[pid] = "warehouse"
        return ReplanRequest(
            replan_id,
            cause,
            self._day,
            self._timezone,
            now_s,
            tuple(vans),
            tuple(parcels),
            location,
            at_station,
            ready_at,
            frozenset(v.van_id for v in vans if not v.in_service),
            unreachable,
            held,
            recovered_at,
            frozenset(
                v.van_id
                for v in vans
                if not v.in_service
                and v.van_id not in unreachable
                and v.parcels_on_board
                and (w := self._vans.get(v.van_id)) is not None
                and w.rec.fatal
                and w.rec.connection not in OFFLINE_STATES
                and w.state is not None
                and w.state.position is not None
            ),
        )

    def _walk_base(
        self,
        v: _Van,
        board: list[str],
        committed: set[str],
        unloaded: dict[str, tuple[str, float]],
        to_local: Callable[[float], float],
    ) -> tuple[float, float, float, float]:
        """Drive ``v``'s released base on paper: updates ``board`` (what it carries at the
        end), ``committed`` and ``unloaded``; returns the base's end (lon, lat, local time it
        is free, km left to drive)."""
        assert v.path is not None
        reached = v.rec.reached_seq if v.rec.reached_seq is not None else -1
        base = v.path.nodes[: v.rec.released]
        dist_m = 0.0
        for i, node in enumerate(base):
            if node.sequence_id < reached:
                continue  # passed; the stop it is at may still be busy
            if node.sequence_id > reached and i > 0:
                dist_m += v.path.edges[i - 1].length_m
            for a in node.actions:
                if a.action_id in v.done_actions:
                    continue
                if a.action_type in (NodeActionType.LOAD, NodeActionType.TRANSFER_LOAD):
                    board.extend(p for p in a.parcel_ids if p not in board)
                elif a.action_type in (NodeActionType.DELIVER, NodeActionType.UNLOAD):
                    gone = set(a.parcel_ids)
                    board[:] = [p for p in board if p not in gone]
                    if a.action_type is NodeActionType.DELIVER:
                        committed.update(a.parcel_ids)
                    else:
                        due = node.planned_arrival
                        at = parse_timestamp(due) + v.rec.lateness_s if due else 0.0
                        for p in a.parcel_ids:
                            unloaded[p] = (node.ref, at)
        end = base[-1]
        free_s = 0.0
        if end.planned_departure:
            free_s = to_local(parse_timestamp(end.planned_departure)) + v.rec.lateness_s
        return end.lon, end.lat, free_s, dist_m / 1000.0

    def _van_now(
        self,
        van_id: str,
        v: _Van | None,
        board: list[str],
        end: tuple[float, float, float, float] | None,
        now_local: float,
        now_s: float,
    ) -> VanNow:
        home = self.roster.get(van_id)
        state = v.state if v is not None else None
        soc = state.battery.soc_pct if state is not None else 100.0
        lon, lat = home if home is not None else (0.0, 0.0)
        if state is not None and state.position is not None:
            lon, lat = state.position.lon, state.position.lat
        free_s = now_local
        in_service = v is not None and self._available(v, now_s)
        if end is not None:
            lon, lat, free_at, km = end
            free_s = max(now_local, free_at)
            spec = self.van_spec
            soc -= km * spec.consumption_kwh_per_km / spec.battery_kwh * 100.0
        return VanNow(
            van_id,
            lon,
            lat,
            max(0.0, min(100.0, soc)),
            board,
            in_service,
            free_s,
        )

    def replan_done(self, checked: CheckedPlan, now_s: float) -> None:
        """Apply a re-plan (made and verified by the caller from a :class:`ReplanRequest`)."""
        replan_id, plan, document = checked.plan_id, checked.plan, checked.document
        if replan_id != self._replan_in_flight:
            log.warning("ignoring result of re-plan %s (not in flight)", replan_id)
            return
        self._replan_in_flight = None
        request, self._inflight_request = self._inflight_request, None
        back = sorted(
            van_id
            for van_id in (
                request.out_of_service - request.unreachable if request is not None else ()
            )
            if (v := self._vans.get(van_id)) is not None and v.rec.in_service
        )
        if back:
            self.counters["replans_dropped"] += 1
            self._event(
                "replan_dropped",
                now_s,
                detail=f"its cause has cleared: {', '.join(back)} back in service",
                replan=replan_id,
            )
            self._resume_releases(now_s)
            cause = request.cause if request is not None else "re-plan dropped"
            self._replan_waiting.insert(0, f"again after {replan_id} was dropped ({cause})")
            self._next_replan(now_s)
            return
        problems = checked.problems
        if problems:
            self._replan_failed(
                replan_id, "the re-plan failed verification: " + "; ".join(problems[:10]), now_s
            )
            return
        assert self._day is not None
        cause = (
            request.cause
            if request is not None
            else "; ".join(v.rec.replan_cause for v in self._vans.values() if v.rec.replan_cause)
        )
        record = PlanRecord(
            replan_id, "replan", cause[:2000], now_s, plan.day.isoformat(), plan.timezone, document
        )
        self._plans[replan_id] = record
        self._changes.plans.append(record)
        planned: set[str] = set()
        for route in plan.routes:
            for stop in route.stops():
                planned.update(stop.parcels_delivered)
        in_transit = request.ready_at if request is not None else {}
        for pid in planned:
            rec = self._parcels.get(pid)
            if rec is not None:
                # a line haul still brings it to its station: the last mile waits for it
                lh = rec.line_haul_van if pid in in_transit else None
                self._set_parcel(rec, line_haul_van=lh, last_mile_van=None)
        self._assign_parcels(plan, replan_id)
        # parcels that ended (delivered, failed, location unknown, cancelled) while the re-plan
        # was made: no van is sent to load or hand over one of them
        ended = {
            pid
            for pid in planned
            if (rec := self._parcels.get(pid)) is not None and rec.status in TERMINAL_STATUSES
        }
        to_epoch = local_to_epoch(self._day, self._timezone)
        routed = {r.van_id for r in plan.routes if r.trips}
        for route in plan.routes:
            if not route.trips:
                continue
            v = self._van(route.van_id)
            if not v.rec.in_service:
                self._event(
                    "replan_route_ignored",
                    now_s,
                    van_id=v.van_id,
                    detail=f"{replan_id} gave a route to a van out of service",
                )
                continue
            if v.active and v.order is not None:
                base = base_path(v.order)
                tail = route_path(
                    route,
                    to_epoch,
                    top_speed_mps=self.van_spec.top_speed_mps,
                    after=base.nodes[-1],
                    door_work_s=self._door_work_s,
                    van=self.van_spec,
                )
                self._replace_horizon(v, _without(tail, ended), replan_id, now_s)
            else:
                path = route_path(
                    route,
                    to_epoch,
                    top_speed_mps=self.van_spec.top_speed_mps,
                    door_work_s=self._door_work_s,
                    van=self.van_spec,
                )
                self._new_order(v, replan_id, _without(path, ended), replan_id, now_s)
        for v in self._vans.values():
            if v.van_id not in routed and v.active and v.rec.in_service and v.order is not None:
                self._replace_horizon(v, None, replan_id, now_s)
            if v.rec.replan_cause:
                self._set(v, replan_cause="")
        in_bases: set[str] = set()
        for v in self._vans.values():
            if self._drives_base(v):
                in_bases |= self._base_parcels(v)
        unreachable = request.unreachable if request is not None else frozenset()
        heard = {
            van_id
            for van_id in unreachable
            if (w := self._vans.get(van_id)) is not None and w.state is not None
        }
        self._wait_for_vans = set()
        for u in plan.unserved:
            rec = self._parcels.get(u.parcel_id)
            if rec is None or rec.status in TERMINAL_STATUSES:
                continue
            if (
                rec.source == "urgent"
                and u.parcel_id not in in_bases
                and u.parcel_id not in self._urgent_unmet
            ):
                # an urgent order the first re-plan after it arrived could not meet: said at
                # once, with the planner's reason and (in its sentence) the earliest time
                self._urgent_unmet.add(u.parcel_id)
                self._event(
                    "urgent_unmet",
                    now_s,
                    parcel_id=u.parcel_id,
                    detail=f"{u.reason.value}: {u.detail}",
                    reason=u.reason.value,
                )
            holder = self._vans.get(rec.holder or "")
            if u.parcel_id in in_bases:  # a released stop handles it: the van reports it
                self._set_parcel(rec, detail=f"released to a van; re-plan: {u.reason.value}")
            elif rec.status is ParcelStatus.LOADED and holder is not None and holder.rec.in_service:
                self._set_parcel(rec, detail=f"on board of {rec.holder}; re-plan: {u.reason.value}")
            elif u.parcel_id in planned:
                # a line haul of this plan still brings it to its station, where no last-mile
                # van takes it today: it stays planned (the van loads and unloads it), and the
                # next re-plan tries again
                self._set_parcel(rec, detail=f"re-plan: {u.reason.value}: {u.detail}")
            elif heard:
                # vans that were only out of reach were counted out: not given up, planned
                # again when they report
                self._set_parcel(
                    rec,
                    detail=f"re-plan: {u.reason.value}: {u.detail}; planned again when "
                    f"{', '.join(sorted(heard)[:5])} report(s) again",
                )
                self._wait_for_vans.add(u.parcel_id)
            else:
                self._set_parcel(
                    rec,
                    status=ParcelStatus.UNSERVED,
                    detail=f"re-plan: {u.reason.value}: {u.detail}",
                )
                self._event(
                    "parcel_unserved",
                    now_s,
                    parcel_id=u.parcel_id,
                    detail=f"{u.reason.value}: {u.detail}",
                )
        self._counted_out = {
            van_id
            for van_id in unreachable
            if (w := self._vans.get(van_id)) is None or not self._available(w, now_s)
        }
        back = [
            van_id
            for van_id in sorted(unreachable - self._counted_out)
            if (w := self._vans.get(van_id)) is not None and self._wanted_again(w)
        ]
        if back:  # reachable again while the re-plan was being made
            self._replan_waiting.append(f"{', '.join(back[:5])}: available again")
        self._event(
            "replan_applied",
            now_s,
            detail=f"{len(routed)} vans, {len(planned)} parcels planned, "
            f"{len(plan.unserved)} unserved",
            replan=replan_id,
        )
        self._resume_releases(now_s)
        self._next_replan(now_s)

    def _resume_releases(self, now_s: float) -> None:
        """Bases were held still while a re-plan was being made: release them again."""
        for v in self._vans.values():
            if v.active and v.rec.in_service:
                self._release(v, now_s, force=False)

    def replan_failed(self, replan_id: str, error: str, now_s: float) -> None:
        if replan_id != self._replan_in_flight:
            return
        self._replan_in_flight = None
        self._inflight_request = None
        self._replan_failed(replan_id, error, now_s)

    def replan_not_applied(self, replan_id: str, error: str, now_s: float) -> None:
        """:meth:`replan_done` raised on this re-plan: it failed, as an event, and the
        re-plans queued behind it go ahead (one bad plan never blocks the others)."""
        if replan_id == self._replan_in_flight:
            self._replan_in_flight = None
            self._inflight_request = None
        self._replan_failed(replan_id, error, now_s)

    def _replan_failed(self, replan_id: str, error: str, now_s: float) -> None:
        self.counters["replans_failed"] += 1
        self._event("replan_failed", now_s, detail=error[:2000], replan=replan_id)
        self._resume_releases(now_s)
        self._next_replan(now_s)

    def _next_replan(self, now_s: float) -> None:
        if self._replan_waiting:
            causes, self._replan_waiting = self._replan_waiting, []
            self._start_replan("; ".join(causes), now_s)

    # ------------------------------------------------------------------ queries
    def latest_orders(self, van_ids: Sequence[str]) -> list[Order]:
        """The latest order (update) built for each of these vans that holds one."""
        unknown = [w for w in van_ids if not self.knows_van(w)]
        if unknown:
            raise ControlError(f"unknown van(s): {', '.join(unknown[:10])}")
        found = (self._vans.get(w) for w in van_ids)
        return [v.rec.order for v in found if v is not None and v.rec.order is not None]

    def status(self, van_ids: Sequence[str], now_s: float) -> StatusResult:
        wanted = list(van_ids) or sorted(set(self.roster) | set(self._vans))
        unknown = [w for w in wanted if not self.knows_van(w)]
        if unknown:
            raise ControlError(f"unknown van(s): {', '.join(unknown[:10])}")
        by_status = Counter(r.status.value for r in self._parcels.values())
        return StatusResult(
            vans=tuple(self._van_status(w, now_s) for w in wanted),
            parcels_by_status=dict(by_status),
            counters={**self.counters, **self._lag.summary_ms()},
        )

    def _van_status(self, van_id: str, now_s: float) -> VanStatus:
        v = self._vans.get(van_id)
        if v is None:
            return VanStatus(van_id=van_id, mode=VanMode.UNKNOWN, in_service=True)
        s, r, order = v.state, v.rec, v.rec.order
        current = nxt = ""
        eta: str | None = None
        if order is not None and not r.cancelled:
            idx = -1 if r.reached_seq is None else r.reached_seq // 2
            if 0 <= idx < len(order.nodes):
                current = _stop_name(order.nodes[idx])
            if 0 <= idx + 1 < len(order.nodes):
                node = order.nodes[idx + 1]
                nxt = _stop_name(node)
                if node.planned_arrival:
                    eta_s = max(now_s, parse_timestamp(node.planned_arrival) + r.lateness_s)
                    eta = format_timestamp(eta_s)
        mode, reason = self._mode(v, now_s)
        return VanStatus(
            van_id=van_id,
            mode=mode,
            mode_reason=reason[:500],
            in_service=r.in_service,
            lon=s.position.lon if s and s.position else None,
            lat=s.position.lat if s and s.position else None,
            speed_mps=s.speed_mps if s else 0.0,
            soc_pct=s.battery.soc_pct if s else None,
            remaining_range_m=s.battery.remaining_range_m if s else None,
            load_kg=s.load.load_kg if s else 0.0,
            volume_m3=s.load.volume_m3 if s else 0.0,
            parcels_on_board=len(s.load.parcel_ids) if s else 0,
            order_id=order.order_id if order else None,
            order_update_id=order.order_update_id if order else None,
            order_confirmed=r.confirmed,
            current_stop=current,
            next_stop=nxt,
            next_eta=eta,
            last_seen=format_timestamp(v.seen_s) if v.seen_s is not None else None,
            errors=tuple(
                f"{e.level.value} {e.error_type}: {e.description}"[:500] for e in s.errors[:64]
            )
            if s
            else (),
        )

    def _mode(self, v: _Van, now_s: float) -> tuple[VanMode, str]:
        """The van's mode for ``fleet status``, and why where it is not plain."""
        r, s = v.rec, v.state
        estop = self._estop_pending(v)
        if estop is not None:
            # sent, not confirmed: never shown as stopped (nor paused) until the van says so
            age = now_s - estop.first_sent_s
            if estop.refused:
                return VanMode.ESTOP_SENT, f"refused by the van: {estop.refused}; re-sending"
            return VanMode.ESTOP_SENT, f"sent {age:.1f} s ago, not confirmed yet"
        if r.connection in OFFLINE_STATES:
            return VanMode.OFFLINE, f"{r.connection} for {now_s - r.connection_since_s:.0f} s"
        if s is None:
            return VanMode.UNKNOWN, "never reported a state"
        if v.seen_s is not None and v.seen_s < self._listening_since_s:
            # restored from the store, or heard before the broker link was lost: what the van
            # did meanwhile is not known, so its last state is not shown as live
            return VanMode.STALE, (
                f"not heard since the controller started listening "
                f"{now_s - self._listening_since_s:.0f} s ago; its last state is "
                f"{now_s - v.seen_s:.0f} s old"
            )
        stale = self._not_live(v, now_s)
        if stale:
            return VanMode.STALE, stale
        if r.fatal:
            fatal = [e for e in s.errors if e.level is ErrorLevel.FATAL]
            return VanMode.ERROR, "; ".join(f"{e.error_type}: {e.description}" for e in fatal)
        if s.emergency_stop:
            return VanMode.ESTOPPED, ""
        if s.paused:
            return VanMode.PAUSED, ""
        if s.battery.charging:
            return VanMode.CHARGING, ""
        if s.driving:
            return VanMode.DRIVING, ""
        if v.active:
            return VanMode.AT_STOP, v.held
        if r.order is None and s.order_id is not None and s.node_states:
            # another store's order: standing at the end of its released base, not idle
            return VanMode.AT_STOP, (
                f"holds order {s.order_id}, unknown to this controller (a lost or older "
                f"store): it stops after its released base with {len(s.load.parcel_ids)} "
                "parcel(s) aboard"
            )
        return VanMode.IDLE, ""

    def _not_live(self, v: _Van, now_s: float) -> str:
        """Why ``v``'s latest state may not be taken as live ("" when it may): the van is
        silent, or its state says the VCU link is lost or its telemetry is stale (C5)."""
        if v.state is None or v.seen_s is None:
            return "no state yet"
        heard_s = max(v.seen_s, self._listening_since_s)
        if v.stale or now_s - heard_s > self.config.stale_after_s:
            return f"silent for {now_s - v.seen_s:.0f} s"
        made_s = parse_timestamp(v.state.header.timestamp)
        if v.seen_s >= self._listening_since_s and now_s - made_s > self.config.stale_after_s:
            # it arrived late (a slow or congested link): its data is as old as its stamp
            return f"its latest state was made {now_s - made_s:.0f} s ago (it arrived late)"
        for e in v.state.errors:
            if e.error_type in STALE_DATA_ERRORS:
                refs = {r.key: r.value for r in e.references}
                age = refs.get("telemetry_age_s")
                return (
                    f"{e.error_type}"
                    + (f" (telemetry {age} s old)" if age else "")
                    + (f": {e.description}" if e.description else "")
                )
        return ""

    def _estop_pending(self, v: _Van) -> PendingInstant | None:
        for p in v.rec.pending_instants:
            if _urgent(p.message):
                return p
        return None

    def parcel(self, parcel_id: str) -> ParcelRecord | None:
        return self._parcels.get(parcel_id)

    def van_record(self, van_id: str) -> VanRecord | None:
        v = self._vans.get(van_id)
        return v.rec if v else None


class LagMeter:
    """How late van states are processed (arrival minus the van's stamp), over the last
    ``size`` states, the worst since start, and how many since start were processed more
    than ``late_s`` late (a whole-run figure: the load benchmark's keeps-up test)."""

    def __init__(self, size: int = 4096, late_s: float = 1.0) -> None:
        self._recent: deque[float] = deque(maxlen=size)
        self.max_s = 0.0
        self.late_s = late_s
        self.late = 0

    def record(self, lag_s: float) -> None:
        self._recent.append(lag_s)
        if lag_s > self.max_s:
            self.max_s = lag_s
        if lag_s > self.late_s:
            self.late += 1

    def summary_ms(self) -> dict[str, int]:
        if not self._recent:
            return {}
        ordered = sorted(self._recent)

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return {
            "state_lag_p50_ms": round(at(0.50) * 1000),
            "state_lag_p99_ms": round(at(0.99) * 1000),
            "state_lag_max_ms": round(self.max_s * 1000),
            f"states_late_{self.late_s:g}s": self.late,
        }


def _without(path: RoutePath, parcel_ids: set[str]) -> RoutePath:
    """``path`` with no action on any of ``parcel_ids`` (a node keeps its charge)."""
    if not parcel_ids:
        return path
    nodes = []
    for node in path.nodes:
        if not any(p in parcel_ids for a in node.actions for p in a.parcel_ids):
            nodes.append(node)
            continue
        actions = tuple(
            a.model_copy(
                update={"parcel_ids": tuple(p for p in a.parcel_ids if p not in parcel_ids)}
            )
            for a in node.actions
        )
        actions = tuple(
            a for a in actions if a.parcel_ids or a.action_type is NodeActionType.CHARGE
        )
        nodes.append(node.model_copy(update={"actions": actions}))
    return RoutePath(tuple(nodes), path.edges)


# Instant actions that only make a van safer: never given up (docs/safety.md).
_NEVER_GIVEN_UP = frozenset(
    {
        InstantActionType.EMERGENCY_STOP,
        InstantActionType.PAUSE,
        InstantActionType.CANCEL_ORDER,
    }
)


def _urgent(message: InstantActions) -> bool:
    return any(a.action_type is InstantActionType.EMERGENCY_STOP for a in message.actions)


def _moves_parcels(node: Node) -> bool:
    return any(a.action_type is not NodeActionType.CHARGE for a in node.actions)


_DERIVED_ID = re.compile(r"(.*)\.([a-z])(\d+)")


def _derived_order_id(order_id: str, kind: str) -> str:
    """``P-abc.r1`` for the first recovery (``kind`` "r") or return (``kind`` "h") order made
    from ``P-abc``, ``P-abc.r2`` for the next; at most 64 characters."""
    base, n = order_id, 1
    found = _DERIVED_ID.fullmatch(order_id)
    if found is not None:
        base, n = found.group(1), int(found.group(3)) + 1
    suffix = f".{kind}{n}"
    return base[: 64 - len(suffix)] + suffix


_KIND_IN_TEXT = re.compile(r"(?:^|/)(order|instant)\b")


def _refused_kind(description: str, topics: Sequence[str]) -> str:
    """``order`` or ``instant``: the kind of command a refusal that names none is about."""
    for topic in topics:
        last = topic.rsplit("/", 1)[-1]
        if last in ("order", "instant"):
            return last
    found = _KIND_IN_TEXT.search(description)
    return found.group(1) if found else ""


def _stop_name(node: Node) -> str:
    """``ST-CENTRO`` for a depot or station, ``door n5`` for a door (n5: its node id)."""
    return node.ref or f"{node.kind.value} {node.node_id}"
