"""The console's picture of the fleet, from messages and events (pure: time is a parameter)."""

from __future__ import annotations

import pytest

from fleet.console.eta import predict, remaining_on_edge_m
from fleet.console.view import FleetView, ViewConfig
from fleet.protocol import (
    ConnectionState,
    ErrorLevel,
    Order,
    VanError,
    VanPosition,
    make_header,
)
from fleet.protocol.control_api import Event
from fleet.protocol.timestamps import format_timestamp, parse_timestamp
from tests.support.protocol_examples import NOW_S, VAN, order, state

CONFIG = ViewConfig(stale_after_s=10.0, late_after_s=600.0, low_soc_pct=20.0, battery_kwh=80.0)


def planned_order(*, start_s: float = NOW_S, update_id: int = 0) -> Order:
    """The example order with planned times: n0 (load, 900 s), then a door every leg."""
    base = order(update_id=update_id, released=4)
    nodes = []
    t = start_s
    for i, node in enumerate(base.nodes):
        if i:
            t += base.edges[i - 1].length_m / base.edges[i - 1].max_speed_mps
        work = max(a.duration_s for a in node.actions)
        nodes.append(
            node.model_copy(
                update={
                    "planned_arrival": format_timestamp(t),
                    "planned_departure": format_timestamp(t + work),
                }
            )
        )
        t += work
    return base.model_copy(update={"nodes": tuple(nodes)})


def event(event_id: int, kind: str, t_s: float, **fields: object) -> Event:
    return Event(
        header=make_header("fleet-controller", event_id, t_s),
        event_id=event_id,
        time=format_timestamp(t_s),
        kind=kind,
        **fields,  # type: ignore[arg-type]
    )


def test_a_van_silent_past_the_controllers_bound_is_stale_never_live() -> None:
    view = FleetView(CONFIG)
    view.on_state(state(driving=True, speed_mps=8.0), NOW_S)
    v = view.vans[VAN]
    assert v.mode == "driving"
    view.tick(NOW_S + 9.9)
    assert v.mode == "driving"
    view.tick(NOW_S + 10.1)
    assert v.mode == "stale"
    shown = view.van_json(v, NOW_S + 10.1)
    assert shown["mode"] == "stale" and "no state for 10 s" in str(shown["stale_reason"])
    view.on_state(state(message_id=2, driving=True), NOW_S + 11)
    assert v.mode == "driving"


@pytest.mark.parametrize("error_type", ["vcu_telemetry_stale", "vcu_link_lost"])
def test_a_van_reporting_stale_vcu_data_is_stale(error_type: str) -> None:
    view = FleetView(CONFIG)
    err = VanError(error_type=error_type, level=ErrorLevel.WARNING, description="x")
    view.on_state(state(driving=True, errors=(err,)), NOW_S)
    assert view.vans[VAN].mode == "stale"
    assert error_type in view.stale_reason(view.vans[VAN], NOW_S)


def test_modes_follow_connection_estop_fatal_and_charging() -> None:
    view = FleetView(CONFIG)
    view.on_state(state(emergency_stop=True), NOW_S)
    assert (
        view.vans[VAN].mode == "paused" and view.van_json(view.vans[VAN], NOW_S)["emergency_stop"]
    )
    fatal = VanError(error_type="vehicle_fault", level=ErrorLevel.FATAL)
    view.on_state(state(message_id=2, errors=(fatal,)), NOW_S)
    assert view.vans[VAN].mode == "error"
    view.on_connection(VAN, ConnectionState.CONNECTION_BROKEN, NOW_S)
    assert view.vans[VAN].mode == "offline"


def test_an_order_places_its_parcels_at_their_doors_with_the_planned_time() -> None:
    view = FleetView(CONFIG)
    o = planned_order()
    view.on_order(o, NOW_S)
    p = view.parcels["P2"]
    assert p.van_id == VAN and p.door == (o.nodes[2].lon, o.nodes[2].lat)
    assert p.planned_s == parse_timestamp(o.nodes[2].planned_arrival or "")
    assert view.parcel_json(p, NOW_S)["display_status"] == "waiting"
    # a re-sent copy changes nothing; an older update is ignored
    view.on_order(o, NOW_S)
    assert len(p.history) == 1


def test_parcel_status_follows_the_controllers_events_and_never_goes_back() -> None:
    view = FleetView(CONFIG)
    view.on_order(planned_order(), NOW_S)
    view.on_event(event(1, "parcel_loaded", NOW_S, van_id=VAN, parcel_id="P1"), NOW_S)
    assert view.parcels["P1"].status == "loaded"
    due = view.parcels["P1"].planned_s or 0.0
    view.on_event(event(2, "parcel_delivered", due + 60, van_id=VAN, parcel_id="P1"), NOW_S)
    p = view.parcel_json(view.parcels["P1"], NOW_S, history=True)
    assert p["status"] == "delivered" and not p["late"] and p["predicted_eta"] is None
    assert p["delivered"] == format_timestamp(due + 60)
    assert [h["text"] for h in p["history"]][-1] == "delivered (WH-PORTO-01)"  # type: ignore[index]
    # the same event again (a history page after the live one) is applied once
    view.on_event(event(2, "parcel_delivered", due + 60, van_id=VAN, parcel_id="P1"), NOW_S)
    assert len(view.parcels["P1"].history) == 3
    view.on_event(
        event(3, "parcel_failed", NOW_S, van_id=VAN, parcel_id="P2", detail="nobody home"), NOW_S
    )
    assert view.parcel_json(view.parcels["P2"], NOW_S)["detail"] == "nobody home"
    k = view.kpis()
    assert (k["delivered"], k["on_time"], k["failed"]) == (1, 1, 1)


def test_a_delivery_later_than_the_plan_by_the_bound_is_late() -> None:
    view = FleetView(CONFIG)
    view.on_order(planned_order(), NOW_S)
    due = view.parcels["P3"].planned_s or 0.0
    view.on_event(event(1, "parcel_delivered", due + 601, van_id=VAN, parcel_id="P3"), NOW_S)
    assert view.parcels["P3"].late
    assert view.kpis()["late"] == 1 and view.kpis()["on_time"] == 0


def test_predicted_arrivals_run_from_the_vans_position_along_its_route() -> None:
    o = planned_order()
    # the van left n0 and is halfway along the first leg (120 m at 13.9 m/s)
    a, b = o.edges[0].trajectory
    mid = VanPosition(lon=(a[0] + b[0]) / 2, lat=(a[1] + b[1]) / 2, heading_deg=60.0)
    s = state(
        order_id=o.order_id, last_node_id="n0", last_node_sequence_id=0, driving=True, position=mid
    )
    assert remaining_on_edge_m(o.edges[0], mid.lon, mid.lat) == pytest.approx(60.0, rel=1e-3)
    now = parse_timestamp(o.nodes[0].planned_departure or "") + 100.0  # 100 s behind plan
    etas = predict(o, s, now)
    assert [e.index for e in etas] == [1, 2, 3]
    assert etas[0].arrival_s == pytest.approx(now + 60.0 / 13.9, abs=0.01)
    # then 80 s of work at n1, the next leg, and so on
    assert etas[1].arrival_s == pytest.approx(etas[0].arrival_s + 80.0 + 240.0 / 13.9, abs=0.01)


def test_a_van_early_at_a_stop_leaves_as_planned_and_predictions_say_so() -> None:
    o = planned_order()
    at_n1 = VanPosition(lon=o.nodes[1].lon, lat=o.nodes[1].lat, heading_deg=0.0)
    s = state(order_id=o.order_id, last_node_sequence_id=2, driving=False, position=at_n1)
    early = parse_timestamp(o.nodes[1].planned_arrival or "") - 300.0
    etas = predict(o, s, early, reached_s=early)
    planned_next = parse_timestamp(o.nodes[2].planned_arrival or "")
    assert etas[0].index == 2 and etas[0].arrival_s == pytest.approx(planned_next, abs=0.01)


def test_a_parcel_predicted_past_the_bound_raises_one_late_alert_until_acknowledged() -> None:
    view = FleetView(CONFIG)
    o = planned_order()
    view.on_order(o, NOW_S)
    s = state(order_id=o.order_id, last_node_sequence_id=0, driving=False, paused=True)
    late_now = parse_timestamp(o.nodes[3].planned_arrival or "") + 3600.0
    view.on_state(s, late_now)
    view.refresh_lateness(late_now)
    late = [a for a in view.alerts.values() if a.kind == "late_parcel"]
    assert {a.parcel_id for a in late} == {"P1", "P2", "P3"}
    view.refresh_lateness(late_now + 5)
    assert len([a for a in view.alerts.values() if a.kind == "late_parcel"]) == 3
    ack = view.acknowledge(late[0].alert_id, "alice", late_now + 6)
    assert ack is not None and ack.json()["acknowledged_by"] == "alice"
    assert view.kpis()["late"] == 3


def test_alerts_for_estop_low_charge_breakdown_lost_link_and_failed_replans() -> None:
    view = FleetView(CONFIG)
    view.on_state(state(emergency_stop=True), NOW_S)
    low = state(message_id=2).battery.model_copy(
        update={"soc_pct": 12.0, "remaining_range_m": 15_000.0}
    )
    view.on_state(state(message_id=2, battery=low), NOW_S + 1)
    view.on_state(state(message_id=3, battery=low), NOW_S + 2)  # still low: no second alert
    view.on_event(event(1, "van_out_of_service", NOW_S, van_id=VAN, detail="fatal error"), NOW_S)
    view.on_event(event(2, "van_offline", NOW_S, van_id=VAN), NOW_S)
    view.on_event(event(3, "replan_failed", NOW_S, detail="no solution"), NOW_S)
    why = "window_impossible: the earliest a van can reach it is 10:25 (direct from the warehouse)"
    view.on_event(event(4, "urgent_unmet", NOW_S, parcel_id="Q1", detail=why), NOW_S)
    kinds = sorted(a.kind for a in view.alerts.values())
    assert kinds == [
        "breakdown",
        "estop",
        "link_lost",
        "low_charge",
        "replan_failed",
        "urgent_unmet",
    ]
    unmet = next(a for a in view.alerts.values() if a.kind == "urgent_unmet")
    assert unmet.parcel_id == "Q1" and "10:25" in unmet.text
    assert not view.vans[VAN].in_service
    assert "12 % charge" in next(a.text for a in view.alerts.values() if a.kind == "low_charge")


def test_the_stream_gets_what_changed_once() -> None:
    view = FleetView(CONFIG, roster=(VAN, "ST-A-01"))
    first = view.take_delta(NOW_S)
    assert first is not None and first["vans"] == [] and "kpis" in first
    assert view.take_delta(NOW_S) is None
    view.on_state(state(), NOW_S)
    delta = view.take_delta(NOW_S)
    assert delta is not None and [v["van_id"] for v in delta["vans"]] == [VAN]  # type: ignore[union-attr]
    snap = view.snapshot(NOW_S)
    assert {v["van_id"] for v in snap["vans"]} == {VAN, "ST-A-01"}  # type: ignore[union-attr]


def test_an_acknowledgement_in_the_controllers_log_acknowledges_the_alert_after_a_restart() -> None:
    # a restarted console reads the whole log: the breakdown comes back acknowledged by whoever
    # acknowledged it (on any console); a later breakdown of the same van is a new, open alert
    log = [
        event(1, "van_out_of_service", NOW_S, van_id=VAN, detail="drive unit fault"),
        event(
            2,
            "alert_acknowledged",
            NOW_S + 60,
            van_id=VAN,
            detail="breakdown acknowledged by alice",
            data={"alert": "breakdown", "by": "alice"},
        ),
        event(3, "van_out_of_service", NOW_S + 600, van_id=VAN, detail="again"),
    ]
    view = FleetView(CONFIG)
    for e in log[:2]:
        view.on_event(e, NOW_S + 61)
    (first,) = view.alerts.values()
    assert first.acknowledged_by == "alice" and first.acknowledged_s == NOW_S + 60
    view.on_event(log[2], NOW_S + 601)
    second = [a for a in view.alerts.values() if a.alert_id != first.alert_id]
    assert len(second) == 1 and second[0].acknowledged_by is None
    assert not view.parcels  # an acknowledgement is no parcel's history


def test_a_console_started_mid_day_draws_every_route_from_the_controllers_latest_orders() -> None:
    import asyncio
    from typing import Any, cast

    from fleet.console.live import Feed
    from fleet.mqtt import BrokerAddress
    from fleet.protocol.clock import WallClock
    from fleet.protocol.control_api import MAX_ORDERS_ASKED, OrdersBody, OrdersResult
    from fleet.protocol.topics import Topics

    asked: list[tuple[str, ...]] = []

    class Controller:  # answers the control API's `orders` as the controller does
        async def request(self, body: OrdersBody) -> OrdersResult:
            asked.append(body.van_ids)
            return OrdersResult(orders=(planned_order(),) if VAN in body.van_ids else ())

    view = FleetView(CONFIG)
    feed = Feed(view, BrokerAddress("127.0.0.1", 1), topics=Topics(), clock=WallClock())
    vans = [VAN, *(f"OTHER-{i:02d}" for i in range(20))]
    asyncio.run(feed._routes(cast(Any, Controller()), vans))
    assert [len(a) for a in asked] == [MAX_ORDERS_ASKED, len(vans) - MAX_ORDERS_ASKED]
    assert view.vans[VAN].order == planned_order()
    assert view.parcels  # the doors of the parcels on its route are known
