"""What the store keeps: plain frozen records, written and read whole.

The controller's in-memory state is rebuilt from these after a restart: every parcel with its
status, every van with its latest order (order id, update id, how much is released, whether
the van confirmed it) and flags, the latest state each van reported, and the event log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from fleet.model.parcel import Parcel
from fleet.protocol import InstantActions, Order, State


class ParcelStatus(StrEnum):
    PLANNED = "planned"  # in a dispatched plan, not on a van yet
    LOADED = "loaded"  # on a van (line haul or last mile); ``holder`` says which
    AT_STATION = "at_station"  # the line haul unloaded it at its station
    DELIVERED = "delivered"
    FAILED = "failed"  # a hand-over failed, or it was lost with a van
    CANCELLED = "cancelled"
    UNSERVED = "unserved"  # no plan could serve it (``detail`` says why)


TERMINAL_STATUSES = frozenset(
    {ParcelStatus.DELIVERED, ParcelStatus.FAILED, ParcelStatus.CANCELLED, ParcelStatus.UNSERVED}
)


@dataclass(frozen=True, slots=True)
class ParcelRecord:
    parcel: Parcel
    status: ParcelStatus
    source: str  # the plan or re-plan that last assigned it
    holder: str | None = None  # the van it is on (LOADED) or that delivered it
    line_haul_van: str | None = None  # brings it to its station
    last_mile_van: str | None = None  # takes it to the door
    station: str | None = None  # the station it goes through
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PendingInstant:
    message: InstantActions
    first_sent_s: float
    next_send_s: float
    attempts: int
    refused: str = ""  # the van's reason, when its state listed this command as refused
    overdue: bool = False  # a safer command unconfirmed past ``resend_give_up_s``: still sent


@dataclass(frozen=True, slots=True)
class VanRecord:
    """A van's order book and flags (not its last state: see :class:`VanStateRecord`)."""

    van_id: str
    order: Order | None = None  # the latest order built (nodes/edges; flags as released)
    source: str = ""  # plan or re-plan id the order came from
    released: int = 0  # nodes released; 0 = held back, not sent yet
    sent: bool = False  # order_update_id has been sent at least once
    confirmed: bool = False  # the van's state echoed order_id/order_update_id
    echoed: bool = False  # a state of the van has carried this order_id (any update)
    gave_up: bool = False
    rejected: str = ""  # the van's reason, when it refused the order
    cancelled: bool = False
    finished: bool = False
    first_sent_s: float = 0.0
    order_started_s: float = 0.0  # when the order's first update was sent
    next_send_s: float = 0.0
    attempts: int = 0
    reached_seq: int | None = None
    lateness_s: float = 0.0
    in_service: bool = True
    out_reason: str = ""
    replan_cause: str = ""  # non-empty: this van's parcels wait for a re-plan
    fatal: bool = False
    fatal_since_s: float = 0.0  # when the fatal error began (the grace before it counts)
    connection: str = ""  # last ConnectionState value heard ("" = never)
    connection_since_s: float = 0.0
    pending_instants: tuple[PendingInstant, ...] = ()
    # a dispatcher's cancel (C10): "" (none), "requested", "confirmed" or "unconfirmed"
    cancel_state: str = ""
    cancel_since_s: float = 0.0
    returning: bool = False  # cancelled, its order is the return order home


@dataclass(frozen=True, slots=True)
class VanStateRecord:
    van_id: str
    state: State
    seen_s: float  # epoch seconds (controller clock) it arrived
    # the JSON the state was decoded from, stored as is (b"": the state is encoded instead)
    raw: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class EventRecord:
    kind: str
    time_s: float
    van_id: str | None = None
    parcel_id: str | None = None
    detail: str = ""
    data: dict[str, str | int | float | bool | None] = field(default_factory=dict)
    event_id: int = 0  # assigned by the store


@dataclass(frozen=True, slots=True)
class PlanRecord:
    plan_id: str
    kind: str  # "plan" or "replan"
    cause: str
    created_s: float
    day: str  # ISO date of the plan day
    timezone: str
    document: str  # the plan.json text


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the controller needs to resume."""

    parcels: tuple[ParcelRecord, ...] = ()
    vans: tuple[VanRecord, ...] = ()
    van_states: tuple[VanStateRecord, ...] = ()
    plans: tuple[PlanRecord, ...] = ()  # oldest first
    last_event_id: int = 0


@dataclass(slots=True)
class Changes:
    """One transaction's worth of writes: applied all together or not at all."""

    plans: list[PlanRecord] = field(default_factory=list)
    parcels: dict[str, ParcelRecord] = field(default_factory=dict)
    vans: dict[str, VanRecord] = field(default_factory=dict)
    van_states: dict[str, VanStateRecord] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    orders_sent: list[tuple[str, str, Order]] = field(default_factory=list)  # van, source, order

    def __bool__(self) -> bool:
        return bool(
            self.plans
            or self.parcels
            or self.vans
            or self.van_states
            or self.events
            or self.orders_sent
        )
