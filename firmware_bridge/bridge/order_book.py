"""The van's order book: what a van holds of its order, and the rules it keeps by it.

One copy of these rules, used by the firmware bridge (:class:`~firmware_bridge.bridge.core.
BridgeCore`), the simulator's fast van (:class:`sim.fast.van.FastVan`) and the tests' protocol
van (``tests/support/protocol_van.py``). Pure: no I/O, no clock; whoever holds a book tells it
what happened, and the bridge persists it (:meth:`OrderBook.to_dict`, ``docs/bridge.md``,
"Restarts").

What it keeps (``docs/bridge.md``, "The order book"):

* the **order** and how it takes a new one (:meth:`OrderBook.take_order`:
  :func:`fleet.protocol.decide_order`, VDA 5050 update rules); a new order starts with no
  node reached and none finished, an update replaces the order and keeps the progress;
* **progress**: the last node reached (sequence ids only rise), the nodes *finished* (their
  actions done, once each), and ``progress_wp``: the last waypoint of the released base
  reached, in :func:`~firmware_bridge.bridge.mission.base_waypoints` numbering (what a new
  mission after a restart starts from);
* **parcels on board**: a node's ``load`` adds its parcels when the node finishes,
  ``deliver``/``unload`` remove theirs (a parcel that could not be handed over stays; one the
  book does not list on board is reported failed, ``not aboard``);
* **cancel** (``cancel_order``): the order stays known (a new order_id is then accepted) but
  is no longer driven or reported as progress;
* **instant actions**: each ``action_id`` is applied once (:meth:`OrderBook.apply_instant`
  says whether it is new; a copy of one already applied is confirmed again, not re-applied);
  ``pause`` and ``emergency_stop`` set their latches, and only a ``resume`` clears them;
* the **action states** a State reports: a node's actions are ``waiting`` before the van
  reaches it, ``running`` while it stands there, ``finished`` once the node is finished; an
  action whose outcome is known otherwise (a charge under way, a delivery that failed) says so
  (:meth:`OrderBook.set_action`).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from firmware_bridge.errors import BridgeError
from fleet.protocol import (
    ActionState,
    ActionStatus,
    DecodeError,
    EdgeState,
    InstantActionType,
    Node,
    NodeActionType,
    NodeState,
    Order,
    OrderDecision,
    OrderVerdict,
    decide_order,
    decode,
    encode,
)

FORMAT = "fleet-van-order-book"
FORMAT_VERSION = 1
INSTANT_STATES_KEPT = 32  # instant actions listed in state (the newest)
APPLIED_IDS_KEPT = 1024  # instant action ids remembered as applied (the newest)

# A new order's charge at its first node starts at once when the van stands this close to that
# node, before anything of the order is driven (a re-plan's order for a van at its depot: it
# charges while it waits for the planned departure). 100 m: a depot's position, where a van
# starts its day, can lie tens of metres from the point the plan and its orders use for it
# (its road node, or where the previous order left the van), and a depot is one site; a van
# farther away is not at that charger and drives there first.
AT_FIRST_NODE_M = 100.0
_M_PER_DEG = math.radians(1.0) * 6_371_008.8

# The reason a deliver or unload gives for a parcel its book does not list on board.
NOT_ABOARD = "not aboard: the van's order book does not list it"

_SAFER = frozenset(
    {InstantActionType.EMERGENCY_STOP, InstantActionType.PAUSE, InstantActionType.CANCEL_ORDER}
)


class OrderBookError(BridgeError):
    """A persisted order book cannot be read back (what is wrong, and where, named)."""


def ground_distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Metres between two nearby points (equirectangular: short spans)."""
    dx = (lon2 - lon1) * _M_PER_DEG * math.cos(math.radians((lat1 + lat2) / 2))
    dy = (lat2 - lat1) * _M_PER_DEG
    return math.hypot(dx, dy)


def is_safer(kind: InstantActionType) -> bool:
    """An instant action that only ever makes the van safer (never refused for bookkeeping)."""
    return kind in _SAFER


@dataclass(frozen=True, slots=True)
class NodeDone:
    """A node just finished: where it is in the order, what came aboard, what left."""

    seq: int
    index: int
    loaded: tuple[str, ...]
    unloaded: tuple[str, ...]


@dataclass(slots=True)
class InstantRecord:
    action_id: str
    action_type: str
    status: ActionStatus
    description: str = ""
    at_s: float | None = None  # when it was applied (epoch s), if the holder said


_RAN = (ActionStatus.FINISHED, ActionStatus.FAILED)


class OrderBook:
    """One van's order, progress, parcels, cancel and instant actions (see the module doc).

    Every change bumps :attr:`version`, so a holder that persists the book knows when to.
    """

    def __init__(self, van_id: str) -> None:
        self.van_id = van_id
        self.order: Order | None = None
        self.cancelled = False
        self.last_node_seq: int | None = None
        self.finished: set[int] = set()
        self.parcels_on_board: list[str] = []
        self.progress_wp: int | None = None
        self.paused = False
        self.estop_latched = False
        self.estop_id = 0  # the serial id of the e-stop behind the latch (0: none sent yet)
        self.version = 0
        self._overrides: dict[str, ActionState] = {}
        self._instants: deque[InstantRecord] = deque(maxlen=INSTANT_STATES_KEPT)
        self._applied: OrderedDict[str, None] = OrderedDict()
        self._cache: dict[tuple[str, str, ActionStatus], ActionState] = {}
        self._order_json: str | None = None

    def _changed(self) -> None:
        self.version += 1

    # ---- orders ------------------------------------------------------------------------

    def decide(self, incoming: Order) -> OrderDecision:
        return decide_order(
            self.order,
            incoming,
            van_id=self.van_id,
            last_node_sequence_id=self.last_node_seq,
            cancelled=self.cancelled,
        )

    def take_order(self, incoming: Order) -> OrderDecision:
        """Decide on ``incoming`` and, if it is new or an update, hold it from now on."""
        decision = self.decide(incoming)
        if decision.verdict is OrderVerdict.NEW:
            self.order = incoming
            self.cancelled = False
            self.last_node_seq = None
            self.progress_wp = None
            self.finished = set()
            self._overrides = {}
            self._order_json = None
            self._changed()
        elif decision.verdict is OrderVerdict.UPDATE:
            self.order = incoming
            self._order_json = None
            self._changed()
        return decision

    @property
    def active(self) -> bool:
        """An order is held and not cancelled: it is driven and its progress reported."""
        return self.order is not None and not self.cancelled

    def node(self, seq: int) -> Node:
        assert self.order is not None
        nodes = self.order.nodes
        index = seq // 2
        if index < len(nodes) and nodes[index].sequence_id == seq:
            return nodes[index]
        return next(n for n in nodes if n.sequence_id == seq)

    def first_node_charge(self, distance_m: float) -> float | None:
        """The charge target at the order's first node when that charge may start now: nothing
        of the order reached yet and the van within :data:`AT_FIRST_NODE_M` of the node."""
        if not self.active or self.last_node_seq is not None or distance_m > AT_FIRST_NODE_M:
            return None
        assert self.order is not None
        targets = [
            100.0 if a.target_soc_pct is None else a.target_soc_pct
            for a in self.order.nodes[0].actions
            if a.action_type is NodeActionType.CHARGE
        ]
        return max(targets) if targets else None

    # ---- progress ------------------------------------------------------------------------

    def reach(self, seq: int) -> bool:
        """The van reached node ``seq`` (a node behind the last one reached changes nothing)."""
        if self.last_node_seq is None or seq > self.last_node_seq:
            self.last_node_seq = seq
            self._changed()
            return True
        return False

    def advance(self, wp: int) -> bool:
        """The van reached waypoint ``wp`` of the released base (it only ever rises)."""
        if self.progress_wp is None or wp > self.progress_wp:
            self.progress_wp = wp
            self._changed()
            return True
        return False

    def finish(
        self,
        seq: int,
        *,
        failed: Mapping[str, tuple[str, ...]] | None = None,
        why: str = "",
    ) -> NodeDone | None:
        """Node ``seq``'s actions are done: parcels come aboard or leave. Once per node; a
        second call returns None. ``failed`` maps an action id to parcels it could not hand
        over (they stay aboard; the action reports them, with ``why``).

        A ``deliver`` or ``unload`` of a parcel the book does not list on board cannot hand it
        over: that parcel is reported failed (:data:`NOT_ABOARD`), never done. The van's book
        is what it knows of its compartments; an order from a controller whose store is lost
        or an older copy can ask for a parcel the van unloaded or delivered long ago, and a
        van whose bridge lost its state dir no longer knows what it carries (docs/bridge.md,
        "The order book")."""
        if self.order is None or seq in self.finished:
            return None
        self.finished.add(seq)
        node = self.node(seq)
        loaded: list[str] = []
        unloaded: list[str] = []
        for action in node.actions:
            kept = set((failed or {}).get(action.action_id, ()))
            reason = why
            if action.action_type in (NodeActionType.DELIVER, NodeActionType.UNLOAD):
                absent = {p for p in action.parcel_ids if p not in self.parcels_on_board}
                if absent - kept:
                    kept |= absent
                    reason = f"{why}; {NOT_ABOARD}" if why else NOT_ABOARD
            if kept:
                self._overrides[action.action_id] = ActionState(
                    action_id=action.action_id,
                    action_type=action.action_type.value,
                    status=ActionStatus.FINISHED,
                    failed_parcel_ids=tuple(p for p in action.parcel_ids if p in kept),
                    result_description=reason[:500],
                )
            if action.action_type in (NodeActionType.LOAD, NodeActionType.TRANSFER_LOAD):
                # (a transfer_load takes a broken-down van's load over; what it could not
                # have handed over, ``failed``, does not come aboard)
                for p in action.parcel_ids:
                    if action.action_type is NodeActionType.TRANSFER_LOAD and p in kept:
                        continue
                    if p not in self.parcels_on_board:
                        self.parcels_on_board.append(p)
                        loaded.append(p)
            elif action.action_type in (NodeActionType.DELIVER, NodeActionType.UNLOAD):
                gone = set(action.parcel_ids) - kept
                unloaded.extend(p for p in self.parcels_on_board if p in gone)
                self.parcels_on_board = [p for p in self.parcels_on_board if p not in gone]
        self._changed()
        return NodeDone(seq, node.sequence_id // 2, tuple(loaded), tuple(unloaded))

    def set_action(
        self, action_id: str, action_type: str, status: ActionStatus, description: str = ""
    ) -> None:
        """Report node action ``action_id`` as ``status`` whatever its node's progress says
        (a charge under way or finished, refused, …)."""
        old = self._overrides.get(action_id)
        if old is not None and old.status is status and old.result_description == description:
            return
        self._overrides[action_id] = ActionState(
            action_id=action_id,
            action_type=action_type,
            status=status,
            result_description=description[:500],
        )
        self._changed()

    def action_status(self, action_id: str) -> ActionStatus | None:
        """The status set for ``action_id`` with :meth:`set_action` (None: none was)."""
        state = self._overrides.get(action_id)
        return None if state is None else state.status

    def hand_over(self, parcel_ids: Iterable[str]) -> tuple[str, ...]:
        """Parcels taken over by another van beside this one (a rescue trip's
        ``transfer_load``, docs/protocol.md): they leave the load; returns those that were
        aboard."""
        gone = set(parcel_ids)
        out = tuple(p for p in self.parcels_on_board if p in gone)
        if out:
            self.parcels_on_board = [p for p in self.parcels_on_board if p not in gone]
            self._changed()
        return out

    def set_parcels(self, parcel_ids: Iterable[str]) -> None:
        """What is on board, as counted by hand (tests); the order's rules apply from here."""
        self.parcels_on_board = list(parcel_ids)
        self._changed()

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._changed()

    # ---- instant actions -------------------------------------------------------------------

    def applied(self, action_id: str) -> bool:
        return action_id in self._applied

    def apply_instant(
        self,
        action_id: str,
        kind: InstantActionType,
        status: ActionStatus,
        *,
        at_s: float | None = None,
    ) -> bool:
        """Record instant action ``action_id`` (applied at ``at_s``) and apply its effect on
        the book (latches, cancel). False, and nothing changes, if that id was applied before:
        the caller confirms it again instead of doing it twice."""
        if action_id in self._applied:
            return False
        self._applied[action_id] = None
        while len(self._applied) > APPLIED_IDS_KEPT:
            self._applied.popitem(last=False)
        self._instants.append(InstantRecord(action_id, kind.value, status, at_s=at_s))
        if kind is InstantActionType.EMERGENCY_STOP:
            self.estop_latched = True
        elif kind is InstantActionType.PAUSE:
            self.paused = True
        elif kind is InstantActionType.RESUME:
            self.paused = False
            self.estop_latched = False
        elif kind is InstantActionType.CANCEL_ORDER:
            self.cancelled = True
        self._changed()
        return True

    def note_instant(
        self, action_id: str, action_type: str, status: ActionStatus, description: str = ""
    ) -> None:
        """List instant action ``action_id`` as ``status`` without applying its effect (one
        that failed before it took hold); an id already listed only changes its status."""
        if self.instant(action_id) is None:
            self._instants.append(InstantRecord(action_id, action_type, status, description))
            self._changed()
        else:
            self.instant_status(action_id, status, description)

    def instant_status(self, action_id: str, status: ActionStatus, description: str = "") -> None:
        record = self.instant(action_id)
        if record is not None and (
            record.status is not status or record.description != description
        ):
            record.status = status
            record.description = description
            self._changed()

    def instant(self, action_id: str) -> InstantRecord | None:
        for record in self._instants:
            if record.action_id == action_id:
                return record
        return None

    @property
    def instants(self) -> tuple[InstantRecord, ...]:
        return tuple(self._instants)

    def estop_sent(self, estop_id: int) -> None:
        """The serial e-stop behind the latch (the one a later RESUME names)."""
        if self.estop_id != estop_id:
            self.estop_id = estop_id
            self._changed()

    # ---- what a State reports ------------------------------------------------------------

    def _action(self, action_id: str, action_type: str, status: ActionStatus) -> ActionState:
        key = (action_id, action_type, status)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            cached = self._cache[key] = ActionState(
                action_id=action_id, action_type=action_type, status=status
            )
        return cached

    def node_status(self, seq: int) -> ActionStatus:
        if seq in self.finished:
            return ActionStatus.FINISHED
        if seq == self.last_node_seq:
            return ActionStatus.RUNNING
        return ActionStatus.WAITING

    def action_states(self, *, ahead: bool = True) -> list[ActionState]:
        """The node actions of the order (``ahead=False``: only of the nodes reached so far,
        what a controller reads), then the instant actions."""
        out: list[ActionState] = []
        if self.order is not None and self.cancelled:
            # A cancelled order keeps listing what ran (finished or failed) until a new order
            # replaces it: the controller learns what was done before the van stopped.
            for node in self.order.nodes:
                done = node.sequence_id in self.finished
                for a in node.actions:
                    override = self._overrides.get(a.action_id)
                    if override is not None and override.status in _RAN:
                        out.append(override)
                    elif done:
                        out.append(
                            self._action(a.action_id, a.action_type.value, ActionStatus.FINISHED)
                        )
        elif self.active:
            assert self.order is not None
            reached = -1 if self.last_node_seq is None else self.last_node_seq
            for node in self.order.nodes:
                if not ahead and node.sequence_id > reached:
                    break
                status = self.node_status(node.sequence_id)
                for a in node.actions:
                    override = self._overrides.get(a.action_id)
                    if override is not None:
                        out.append(override)
                    else:
                        out.append(self._action(a.action_id, a.action_type.value, status))
        for ia in self._instants:
            if ia.description:
                out.append(
                    ActionState(
                        action_id=ia.action_id,
                        action_type=ia.action_type,
                        status=ia.status,
                        result_description=ia.description[:500],
                    )
                )
            else:
                out.append(self._action(ia.action_id, ia.action_type, ia.status))
        return out

    def node_states(self) -> list[NodeState]:
        """The nodes still ahead (not reached)."""
        if not self.active:
            return []
        assert self.order is not None
        reached = -1 if self.last_node_seq is None else self.last_node_seq
        return [
            NodeState(node_id=n.node_id, sequence_id=n.sequence_id, released=n.released)
            for n in self.order.nodes
            if n.sequence_id > reached
        ]

    def edge_states(self) -> list[EdgeState]:
        if not self.active:
            return []
        assert self.order is not None
        reached = -1 if self.last_node_seq is None else self.last_node_seq
        return [
            EdgeState(edge_id=e.edge_id, sequence_id=e.sequence_id, released=e.released)
            for e in self.order.edges
            if e.sequence_id > reached
        ]

    @property
    def last_node_id(self) -> str | None:
        if not self.active or self.last_node_seq is None:
            return None
        return self.node(self.last_node_seq).node_id

    @property
    def reported_node_seq(self) -> int | None:
        """``last_node_sequence_id`` as a State reports it (none for a cancelled order)."""
        return self.last_node_seq if self.active else None

    # ---- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart, as JSON-ready data."""
        if self.order is not None and self._order_json is None:
            self._order_json = encode(self.order).decode("utf-8")
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "van_id": self.van_id,
            "order": self._order_json,
            "cancelled": self.cancelled,
            "last_node_sequence_id": self.last_node_seq,
            "finished_nodes": sorted(self.finished),
            "progress_wp": self.progress_wp,
            "parcels_on_board": list(self.parcels_on_board),
            "paused": self.paused,
            "estop_latched": self.estop_latched,
            "estop_id": self.estop_id,
            "action_overrides": [s.model_dump(mode="json") for s in self._overrides.values()],
            "instants": [
                {
                    "action_id": r.action_id,
                    "action_type": r.action_type,
                    "status": r.status.value,
                    "description": r.description,
                    "at_s": r.at_s,
                }
                for r in self._instants
            ],
            "applied_instant_ids": list(self._applied),
        }

    @classmethod
    def from_dict(cls, data: object, *, van_id: str, where: str = "order book") -> OrderBook:
        """The book :meth:`to_dict` wrote; :class:`OrderBookError` naming the field if the
        data is not one (wrong van, wrong format, a field of the wrong type)."""
        book = cls(van_id)
        if not isinstance(data, dict):
            raise OrderBookError(f"{where}: expected a JSON object")
        try:
            _expect(data.get("format") == FORMAT, where, "format", f"expected {FORMAT!r}")
            _expect(
                data.get("version") == FORMAT_VERSION,
                where,
                "version",
                f"expected {FORMAT_VERSION}, got {data.get('version')!r}",
            )
            _expect(
                data.get("van_id") == van_id,
                where,
                "van_id",
                f"the book is van {data.get('van_id')!r}'s, this is {van_id!r}",
            )
            order_json = data["order"]
            if order_json is not None:
                _expect(isinstance(order_json, str), where, "order", "expected a string")
                try:
                    book.order = decode(Order, order_json, max_bytes=1 << 24)
                except DecodeError as exc:
                    raise OrderBookError(f"{where}: field 'order': {exc}") from exc
                book._order_json = order_json
            book.cancelled = _bool(data, "cancelled", where)
            book.last_node_seq = _opt_int(data, "last_node_sequence_id", where)
            book.finished = set(_ints(data, "finished_nodes", where))
            book.progress_wp = _opt_int(data, "progress_wp", where)
            parcels = data["parcels_on_board"]
            _expect(
                isinstance(parcels, list) and all(isinstance(p, str) for p in parcels),
                where,
                "parcels_on_board",
                "expected a list of parcel ids",
            )
            book.parcels_on_board = list(parcels)
            book.paused = _bool(data, "paused", where)
            book.estop_latched = _bool(data, "estop_latched", where)
            estop_id = data["estop_id"]
            _expect(_is_int(estop_id), where, "estop_id", "expected an integer")
            book.estop_id = int(estop_id)
            overrides = data["action_overrides"]
            _expect(isinstance(overrides, list), where, "action_overrides", "expected a list")
            for item in overrides:
                state = ActionState.model_validate(item, strict=False)
                book._overrides[state.action_id] = state
            instants = data["instants"]
            _expect(isinstance(instants, list), where, "instants", "expected a list")
            for item in instants:
                _expect(isinstance(item, dict), where, "instants", "expected objects")
                at_s = item.get("at_s")
                _expect(
                    at_s is None or (isinstance(at_s, int | float) and not isinstance(at_s, bool)),
                    where,
                    "instants.at_s",
                    "expected a number or null",
                )
                book._instants.append(
                    InstantRecord(
                        str(item["action_id"]),
                        str(item["action_type"]),
                        ActionStatus(item["status"]),
                        str(item.get("description", "")),
                        None if at_s is None else float(at_s),
                    )
                )
            applied = data["applied_instant_ids"]
            _expect(
                isinstance(applied, list) and all(isinstance(i, str) for i in applied),
                where,
                "applied_instant_ids",
                "expected a list of action ids",
            )
            for action_id in applied:
                book._applied[action_id] = None
        except OrderBookError:
            raise
        except KeyError as exc:
            raise OrderBookError(f"{where}: missing field {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise OrderBookError(f"{where}: {exc}") from exc
        if book.order is None and (book.last_node_seq is not None or book.finished):
            raise OrderBookError(f"{where}: progress recorded without an order")
        return book


def _expect(ok: bool, where: str, name: str, what: str) -> None:
    if not ok:
        raise OrderBookError(f"{where}: field {name!r}: {what}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bool(data: dict[str, Any], name: str, where: str) -> bool:
    value = data[name]
    _expect(isinstance(value, bool), where, name, "expected true or false")
    return bool(value)


def _opt_int(data: dict[str, Any], name: str, where: str) -> int | None:
    value = data[name]
    _expect(value is None or _is_int(value), where, name, "expected an integer or null")
    return None if value is None else int(value)


def _ints(data: dict[str, Any], name: str, where: str) -> list[int]:
    value = data[name]
    _expect(
        isinstance(value, list) and all(_is_int(v) for v in value),
        where,
        name,
        "expected a list of integers",
    )
    return [int(v) for v in value]
