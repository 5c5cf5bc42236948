"""The controller's own topics: dispatcher requests, replies, and the event stream.

The ``fleet`` CLI reaches a running controller through the broker (it may run on another
machine): it subscribes to ``.../controller/reply/{client_id}``, publishes a :class:`Request`
on ``.../controller/request`` at QoS 1, and waits for the :class:`Reply` with the same
``request_id``. Requests are idempotent by ``request_id`` where it matters (a re-sent
dispatch of the same plan is recognised by the plan's content hash, not applied twice).
Every event the controller records is also published on ``.../controller/events``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, JsonValue, StringConstraints, field_validator

from fleet.identifiers import MAX_JSON_DEPTH, MAX_ORDERS_BYTES
from fleet.protocol.messages import (
    MAX_TEXT,
    Header,
    Ident,
    InstantActionType,
    Lat,
    Lon,
    Order,
    ParcelIdStr,
    Strict,
    Text,
    Timestamp,
    VanIdStr,
)
from fleet.protocol.topics import CLIENT_ID_PATTERN

ClientId = Annotated[str, StringConstraints(pattern=CLIENT_ID_PATTERN)]
MAX_LISTED = 10_000  # vans, parcels or events named in one request or reply
MAX_CSV_CHARS = MAX_ORDERS_BYTES  # an orders file a request carries (docs/limits.md)
MAX_EVENT_ID = 2**63 - 1  # event ids are SQLite integers

Scalar = str | int | float | bool | None


# -- requests -------------------------------------------------------------------------------
class DispatchBody(Strict):
    """Hand a plan to the controller; it verifies it and sends each van its order."""

    command: Literal["dispatch"] = "dispatch"
    plan: dict[str, JsonValue] = Field(description="The plan.json document (docs/plan.md).")
    orders_csv: Annotated[str, StringConstraints(max_length=MAX_CSV_CHARS)] = Field(
        description="The orders file the plan was made from (verification needs the parcels)."
    )
    orders_name: Annotated[str, StringConstraints(max_length=255)] = "orders.csv"

    @field_validator("plan")
    @classmethod
    def _finite(cls, plan: dict[str, JsonValue]) -> dict[str, JsonValue]:
        """Numbers in the plan are finite like everywhere else (JSON has no NaN), whole
        numbers fit 64 bits, and it nests at most ``MAX_JSON_DEPTH`` deep (docs/limits.md)."""
        stack: list[tuple[JsonValue, int]] = [(plan, 1)]
        while stack:
            value, depth = stack.pop()
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"the plan holds a non-finite number ({value})")
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise ValueError("the plan holds a whole number beyond ±2**63")
            if isinstance(value, dict | list):
                if depth > MAX_JSON_DEPTH:
                    raise ValueError(f"the plan nests deeper than {MAX_JSON_DEPTH}")
                items = value.values() if isinstance(value, dict) else value
                stack.extend((v, depth + 1) for v in items)
        return plan


class AddParcelsBody(Strict):
    """Urgent parcels added during the day: re-planned onto the running fleet."""

    command: Literal["add_parcels"] = "add_parcels"
    orders_csv: Annotated[str, StringConstraints(max_length=MAX_CSV_CHARS)]
    orders_name: Annotated[str, StringConstraints(max_length=255)] = "urgent.csv"


class StatusBody(Strict):
    command: Literal["status"] = "status"
    van_ids: tuple[VanIdStr, ...] = Field(default=(), max_length=MAX_LISTED)  # () = all


class CancelParcelsBody(Strict):
    command: Literal["cancel_parcels"] = "cancel_parcels"
    parcel_ids: tuple[ParcelIdStr, ...] = Field(min_length=1, max_length=MAX_LISTED)


class CancelVansBody(Strict):
    """Cancel each van's order and re-plan its undelivered parcels onto the others."""

    command: Literal["cancel_vans"] = "cancel_vans"
    van_ids: tuple[VanIdStr, ...] = Field(min_length=1, max_length=MAX_LISTED)


class ReplanBody(Strict):
    """Re-plan what is not yet in a van's released base, from the fleet as it is now."""

    command: Literal["replan"] = "replan"
    reason: str = Field(default="", max_length=500, description="Why: kept in the event log.")


class InstantBody(Strict):
    """Pause, resume or emergency-stop vans (or every known van with ``all_vans``)."""

    command: Literal["instant"] = "instant"
    action: InstantActionType
    van_ids: tuple[VanIdStr, ...] = Field(default=(), max_length=MAX_LISTED)
    all_vans: bool = False


class AcknowledgeBody(Strict):
    """A dispatcher acknowledged an alert (a console's): kept in the event log as
    ``alert_acknowledged``, so every console shows it and a restarted one still does."""

    command: Literal["acknowledge"] = "acknowledge"
    alert: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,40}$")] = Field(
        description="The alert's kind (breakdown, low_charge, link_lost, estop, ...)."
    )
    van_id: VanIdStr | None = None
    parcel_id: ParcelIdStr | None = None
    by: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="Who acknowledged it (the console user)."
    )


MAX_ORDERS_ASKED = 16  # an order is at most 1 MiB: a reply of these stays far below its bound


class OrdersBody(Strict):
    """The latest order (update) the controller sent each of these vans: what a console that
    started mid-day draws as the van's route until the next update."""

    command: Literal["orders"] = "orders"
    van_ids: tuple[VanIdStr, ...] = Field(min_length=1, max_length=MAX_ORDERS_ASKED)


class EventsBody(Strict):
    command: Literal["events"] = "events"
    after_id: int = Field(
        default=0, ge=0, le=MAX_EVENT_ID, description="Return events with a larger id."
    )
    limit: int = Field(default=100, ge=1, le=MAX_LISTED)
    van_id: VanIdStr | None = None
    parcel_id: ParcelIdStr | None = None


RequestBody = Annotated[
    DispatchBody
    | AddParcelsBody
    | StatusBody
    | CancelParcelsBody
    | CancelVansBody
    | ReplanBody
    | InstantBody
    | AcknowledgeBody
    | OrdersBody
    | EventsBody,
    Field(discriminator="command"),
]


class Request(Strict):
    header: Header
    request_id: Ident
    client_id: ClientId = Field(description="The reply goes to .../controller/reply/{client_id}.")
    body: RequestBody


# -- replies --------------------------------------------------------------------------------
class VanMode(StrEnum):
    UNKNOWN = "unknown"  # in a plan, never heard from
    IDLE = "idle"
    DRIVING = "driving"
    AT_STOP = "at_stop"
    PAUSED = "paused"  # paused
    ESTOP_SENT = "estop_sent"  # an emergency stop was sent and the van has not confirmed it
    ESTOPPED = "estopped"  # the van reports its emergency stop latched
    CHARGING = "charging"
    ERROR = "error"  # a fatal error: out of service until cleared
    # its data is not live: silent for longer than the configured time, or its state says
    # the VCU link is lost or the VCU's telemetry is stale (``mode_reason`` says which)
    STALE = "stale"
    OFFLINE = "offline"  # its connection said OFFLINE or the broker fired its last will


class VanStatus(Strict):
    van_id: VanIdStr
    mode: VanMode
    mode_reason: Text = Field(
        default="", description="Why the van is in this mode (stale, offline, error, e-stop)."
    )
    in_service: bool
    lon: Lon | None = None
    lat: Lat | None = None
    speed_mps: float = Field(default=0.0, ge=0.0)
    soc_pct: float | None = Field(default=None, ge=0.0, le=100.0)
    remaining_range_m: float | None = Field(default=None, ge=0.0)
    load_kg: float = Field(default=0.0, ge=0.0)
    volume_m3: float = Field(default=0.0, ge=0.0)
    parcels_on_board: int = Field(default=0, ge=0)
    order_id: Ident | None = None
    order_update_id: int | None = None
    order_confirmed: bool = False
    current_stop: Annotated[str, StringConstraints(max_length=200)] = ""
    next_stop: Annotated[str, StringConstraints(max_length=200)] = ""
    next_eta: Timestamp | None = None
    last_seen: Timestamp | None = None
    errors: tuple[Text, ...] = Field(default=(), max_length=64)


class StatusResult(Strict):
    kind: Literal["status"] = "status"
    vans: tuple[VanStatus, ...] = Field(max_length=MAX_LISTED)
    parcels_by_status: dict[Annotated[str, StringConstraints(max_length=32)], int]
    counters: dict[Annotated[str, StringConstraints(max_length=64)], int] = Field(
        description="Messages received, rejected by reason, throttled, re-plans, ..."
    )


class Event(Strict):
    """One entry of the controller's append-only event log."""

    header: Header
    event_id: int = Field(ge=1)
    time: Timestamp
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,40}$")]
    van_id: VanIdStr | None = None
    parcel_id: ParcelIdStr | None = None
    detail: Annotated[str, StringConstraints(max_length=4 * MAX_TEXT)] = ""
    data: dict[Annotated[str, StringConstraints(max_length=64)], Scalar] = Field(
        default_factory=dict, max_length=64
    )


class EventsResult(Strict):
    kind: Literal["events"] = "events"
    events: tuple[Event, ...] = Field(max_length=MAX_LISTED)


class CommandResult(Strict):
    """What a dispatch, cancel, pause, resume, estop or add_parcels did."""

    kind: Literal["command"] = "command"
    message: Annotated[str, StringConstraints(max_length=4 * MAX_TEXT)]
    affected: tuple[Annotated[str, StringConstraints(max_length=64)], ...] = Field(
        default=(), max_length=MAX_LISTED
    )


class OrdersResult(Strict):
    kind: Literal["orders"] = "orders"
    orders: tuple[Order, ...] = Field(
        max_length=MAX_ORDERS_ASKED, description="One per van asked that holds an order."
    )


ReplyResult = Annotated[
    StatusResult | EventsResult | CommandResult | OrdersResult, Field(discriminator="kind")
]


class Reply(Strict):
    header: Header
    request_id: Ident
    ok: bool
    error: Annotated[str, StringConstraints(max_length=64 * MAX_TEXT)] = ""
    result: ReplyResult | None = None
