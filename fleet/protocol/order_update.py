"""Whether a van takes an incoming order: VDA 5050 order-update semantics, as a pure function.

Given the order the van holds (with how far it got) and an incoming one:

* no current order, or the current one is finished or cancelled, and a new ``order_id``
  → **new**;
* same ``order_id`` and ``order_update_id``, same content → **duplicate** (ignored; QoS 1
  redelivery and the controller's re-sends are harmless);
* same ``order_id``, higher ``order_update_id``, released base kept exactly and only extended
  → **update**;
* anything else → **rejected**, with a :class:`~fleet.protocol.messages.VanError` to report in
  state (``order_update_error``; references ``reason``, ``order_id``, ``order_update_id``):
  a lower update id (``stale_update``), the same update id with other content
  (``conflicting_update``), a changed or shrunk base (``base_changed``), a new order while
  the current one is still running (``busy``), an update to a cancelled order
  (``cancelled``), or another van's order (``wrong_van``, a ``signature_error`` as the
  signature check reports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fleet.protocol.messages import ErrorLevel, ErrorReference, Order, VanError


class OrderVerdict(StrEnum):
    NEW = "new"
    UPDATE = "update"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class OrderDecision:
    verdict: OrderVerdict
    reason: str = ""  # machine-readable cause of a rejection
    detail: str = ""  # one human-readable line
    order_id: str = ""
    order_update_id: int = 0

    @property
    def accepted(self) -> bool:
        """The van must now follow the incoming order."""
        return self.verdict in (OrderVerdict.NEW, OrderVerdict.UPDATE)

    def error(self) -> VanError | None:
        """The error a van reports in its state for a rejection (None otherwise)."""
        if self.verdict is not OrderVerdict.REJECTED:
            return None
        # another van's order is refused by the signature check first (docs/protocol.md,
        # section 9); should it get this far it is reported the same way
        return VanError(
            error_type="signature_error" if self.reason == "wrong_van" else "order_update_error",
            level=ErrorLevel.WARNING,
            description=f"{self.reason}: {self.detail}"[:500],
            references=(
                ErrorReference(key="reason", value=self.reason),
                ErrorReference(key="order_id", value=self.order_id),
                ErrorReference(key="order_update_id", value=str(self.order_update_id)),
            ),
        )


def order_finished(order: Order, last_node_sequence_id: int | None) -> bool:
    """The van has reached the last node of the whole order (base and horizon)."""
    return last_node_sequence_id is not None and last_node_sequence_id >= order.last_sequence_id


def decide_order(
    current: Order | None,
    incoming: Order,
    *,
    van_id: str,
    last_node_sequence_id: int | None,
    cancelled: bool = False,
) -> OrderDecision:
    """What the van does with ``incoming`` (see the module docstring)."""

    def rejected(reason: str, detail: str) -> OrderDecision:
        return OrderDecision(
            OrderVerdict.REJECTED, reason, detail, incoming.order_id, incoming.order_update_id
        )

    def ok(verdict: OrderVerdict) -> OrderDecision:
        return OrderDecision(verdict, "", "", incoming.order_id, incoming.order_update_id)

    if incoming.van_id != van_id:
        return rejected("wrong_van", f"order for van {incoming.van_id!r} reached van {van_id!r}")
    if current is None:
        return ok(OrderVerdict.NEW)
    if incoming.order_id != current.order_id:
        if cancelled or order_finished(current, last_node_sequence_id):
            return ok(OrderVerdict.NEW)
        reached = "no node" if last_node_sequence_id is None else f"node {last_node_sequence_id}"
        return rejected(
            "busy",
            f"order {current.order_id!r} is still running (reached {reached} of "
            f"{current.last_sequence_id}); cancel it before sending {incoming.order_id!r}",
        )
    if incoming.order_update_id < current.order_update_id:
        return rejected(
            "stale_update",
            f"order_update_id {incoming.order_update_id} is below the current "
            f"{current.order_update_id}",
        )
    if incoming.order_update_id == current.order_update_id:
        if incoming.same_content(current):
            return ok(OrderVerdict.DUPLICATE)
        return rejected(
            "conflicting_update",
            f"order_update_id {incoming.order_update_id} was already received with other content",
        )
    if cancelled:
        return rejected("cancelled", f"order {current.order_id!r} was cancelled")
    problem = _base_change(current, incoming)
    if problem:
        return rejected("base_changed", problem)
    return ok(OrderVerdict.UPDATE)


def _base_change(current: Order, incoming: Order) -> str:
    """Why ``incoming`` does not keep ``current``'s released base; "" if it does."""
    base_nodes = current.base_nodes
    if len(incoming.nodes) < len(base_nodes):
        return (
            f"the update has {len(incoming.nodes)} nodes but the released base already has "
            f"{len(base_nodes)}"
        )
    for i, node in enumerate(base_nodes):
        if incoming.nodes[i] != node:
            return f"released node {node.node_id!r} (sequence {node.sequence_id}) was changed"
    for i, edge in enumerate(current.edges):
        if edge.released and incoming.edges[i] != edge:
            return f"released edge {edge.edge_id!r} (sequence {edge.sequence_id}) was changed"
    return ""
