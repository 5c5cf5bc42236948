"""Messages between the controller and the vans (protocol v1; ``docs/protocol.md``).

Every model is strict: unknown keys, wrong types, non-finite numbers, over-long strings and
over-long lists are refused. Units are in the field names. Positions are WGS84 ``lon``/``lat``
in degrees; times on the wire are RFC 3339 UTC strings (:mod:`fleet.protocol.timestamps`).

An :class:`Order` is a VDA 5050 order adapted to vans: nodes (stops) and edges (road legs)
alternate, nodes have even ``sequence_id`` (0, 2, 4, ...) and edges odd ones; the *released
base* is a prefix of nodes and edges the van may drive, the rest is the *horizon* it may only
plan with. Every update carries the whole order (see ``docs/protocol.md`` for why).
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from fleet.protocol.timestamps import TIMESTAMP_PATTERN, format_timestamp, parse_timestamp
from fleet.protocol.topics import VAN_ID_PATTERN

PROTOCOL_VERSION = "1.0"
PROTOCOL_MAJOR = 1
VERSION_PATTERN = r"^1\.\d{1,3}$"

# -- bounds (documented in docs/protocol.md, "Limits") -------------------------------------
MAX_ORDER_NODES = 2000
MAX_ACTIONS_PER_NODE = 16
MAX_PARCELS_PER_ACTION = 1000
MAX_TRAJECTORY_POINTS = 20_000
MAX_INSTANT_ACTIONS = 8
MAX_STATE_ITEMS = 4000  # node/edge/action states in one State
MAX_PARCELS_ON_BOARD = 2000
# An order must fit what a State can report about it: every action of the order in
# action_states (with room left for recent instant actions) and every parcel it loads on board.
MAX_ORDER_ACTIONS = 3000
MAX_ORDER_PARCELS_LOADED = MAX_PARCELS_ON_BOARD
MAX_ERRORS = 64
MAX_SPEED_MPS = 40.0  # sanity bound for a speed cap; the van's own limit is lower
MAX_TEXT = 500

Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
VanIdStr = Annotated[str, StringConstraints(pattern=VAN_ID_PATTERN)]
# printable ASCII, no leading/trailing space, 1..64 characters
ParcelIdStr = Annotated[str, StringConstraints(pattern=r"^[!-~]([ -~]{0,62}[!-~])?$")]


def _real_moment(text: str) -> str:
    parse_timestamp(text)  # ValueError names the text: 2026-11-31, month 13, hour 99 ...
    return text


Timestamp = Annotated[
    str, StringConstraints(pattern=TIMESTAMP_PATTERN), AfterValidator(_real_moment)
]
Version = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]
Lon = Annotated[float, Field(ge=-180.0, le=180.0)]
Lat = Annotated[float, Field(ge=-90.0, le=90.0)]
MAX_MESSAGE_ID = 2**53 - 1  # the largest integer every JSON reader (an IEEE double) holds exactly
MessageId = Annotated[int, Field(ge=0, le=MAX_MESSAGE_ID)]


class Strict(BaseModel):
    """Base of every wire model: frozen, strict, no unknown keys, finite numbers."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, allow_inf_nan=False, use_enum_values=False
    )


class Header(Strict):
    """Carried by every message."""

    message_id: MessageId = Field(
        description="Strictly increasing per sender and topic; for commands it is the "
        "signed anti-replay counter."
    )
    timestamp: Timestamp = Field(description="When the message was made, UTC.")
    version: Version = Field(description="Protocol version major.minor; this is 1.x.")
    sender: Ident = Field(description="Who sent it: the van id, or the controller's name.")


def make_header(sender: str, message_id: int, now_s: float) -> Header:
    """A header stamped ``now_s`` (epoch seconds from the caller's clock)."""
    return Header(
        message_id=message_id,
        timestamp=format_timestamp(now_s),
        version=PROTOCOL_VERSION,
        sender=sender,
    )


class Signature(Strict):
    """HMAC-SHA256 over the message's canonical bytes (``fleet.protocol.signing``)."""

    alg: Literal["HMAC-SHA256"] = "HMAC-SHA256"
    key_id: Ident = Field(description="Which of the van's keys signed it (key rotation).")
    mac: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="Lower-case hex of the 32-byte HMAC."
    )


# ---------------------------------------------------------------------------------------
# Order
# ---------------------------------------------------------------------------------------
class StopKind(StrEnum):
    DEPOT = "depot"
    STATION = "station"
    DOOR = "door"
    CHARGE = "charge"
    START = "start"  # where the van was when a re-plan began (first node of such an order)
    TRANSFER = "transfer"  # a rescue: where a broken-down van stands (``ref``: its van id)


class NodeActionType(StrEnum):
    LOAD = "load"  # take parcels on board at a depot
    UNLOAD = "unload"  # leg 1: hand a station its consignment
    DELIVER = "deliver"  # leg 2: hand parcels over at a door
    CHARGE = "charge"  # charge to target_soc_pct
    TRANSFER_LOAD = "transfer_load"  # take parcels over from the van ``ref`` at a transfer node


class NodeAction(Strict):
    action_id: Ident
    action_type: NodeActionType
    parcel_ids: tuple[ParcelIdStr, ...] = Field(default=(), max_length=MAX_PARCELS_PER_ACTION)
    duration_s: float = Field(ge=0.0, le=86_400.0, description="Planned time for the action.")
    target_soc_pct: float | None = Field(default=None, ge=0.0, le=100.0)


class Node(Strict):
    """A stop."""

    node_id: Ident
    sequence_id: int = Field(ge=0, le=2 * MAX_ORDER_NODES)
    released: bool
    kind: StopKind
    ref: Annotated[str, StringConstraints(max_length=64)] = Field(
        default="",
        description="Depot or station id for depot, station and charge stops; the van a "
        "transfer stop loads from.",
    )
    lon: Lon
    lat: Lat
    allowed_deviation_m: float = Field(default=25.0, ge=0.0, le=1000.0)
    planned_arrival: Timestamp | None = None
    planned_departure: Timestamp | None = None
    actions: tuple[NodeAction, ...] = Field(default=(), max_length=MAX_ACTIONS_PER_NODE)


class Edge(Strict):
    """The road between two consecutive stops."""

    edge_id: Ident
    sequence_id: int = Field(ge=1, le=2 * MAX_ORDER_NODES)
    released: bool
    start_node_id: Ident
    end_node_id: Ident
    length_m: float = Field(ge=0.0, le=1_000_000.0)
    max_speed_mps: float = Field(gt=0.0, le=MAX_SPEED_MPS)
    trajectory: tuple[tuple[Lon, Lat], ...] = Field(
        default=(),
        max_length=MAX_TRAJECTORY_POINTS,
        description="Road geometry as [lon, lat] points; at least two on a released edge.",
    )


class Order(Strict):
    """Stops and roads for one van; ``order_update_id`` rises with each update."""

    header: Header
    van_id: VanIdStr
    order_id: Ident
    order_update_id: int = Field(ge=0, le=2**31)
    nodes: tuple[Node, ...] = Field(min_length=1, max_length=MAX_ORDER_NODES)
    edges: tuple[Edge, ...] = Field(default=(), max_length=MAX_ORDER_NODES - 1)
    signature: Signature | None = None

    @model_validator(mode="after")
    def _well_formed(self) -> Order:
        problems = order_structure_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def base_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.released)

    @property
    def last_sequence_id(self) -> int:
        return self.nodes[-1].sequence_id

    @property
    def base_last_sequence_id(self) -> int:
        return max(n.sequence_id for n in self.nodes if n.released)

    def same_content(self, other: Order) -> bool:
        """Equal apart from header and signature (a re-sent copy of the same update)."""
        return (
            self.van_id == other.van_id
            and self.order_id == other.order_id
            and self.order_update_id == other.order_update_id
            and self.nodes == other.nodes
            and self.edges == other.edges
        )


def order_structure_problems(order: Order) -> list[str]:
    """Everything wrong with how nodes and edges fit together; [] when well formed."""
    problems: list[str] = []
    nodes, edges = order.nodes, order.edges
    if len(edges) != len(nodes) - 1:
        problems.append(f"{len(nodes)} nodes need {len(nodes) - 1} edges, got {len(edges)}")
        return problems
    for i, node in enumerate(nodes):
        if node.sequence_id != 2 * i:
            problems.append(f"nodes[{i}].sequence_id must be {2 * i}, got {node.sequence_id}")
    for i, edge in enumerate(edges):
        if edge.sequence_id != 2 * i + 1:
            problems.append(f"edges[{i}].sequence_id must be {2 * i + 1}, got {edge.sequence_id}")
        if edge.start_node_id != nodes[i].node_id or edge.end_node_id != nodes[i + 1].node_id:
            problems.append(
                f"edges[{i}] must join {nodes[i].node_id!r} to {nodes[i + 1].node_id!r}, "
                f"got {edge.start_node_id!r} → {edge.end_node_id!r}"
            )
        if edge.released != nodes[i + 1].released:
            problems.append(f"edges[{i}].released must equal nodes[{i + 1}].released")
        if edge.released and len(edge.trajectory) < 2:
            problems.append(f"edges[{i}] is released but has fewer than 2 trajectory points")
    if not nodes[0].released:
        problems.append("nodes[0] must be released (the base is never empty)")
    horizon_from = next((i for i, n in enumerate(nodes) if not n.released), len(nodes))
    if any(n.released for n in nodes[horizon_from:]):
        problems.append("released nodes must form a prefix (base first, then horizon)")
    actions = [a for n in nodes for a in n.actions]
    for what, ids in (
        ("node_id", [n.node_id for n in nodes]),
        ("edge_id", [e.edge_id for e in edges]),
        ("action_id", [a.action_id for a in actions]),
    ):
        dups = [i for i, count in Counter(ids).items() if count > 1]
        if dups:
            problems.append(f"{what} {dups[0]!r} appears more than once")
    if len(actions) > MAX_ORDER_ACTIONS:
        problems.append(
            f"{len(actions)} actions in all; at most {MAX_ORDER_ACTIONS} (a state must list them)"
        )
    for i, node in enumerate(nodes):
        for a in node.actions:
            if (a.action_type is NodeActionType.TRANSFER_LOAD) != (node.kind is StopKind.TRANSFER):
                problems.append(
                    f"nodes[{i}]: a transfer_load action belongs to a transfer node, and a "
                    "transfer node has no other action"
                )
        if node.kind is StopKind.TRANSFER and not node.ref:
            problems.append(f"nodes[{i}]: a transfer node names the van it loads from in ref")
    loading = (NodeActionType.LOAD, NodeActionType.TRANSFER_LOAD)
    loaded = {p for a in actions if a.action_type in loading for p in a.parcel_ids}
    if len(loaded) > MAX_ORDER_PARCELS_LOADED:
        problems.append(
            f"{len(loaded)} parcels loaded in all; at most {MAX_ORDER_PARCELS_LOADED} "
            "(a state must list what is on board)"
        )
    return problems


# ---------------------------------------------------------------------------------------
# Instant actions
# ---------------------------------------------------------------------------------------
class InstantActionType(StrEnum):
    PAUSE = "pause"  # stop at the next safe place, keep the order
    RESUME = "resume"  # continue after pause or emergency stop
    CANCEL_ORDER = "cancel_order"  # finish the current edge to a safe stop, drop the order
    EMERGENCY_STOP = "emergency_stop"  # brake now, hazard lights, wait for resume
    OPEN_DOOR = "open_door"
    CLOSE_DOOR = "close_door"


class InstantAction(Strict):
    action_id: Ident
    action_type: InstantActionType
    reason: Text = ""


class InstantActions(Strict):
    header: Header
    van_id: VanIdStr
    actions: tuple[InstantAction, ...] = Field(min_length=1, max_length=MAX_INSTANT_ACTIONS)
    signature: Signature | None = None


# ---------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------
class VanPosition(Strict):
    lon: Lon
    lat: Lat
    heading_deg: float = Field(ge=0.0, lt=360.0, description="Clockwise from north.")


class Battery(Strict):
    soc_pct: float = Field(ge=0.0, le=100.0)
    remaining_range_m: float = Field(ge=0.0, le=10_000_000.0)
    charging: bool = False


class Load(Strict):
    load_kg: float = Field(ge=0.0, le=100_000.0)
    volume_m3: float = Field(ge=0.0, le=1000.0)
    parcel_ids: tuple[ParcelIdStr, ...] = Field(default=(), max_length=MAX_PARCELS_ON_BOARD)


class NodeState(Strict):
    node_id: Ident
    sequence_id: int = Field(ge=0)
    released: bool


class EdgeState(Strict):
    edge_id: Ident
    sequence_id: int = Field(ge=0)
    released: bool


class ActionStatus(StrEnum):
    WAITING = "waiting"
    INITIALIZING = "initializing"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    FAILED = "failed"


class ActionState(Strict):
    action_id: Ident
    action_type: Annotated[str, StringConstraints(max_length=32)] = ""
    status: ActionStatus
    result_description: Text = ""
    failed_parcel_ids: tuple[ParcelIdStr, ...] = Field(
        default=(),
        max_length=MAX_PARCELS_PER_ACTION,
        description="Parcels of a load/unload/deliver action that could not be handed over.",
    )


class ErrorLevel(StrEnum):
    WARNING = "warning"  # the van carries on
    FATAL = "fatal"  # the van cannot finish its order: the controller re-plans


class ErrorReference(Strict):
    key: Ident
    value: Annotated[str, StringConstraints(max_length=200)]


class VanError(Strict):
    error_type: Ident = Field(
        description="e.g. order_update_error, validation_error, signature_error, "
        "vehicle_fault, link_lost, emergency_stop"
    )
    level: ErrorLevel
    description: Text = ""
    references: tuple[ErrorReference, ...] = Field(default=(), max_length=16)


class State(Strict):
    """What a van reports, at 1 Hz while it runs and on every change."""

    header: Header
    van_id: VanIdStr
    order_id: Ident | None = None
    order_update_id: int = Field(default=0, ge=0, le=2**31)
    last_node_id: Ident | None = None
    last_node_sequence_id: int | None = Field(default=None, ge=0)
    node_states: tuple[NodeState, ...] = Field(default=(), max_length=MAX_STATE_ITEMS)
    edge_states: tuple[EdgeState, ...] = Field(default=(), max_length=MAX_STATE_ITEMS)
    driving: bool = False
    paused: bool = False
    emergency_stop: bool = False
    door_open: bool = False
    position: VanPosition | None = None
    speed_mps: float = Field(default=0.0, ge=0.0, le=100.0)
    odometer_m: float = Field(default=0.0, ge=0.0, le=1e10)
    battery: Battery
    load: Load
    action_states: tuple[ActionState, ...] = Field(default=(), max_length=MAX_STATE_ITEMS)
    errors: tuple[VanError, ...] = Field(default=(), max_length=MAX_ERRORS)


# ---------------------------------------------------------------------------------------
# Connection and factsheet
# ---------------------------------------------------------------------------------------
class ConnectionState(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"  # said by the van itself before a clean disconnect
    CONNECTION_BROKEN = "CONNECTION_BROKEN"  # the broker's last will for the van


class Connection(Strict):
    header: Header
    van_id: VanIdStr
    connection_state: ConnectionState


class ControllerConnection(Strict):
    """The controller's own liveness, on ``fleet/v1/controller/connection``."""

    header: Header
    connection_state: ConnectionState


class Factsheet(Strict):
    """What a van is and what it accepts; retained so the controller learns it on subscribe."""

    header: Header
    van_id: VanIdStr
    model: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    firmware_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    protocol_versions: tuple[Version, ...] = Field(min_length=1, max_length=8)
    top_speed_mps: float = Field(gt=0.0, le=MAX_SPEED_MPS)
    payload_kg: float = Field(gt=0.0, le=100_000.0)
    cargo_volume_m3: float = Field(gt=0.0, le=1000.0)
    battery_kwh: float = Field(gt=0.0, le=10_000.0)
    range_m: float = Field(gt=0.0, le=10_000_000.0)
    max_order_nodes: int = Field(ge=2, le=MAX_ORDER_NODES)
    max_order_bytes: int = Field(ge=1024, le=16 * 1024 * 1024)
    instant_actions: tuple[InstantActionType, ...] = Field(min_length=1, max_length=16)
