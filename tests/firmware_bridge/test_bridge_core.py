"""The bridge's sans-I/O core and mission cutting, without broker, port or clock."""

from __future__ import annotations

import json

import pytest
from bridge_fixtures import (
    KEY,
    NOW_S,
    VAN,
    instant,
    line_order,
    long_edge_order,
    north,
    released_more,
)

from firmware_bridge import wire
from firmware_bridge.bridge.core import (
    BridgeCore,
    DiscardSerial,
    EmergencyStopSerial,
    PublishState,
    SaveBook,
    SaveCounters,
    SendSerial,
)
from firmware_bridge.bridge.mission import base_waypoints, cut_segments
from firmware_bridge.bridge.order_book import OrderBookError
from fleet.protocol import (
    ActionStatus,
    CommandVerifier,
    Edge,
    ErrorLevel,
    InstantActionType,
    NodeAction,
    NodeActionType,
    Order,
    State,
    encode,
    format_timestamp,
    sign,
)


def core() -> BridgeCore:
    return BridgeCore(VAN, CommandVerifier(VAN, [KEY], max_age_s=600), mission_ids=41)


def telemetry(**kw: int) -> wire.Telemetry:
    fields = dict(
        uptime_ms=1,
        lon_e7=wire.to_e7(north(0)[0]),
        lat_e7=wire.to_e7(north(0)[1]),
        heading_cdeg=0,
        speed_cmps=0,
        soc_cpct=9000,
        range_m=144_000,
        odometer_m=10,
        mission_id=0,
        last_wp=wire.WP_NONE,
        wp_queued=0,
        drive_state=wire.DriveState.IDLE,
        door=wire.DoorState.CLOSED,
        fault_bits=0,
        estop_id=0,
    )
    fields.update(kw)
    return wire.Telemetry(**fields)  # type: ignore[arg-type]


def ready(c: BridgeCore) -> None:
    c.on_link_up()
    c.on_telemetry(telemetry(), NOW_S)


def segments(actions: list[object]) -> list[wire.DriveSegment]:
    return [
        a.message
        for a in actions
        if isinstance(a, SendSerial) and isinstance(a.message, wire.DriveSegment)
    ]


def payload(order: Order) -> bytes:
    return encode(sign(order, KEY))


def test_only_the_released_base_becomes_waypoints() -> None:
    order = line_order(stops=4, released=2)
    wps = base_waypoints(order)
    assert [w.node_seq for w in wps] == [0, None, 2]
    assert wps[-1].stop and wps[-1].dwell_s == 1
    horizon_lat = wire.to_e7(order.nodes[2].lat)
    assert all(w.lat_e7 < horizon_lat for w in wps)


def test_segments_never_cross_a_node_nor_exceed_the_frame() -> None:
    order = long_edge_order()
    wps = base_waypoints(order)
    segs = cut_segments(wps, mission_id=1, start=0)
    assert all(1 <= len(s.waypoints) <= wire.MAX_WAYPOINTS for s in segs)
    numbered = [s.first_wp for s in segs]
    assert numbered == sorted(numbered) and numbered[0] == 0
    assert sum(len(s.waypoints) for s in segs) == len(wps)
    node_wps = {i for i, w in enumerate(wps) if w.node_seq is not None}
    for s in segs:
        inside = set(range(s.first_wp, s.first_wp + len(s.waypoints) - 1))
        assert not inside & node_wps  # a node is only ever a segment's last waypoint
    assert all(s.speed_cap_cmps == 800 for s in segs)


def test_an_order_sends_segments_only_when_the_vcu_is_in_sync() -> None:
    c = core()
    order = line_order(stops=4, released=2)
    assert segments(c.on_order_payload(payload(order), NOW_S)) == []  # link not up yet
    c.on_link_up()
    out = c.on_telemetry(telemetry(), NOW_S)
    segs = segments(out)
    assert [s.first_wp for s in segs] == [0, 1]
    assert sum(len(s.waypoints) for s in segs) == 3  # node 0, midpoint, node 1
    assert any(isinstance(a, PublishState) for a in out)


def test_an_update_appends_to_the_same_mission() -> None:
    c = core()
    ready(c)
    order = line_order(stops=4, released=2, message_id=1)
    first = segments(c.on_order_payload(payload(order), NOW_S))
    update = released_more(order, 4, message_id=2, now_s=NOW_S)
    more = segments(c.on_order_payload(payload(update), NOW_S))
    assert {s.mission_id for s in first + more} == {first[0].mission_id}
    assert more[0].first_wp == 3
    assert sum(len(s.waypoints) for s in first + more) == 7


def test_instant_actions_map_to_serial_commands() -> None:
    c = core()
    ready(c)
    mapped = {}
    kinds = sorted(InstantActionType, key=lambda k: k is not InstantActionType.EMERGENCY_STOP)
    for i, kind in enumerate(kinds, start=1):
        out = c.on_instant_payload(
            encode(sign(instant(kind, message_id=i, now_s=NOW_S), KEY)), NOW_S
        )
        first = out[0]
        mapped[kind] = first.message if isinstance(first, SendSerial) else first
        if isinstance(first, EmergencyStopSerial):
            c.estop_sent(9)
    assert isinstance(mapped[InstantActionType.EMERGENCY_STOP], EmergencyStopSerial)
    assert mapped[InstantActionType.PAUSE] == wire.Stop(wire.StopMode.HOLD)
    assert mapped[InstantActionType.RESUME] == wire.Resume(9)
    assert mapped[InstantActionType.CANCEL_ORDER] == wire.Stop(wire.StopMode.ABORT)
    assert mapped[InstantActionType.OPEN_DOOR] == wire.Door(open=True)
    assert mapped[InstantActionType.CLOSE_DOOR] == wire.Door(open=False)


def test_a_lost_vcu_link_is_a_warning_then_fatal_after_the_grace_and_stops_the_segments() -> None:
    c = BridgeCore(VAN, CommandVerifier(VAN, [KEY], max_age_s=600), vcu_grace_s=5.0)
    ready(c)
    out = c.on_link_down("no valid frame for 1.00 s", NOW_S)
    assert isinstance(out[0], DiscardSerial)
    state = c.build_state(NOW_S + 1)
    # the link is lost, and what the VCU said last is 1 s old: both said, neither fatal yet
    assert [(e.error_type, e.level) for e in state.errors] == [
        ("vcu_link_lost", ErrorLevel.WARNING),
        ("vcu_telemetry_stale", ErrorLevel.WARNING),
    ]
    assert {r.key: r.value for e in state.errors for r in e.references} == {
        "telemetry_age_s": "1.00"
    }
    assert segments(c.on_order_payload(payload(line_order()), NOW_S + 1)) == []
    # a second loss report does not restart the grace
    c.on_link_down("again", NOW_S + 4)
    for action in c.tick(NOW_S + 4.9):  # not fatal yet
        assert isinstance(action, PublishState)
        assert all(e.level is ErrorLevel.WARNING for e in action.state.errors)
    (escalated,) = c.tick(NOW_S + 5.0)  # the grace is over: a state at once, fatal
    assert isinstance(escalated, PublishState)
    assert [(e.error_type, e.level) for e in escalated.state.errors] == [
        ("vcu_link_lost", ErrorLevel.FATAL),
        ("vcu_telemetry_stale", ErrorLevel.WARNING),
    ]
    c.on_link_up()
    assert segments(c.on_telemetry(telemetry(), NOW_S + 6))  # back in sync: the order goes out
    assert c.build_state(NOW_S + 6).errors == ()


def test_a_vcu_back_within_the_grace_never_shows_a_fatal_error() -> None:
    c = core()
    ready(c)
    c.on_link_down("peer restarted", NOW_S)
    c.on_link_up()
    c.on_telemetry(telemetry(), NOW_S + 1)
    states = [a.state for a in c.on_telemetry(telemetry(), NOW_S + 29.9)]  # type: ignore[union-attr]
    assert states and all(s.errors == () for s in states)


def test_after_a_vcu_reboot_a_new_mission_starts_at_the_first_waypoint_not_reached() -> None:
    c = core()
    ready(c)
    first = segments(c.on_order_payload(payload(line_order(stops=3, released=3)), NOW_S))
    mission = first[0].mission_id
    for k in range(len(first)):
        c.on_delivered(f"seg:{mission}:{k}")
    c.on_telemetry(
        telemetry(mission_id=mission, last_wp=2, wp_queued=5, drive_state=wire.DriveState.DRIVING),
        NOW_S,
    )
    assert c.last_node_seq == 2
    c.on_link_down("peer restarted", NOW_S)
    c.on_link_up()
    again = segments(c.on_telemetry(telemetry(mission_id=0), NOW_S))
    assert again[0].mission_id != mission and again[0].first_wp == 0
    assert again[0].waypoints[0] == (wire.to_e7(north(45)[0]), wire.to_e7(north(45)[1]))


def test_an_edge_without_geometry_in_the_horizon_is_fine() -> None:
    order = line_order(stops=3, released=2)
    bare = Edge.model_validate({**order.edges[1].model_dump(), "trajectory": ()}, strict=False)
    order = Order.model_validate(
        {**order.model_dump(), "edges": (order.edges[0], bare)}, strict=False
    )
    assert len(base_waypoints(order)) == 3


def test_an_emergency_stop_is_asked_for_before_any_state_is_built() -> None:
    c = core()
    ready(c)
    both = [InstantActionType.OPEN_DOOR, InstantActionType.EMERGENCY_STOP]
    msg = instant(InstantActionType.OPEN_DOOR, message_id=1, now_s=NOW_S)
    msg = msg.model_copy(
        update={
            "actions": tuple(
                a.model_copy(update={"action_id": f"A{i}", "action_type": k})
                for i, k in enumerate(both)
                for a in msg.actions
            )
        }
    )
    commands = c.instant_commands(encode(sign(msg, KEY)), NOW_S)
    # the e-stop first (though listed second), then the door, then the counters; no state
    assert isinstance(commands[0], EmergencyStopSerial)
    assert isinstance(commands[1], SendSerial) and commands[1].message == wire.Door(open=True)
    assert not any(isinstance(a, PublishState) for a in commands)
    (state,) = c.state_after_command(NOW_S)
    assert isinstance(state, PublishState)
    assert {s.action_id: s.status.value for s in state.state.action_states} == {
        "A0": "running",
        "A1": "running",
    }


def test_a_refused_instant_message_asks_for_nothing_and_is_reported_in_the_state() -> None:
    c = core()
    ready(c)
    unsigned = encode(instant(InstantActionType.EMERGENCY_STOP, message_id=1, now_s=NOW_S))
    assert c.instant_commands(unsigned, NOW_S) == []
    (state,) = c.state_after_command(NOW_S)
    assert isinstance(state, PublishState)
    assert [e.error_type for e in state.state.errors] == ["signature_error"]
    refs = {(r.key, r.value) for r in state.state.errors[0].references}
    # the refusal names the command: its id and its actions' ids (docs/protocol.md, section 6)
    assert ("message_id", "1") in refs
    assert {k for k, _ in refs} >= {"reason", "action_id"}


def test_a_refused_order_is_named_by_its_id_and_update_and_garbage_by_its_topic() -> None:
    c = core()
    ready(c)
    order = line_order(stops=3, released=3)
    (state,) = [a for a in c.on_order_payload(encode(order), NOW_S) if isinstance(a, PublishState)]
    refs = {(r.key, r.value) for r in state.state.errors[0].references}
    assert ("order_id", order.order_id) in refs
    assert ("order_update_id", str(order.order_update_id)) in refs
    (state,) = [a for a in c.on_order_payload(b"{not json", NOW_S) if isinstance(a, PublishState)]
    garbage = state.state.errors[-1]
    assert garbage.error_type == "validation_error"
    assert ("topic", "order") in {(r.key, r.value) for r in garbage.references}


def test_a_vcu_rebooted_while_dwelling_at_a_stop_goes_back_to_it_and_keeps_the_parcels() -> None:
    c = core()
    ready(c)
    first = segments(c.on_order_payload(payload(line_order(stops=3, released=3)), NOW_S))
    mission = first[0].mission_id
    for k in range(len(first)):
        c.on_delivered(f"seg:{mission}:{k}")
    # at n1 (waypoint 2), delivering P1: n0's load is done, n1's delivery is not
    c.on_telemetry(
        telemetry(mission_id=mission, last_wp=2, wp_queued=5, drive_state=wire.DriveState.DWELLING),
        NOW_S,
    )
    assert c.parcels_on_board == ["P1", "P2"]
    c.on_link_down("peer restarted", NOW_S)
    c.on_link_up()
    again = segments(c.on_telemetry(telemetry(mission_id=0), NOW_S + 1))
    assert again[0].mission_id != mission and again[0].first_wp == 0
    assert again[0].waypoints == ((wire.to_e7(north(30)[0]), wire.to_e7(north(30)[1])),)
    assert again[0].stop_at_end and again[0].dwell_s == 1  # the delivery is done again, whole
    assert c.parcels_on_board == ["P1", "P2"]
    # the new mission arrives at n1, dwells, drives on: P1 is delivered once
    new = again[0].mission_id
    for k in range(len(again)):
        c.on_delivered(f"seg:{new}:{k}")
    c.on_telemetry(
        telemetry(mission_id=new, last_wp=0, wp_queued=3, drive_state=wire.DriveState.DWELLING),
        NOW_S + 2,
    )
    assert c.parcels_on_board == ["P1", "P2"]
    c.on_telemetry(
        telemetry(mission_id=new, last_wp=1, wp_queued=3, drive_state=wire.DriveState.DRIVING),
        NOW_S + 4,
    )
    assert c.parcels_on_board == ["P2"]


def _timed(order: Order, departures: dict[int, float]) -> Order:
    """``order`` with planned departures (epoch s) at the given node indexes."""
    nodes = tuple(
        n.model_copy(update={"planned_departure": format_timestamp(departures[i])})
        if i in departures
        else n
        for i, n in enumerate(order.nodes)
    )
    return order.model_copy(update={"nodes": nodes})


def test_a_stop_with_several_actions_dwells_the_longest_not_their_sum() -> None:
    order = line_order(stops=2, released=2, dwell_s=60.0)
    node = order.nodes[1]
    both = (node.actions[0], node.actions[0].model_copy(update={"action_id": "a1b"}))
    order = order.model_copy(
        update={"nodes": (order.nodes[0], node.model_copy(update={"actions": both}))}
    )
    wps = base_waypoints(order)
    assert wps[-1].stop and wps[-1].dwell_s == 60  # not 120


def test_a_stop_s_work_is_held_back_until_its_planned_departure_minus_the_work() -> None:
    c = core()
    ready(c)
    # the van leaves node 0 (the depot, loading) at NOW + 10 s, not before; node 1's
    # delivery (1 s) does not start before NOW + 99 s
    order = _timed(line_order(stops=3, released=3), {0: NOW_S + 10, 1: NOW_S + 100})
    assert segments(c.on_order_payload(payload(order), NOW_S)) == []
    assert c.next_gate_s() == NOW_S + 10
    assert c.build_state(NOW_S).last_node_sequence_id is None
    first = segments(c.tick(NOW_S + 10))
    # n0 | mid, n1's wait point | (held: n1) | mid, n2
    assert [len(s.waypoints) for s in first] == [1, 2]
    assert not first[0].stop_at_end and first[0].dwell_s == 0
    assert first[1].stop_at_end and first[1].dwell_s == 0  # the van waits here
    assert c.next_gate_s() == NOW_S + 99
    mission = first[0].mission_id
    for k in range(len(first)):
        c.on_delivered(f"seg:{mission}:{k}")
    assert segments(c.tick(NOW_S + 98.9)) == []
    # at the wait point the node is not reached yet: its action is waiting
    c.on_telemetry(
        telemetry(mission_id=mission, last_wp=2, wp_queued=3, drive_state=wire.DriveState.HOLDING),
        NOW_S + 50,
    )
    state = c.build_state(NOW_S + 50)
    assert state.last_node_sequence_id == 0 and not state.driving
    assert {a.action_id: a.status for a in state.action_states}["a1"] is ActionStatus.WAITING
    released_ = segments(c.tick(NOW_S + 99))
    assert [len(s.waypoints) for s in released_] == [1, 2]
    assert released_[0].waypoints == first[1].waypoints[-1:] and released_[0].dwell_s == 1
    assert c.next_gate_s() is None


def _with_charge(order: Order, index: int, target: float) -> Order:
    node = order.nodes[index]
    charge = NodeAction(
        action_id=f"c{index}",
        action_type=NodeActionType.CHARGE,
        duration_s=600.0,
        target_soc_pct=target,
    )
    nodes = list(order.nodes)
    nodes[index] = node.model_copy(update={"actions": (*node.actions, charge)})
    return order.model_copy(update={"nodes": tuple(nodes)})


def test_a_charge_action_becomes_charge_at_the_node_and_the_van_waits_for_it() -> None:
    c = core()
    ready(c)
    order = _with_charge(line_order(stops=3, released=3), 1, 80.0)
    first = segments(c.on_order_payload(payload(order), NOW_S))
    mission = first[0].mission_id
    # n0 | mid, n1 (the charge stop) | (held until charged: mid, n2)
    assert [len(s.waypoints) for s in first] == [1, 2]
    assert first[1].stop_at_end
    for k in range(len(first)):
        c.on_delivered(f"seg:{mission}:{k}")

    def at_n1(**kw: int) -> list[object]:
        fields = dict(mission_id=mission, last_wp=2, wp_queued=3, soc_cpct=6000)
        return c.on_telemetry(telemetry(**{**fields, **kw}), NOW_S)  # type: ignore[arg-type]

    out = at_n1(drive_state=wire.DriveState.DWELLING)
    (charge,) = [a for a in out if isinstance(a, SendSerial) and a.tag == "charge:2"]
    assert charge.message == wire.Charge(target_cpct=8000, max_power_hw=0)
    assert not [a for a in at_n1(drive_state=wire.DriveState.DWELLING) if isinstance(a, SendSerial)]
    c.on_delivered("charge:2")
    charging = int(wire.FaultBit.CHARGING)
    assert segments(at_n1(drive_state=wire.DriveState.HOLDING, fault_bits=charging)) == []
    state = c.build_state(NOW_S)
    assert state.battery.charging
    statuses = {a.action_id: a.status for a in state.action_states}
    assert statuses["c1"] is ActionStatus.RUNNING and statuses["a1"] is ActionStatus.FINISHED
    # the VCU reached the target: the charge is finished and the van may go on
    rest = segments(at_n1(drive_state=wire.DriveState.HOLDING, soc_cpct=8000))
    assert [len(s.waypoints) for s in rest] == [2]
    state = c.build_state(NOW_S)
    assert not state.battery.charging
    assert {a.action_id: a.status for a in state.action_states}["c1"] is ActionStatus.FINISHED


def test_a_charge_at_the_first_node_runs_while_the_van_waits_for_its_departure() -> None:
    # a re-plan's order for a van at its depot: charge there, leave at the planned departure
    c = core()
    ready(c)
    order = _timed(_with_charge(line_order(stops=3, released=3), 0, 80.0), {0: NOW_S + 3600})
    assert segments(c.on_order_payload(payload(order), NOW_S)) == []
    out = c.on_telemetry(telemetry(drive_state=wire.DriveState.IDLE), NOW_S + 1)
    (charge,) = [a for a in out if isinstance(a, SendSerial)]
    assert charge.tag == "charge:0" and charge.message == wire.Charge(8000, 0)
    c.on_delivered("charge:0")
    charging = int(wire.FaultBit.CHARGING)
    assert segments(c.on_telemetry(telemetry(fault_bits=charging), NOW_S + 60)) == []
    assert c.build_state(NOW_S + 60).battery.charging
    # charged long before the departure: nothing moves until then, then all of it at once
    assert segments(c.on_telemetry(telemetry(soc_cpct=8000), NOW_S + 1800)) == []
    statuses = {a.action_id: a.status for a in c.build_state(NOW_S + 1800).action_states}
    assert statuses["c0"] is ActionStatus.FINISHED
    assert c.next_gate_s() == NOW_S + 3600
    released = segments(c.tick(NOW_S + 3600))
    assert [len(s.waypoints) for s in released] == [1, 2, 2]  # n0 | mid, n1 | mid, n2


def test_a_van_away_from_the_first_node_does_not_charge_before_it_is_there() -> None:
    c = core()
    ready(c)
    order = _timed(_with_charge(line_order(stops=3, released=3), 0, 80.0), {0: NOW_S + 3600})
    c.on_order_payload(payload(order), NOW_S)
    away = telemetry(lat_e7=wire.to_e7(north(0)[1]) + 10_000)  # ~110 m north
    assert not [a for a in c.on_telemetry(away, NOW_S + 1) if isinstance(a, SendSerial)]


def test_a_refused_charge_fails_its_action_and_lets_the_van_go_on() -> None:
    c = core()
    ready(c)
    order = _with_charge(line_order(stops=3, released=3), 1, 80.0)
    first = segments(c.on_order_payload(payload(order), NOW_S))
    mission = first[0].mission_id
    for k in range(len(first)):
        c.on_delivered(f"seg:{mission}:{k}")
    c.on_telemetry(
        telemetry(mission_id=mission, last_wp=2, wp_queued=3, drive_state=wire.DriveState.HOLDING),
        NOW_S,
    )
    report = wire.FaultReport(wire.FaultCode.CHARGE_REFUSED, wire.Severity.WARNING, 0, 1)
    rest = segments(c.on_fault_report(report, NOW_S))
    assert [len(s.waypoints) for s in rest] == [2]
    state = c.build_state(NOW_S)
    (c1,) = [a for a in state.action_states if a.action_id == "c1"]
    assert c1.status is ActionStatus.FAILED and "refused" in c1.result_description


def test_no_state_before_the_vcu_has_spoken_and_a_refusal_meanwhile_is_kept() -> None:
    c = core()
    assert c.tick(NOW_S) == []
    out = c.on_order_payload(b"not json", NOW_S)
    assert not [
        a for a in out if isinstance(a, PublishState)
    ]  # no battery to report: 0 % would lie
    c.on_link_up()
    (first,) = [a for a in c.on_telemetry(telemetry(), NOW_S + 1) if isinstance(a, PublishState)]
    assert first.state.battery.soc_pct == 90.0
    assert [e.error_type for e in first.state.errors] == ["validation_error"]


# ---- issue 14: e-stop, latch, stale data, link loss, restarts ---------------------------


def _instant(kind: InstantActionType, message_id: int, action_id: str = "") -> bytes:
    return encode(sign(instant(kind, message_id=message_id, now_s=NOW_S, action_id=action_id), KEY))


def _serial(actions: list[object]) -> list[object]:
    return [a for a in actions if isinstance(a, SendSerial | EmergencyStopSerial)]


def _states(actions: list[object]) -> list[State]:
    return [a.state for a in actions if isinstance(a, PublishState)]


def _errors(state: State) -> dict[str, ErrorLevel]:
    return {e.error_type: e.level for e in state.errors}


def test_an_instant_action_id_is_applied_once_and_a_copy_is_confirmed_not_repeated() -> None:
    c = core()
    ready(c)
    (stop,) = _serial(
        c.instant_commands(_instant(InstantActionType.EMERGENCY_STOP, 5, "E1"), NOW_S)
    )
    assert isinstance(stop, EmergencyStopSerial)
    c.estop_sent(1)
    c.on_delivered(stop.tag)
    # the controller sends the same action again (a newer message, same action id)
    again = c.on_instant_payload(_instant(InstantActionType.EMERGENCY_STOP, 6, "E1"), NOW_S)
    assert _serial(again) == []  # not a second e-stop on the line
    (state,) = _states(again)  # but confirmed: the state lists it, finished
    assert {a.action_id: a.status for a in state.action_states}["E1"] is ActionStatus.FINISHED
    # an e-stop with an id not seen before is always obeyed
    (fresh,) = _serial(
        c.instant_commands(_instant(InstantActionType.EMERGENCY_STOP, 7, "E2"), NOW_S)
    )
    assert isinstance(fresh, EmergencyStopSerial)
    # a pause repeated is not applied twice either
    c.instant_commands(_instant(InstantActionType.PAUSE, 8, "P1"), NOW_S)
    assert _serial(c.instant_commands(_instant(InstantActionType.PAUSE, 9, "P1"), NOW_S)) == []


def test_an_emergency_stop_below_the_replay_counter_is_obeyed_and_lowers_nothing() -> None:
    # issue 14 item 1: a controller restarted with a new store signs with lower message ids
    c = core()
    ready(c)
    c.on_instant_payload(_instant(InstantActionType.PAUSE, 1002, "P1"), NOW_S)
    out = c.instant_commands(_instant(InstantActionType.EMERGENCY_STOP, 1, "E-new"), NOW_S)
    assert isinstance(out[0], EmergencyStopSerial)
    (counters,) = [a for a in out if isinstance(a, SaveCounters)]
    assert counters.counters["instant"] == 1002


def test_the_bridge_keeps_its_estop_latch_and_asserts_it_again_on_a_vcu_that_forgot_it() -> None:
    c = core()
    ready(c)
    c.instant_commands(_instant(InstantActionType.EMERGENCY_STOP, 1, "E1"), NOW_S)
    c.estop_sent(1)
    latched = int(wire.FaultBit.ESTOP_LATCHED)
    c.on_telemetry(telemetry(fault_bits=latched, estop_id=1), NOW_S + 0.1)
    assert c.build_state(NOW_S + 0.1).emergency_stop
    # a second e-stop whose frame the VCU never acknowledges (it is about to reboot)
    c.instant_commands(_instant(InstantActionType.EMERGENCY_STOP, 3, "E2"), NOW_S + 0.5)
    # the VCU reboots and forgets the latch: the state still says e-stop, and EMERGENCY_STOP
    # goes out again at the first telemetry that does not show it
    c.on_link_down("the peer started a new session", NOW_S + 1)
    c.on_link_up()
    out = c.on_telemetry(telemetry(), NOW_S + 1.2)
    assert isinstance(out[0], EmergencyStopSerial)
    assert all(s.emergency_stop for s in _states(out))
    # not again while the first repeat is on its way; again if the VCU still does not show it
    assert _serial(c.on_telemetry(telemetry(), NOW_S + 1.3)) == []
    assert isinstance(_serial(c.on_telemetry(telemetry(), NOW_S + 1.5))[0], EmergencyStopSerial)
    c.estop_sent(1)
    assert _serial(c.on_telemetry(telemetry(fault_bits=latched, estop_id=1), NOW_S + 1.6)) == []
    # the VCU holds an e-stop: E2, whose own frame was never acknowledged, is finished too
    statuses = {a.action_id: a.status for a in c.build_state(NOW_S + 1.6).action_states}
    assert statuses["E2"] is ActionStatus.FINISHED
    # only an accepted resume clears it, naming the e-stop the VCU holds
    (resume,) = _serial(c.instant_commands(_instant(InstantActionType.RESUME, 4, "R1"), NOW_S + 2))
    assert isinstance(resume, SendSerial) and resume.message == wire.Resume(1)
    assert _serial(c.on_telemetry(telemetry(), NOW_S + 3)) == []
    assert not c.build_state(NOW_S + 3).emergency_stop


def test_stale_telemetry_is_an_error_at_once_never_a_guess_and_fatal_after_the_grace() -> None:
    c = BridgeCore(VAN, CommandVerifier(VAN, [KEY]), telemetry_stale_s=0.5, vcu_grace_s=5.0)
    c.on_link_up()
    moving = telemetry(speed_cmps=1135, drive_state=wire.DriveState.DRIVING)
    c.on_telemetry(moving, NOW_S)
    assert c.next_deadline_s() == NOW_S + 0.5  # the service wakes the core then
    assert c.tick(NOW_S + 0.5) == []  # not older than the bound yet
    (stale,) = _states(c.tick(NOW_S + 0.51))  # heartbeats go on, telemetry does not: at once
    assert _errors(stale) == {"vcu_telemetry_stale": ErrorLevel.WARNING}
    (err,) = stale.errors
    assert err.references[0].key == "telemetry_age_s" and err.references[0].value == "0.51"
    # the last values, never a guess (no speed 0, no driving false), with the error
    assert stale.driving and stale.speed_mps == 11.35
    (fatal,) = _states(c.tick(NOW_S + 5.5))
    assert _errors(fatal) == {"vcu_telemetry_stale": ErrorLevel.FATAL}
    (live,) = _states(c.on_telemetry(moving, NOW_S + 6))
    assert live.errors == ()


def test_a_vcu_with_another_protocol_version_is_a_fatal_error_even_before_any_telemetry() -> None:
    c = core()
    (state,) = _states(c.on_version_mismatch(3, 4, NOW_S))
    assert _errors(state)["vcu_version_mismatch"] is ErrorLevel.FATAL
    assert not state.driving and state.position is None  # nothing of the vehicle is known
    assert c.on_version_mismatch(3, 4, NOW_S + 0.2) == []  # the same again: nothing new
    # frames that still arrive are not the vehicle's until a handshake succeeds
    moving = telemetry(speed_cmps=1135, drive_state=wire.DriveState.DRIVING)
    assert c.on_telemetry(moving, NOW_S + 0.3) == []
    assert not c.build_state(NOW_S + 0.3).driving
    c.on_link_up()  # a full handshake: the VCU speaks our version now
    (ok,) = _states(c.on_telemetry(telemetry(), NOW_S + 1))
    assert "vcu_version_mismatch" not in _errors(ok)


def test_bad_frames_from_the_vcu_are_counted() -> None:
    c = core()
    fault = wire.FrameFault(wire.FaultKind.CRC, "checksum 0x1234 != 0x4321", 17)
    for i in range(50):
        assert c.on_bad_frame(fault, NOW_S + i * 0.1) == []
    assert c.bad_frames == 50


def _order_out(c: BridgeCore, stops: int = 3) -> int:
    ready(c)
    first = segments(c.on_order_payload(payload(line_order(stops=stops, released=stops)), NOW_S))
    mission = first[0].mission_id
    for k in range(len(first)):
        c.on_delivered(f"seg:{mission}:{k}")
    return mission


def test_a_pause_whose_frame_was_lost_with_the_link_is_sent_again_not_failed() -> None:
    c = core()
    mission = _order_out(c)
    (pause,) = _serial(c.instant_commands(_instant(InstantActionType.PAUSE, 1, "P1"), NOW_S))
    assert isinstance(pause, SendSerial)
    c.on_link_down("no valid frame for 1.00 s", NOW_S + 0.5)
    c.on_send_failed(pause.tag, "link lost", link_lost=True)  # its ACK never came
    state = c.build_state(NOW_S + 1)
    p1 = {a.action_id: a for a in state.action_states}["P1"]
    assert p1.status is ActionStatus.RUNNING and "link" in p1.result_description
    assert state.paused  # the bridge holds the pause whatever the VCU did
    # a resume accepted while the link is down waits behind it, in order
    assert _serial(c.instant_commands(_instant(InstantActionType.RESUME, 4, "R1"), NOW_S + 2)) == []
    c.on_link_up()
    out = _serial(c.on_telemetry(telemetry(mission_id=mission, wp_queued=5), NOW_S + 3))
    assert [(a.message, a.tag) for a in out if isinstance(a, SendSerial)][:2] == [
        (wire.Stop(wire.StopMode.HOLD), "ia:P1"),
        (wire.Resume(0), "ia:R1"),
    ]
    c.on_delivered("ia:P1")
    statuses = {a.action_id: a.status for a in c.build_state(NOW_S + 3).action_states}
    assert statuses["P1"] is ActionStatus.FINISHED and statuses["R1"] is ActionStatus.RUNNING


def test_a_resume_waiting_for_the_link_longer_than_the_grace_fails_a_pause_never_does() -> None:
    c = core()
    mission = _order_out(c)
    c.on_link_down("no valid frame for 1.00 s", NOW_S)
    c.instant_commands(_instant(InstantActionType.RESUME, 1, "R1"), NOW_S)
    c.instant_commands(_instant(InstantActionType.PAUSE, 2, "P1"), NOW_S)
    c.tick(NOW_S + 6)
    c.on_link_up()
    out = _serial(c.on_telemetry(telemetry(mission_id=mission, wp_queued=5), NOW_S + 60))
    assert [a.tag for a in out if isinstance(a, SendSerial)][:1] == ["ia:P1"]
    r1 = {a.action_id: a for a in c.build_state(NOW_S + 60).action_states}["R1"]
    assert r1.status is ActionStatus.FAILED and "link lost" in r1.result_description


def test_vcu_link_faults_and_vendor_fault_codes_are_listed_not_swallowed() -> None:
    c = core()
    ready(c)
    lost = wire.FaultReport(wire.FaultCode.LINK_LOST, wire.Severity.WARNING, 0x10, 1200)
    back = wire.FaultReport(wire.FaultCode.LINK_RESTORED, wire.Severity.INFO, 0, 1800)
    vendor = wire.FaultReport(wire.FaultCode(0x8123), wire.Severity.WARNING, 0, 7)
    c.on_fault_report(lost, NOW_S)
    c.on_fault_report(back, NOW_S)
    (state,) = _states(c.on_fault_report(vendor, NOW_S))
    codes = [r.value for e in state.errors for r in e.references if r.key == "fault_code"]
    assert codes == ["LINK_LOST", "LINK_RESTORED", "VENDOR_0x8123"]
    assert all(e.level is ErrorLevel.WARNING for e in state.errors)
    numbers = [r.value for e in state.errors for r in e.references if r.key == "fault_code_number"]
    assert numbers == [str(0x8123)]


def test_after_a_link_loss_a_holding_vcu_is_resumed_once_unless_a_pause_or_estop_is_held() -> None:
    holding = dict(drive_state=wire.DriveState.HOLDING, fault_bits=int(wire.FaultBit.LINK_LOST))
    c = core()
    mission = _order_out(c)
    c.on_link_down("no valid frame for 1.00 s", NOW_S)
    c.on_link_up()
    out = _serial(c.on_telemetry(telemetry(mission_id=mission, wp_queued=5, **holding), NOW_S + 8))
    assert [a.message for a in out if isinstance(a, SendSerial)] == [wire.Resume(0)]
    assert _serial(c.on_telemetry(telemetry(mission_id=mission, wp_queued=5), NOW_S + 8.1)) == []
    # paused: the VCU stays where it holds
    c.instant_commands(_instant(InstantActionType.PAUSE, 1, "P1"), NOW_S + 9)
    c.on_link_down("no valid frame for 1.00 s", NOW_S + 10)
    c.on_link_up()
    out = _serial(c.on_telemetry(telemetry(mission_id=mission, wp_queued=5, **holding), NOW_S + 12))
    messages = [a.message for a in out if isinstance(a, SendSerial)]
    assert wire.Stop(wire.StopMode.HOLD) in messages and not any(
        isinstance(m, wire.Resume) for m in messages
    )


def test_state_message_ids_keep_rising_across_a_restart_with_the_clock_stepped_back() -> None:
    c = core()
    c.on_link_up()
    out = c.on_telemetry(telemetry(), NOW_S)
    # the first state reserved ids ahead, persisted before the state goes out
    kinds = [type(a) for a in out]
    assert kinds.index(SaveBook) < kinds.index(PublishState)
    last = c.build_state(NOW_S).header.message_id
    doc = c.book_document()
    assert doc["bridge"]["message_id_reserved"] >= last
    again = core()
    again.restore(doc)
    # the clock went back an hour: the ids still rise
    assert again.build_state(NOW_S - 3600).header.message_id > last


def test_the_order_book_survives_a_restart_and_the_same_vcu_mission_carries_on() -> None:
    c = core()
    mission = _order_out(c, stops=4)
    c.instant_commands(_instant(InstantActionType.PAUSE, 1, "P1"), NOW_S)
    c.on_telemetry(
        telemetry(mission_id=mission, last_wp=2, wp_queued=7, drive_state=wire.DriveState.DRIVING),
        NOW_S,
    )
    assert c.parcels_on_board == ["P2", "P3"] and c.last_node_seq == 2
    doc = json.loads(json.dumps(c.book_document()))  # as the file holds it
    again = core()
    again.restore(doc)
    assert again.order == c.order and again.parcels_on_board == ["P2", "P3"]
    assert again.last_node_seq == 2 and again.book.paused
    again.on_link_up()
    out = again.on_telemetry(
        telemetry(mission_id=mission, last_wp=4, wp_queued=7, drive_state=wire.DriveState.PAUSED),
        NOW_S + 5,
    )
    assert segments(out) == []  # the VCU holds the whole mission: nothing sent twice
    # the pause, never acknowledged before the restart, is sent again (idempotent)
    assert [a.tag for a in out if isinstance(a, SendSerial)] == ["ia:P1"]
    (state,) = _states(out)
    assert state.order_id == "O-1" and state.last_node_sequence_id == 4
    assert state.load.parcel_ids == ("P3",)  # n2 was passed while the bridge was away
    assert state.paused


def test_a_saved_book_that_is_not_one_is_refused_with_the_field_named() -> None:
    c = core()
    _order_out(c)
    doc = c.book_document()
    with pytest.raises(OrderBookError, match="parcels_on_board"):
        core().restore({**doc, "parcels_on_board": "P1"})
    with pytest.raises(OrderBookError, match="van_id"):
        core().restore({**doc, "van_id": "WH-OTHER-01"})
    with pytest.raises(OrderBookError, match="mission"):
        core().restore({**doc, "bridge": {**doc["bridge"], "mission_start_wp": 99}})
    fresh = core()
    fresh.restore_failed("order-book.json: not valid JSON; moved aside")
    fresh.on_link_up()
    (state,) = _states(fresh.on_telemetry(telemetry(), NOW_S + 1))
    assert _errors(state) == {"order_book_unreadable": ErrorLevel.WARNING}
    fresh.on_order_payload(payload(line_order()), NOW_S + 1)
    assert "order_book_unreadable" not in _errors(fresh.build_state(NOW_S + 1))
