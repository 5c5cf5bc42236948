"""The van-side order book: one copy of the order rules, pure, persisted by the bridge."""

from __future__ import annotations

import json

import pytest
from bridge_fixtures import VAN, line_order, north, released_more
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.bridge.order_book import (
    AT_FIRST_NODE_M,
    NOT_ABOARD,
    OrderBook,
    OrderBookError,
    ground_distance_m,
)
from fleet.protocol import (
    ActionStatus,
    InstantActionType,
    NodeAction,
    NodeActionType,
    Order,
    OrderVerdict,
    StopKind,
)
from tests.support.protocol_van import ProtocolVan


def _statuses(book: OrderBook) -> dict[str, ActionStatus]:
    return {a.action_id: a.status for a in book.action_states()}


def test_a_new_order_starts_from_nothing_reached_and_an_update_keeps_the_progress() -> None:
    book = OrderBook(VAN)
    order = line_order(stops=4, released=2)
    assert book.take_order(order).verdict is OrderVerdict.NEW
    assert _statuses(book) == {f"a{i}": ActionStatus.WAITING for i in range(4)}
    book.reach(0)
    assert _statuses(book)["a0"] is ActionStatus.RUNNING  # the van stands there
    done = book.finish(0)
    assert done is not None and done.loaded == ("P1", "P2", "P3") and done.unloaded == ()
    assert book.finish(0) is None  # once per node
    update = released_more(order, 4, message_id=2, now_s=0.0)
    assert book.take_order(update).verdict is OrderVerdict.UPDATE
    assert book.last_node_seq == 0 and book.finished == {0}
    assert book.take_order(update).verdict is OrderVerdict.DUPLICATE
    stale = line_order(stops=4, released=2, update_id=0, order_id="O-1")
    assert book.take_order(stale).verdict is OrderVerdict.REJECTED
    busy = line_order(order_id="O-2")
    assert book.take_order(busy).verdict is OrderVerdict.REJECTED  # still running
    book.apply_instant("C1", InstantActionType.CANCEL_ORDER, ActionStatus.FINISHED)
    assert book.reported_node_seq is None and book.node_states() == []
    assert book.take_order(busy).verdict is OrderVerdict.NEW  # a cancelled van takes a new one
    assert book.parcels_on_board == ["P1", "P2", "P3"]  # what is aboard stays aboard
    assert book.last_node_seq is None and book.finished == set() and not book.cancelled


def test_a_parcel_that_could_not_be_handed_over_stays_aboard_and_is_reported() -> None:
    book = OrderBook(VAN)
    book.take_order(line_order(stops=3, released=3))
    book.reach(0)
    book.finish(0)
    book.reach(2)
    done = book.finish(2, failed={"a1": ("P1",)}, why="nobody home")
    assert done is not None and done.unloaded == ()
    assert book.parcels_on_board == ["P1", "P2"]
    (a1,) = [a for a in book.action_states() if a.action_id == "a1"]
    assert a1.failed_parcel_ids == ("P1",) and a1.result_description == "nobody home"


def test_a_delivery_of_a_parcel_the_book_does_not_list_aboard_is_reported_failed() -> None:
    """An order from a controller whose store is an older copy asks for a parcel the van
    handed over long ago (or a bridge that lost its state dir no longer knows its load): the
    book never reports it handed over (docs/bridge.md, "The order book")."""
    book = OrderBook(VAN)
    book.take_order(line_order(stops=3, released=3))
    book.reach(0)
    book.set_parcels(["P2"])  # P1 left before: the load at n0 is not finished here
    book.finished.add(0)
    book.reach(2)
    done = book.finish(2)
    assert done is not None and done.unloaded == ()
    (a1,) = [a for a in book.action_states() if a.action_id == "a1"]
    assert a1.status is ActionStatus.FINISHED and a1.failed_parcel_ids == ("P1",)
    assert a1.result_description == NOT_ABOARD
    book.reach(4)
    done = book.finish(4)
    assert done is not None and done.unloaded == ("P2",) and book.parcels_on_board == []
    (a2,) = [a for a in book.action_states() if a.action_id == "a2"]
    assert a2.failed_parcel_ids == ()


def test_pause_and_estop_latch_until_a_resume_and_each_id_is_applied_once() -> None:
    book = OrderBook(VAN)
    assert book.apply_instant("E1", InstantActionType.EMERGENCY_STOP, ActionStatus.RUNNING)
    assert book.apply_instant("P1", InstantActionType.PAUSE, ActionStatus.RUNNING)
    assert book.estop_latched and book.paused
    assert not book.apply_instant("E1", InstantActionType.EMERGENCY_STOP, ActionStatus.RUNNING)
    assert book.apply_instant("R1", InstantActionType.RESUME, ActionStatus.RUNNING)
    assert not book.estop_latched and not book.paused
    # a copy of the old e-stop does not latch again: it was applied, and resumed since
    assert not book.apply_instant("E1", InstantActionType.EMERGENCY_STOP, ActionStatus.RUNNING)
    assert not book.estop_latched


def _with_first_charge(order: Order) -> Order:
    node = order.nodes[0]
    charge = NodeAction(
        action_id="c0", action_type=NodeActionType.CHARGE, duration_s=0.0, target_soc_pct=80.0
    )
    nodes = (node.model_copy(update={"actions": (*node.actions, charge)}), *order.nodes[1:])
    return order.model_copy(update={"nodes": nodes})


def test_a_first_node_charge_starts_where_the_van_stands_within_the_one_documented_bound() -> None:
    book = OrderBook(VAN)
    book.take_order(_with_first_charge(line_order(stops=3, released=3)))
    assert AT_FIRST_NODE_M == 100.0
    assert book.first_node_charge(AT_FIRST_NODE_M) == 80.0
    assert book.first_node_charge(AT_FIRST_NODE_M + 0.1) is None
    book.reach(0)
    assert book.first_node_charge(0.0) is None  # the order has begun: charged at arrival
    lon0, lat0 = north(0)
    lon1, lat1 = north(50)
    assert ground_distance_m(lon0, lat0, lon1, lat1) == pytest.approx(50.0, rel=1e-3)


def test_a_persisted_book_reads_back_the_same_and_a_foreign_or_broken_one_is_refused() -> None:
    book = OrderBook(VAN)
    book.take_order(line_order(stops=3, released=3))
    book.reach(0)
    book.finish(0)
    book.advance(2)
    book.set_action("a1", "deliver", ActionStatus.RUNNING, "at the door")
    book.apply_instant("E1", InstantActionType.EMERGENCY_STOP, ActionStatus.RUNNING)
    book.estop_sent(7)
    doc = json.loads(json.dumps(book.to_dict()))
    back = OrderBook.from_dict(doc, van_id=VAN)
    assert back.to_dict() == book.to_dict()
    assert back.applied("E1") and back.estop_latched and back.estop_id == 7
    with pytest.raises(OrderBookError, match="van_id"):
        OrderBook.from_dict(doc, van_id="WH-OTHER-01")
    with pytest.raises(OrderBookError, match="finished_nodes"):
        OrderBook.from_dict({**doc, "finished_nodes": ["0"]}, van_id=VAN)
    with pytest.raises(OrderBookError, match="missing field 'cancelled'"):
        OrderBook.from_dict({k: v for k, v in doc.items() if k != "cancelled"}, van_id=VAN)
    with pytest.raises(OrderBookError, match="field 'order'"):
        OrderBook.from_dict({**doc, "order": '{"van_id": 1}'}, van_id=VAN)
    with pytest.raises(OrderBookError, match="expected a JSON object"):
        OrderBook.from_dict([doc], van_id=VAN)


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("order"), st.integers(1, 4)),
        st.tuples(st.just("reach"), st.integers(0, 3)),
        st.tuples(st.just("finish"), st.integers(0, 3)),
        st.tuples(st.just("advance"), st.integers(0, 12)),
        st.tuples(st.just("instant"), st.sampled_from(list(InstantActionType))),
    ),
    max_size=25,
)


@given(_OPS)
@settings(max_examples=60, deadline=None)
def test_any_book_reads_back_as_it_was_written(ops: list[tuple[str, object]]) -> None:
    book = OrderBook(VAN)
    order = line_order(stops=4, released=2)
    for i, (op, arg) in enumerate(ops):
        assert isinstance(arg, int | InstantActionType)
        if op == "order":
            assert isinstance(arg, int)
            if arg == 1:
                book.take_order(order)
            elif book.order is not None:
                book.take_order(released_more(book.order, min(4, 1 + arg), message_id=i, now_s=0))
        elif book.order is not None and op == "reach":
            book.reach(2 * int(arg))
        elif (
            book.order is not None and op == "finish" and 2 * int(arg) <= (book.last_node_seq or 0)
        ):
            book.finish(2 * int(arg))
        elif op == "advance":
            book.advance(int(arg))
        elif op == "instant":
            assert isinstance(arg, InstantActionType)
            book.apply_instant(f"I{i}", arg, ActionStatus.FINISHED)
    doc = json.loads(json.dumps(book.to_dict()))
    back = OrderBook.from_dict(doc, van_id=VAN)
    assert back.to_dict() == book.to_dict()
    assert back.action_states() == book.action_states()
    assert back.node_states() == book.node_states()


def test_the_protocol_van_keeps_its_order_by_the_same_book() -> None:
    van = ProtocolVan(VAN, fail_parcels={"P2"})
    assert van.receive_order(line_order(stops=3, released=3)) is OrderVerdict.NEW
    assert van.drive_all() == 3
    assert van.on_board == ["P2"] and van.book.finished == {0, 2, 4}
    state = van.state(0.0)
    assert state.last_node_sequence_id == 4 and state.load.parcel_ids == ("P2",)
    a2 = {a.action_id: a for a in state.action_states}["a2"]
    assert a2.failed_parcel_ids == ("P2",)
    van.actions["a2"] = a2.model_copy(update={"status": ActionStatus.RUNNING})
    assert van.actions["a2"].status is ActionStatus.RUNNING


def _transfer_order(ref: str = "ST-B-02") -> Order:
    """``line_order`` with its first stop a transfer beside broken-down van ``ref``."""
    order = line_order(stops=3, released=3)
    first = order.nodes[0]
    action = first.actions[0].model_copy(update={"action_type": NodeActionType.TRANSFER_LOAD})
    node = first.model_copy(update={"kind": StopKind.TRANSFER, "ref": ref, "actions": (action,)})
    return Order.model_validate({**order.model_dump(), "nodes": (node, *order.nodes[1:])})


def test_a_transfer_takes_over_what_the_broken_van_hands_over_and_it_leaves_that_van() -> None:
    broken = OrderBook("ST-B-02")
    broken.set_parcels(["P1", "P2", "P9"])
    rescuer = OrderBook(VAN)
    assert rescuer.take_order(_transfer_order()).verdict is OrderVerdict.NEW
    rescuer.reach(0)
    # the broken van still has P1 and P2 (P9 is not in the order); P2 is missing
    assert broken.hand_over(["P1"]) == ("P1",)
    done = rescuer.finish(0, failed={"a0": ("P2",)}, why="not aboard")
    assert done is not None and done.loaded == ("P1",)
    assert rescuer.parcels_on_board == ["P1"]
    assert broken.parcels_on_board == ["P2", "P9"]
    (a0,) = [a for a in rescuer.action_states() if a.action_id == "a0"]
    assert a0.action_type == "transfer_load" and a0.failed_parcel_ids == ("P2",)


def test_a_transfer_node_must_name_its_van_and_hold_only_a_transfer_load() -> None:
    order = _transfer_order()
    data = order.model_dump()
    data["nodes"][0]["ref"] = ""
    with pytest.raises(ValueError, match="names the van it loads from"):
        Order.model_validate(data)
    data = order.model_dump()
    data["nodes"][1]["actions"][0]["action_type"] = NodeActionType.TRANSFER_LOAD
    with pytest.raises(ValueError, match="transfer_load action belongs to a transfer node"):
        Order.model_validate(data)
