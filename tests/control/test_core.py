"""The controller core's decisions, driven by protocol-level vans in simulated time."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from fleet.control.config import ControllerConfig
from fleet.errors import ControlError, VerificationError
from fleet.model import (
    DepotId,
    Leg,
    Parcel,
    ParcelId,
    StopKind,
    Trip,
    Unserved,
    UnservedReason,
    VanId,
    VanRoute,
)
from fleet.protocol import (
    ActionStatus,
    Connection,
    ConnectionState,
    InstantActionType,
    NodeActionType,
    OrderVerdict,
    make_header,
    parse_timestamp,
)
from fleet.protocol import StopKind as WireStopKind
from fleet.store import ParcelStatus
from tests.control.harness import Harness
from tests.support import plans


def _status(h: Harness, pid: str) -> ParcelStatus:
    rec = h.core.parcel(pid)
    assert rec is not None
    return rec.status


def _connection(h: Harness, van_id: str, state: ConnectionState) -> None:
    message = Connection(
        header=make_header(van_id, 1, h.now_s), van_id=van_id, connection_state=state
    )
    h.core.on_connection(van_id, message, h.now_s)
    if state is ConnectionState.ONLINE:
        h.connected.add(van_id)
    else:
        h.connected.discard(van_id)
    h.pump()


def test_dispatch_sends_the_line_haul_and_holds_the_last_mile_until_parcels_arrive() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    (order,) = h.orders
    assert order.van_id == "WH-PORTO-01" and order.order_update_id == 0
    # release_ahead_stops=1: the depot and the station are released, the return is horizon
    assert [n.released for n in order.nodes] == [True, True, False]
    assert h.orders_for("ST-A-01") == []
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.PLANNED}


def test_a_whole_day_flows_to_delivered_through_order_updates() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    h.report()
    assert h.core.van_record("WH-PORTO-01").confirmed  # type: ignore[union-attr]
    h.drive("WH-PORTO-01")  # loads at the warehouse
    assert _status(h, "P1") is ParcelStatus.LOADED
    h.drive("WH-PORTO-01")  # unloads at the station
    assert _status(h, "P1") is ParcelStatus.AT_STATION
    last_mile = h.orders_for("ST-A-01")
    assert last_mile and last_mile[0].order_update_id == 0
    h.drive("ST-A-01", 10)
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.DELIVERED}
    updates = [o.order_update_id for o in h.orders_for("ST-A-01")]
    assert updates == sorted(updates) and len(set(updates)) >= 3  # base extended stop by stop
    assert all(v is not OrderVerdict.REJECTED for _, v in h.verdicts)
    assert "order_finished" in h.kinds()


def test_a_failed_hand_over_marks_the_parcel_failed() -> None:
    h = Harness()
    h.vans["ST-A-01"].fail_parcels.add("P2")
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 10)
    assert _status(h, "P2") is ParcelStatus.FAILED
    assert "nobody home" in h.core.parcel("P2").detail  # type: ignore[union-attr]
    assert _status(h, "P1") is ParcelStatus.DELIVERED


def test_an_unconfirmed_order_is_resent_with_backoff_then_given_up() -> None:
    config = ControllerConfig(
        release_ahead_stops=1, resend_first_s=1.0, resend_max_s=4.0, resend_give_up_s=20.0
    )
    h = Harness(config=config)
    h.connected.discard("WH-PORTO-01")  # the van never hears it, but the link looks fine
    h.dispatch(plans.plan(), plans.parcels())
    sent_at: list[float] = []
    for _ in range(100):
        h.now_s += 0.5
        h.core.tick(h.now_s)
        out = h.pump()
        if out.sends:
            sent_at.append(h.now_s)
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(sent_at)]
    assert gaps[:3] == [2.0, 4.0, 4.0]  # doubles, capped at resend_max_s
    assert "order_gave_up" in h.kinds()
    assert sent_at[-1] - h.events[0].time_s <= 20.5


def test_a_confirmed_order_is_not_resent() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    h.report()
    sent = len(h.orders)
    h.advance(60, report=True)
    assert len(h.orders) == sent


def test_a_plan_that_fails_verification_is_refused_and_nothing_is_sent() -> None:
    h = Harness(
        verify=lambda plan, parcels: ["WH-PORTO-01 trip 0 exceeds payload: 1200 kg > 1000 kg"]
    )
    with pytest.raises(VerificationError, match="exceeds payload"):
        h.dispatch(plans.plan(), plans.parcels())
    assert h.orders == [] and "plan_refused" in h.kinds()
    assert h.core.parcel("P1") is None


def test_the_same_plan_twice_is_dispatched_once() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    sent = len(h.orders)
    assert "already dispatched" in h.dispatch(plans.plan(), plans.parcels())
    assert len(h.orders) == sent


def test_a_plan_for_a_busy_van_is_refused() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    other = plans.plan([plans.line_haul_route(("Q1",))])
    q1 = Parcel(id=ParcelId("Q1"), lon=-8.62, lat=41.16, weight_kg=1.0, volume_m3=0.01)
    with pytest.raises(ControlError, match="still running order P-test"):
        h.dispatch(other, [q1], plan_id="P-other")


def test_a_van_that_echoes_progress_gets_more_of_its_route_released() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 2)
    orders = h.orders_for("WH-PORTO-01")
    assert [len(o.base_nodes) for o in orders] == [2, 3]
    assert [o.order_update_id for o in orders] == [0, 1]
    assert ("WH-PORTO-01", OrderVerdict.UPDATE) in h.verdicts


def test_a_silent_van_becomes_stale_and_fresh_again() -> None:
    h = Harness(config=ControllerConfig(stale_after_s=10.0))
    h.report("WH-PORTO-01")
    h.advance(11)
    assert "van_stale" in h.kinds()
    assert h.core.status(["WH-PORTO-01"], h.now_s).vans[0].mode.value == "stale"
    h.report("WH-PORTO-01")
    assert "van_fresh" in h.kinds()


def test_a_fatal_error_that_lasts_its_grace_replans_the_vans_parcels_onto_another_van() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, fatal_grace_s=30.0))
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)  # all four parcels now wait at the station
    h.report("ST-A-01")
    h.vans["ST-A-01"].fatal("traction inverter fault")
    h.report("ST-A-01")
    assert "van_error" in h.kinds() and h.replans == []  # not yet: it may clear
    h.advance(31, report=True)
    assert "van_out_of_service" in h.kinds() and "replan_started" in h.kinds()
    (request,) = h.replans
    assert "ST-A-01: fatal error for 3" in request.cause
    assert {p.id for p in request.parcels} == {"P1", "P2", "P3", "P4"}
    assert set(request.parcel_location.values()) == {"station"}
    by_van = {v.van_id: v for v in request.vans}
    assert not by_van["ST-A-01"].in_service and by_van["ST-A-02"].in_service
    # The planner answers: ST-A-02 takes all four.
    new_plan = plans.plan([plans.last_mile_route(van="ST-A-02")])
    h.replan_done(request, new_plan)
    assert "replan_applied" in h.kinds()
    h.drive("ST-A-02", 10)
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.DELIVERED}


def test_a_fatal_error_that_clears_within_its_grace_changes_nothing() -> None:
    """A VCU reboot: FATAL for a moment, then gone; the van carries on with its parcels."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1, fatal_grace_s=30.0))
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 2)  # P1 delivered, P2..P4 on board
    h.vans["ST-A-01"].fatal("VCU link lost")
    h.advance(5, report=True)
    h.vans["ST-A-01"].errors.clear()
    h.advance(5, report=True)
    h.advance(60, report=True)
    assert "van_error_cleared" in h.kinds()
    assert h.replans == [] and "van_out_of_service" not in h.kinds()
    assert h.core.van_record("ST-A-01").in_service  # type: ignore[union-attr]
    h.drive("ST-A-01", 10)
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.DELIVERED}
    assert h.vans["ST-A-01"].on_board == []


def test_a_replan_whose_cause_cleared_before_it_is_applied_is_dropped() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, fatal_grace_s=10.0))
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 2)
    h.vans["ST-A-01"].fatal("VCU link lost")
    h.report("ST-A-01")
    h.advance(11, report=True)
    (request,) = h.replans
    assert set(request.vans[[v.van_id for v in request.vans].index("ST-A-01")].parcels_on_board)
    h.vans["ST-A-01"].errors.clear()  # back before the planner answers
    h.report("ST-A-01")
    # the planner's answer: another van loads what ST-A-01 still carries
    h.replan_done(request, plans.plan([plans.last_mile_route(("P2", "P3", "P4"), "ST-A-02")]))
    assert "replan_dropped" in h.kinds() and "replan_applied" not in h.kinds()
    assert h.orders_for("ST-A-02") == []
    again = h.replans[-1]
    assert again.replan_id != request.replan_id and "dropped" in again.cause
    by_van = {v.van_id: v for v in again.vans}
    assert by_van["ST-A-01"].in_service  # what it carries stays its own
    assert set(by_van["ST-A-01"].parcels_on_board) == {"P3", "P4"}  # P2: its base delivers it


def test_parcels_a_released_line_haul_still_brings_are_at_its_station_only_once_it_is_due() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.dispatch(plans.plan(), plans.parcels())
    h.report()  # every van is connected and reporting (a silent one gets no new work)
    h.drive("WH-PORTO-01")  # loaded at the warehouse; the station's unload is released
    h.core.request_replan("test", h.now_s)
    h.pump()
    (request,) = h.replans
    assert "requested: test" in request.cause and "replan_requested" in h.kinds()
    assert set(request.parcel_location.values()) == {"station"}
    assert set(request.at_station.values()) == {"ST-A"}
    due = h.orders_for("WH-PORTO-01")[-1].nodes[1].planned_arrival
    assert due is not None
    assert set(request.ready_at.values()) == {parse_timestamp(due)}
    by_van = {v.van_id: v for v in request.vans}
    assert by_van["WH-PORTO-01"].parcels_on_board == ()  # after its base it carries none
    # the re-plan gives the last mile to ST-A-02: it must not load before the line haul is there
    h.replan_done(request, plans.plan([plans.last_mile_route(van="ST-A-02")]))
    assert "replan_applied" in h.kinds()
    assert all(not o.nodes[0].released for o in h.orders_for("ST-A-02"))
    h.drive("WH-PORTO-01")  # unloaded at the station
    assert h.orders_for("ST-A-02")[-1].nodes[0].released
    h.drive("ST-A-02", 10)
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.DELIVERED}
    assert h.orders_for("ST-A-01") == []  # the day plan's last-mile van got nothing


def test_a_van_offline_mid_route_is_replanned_after_the_grace_time() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, offline_replan_after_s=60.0))
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 2)  # loaded, P1 delivered; P2..P4 on board, P2's door released
    _connection(h, "ST-A-01", ConnectionState.CONNECTION_BROKEN)
    h.advance(30)
    assert h.replans == []
    h.advance(31)
    (request,) = h.replans
    assert "offline" in request.cause
    by_van = {v.van_id: v for v in request.vans}
    # the van drives its released base offline: P2 stays its own; what it carries beyond
    # its base is re-planned as recovered
    assert set(by_van["ST-A-01"].parcels_on_board) == {"P3", "P4"}
    assert "P2" not in {p.id for p in request.parcels}
    assert {e.parcel_id for e in h.events if e.kind == "parcel_stranded"} == {"P3", "P4"}
    _connection(h, "ST-A-01", ConnectionState.ONLINE)
    assert h.core.van_record("ST-A-01").in_service  # type: ignore[union-attr]


def test_a_lost_vans_parcel_loaded_by_another_is_on_board_only_of_that_one() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=3, fatal_grace_s=0.0))
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 2)
    h.vans["ST-A-01"].fatal("drive unit fault")
    h.report("ST-A-01")
    (request,) = h.replans
    h.replan_done(request, plans.plan([plans.last_mile_route(("P2", "P3", "P4"), "ST-A-02")]))
    assert h.orders_for("ST-A-02")[-1].nodes[1].released  # loads and delivers in its base
    h.core.request_replan("dispatcher", h.now_s)
    h.pump()
    again = h.replans[-1]
    by_van = {v.van_id: v for v in again.vans}
    assert by_van["ST-A-01"].parcels_on_board == ()
    assert "P2" not in {p.id for p in again.parcels}  # ST-A-02's base delivers it


def test_cancelling_a_parcel_in_the_horizon_updates_the_order() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01")  # loaded: P3 is on board, its door still in the horizon
    before = h.orders_for("ST-A-01")[-1]
    h.core.cancel_parcels(["P3"], h.now_s)
    h.pump()
    after = h.orders_for("ST-A-01")[-1]
    assert after.order_update_id == before.order_update_id + 1
    horizon = [a for n in after.nodes if not n.released for a in n.actions]
    assert all("P3" not in a.parcel_ids for a in horizon)
    assert _status(h, "P3") is ParcelStatus.CANCELLED
    assert "stays on board of ST-A-01" in h.core.parcel("P3").detail  # type: ignore[union-attr]
    assert h.verdicts[-1] == ("ST-A-01", OrderVerdict.UPDATE)


def test_cancelling_a_parcel_already_released_is_refused() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    with pytest.raises(ControlError, match="released stop"):
        h.core.cancel_parcels(["P1"], h.now_s)


def test_an_emergency_stop_goes_out_first_and_is_resent_until_confirmed() -> None:
    h = Harness(config=ControllerConfig(estop_resend_s=0.5))
    h.report()
    h.connected.discard("ST-A-02")
    h.core.instant(InstantActionType.EMERGENCY_STOP, ["ST-A-02"], h.now_s)
    out = h.pump()
    assert out.sends and all(s.urgent for s in out.sends)
    h.advance(0.6)
    assert len([i for i in h.instants if i.van_id == "ST-A-02"]) == 0  # the van is unreachable
    h.connected.add("ST-A-02")
    h.advance(0.6)
    assert h.vans["ST-A-02"].emergency_stop
    h.report("ST-A-02")
    assert "instant_confirmed" in h.kinds()
    sent = len(h.instants)
    h.advance(5)
    assert len(h.instants) == sent


def test_cancelling_a_van_sends_cancel_and_replans() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    h.core.cancel_vans(["WH-PORTO-01"], h.now_s)
    h.pump()
    assert h.vans["WH-PORTO-01"].cancelled
    assert h.replans == []  # not before the van confirms it
    h.report("WH-PORTO-01")
    (request,) = h.replans
    assert "cancelled by dispatcher (confirmed by the van)" in request.cause


def test_unknown_vans_are_refused() -> None:
    h = Harness()
    with pytest.raises(ControlError, match="unknown van"):
        h.core.instant(InstantActionType.PAUSE, ["NOPE-01"], h.now_s)


def test_a_van_at_its_last_stop_still_handing_over_keeps_those_parcels_in_the_request() -> None:
    """A line haul brings P4 back to the warehouse: it has reached its last stop, but the
    unload is still running when a re-plan starts; P4 is at the warehouse once the unload is
    due, not on board, and no other van may be planned to find it at a station."""
    route = plans.line_haul_route()
    (trip,) = route.trips
    stops = list(trip.stops)
    stops[1] = dataclasses.replace(
        stops[1], parcels_delivered=(ParcelId("P1"), ParcelId("P2"), ParcelId("P3"))
    )
    stops[2] = dataclasses.replace(stops[2], parcels_delivered=(ParcelId("P4"),))
    line_haul = dataclasses.replace(route, trips=(Trip(0, tuple(stops)),))
    h = Harness(config=ControllerConfig(release_ahead_stops=3))
    h.dispatch(plans.plan([line_haul, plans.last_mile_route(("P1", "P2", "P3"))]), plans.parcels())
    h.drive("WH-PORTO-01", 2)
    van = h.vans["WH-PORTO-01"]
    van.step()  # at the warehouse again; the unload has begun
    (back,) = [a for a in van.actions if a.startswith("n2.")]
    van.actions[back] = van.actions[back].model_copy(update={"status": ActionStatus.RUNNING})
    van.on_board = ["P4"]
    h.report("WH-PORTO-01")
    assert h.core.van_record("WH-PORTO-01").finished  # type: ignore[union-attr]
    h.core.request_replan("test", h.now_s)
    h.pump()
    (request,) = h.replans
    assert request.parcel_location["P4"] == "station"
    assert request.at_station["P4"] == "WH-PORTO"  # the re-planner takes it as the warehouse
    assert "P4" in request.ready_at
    assert all("P4" not in v.parcels_on_board for v in request.vans)


def test_each_vans_latest_state_is_stored_within_the_flush_interval_a_few_at_each_tick() -> None:
    config = ControllerConfig(release_ahead_stops=1, flush_interval_s=1.0, tick_s=0.25)
    h = Harness(config=config)
    first, *others = h.vans
    h.report(first)
    h.advance(0.5)
    h.report(*others)  # these changed half a second after the first
    h.vans[first].step()
    h.report(first)  # a newer state of the first van: still one write, the latest

    def stored(after: int) -> list[tuple[str, float]]:
        return [(v, r.seen_s) for c in h.changes[after:] for v, r in c.van_states.items()]

    mark = len(h.changes)
    h.advance(0.25)  # 0.75 s after the first van's change: its write is due at this tick
    assert stored(mark) == [(first, h.now_s - 0.25)]
    mark = len(h.changes)
    h.advance(0.25)  # 0.5 s after the others changed: not yet due
    assert stored(mark) == []
    h.advance(0.25)
    assert sorted(stored(mark)) == sorted((v, h.now_s - 0.75) for v in others)
    mark = len(h.changes)
    h.advance(5.0)  # nothing changed since: nothing written again
    assert stored(mark) == []


def test_a_van_leaving_its_first_stop_at_the_planned_departure_is_not_late() -> None:
    # The day's first stop at the station: there from 06:00, loading until 09:30 (its
    # work time is all of that); the bridge releases the van from it at 09:30. A re-plan
    # made just then plans the van from its lateness, so it must not count the wait.
    route = plans.last_mile_route()
    first, *rest = route.trips[0].stops
    first = dataclasses.replace(first, arrival_s=6 * 3600.0, departure_s=9.5 * 3600.0)
    later = 9.5 * 3600.0 - route.trips[0].stops[0].departure_s  # the rest as much later
    rest = [
        dataclasses.replace(s, arrival_s=s.arrival_s + later, departure_s=s.departure_s + later)
        for s in rest
    ]
    trip = dataclasses.replace(route.trips[0], stops=(first, *rest))
    h = Harness()
    h.dispatch(plans.plan([dataclasses.replace(route, trips=(trip,))]), plans.parcels())
    h.report()
    h.advance(3.5 * 3600.0)  # 09:30
    h.drive("ST-A-01")
    record = h.core.van_record("ST-A-01")
    assert record is not None and record.reached_seq == 0
    assert record.lateness_s == pytest.approx(0.0, abs=1.0)
    h.advance(200.0)
    h.drive("ST-A-01")  # the first door, planned 2 min after leaving, reached 200 s after
    record = h.core.van_record("ST-A-01")
    assert record is not None and record.lateness_s == pytest.approx(80.0, abs=1.0)


def test_a_parcel_the_line_haul_still_carries_is_not_given_up_when_its_last_mile_is_full() -> None:
    # The line haul brings P4 on its second trip (in its horizon, not released). A re-plan
    # keeps that but finds no last-mile van for P4 today: it is still loaded, unloaded at the
    # station and planned again by the next re-plan, never dropped while a van carries it.
    first = plans.line_haul_route(["P1", "P2", "P3"]).trips[0]
    later = tuple(
        dataclasses.replace(s, arrival_s=s.arrival_s + 3000, departure_s=s.departure_s + 3000)
        for s in plans.line_haul_route(["P4"]).trips[0].stops
    )
    line_haul = dataclasses.replace(plans.line_haul_route(), trips=(first, Trip(1, later)))
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.dispatch(plans.plan([line_haul, plans.last_mile_route()]), plans.parcels())
    h.report()
    h.core.request_replan("test", h.now_s)
    h.pump()
    (request,) = h.replans
    full = Unserved(ParcelId("P4"), UnservedReason.NOT_ENOUGH_VANS, "no van of ST-A had room")
    # the re-plan keeps the line haul's second trip (its first is the released base: a plan
    # that repeated it would have the van load at the warehouse what lies at the station)
    rest = dataclasses.replace(line_haul, trips=(Trip(1, later),))
    replan = dataclasses.replace(
        plans.plan([rest, plans.last_mile_route(["P1", "P2", "P3"])]), unserved=(full,)
    )
    h.replan_done(request, replan)
    assert _status(h, "P4") is ParcelStatus.PLANNED
    assert "not_enough_vans" in h.core.parcel("P4").detail  # type: ignore[union-attr]
    h.drive("WH-PORTO-01", 12)  # its first trip, then loads P4 and unloads it at the station
    assert _status(h, "P4") is ParcelStatus.AT_STATION
    h.core.request_replan("again", h.now_s)
    h.pump()
    assert "P4" in {p.id for p in h.replans[-1].parcels}


def _rescue_route(van: str, broken: str, ids: list[str], at: tuple[float, float]) -> VanRoute:
    """``van`` leaves ST-A, takes ``ids`` over from ``broken`` standing at ``at``, delivers."""
    t = 10 * 3600.0
    stops = [
        plans._stop(0, StopKind.DEPOT, "ST-A", plans.STATION, t, 0, dist_m=0, prev=None),
        plans._stop(
            1,
            StopKind.TRANSFER,
            broken,
            at,
            t + 300,
            800,
            loaded=ids,
            dist_m=500,
            prev=plans.STATION,
        ),
    ]
    prev, dist, t = at, 500.0, t + 1100
    for pid in ids:
        door = plans.DOORS[min(int(pid[1:]) - 1, 2)]
        dist += 400.0
        t += 120.0
        stops.append(
            plans._stop(
                len(stops), StopKind.DOOR, "", door, t, 80, delivered=[pid], dist_m=dist, prev=prev
            )
        )
        prev, t = door, t + 80
    stops.append(
        plans._stop(
            len(stops),
            StopKind.DEPOT,
            "ST-A",
            plans.STATION,
            t + 200,
            0,
            dist_m=dist + 600,
            prev=prev,
        )
    )
    return VanRoute(VanId(van), Leg.LAST_MILE, DepotId("ST-A"), (Trip(0, tuple(stops)),))


def test_a_rescue_trip_moves_the_broken_vans_parcels_and_the_breakdown_is_recovered() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, fatal_grace_s=0.0))
    h.dispatch(plans.plan(), plans.parcels())
    h.report()
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 1)
    h.vans["ST-A-01"].fatal("drive unit fault")
    h.report("ST-A-01")
    (request,) = h.replans
    stranded = sorted({v.van_id: v for v in request.vans}["ST-A-01"].parcels_on_board)
    assert stranded
    # broken down where it stands, online, with a position: a rescue trip may meet it there
    assert request.transfer_from == frozenset({"ST-A-01"})
    h.replan_done(
        request, plans.plan([_rescue_route("ST-A-02", "ST-A-01", stranded, plans.DOORS[0])])
    )
    order = h.orders_for("ST-A-02")[-1]
    meet = order.nodes[1]
    assert meet.kind is WireStopKind.TRANSFER and meet.ref == "ST-A-01"
    (action,) = meet.actions
    assert action.action_type is NodeActionType.TRANSFER_LOAD
    assert sorted(action.parcel_ids) == stranded
    assert action.duration_s == h.core.van_spec.transfer_time_s(len(stranded))
    assert "breakdown_recovered" not in h.kinds()
    h.drive("ST-A-02", 2)  # the depot, then the transfer
    for pid in stranded:
        rec = h.core.parcel(pid)
        assert rec is not None and rec.status is ParcelStatus.LOADED and rec.holder == "ST-A-02"
    (done,) = [e for e in h.events if e.kind == "breakdown_recovered"]
    assert done.van_id == "ST-A-01" and done.data["way"] == "rescue_trip"
    assert done.data["parcels"] == len(stranded)
    assert done.data["recovery_s"] == pytest.approx(h.now_s - request.now_s, abs=1e-3)
    h.drive("ST-A-02", 10)
    assert {_status(h, pid) for pid in stranded} == {ParcelStatus.DELIVERED}
