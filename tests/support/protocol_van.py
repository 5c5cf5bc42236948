"""A protocol-level simulated van for controller tests: obeys orders, reports state.

Pure (no I/O, no clock): tests call :meth:`ProtocolVan.step` to reach the next released stop
and do its actions, and :meth:`ProtocolVan.state` to get what the van would publish. Its order
logic is the bridge's own :class:`~firmware_bridge.bridge.order_book.OrderBook` (the rules
of ``fleet.protocol.decide_order``, nodes reached and finished, parcels on board, cancel,
pause and e-stop latches, instant action ids applied once, action states): only the motion
is this van's, a jump from stop to stop.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field

from firmware_bridge.bridge.order_book import OrderBook
from fleet.protocol import (
    ActionState,
    ActionStatus,
    Battery,
    ErrorLevel,
    InstantActions,
    InstantActionType,
    Load,
    Order,
    OrderVerdict,
    State,
    VanError,
    VanPosition,
    make_header,
)

NOBODY_HOME = "nobody home"
_INSTANT_KINDS = frozenset(kind.value for kind in InstantActionType)


class _Actions(MutableMapping[str, ActionState]):
    """The action states the van reports, by id; a test may set one (e.g. still running)."""

    def __init__(self, book: OrderBook) -> None:
        self._book = book

    def _current(self) -> dict[str, ActionState]:
        return {a.action_id: a for a in self._book.action_states(ahead=False)}

    def __getitem__(self, key: str) -> ActionState:
        return self._current()[key]

    def __setitem__(self, key: str, value: ActionState) -> None:
        if value.action_type in _INSTANT_KINDS:
            self._book.note_instant(key, value.action_type, value.status, value.result_description)
        else:
            self._book.set_action(key, value.action_type, value.status, value.result_description)

    def __delitem__(self, key: str) -> None:
        raise TypeError("a van does not forget an action state")

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


@dataclass
class ProtocolVan:
    van_id: str
    lon: float = -8.6
    lat: float = 41.15
    soc_pct: float = 90.0
    errors: list[VanError] = field(default_factory=list)
    fail_parcels: set[str] = field(default_factory=set)  # deliveries that will fail
    decisions: list[OrderVerdict] = field(default_factory=list)
    message_id: int = 0
    book: OrderBook = field(init=False)

    def __post_init__(self) -> None:
        self.book = OrderBook(self.van_id)

    # ---- the order book, as tests read it ----------------------------------------------------

    @property
    def order(self) -> Order | None:
        return self.book.order

    @property
    def reached(self) -> int | None:
        """Index of the last node reached."""
        seq = self.book.last_node_seq
        return None if seq is None else seq // 2

    @property
    def cancelled(self) -> bool:
        return self.book.cancelled

    @property
    def paused(self) -> bool:
        return self.book.paused

    @property
    def emergency_stop(self) -> bool:
        return self.book.estop_latched

    @property
    def on_board(self) -> list[str]:
        return self.book.parcels_on_board

    @on_board.setter
    def on_board(self, parcel_ids: list[str]) -> None:
        self.book.set_parcels(parcel_ids)

    @property
    def actions(self) -> _Actions:
        return _Actions(self.book)

    # ---- commands --------------------------------------------------------------------------

    def receive_order(self, order: Order) -> OrderVerdict:
        decision = self.book.take_order(order)
        self.decisions.append(decision.verdict)
        error = decision.error()
        if error is not None:
            self.errors.append(error)
        return decision.verdict

    def receive_instant(self, message: InstantActions) -> None:
        for action in message.actions:
            # pause, e-stop, resume and cancel set the book's latches; an id applied before
            # is confirmed, not applied again
            self.book.apply_instant(action.action_id, action.action_type, ActionStatus.FINISHED)

    @property
    def base_len(self) -> int:
        return 0 if self.order is None else len(self.order.base_nodes)

    def step(self) -> bool:
        """Drive to the next released stop and do its actions; False if it may not move."""
        order = self.order
        if order is None or self.cancelled or self.paused or self.emergency_stop:
            return False
        if any(e.level is ErrorLevel.FATAL for e in self.errors):
            return False  # broken down
        nxt = 0 if self.reached is None else self.reached + 1
        if nxt >= self.base_len:
            return False
        node = order.nodes[nxt]
        self.lon, self.lat = node.lon, node.lat
        self.book.reach(node.sequence_id)
        failed = {
            a.action_id: kept
            for a in node.actions
            if (kept := tuple(p for p in a.parcel_ids if p in self.fail_parcels))
        }
        self.book.finish(node.sequence_id, failed=failed, why=NOBODY_HOME)
        return True

    def drive_all(self) -> int:
        steps = 0
        while self.step():
            steps += 1
        return steps

    def fatal(self, what: str = "drive unit fault") -> None:
        self.errors.append(
            VanError(error_type="vehicle_fault", level=ErrorLevel.FATAL, description=what)
        )

    def state(self, now_s: float) -> State:
        self.message_id += 1
        book = self.book
        order = book.order
        return State(
            header=make_header(self.van_id, self.message_id, now_s),
            van_id=self.van_id,
            order_id=order.order_id if order else None,
            order_update_id=order.order_update_id if order else 0,
            last_node_id=book.last_node_id,
            last_node_sequence_id=book.reported_node_seq,
            node_states=tuple(book.node_states()),
            paused=book.paused,
            emergency_stop=book.estop_latched,
            position=VanPosition(lon=self.lon, lat=self.lat, heading_deg=0.0),
            battery=Battery(soc_pct=self.soc_pct, remaining_range_m=self.soc_pct * 1600.0),
            load=Load(load_kg=0.0, volume_m3=0.0, parcel_ids=tuple(book.parcels_on_board)),
            action_states=tuple(book.action_states(ahead=False)),
            errors=tuple(self.errors),
        )
