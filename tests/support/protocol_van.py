"""A protocol-level simulated van for controller tests: obeys orders, reports state.

Pure (no I/O, no clock): tests call :meth:`ProtocolVan.step` to reach the next released stop
and do its actions, and :meth:`ProtocolVan.state` to get what the van would publish. It
applies the same order-update rules as the real bridge (``fleet.protocol.decide_order``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.protocol import (
    ActionState,
    ActionStatus,
    Battery,
    ErrorLevel,
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
    make_header,
)


@dataclass
class ProtocolVan:
    van_id: str
    lon: float = -8.6
    lat: float = 41.15
    soc_pct: float = 90.0
    order: Order | None = None
    reached: int | None = None  # index of the last node reached
    cancelled: bool = False
    paused: bool = False
    emergency_stop: bool = False
    on_board: list[str] = field(default_factory=list)
    actions: dict[str, ActionState] = field(default_factory=dict)
    errors: list[VanError] = field(default_factory=list)
    fail_parcels: set[str] = field(default_factory=set)  # deliveries that will fail
    decisions: list[OrderVerdict] = field(default_factory=list)
    message_id: int = 0

    def receive_order(self, order: Order) -> OrderVerdict:
        decision = decide_order(
            self.order,
            order,
            van_id=self.van_id,
            last_node_sequence_id=None if self.reached is None else 2 * self.reached,
            cancelled=self.cancelled,
        )
        self.decisions.append(decision.verdict)
        if decision.verdict is OrderVerdict.NEW:
            self.order, self.reached, self.cancelled = order, None, False
            self.actions = {k: v for k, v in self.actions.items() if k.startswith("I")}
        elif decision.verdict is OrderVerdict.UPDATE:
            self.order = order
        error = decision.error()
        if error is not None:
            self.errors.append(error)
        return decision.verdict

    def receive_instant(self, message: InstantActions) -> None:
        for action in message.actions:
            kind = action.action_type
            if kind is InstantActionType.PAUSE:
                self.paused = True
            elif kind is InstantActionType.RESUME:
                self.paused = self.emergency_stop = False
            elif kind is InstantActionType.EMERGENCY_STOP:
                self.emergency_stop = True
            elif kind is InstantActionType.CANCEL_ORDER:
                self.cancelled = True
            self.actions[action.action_id] = ActionState(
                action_id=action.action_id, action_type=kind.value, status=ActionStatus.FINISHED
            )

    @property
    def base_len(self) -> int:
        return 0 if self.order is None else len(self.order.base_nodes)

    def step(self) -> bool:
        """Drive to the next released stop and do its actions; False if it may not move."""
        if self.order is None or self.cancelled or self.paused or self.emergency_stop:
            return False
        if any(e.level is ErrorLevel.FATAL for e in self.errors):
            return False  # broken down
        nxt = 0 if self.reached is None else self.reached + 1
        if nxt >= self.base_len:
            return False
        node = self.order.nodes[nxt]
        self.reached, self.lon, self.lat = nxt, node.lon, node.lat
        for a in node.actions:
            failed = tuple(p for p in a.parcel_ids if p in self.fail_parcels)
            if a.action_type is NodeActionType.LOAD:
                self.on_board.extend(p for p in a.parcel_ids if p not in self.on_board)
            elif a.action_type in (NodeActionType.DELIVER, NodeActionType.UNLOAD):
                self.on_board = [p for p in self.on_board if p not in a.parcel_ids or p in failed]
            self.actions[a.action_id] = ActionState(
                action_id=a.action_id,
                action_type=a.action_type.value,
                status=ActionStatus.FINISHED,
                failed_parcel_ids=failed,
                result_description="nobody home" if failed else "",
            )
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
        order = self.order
        remaining = (
            [] if order is None else order.nodes[(self.reached or 0) + (self.reached is not None) :]
        )
        return State(
            header=make_header(self.van_id, self.message_id, now_s),
            van_id=self.van_id,
            order_id=order.order_id if order else None,
            order_update_id=order.order_update_id if order else 0,
            last_node_id=order.nodes[self.reached].node_id
            if order and self.reached is not None
            else None,
            last_node_sequence_id=None if self.reached is None else 2 * self.reached,
            node_states=tuple(
                NodeState(node_id=n.node_id, sequence_id=n.sequence_id, released=n.released)
                for n in remaining
            ),
            paused=self.paused,
            emergency_stop=self.emergency_stop,
            position=VanPosition(lon=self.lon, lat=self.lat, heading_deg=0.0),
            battery=Battery(soc_pct=self.soc_pct, remaining_range_m=self.soc_pct * 1600.0),
            load=Load(load_kg=0.0, volume_m3=0.0, parcel_ids=tuple(self.on_board)),
            action_states=tuple(self.actions.values()),
            errors=tuple(self.errors),
        )
