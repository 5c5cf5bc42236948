"""The bridge's sans-I/O core and mission cutting, without broker, port or clock."""

from __future__ import annotations

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
    SendSerial,
)
from firmware_bridge.bridge.mission import base_waypoints, cut_segments
from fleet.protocol import (
    ActionStatus,
    CommandVerifier,
    Edge,
    ErrorLevel,
    InstantActionType,
    NodeAction,
    NodeActionType,
    Order,
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
    assert [(e.error_type, e.level) for e in state.errors] == [
        ("vcu_link_lost", ErrorLevel.WARNING)
    ]
    assert segments(c.on_order_payload(payload(line_order()), NOW_S + 1)) == []
    # a second loss report does not restart the grace
    c.on_link_down("again", NOW_S + 4)
    assert c.tick(NOW_S + 4.9) == []  # state sent at +1 s: not due, not fatal yet
    (escalated,) = c.tick(NOW_S + 5.0)  # the grace is over: a state at once, fatal
    assert isinstance(escalated, PublishState)
    assert [(e.error_type, e.level) for e in escalated.state.errors] == [
        ("vcu_link_lost", ErrorLevel.FATAL)
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
    assert c.tick(NOW_S + 30)[0].state.errors == ()  # type: ignore[union-attr]


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
