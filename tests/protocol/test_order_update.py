"""VDA 5050 order-update semantics, as the van applies them."""

from __future__ import annotations

from fleet.protocol import ErrorLevel, Order, OrderVerdict, decide_order
from tests.support import protocol_examples as ex


def _decide(
    current: Order | None, incoming: Order, *, reached: int | None = 0, cancelled: bool = False
) -> OrderVerdict:
    return decide_order(
        current, incoming, van_id=ex.VAN, last_node_sequence_id=reached, cancelled=cancelled
    ).verdict


def test_a_first_order_is_taken() -> None:
    assert _decide(None, ex.order()) is OrderVerdict.NEW


def test_the_same_update_twice_is_ignored_even_re_signed() -> None:
    current = ex.order()
    again = ex.order(message_id=99, now_s=ex.NOW_S + 30)
    assert _decide(current, again) is OrderVerdict.DUPLICATE


def test_an_update_that_extends_the_base_is_taken() -> None:
    current = ex.order(released=2)
    assert _decide(current, ex.release_more(current, 3)) is OrderVerdict.UPDATE


def test_a_lower_update_id_is_rejected_with_an_error_for_state() -> None:
    current = ex.release_more(ex.order(), 3)
    decision = decide_order(
        current, ex.order(), van_id=ex.VAN, last_node_sequence_id=2, cancelled=False
    )
    assert decision.verdict is OrderVerdict.REJECTED and decision.reason == "stale_update"
    error = decision.error()
    assert error is not None and error.error_type == "order_update_error"
    assert error.level is ErrorLevel.WARNING
    assert {(r.key, r.value) for r in error.references} == {
        ("reason", "stale_update"),
        ("order_id", "O-1"),
        ("order_update_id", "0"),
    }


def test_the_same_update_id_with_other_content_is_rejected() -> None:
    current = ex.order(released=2)
    conflicting = ex.order(released=3)
    decision = decide_order(current, conflicting, van_id=ex.VAN, last_node_sequence_id=0)
    assert decision.reason == "conflicting_update"


def test_changing_a_released_node_is_rejected() -> None:
    current = ex.order(released=2)
    update = ex.release_more(current, 3)
    moved = update.nodes[1].model_copy(update={"lon": update.nodes[1].lon + 0.01})
    changed = update.model_copy(update={"nodes": (update.nodes[0], moved, *update.nodes[2:])})
    decision = decide_order(current, changed, van_id=ex.VAN, last_node_sequence_id=0)
    assert decision.reason == "base_changed" and "n1" in decision.detail


def test_withdrawing_a_released_stop_is_rejected() -> None:
    current = ex.order(released=3)
    shrunk = ex.release_more(current, 2)
    assert (
        decide_order(current, shrunk, van_id=ex.VAN, last_node_sequence_id=0).reason
        == "base_changed"
    )


def test_the_horizon_may_change_freely() -> None:
    current = ex.order(stops=4, released=2)
    update = ex.release_more(current, 2)
    moved = update.nodes[3].model_copy(update={"lon": -8.5, "planned_arrival": None})
    longer = update.edges[2].model_copy(update={"length_m": 2000.0})
    update = update.model_copy(
        update={"nodes": (*update.nodes[:3], moved), "edges": (*update.edges[:2], longer)}
    )
    assert _decide(current, update) is OrderVerdict.UPDATE


def test_a_new_order_while_running_is_rejected_as_busy() -> None:
    decision = decide_order(
        ex.order(), ex.order(order_id="O-2"), van_id=ex.VAN, last_node_sequence_id=2
    )
    assert decision.reason == "busy" and "O-1" in decision.detail


def test_a_new_order_after_the_last_node_or_a_cancel_is_taken() -> None:
    current = ex.order(stops=4, released=4)
    assert _decide(current, ex.order(order_id="O-2"), reached=6) is OrderVerdict.NEW
    assert _decide(current, ex.order(order_id="O-2"), reached=2, cancelled=True) is OrderVerdict.NEW


def test_an_update_to_a_cancelled_order_is_rejected() -> None:
    current = ex.order()
    decision = decide_order(
        current, ex.release_more(current, 3), van_id=ex.VAN, last_node_sequence_id=2, cancelled=True
    )
    assert decision.reason == "cancelled"


def test_another_vans_order_is_reported_as_the_signature_check_reports_it() -> None:
    """One error type for wrong_van wherever it is caught (issue 14, item 12)."""
    decision = decide_order(None, ex.order(van_id="X-1"), van_id=ex.VAN, last_node_sequence_id=None)
    assert decision.reason == "wrong_van"
    error = decision.error()
    assert error is not None and error.error_type == "signature_error"
    assert ("reason", "wrong_van") in {(r.key, r.value) for r in error.references}


def test_accepted_decisions_carry_no_error() -> None:
    decision = decide_order(None, ex.order(), van_id=ex.VAN, last_node_sequence_id=None)
    assert decision.accepted and decision.error() is None
