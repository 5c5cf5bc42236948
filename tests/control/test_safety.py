"""Issue 14 on the controller's side: the van's data is taken only when it is current and
plausible, refusals are noticed at once, and no restart, loss or cancel leaves work undone or
done twice. Each test plays one case of docs/controller.md, "Safety and recovery"."""

from __future__ import annotations

import dataclasses

import pytest

from fleet.control.config import ControllerConfig
from fleet.model import Parcel, ParcelId, Unserved, UnservedReason, VanRoute, load_van_spec
from fleet.planning.replan import RECOVERY_S
from fleet.protocol import (
    ActionState,
    ActionStatus,
    Connection,
    ConnectionState,
    ErrorLevel,
    ErrorReference,
    InstantActionType,
    NodeActionType,
    Order,
    OrderVerdict,
    StopKind,
    VanError,
    VanPosition,
    make_header,
    parse_timestamp,
)
from fleet.protocol.control_api import VanMode, VanStatus
from fleet.store import (
    ParcelRecord,
    ParcelStatus,
    PlanRecord,
    Snapshot,
    VanRecord,
    VanStateRecord,
)
from tests.control.harness import VAN_FILE, Harness
from tests.support import plans
from tests.support.protocol_van import ProtocolVan


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


# -- C4: a state older than the last one taken is dropped -----------------------------------
def test_a_state_with_a_lower_or_repeated_message_id_is_dropped_until_the_van_is_online() -> None:
    h = Harness()
    van = h.vans["ST-A-01"]
    older = van.state(h.now_s)  # made first, arrives last
    van.lon, van.lat = -8.6250, 41.1620
    newer = van.state(h.now_s)
    h.core.on_state("ST-A-01", newer, h.now_s)
    h.core.on_state("ST-A-01", older, h.now_s + 0.1)
    h.core.on_state("ST-A-01", newer, h.now_s + 0.2)  # a duplicate
    h.pump()
    (status,) = h.core.status(["ST-A-01"], h.now_s).vans
    assert (status.lon, status.lat) == (-8.6250, 41.1620)  # the newer position stands
    assert h.core.counters["rejected_stale_state"] == 2
    assert [e.data["reason"] for e in h.events if e.kind == "bad_message"] == ["stale_state"]
    # the van restarts: its connection says ONLINE, and its ids may start again
    _connection(h, "ST-A-01", ConnectionState.ONLINE)
    restarted = older.model_copy(
        update={"position": VanPosition(lon=-8.6300, lat=41.1610, heading_deg=0.0)}
    )
    h.core.on_state("ST-A-01", restarted, h.now_s + 1)
    (status,) = h.core.status(["ST-A-01"], h.now_s + 1).vans
    assert (status.lon, status.lat) == (-8.6300, 41.1610)
    assert h.core.counters["rejected_stale_state"] == 2


# -- C5: a van whose VCU data is not live is stale, with the reason -------------------------
def test_a_van_whose_state_says_its_telemetry_is_stale_is_shown_stale_with_the_reason() -> None:
    h = Harness()
    van = h.vans["ST-A-01"]
    h.report("ST-A-01")
    assert h.core.status(["ST-A-01"], h.now_s).vans[0].mode is VanMode.IDLE
    for error_type, refs, expected in (
        ("vcu_telemetry_stale", (("telemetry_age_s", "3.2"),), "telemetry 3.2 s old"),
        ("vcu_link_lost", (), "vcu_link_lost"),
    ):
        van.errors = [
            VanError(
                error_type=error_type,
                level=ErrorLevel.WARNING,
                description="no TELEMETRY from the VCU",
                references=tuple(ErrorReference(key=k, value=v) for k, v in refs),
            )
        ]
        h.report("ST-A-01")
        (status,) = h.core.status(["ST-A-01"], h.now_s).vans
        assert status.mode is VanMode.STALE and expected in status.mode_reason
    van.errors = []
    h.report("ST-A-01")
    assert h.core.status(["ST-A-01"], h.now_s).vans[0].mode is VanMode.IDLE


def test_the_status_table_never_shows_a_stale_vans_position_or_speed_as_current() -> None:
    from fleet.cli.control import _row

    stale = VanStatus(
        van_id="ST-A-01",
        mode=VanMode.STALE,
        mode_reason="vcu_link_lost (telemetry 12 s old)",
        in_service=True,
        lon=-8.62,
        lat=41.16,
        speed_mps=11.35,
    )
    row = _row(stale, 0.0)
    assert "stale (vcu_link_lost (telemetry 12 s old))" in row[1]
    assert row[2].startswith("last ") and row[3] == "-"


# -- item 9: a stop is finished only where the van is ---------------------------------------
def test_a_station_stop_finished_with_the_van_2_km_away_changes_no_parcel() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01")  # loaded at the warehouse
    van = h.vans["WH-PORTO-01"]
    van.step()  # says it reached the station and unloaded there...
    van.lon, van.lat = plans.STATION[0] + 0.024, plans.STATION[1]  # ...while 2 km away
    h.report("WH-PORTO-01")
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.LOADED}
    assert h.orders_for("ST-A-01") == []  # no station van sent to load them
    (event,) = [e for e in h.events if e.kind == "implausible_progress"]
    assert "node n1 (ST-A)" in event.detail and "2,0" in event.detail
    h.advance(1.0)
    h.report("WH-PORTO-01")  # said again a second later: still refused, one event
    assert _status(h, "P1") is ParcelStatus.LOADED
    assert h.core.counters["implausible_progress"] == 2
    assert h.kinds().count("implausible_progress") == 1
    record = h.core.van_record("WH-PORTO-01")
    assert record is not None and record.reached_seq == 0
    # the van is really there: taken
    van.lon, van.lat = plans.STATION
    h.advance(1.0)
    h.report("WH-PORTO-01")
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.AT_STATION}
    assert h.orders_for("ST-A-01")


def test_a_stop_reported_after_states_were_lost_may_be_as_far_as_the_van_could_drive() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01")
    van = h.vans["WH-PORTO-01"]
    van.step()  # at the station; the state saying so is lost; the van drives on 1 km
    van.lon, van.lat = plans.STATION[0] + 0.012, plans.STATION[1]
    h.advance(120.0)  # its next state comes two minutes later: it could be there
    h.report("WH-PORTO-01")
    assert "implausible_progress" not in h.kinds()
    assert _status(h, "P1") is ParcelStatus.AT_STATION


def test_a_stop_reported_done_after_the_van_left_it_counts_if_it_was_seen_there() -> None:
    """A van reports a stop's work finished as it leaves, with its VCU's latest position:
    it may be well past the stop by then; it was seen there, so it counts."""
    h = Harness()
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01")  # loaded at the warehouse
    van = h.vans["WH-PORTO-01"]
    van.step()  # at the station, unloading: reached, the unload still running
    (unload,) = [a for a in van.actions if a.startswith("n1.")]
    van.actions[unload] = van.actions[unload].model_copy(update={"status": ActionStatus.RUNNING})
    h.report("WH-PORTO-01")
    van.actions[unload] = van.actions[unload].model_copy(update={"status": ActionStatus.FINISHED})
    van.lon = plans.STATION[0] + 0.003  # 250 m on when the finish is reported, 1 s later
    h.advance(1.0)
    h.report("WH-PORTO-01")
    assert "implausible_progress" not in h.kinds()
    assert _status(h, "P1") is ParcelStatus.AT_STATION


# -- item 1: a refused command is an event at once ------------------------------------------
def _refusal(description: str, **refs: str) -> VanError:
    return VanError(
        error_type="signature_error",
        level=ErrorLevel.WARNING,
        description=description,
        references=tuple(ErrorReference(key=k, value=v) for k, v in refs.items()),
    )


def _state_with(h: Harness, van_id: str, *errors: VanError) -> None:
    van = h.vans[van_id]
    van.errors = list(errors)
    h.core.on_state(van_id, van.state(h.now_s), h.now_s)
    h.pump()


def test_an_emergency_stop_the_van_refuses_is_an_event_at_once_and_is_sent_again() -> None:
    h = Harness(config=ControllerConfig(estop_resend_s=0.5))
    h.report()
    h.connected.discard("ST-A-02")  # the van hears it but refuses it (we play its state)
    h.core.instant(InstantActionType.EMERGENCY_STOP, ["ST-A-02"], h.now_s)
    h.pump()
    (sent,) = [e for e in h.events if e.kind == "instant_sent"]
    action_id = str(sent.data["action_id"])
    (status,) = h.core.status(["ST-A-02"], h.now_s).vans
    assert status.mode is VanMode.ESTOP_SENT and "not confirmed" in status.mode_reason
    h.advance(0.2)
    _state_with(
        h,
        "ST-A-02",
        _refusal(
            "instant message_id 1 is not above the last accepted 1002",
            reason="replayed",
            action_id=action_id,
        ),
    )
    (refused,) = [e for e in h.events if e.kind == "instant_refused"]
    assert refused.data["reason"] == "replayed" and refused.data["action_id"] == action_id
    assert refused.time_s - sent.time_s == pytest.approx(0.2)  # at once, not in 5 minutes
    (status,) = h.core.status(["ST-A-02"], h.now_s).vans
    assert (
        status.mode is VanMode.ESTOP_SENT and "refused by the van: replayed" in status.mode_reason
    )
    h.connected.add("ST-A-02")  # the next copy (a fresh id) goes through
    h.advance(0.5)
    assert h.vans["ST-A-02"].emergency_stop
    _state_with(h, "ST-A-02")
    assert "instant_confirmed" in h.kinds()
    (status,) = h.core.status(["ST-A-02"], h.now_s).vans
    assert status.mode is VanMode.ESTOPPED
    assert h.kinds().count("instant_refused") == 1


def test_a_refusal_naming_the_commands_message_id_or_nothing_is_matched_to_it() -> None:
    h = Harness()
    h.report()
    h.connected.discard("ST-A-01")
    h.core.instant(InstantActionType.PAUSE, ["ST-A-01"], h.now_s)
    (pause,) = h.pump().sends
    h.core.command_signed("ST-A-01", pause.message, 1_795_000_000_000_000)
    _state_with(h, "ST-A-01", _refusal("instant is stale", message_id="1795000000000000"))
    assert [e.data["reason"] for e in h.events if e.kind == "instant_refused"] == [
        "signature_error"
    ]
    assert h.core.van_record("ST-A-01").pending_instants == ()  # type: ignore[union-attr]
    # a refusal that names nothing counts for the commands of the kind it begins with
    h.core.instant(InstantActionType.PAUSE, ["ST-A-01"], h.now_s)
    h.pump()
    _state_with(h, "ST-A-01", _refusal("instant carries no signature", reason="unsigned"))
    assert h.kinds().count("instant_refused") == 2


def test_an_order_the_van_refuses_is_an_event_at_once_and_not_sent_again() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, resend_first_s=1.0))
    h.connected.discard("WH-PORTO-01")
    h.dispatch(plans.plan(), plans.parcels())
    record = h.core.van_record("WH-PORTO-01")
    assert record is not None and record.order is not None and record.sent
    _state_with(
        h,
        "WH-PORTO-01",
        _refusal(
            "order MAC does not match its content (tampered or wrong key)",
            reason="bad_signature",
            order_id=record.order.order_id,
            order_update_id=str(record.order.order_update_id),
        ),
    )
    (refused,) = [e for e in h.events if e.kind == "order_refused"]
    assert refused.data["reason"] == "bad_signature"
    sends = 0
    for _ in range(20):
        h.now_s += 1.0
        h.core.tick(h.now_s)
        sends += sum(1 for s in h.pump().sends if s.van_id == "WH-PORTO-01")
    assert sends == 0


# -- item 7: only a van that is there gets work ---------------------------------------------
def test_a_van_that_never_connected_or_went_stale_is_not_in_service_for_a_replan() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, fatal_grace_s=0.0))
    h.connected.discard("ST-A-02")  # never heard from
    h.dispatch(plans.plan(), plans.parcels())
    h.report()
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 1)
    h.vans["ST-A-01"].fatal("drive unit fault")
    h.report("ST-A-01")
    (request,) = h.replans
    by_van = {v.van_id: v for v in request.vans}
    assert not by_van["ST-A-02"].in_service  # no state ever: gets nothing
    assert by_van["WH-PORTO-02"].in_service
    assert request.out_of_service == {"ST-A-01", "ST-A-02"}
    h.replan_done(request, plans.plan([plans.line_haul_route(van="WH-PORTO-02")]))
    assert "replan_applied" in h.kinds()
    # ST-A-02 appears: a re-plan follows at once, with it in service
    h.connected.add("ST-A-02")
    h.report("ST-A-02")
    again = h.replans[-1]
    assert again.cause == "ST-A-02: available again"
    assert {v.van_id: v for v in again.vans}["ST-A-02"].in_service
    # a van silent past stale_after_s is out of the next one
    h.advance(h.config.stale_after_s + 1)
    h.replan_done(again, plans.plan([]))
    h.core.request_replan("test", h.now_s)
    h.pump()
    assert not {v.van_id: v for v in h.replans[-1].vans}["WH-PORTO-02"].in_service


def test_what_a_van_out_of_reach_carries_stays_with_it_and_out_of_the_replan() -> None:
    # issue 18: a stale van's parcels were planned as recovered to its depot, and another
    # van was sent to load them there, where they were not
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.dispatch(plans.plan(), plans.parcels())
    h.report()
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 1)
    record = h.core.van_record("ST-A-01")
    aboard = {
        pid
        for pid in (p.id for p in plans.parcels())
        if (rec := h.core.parcel(pid)) is not None and rec.holder == "ST-A-01"
    }
    assert record is not None and aboard, "the scenario needs a loaded van"
    h.connected.discard("ST-A-01")  # silent from now on
    h.advance(h.config.stale_after_s + 1)
    h.core.request_replan("test", h.now_s)
    h.pump()
    request = h.replans[-1]
    van = {v.van_id: v for v in request.vans}["ST-A-01"]
    assert not van.in_service and van.parcels_on_board == ()
    # what its released base delivers stays its own; what is aboard beyond it is held
    assert request.held and request.held <= aboard
    assert not request.held & {p.id for p in request.parcels}


def test_a_broken_vans_parcels_are_due_at_its_depot_at_the_same_time_in_every_replan() -> None:
    # issue 18: each later re-plan took them as back "30 min from now" again, moving them
    # from van to van and pushing their recovery later
    h = Harness(config=ControllerConfig(release_ahead_stops=1, fatal_grace_s=0.0))
    h.dispatch(plans.plan(), plans.parcels())
    h.report()
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 1)
    h.vans["ST-A-01"].fatal("drive unit fault")
    h.report("ST-A-01")
    (first,) = h.replans
    stranded = {v.van_id: v for v in first.vans}["ST-A-01"].parcels_on_board
    assert stranded
    assert first.recovered_at == dict.fromkeys(stranded, first.now_s + RECOVERY_S)
    h.replan_done(first, plans.plan([plans.line_haul_route(van="WH-PORTO-02")]))
    h.advance(600)
    h.core.request_replan("later", h.now_s)
    h.pump()
    later = h.replans[-1]
    assert later is not first and later.now_s == first.now_s + 600
    assert later.recovered_at == first.recovered_at


def test_a_van_that_never_confirms_its_order_by_its_departure_is_replanned() -> None:
    config = ControllerConfig(release_ahead_stops=1, confirm_by_departure_s=120.0)
    h = Harness(config=config)
    h.connected.discard("WH-PORTO-01")  # the order never reaches it
    h.dispatch(plans.plan(), plans.parcels())
    record = h.core.van_record("WH-PORTO-01")
    assert record is not None and record.order is not None and record.sent
    departure_s = parse_timestamp(record.order.nodes[0].planned_departure or "")
    h.report("ST-A-01", "ST-A-02", "WH-PORTO-02")
    h.advance(departure_s + 100 - h.now_s, report=True)
    assert "order_unconfirmed" not in h.kinds()
    h.advance(30, report=True)
    (event,) = [e for e in h.events if e.kind == "order_unconfirmed"]
    assert "not confirmed by its planned departure" in event.detail
    (request,) = h.replans
    assert not {v.van_id: v for v in request.vans}["WH-PORTO-01"].in_service
    assert {p.id for p in request.parcels} == {"P1", "P2", "P3", "P4"}
    record = h.core.van_record("WH-PORTO-01")
    assert record is not None and not record.in_service and record.cancelled
    assert [p.message.actions[0].action_type for p in record.pending_instants] == [
        InstantActionType.CANCEL_ORDER
    ]
    # the order is never sent again: a late copy must not start it
    sent = len(h.orders)
    h.connected.add("WH-PORTO-01")
    for _ in range(10):
        h.advance(30)
    assert len(h.orders) == sent
    assert h.vans["WH-PORTO-01"].order is None and h.vans["WH-PORTO-01"].cancelled
    # it reports at last: back in service, and re-planned
    h.replan_done(request, plans.plan([plans.line_haul_route(van="WH-PORTO-02")]))
    h.report("WH-PORTO-01")
    assert h.core.van_record("WH-PORTO-01").in_service  # type: ignore[union-attr]
    assert "WH-PORTO-01: back in service (reporting again)" in h.replans[-1].cause


# -- item 4: never release what the reported battery cannot finish above the reserve --------
def _stretched(route: VanRoute, factor: float, soc_pct: float | None = None) -> VanRoute:
    """``route`` with its roads ``factor`` times longer (and its stops' charge set)."""
    trips = tuple(
        dataclasses.replace(
            trip,
            stops=tuple(
                dataclasses.replace(
                    s,
                    dist_so_far_m=s.dist_so_far_m * factor,
                    soc_pct=s.soc_pct if soc_pct is None else soc_pct,
                )
                for s in trip.stops
            ),
        )
        for trip in route.trips
    )
    return dataclasses.replace(route, trips=trips)


def _charges(order: Order, index: int) -> list[float | None]:
    return [
        a.target_soc_pct
        for a in order.nodes[index].actions
        if a.action_type is NodeActionType.CHARGE
    ]


def test_a_van_at_36_percent_given_a_56_km_route_is_charged_first_at_its_depot() -> None:
    """Issue 14, item 4: a van reporting 36.6 % (58.5 km) was dispatched a 55.6 km route with
    no charge. With 16 km of reserve it needs 71.6 km: 45 % and a margin, at its depot."""
    for planned_pct in (100.0, 40.0):  # the plan took a full van, or one at 40 %, as given
        h = Harness()
        h.vans["ST-A-01"].soc_pct = 36.6
        h.report()
        route = _stretched(plans.last_mile_route(), 55_600 / 1800, soc_pct=planned_pct)
        h.dispatch(plans.plan([route]), plans.parcels())
        (order,) = h.orders_for("ST-A-01")
        assert _charges(order, 0) == [46.0]
        (added,) = [e for e in h.events if e.kind == "charge_added"]
        assert "36.6 % / 58.6 km" in added.detail and "55.6 km" in added.detail
    # a van that has not reported its battery yet: charged for the road ahead all the same
    h = Harness()
    h.connected.discard("ST-A-01")
    h.dispatch(plans.plan([_stretched(plans.last_mile_route(), 55_600 / 1800, 100.0)]), [])
    record = h.core.van_record("ST-A-01")
    assert record is not None and record.order is not None
    assert _charges(record.order, 0) == [46.0]
    # the plan's own charge at the depot was enough: nothing added
    h = Harness()
    h.vans["ST-A-01"].soc_pct = 36.6
    h.report()
    h.dispatch(plans.plan([_stretched(plans.last_mile_route(), 55_600 / 1800)]), plans.parcels())
    (order,) = h.orders_for("ST-A-01")
    assert _charges(order, 0) == [90.0] and "charge_added" not in h.kinds()


def test_a_release_the_reported_battery_cannot_finish_is_held_and_replanned() -> None:
    h = Harness()
    h.report()
    h.dispatch(plans.plan([_stretched(plans.last_mile_route(), 3.0)]), plans.parcels())
    h.drive("ST-A-01")  # loaded at its station
    h.vans["ST-A-01"].soc_pct = 12.0  # 19.2 km: 3.2 km above the reserve, 4.2 km to go
    h.drive("ST-A-01")  # at the first door: the second door would be released now
    order = h.orders_for("ST-A-01")[-1]
    assert [n.released for n in order.nodes] == [True, True, False, False, False]
    (held,) = [e for e in h.events if e.kind == "release_held"]
    assert "12.0 %" in held.detail and "4.2 km" in held.detail
    (request,) = h.replans
    assert request.cause.startswith("ST-A-01: battery")
    assert {v.van_id: v for v in request.vans}["ST-A-01"].soc_pct == pytest.approx(12.0)
    (status,) = h.core.status(["ST-A-01"], h.now_s).vans
    assert status.mode is VanMode.AT_STOP and status.mode_reason.startswith("battery")
    h.core.replan_failed(request.replan_id, "no better plan", h.now_s)  # nothing better
    h.pump()
    h.report("ST-A-01")
    assert [n.released for n in h.orders_for("ST-A-01")[-1].nodes][:3] == [True, True, False]
    assert len(h.replans) == 1  # asked once
    h.vans["ST-A-01"].soc_pct = 30.0  # charged (a recovery team): the release goes on
    h.report("ST-A-01")
    assert h.orders_for("ST-A-01")[-1].nodes[2].released
    assert "release_resumed" in h.kinds()


def test_a_charge_is_added_at_the_next_depot_the_van_still_has_to_reach() -> None:
    from fleet.control import battery
    from fleet.control.orders import local_to_epoch, route_path

    spec = load_van_spec(VAN_FILE)
    first = plans.last_mile_route(("P1",)).trips[0]
    second = plans.last_mile_route(("P2", "P3")).trips[0]
    shift = first.stops[-1].departure_s - second.stops[0].arrival_s + 600.0
    second = dataclasses.replace(
        second,
        index=1,
        stops=tuple(
            dataclasses.replace(
                s,
                arrival_s=s.arrival_s + shift,
                departure_s=s.departure_s + shift,
                dist_so_far_m=s.dist_so_far_m + first.stops[-1].dist_so_far_m,
            )
            for s in second.stops
        ),
    )
    route = _stretched(dataclasses.replace(plans.last_mile_route(), trips=(first, second)), 10.0)
    path = route_path(
        route, local_to_epoch(plans.DAY, plans.TIMEZONE), top_speed_mps=16.0, van=spec
    )
    # at the first door, 20 % reported: 16 km above the reserve; 6 km back, then 14 km
    have_m = 0.20 * 160_000 - battery.reserve_m(spec)
    check = battery.check_range(
        path.nodes, path.edges, start=1, lead_m=0.0, have_m=have_m, through=2, spec=spec
    )
    assert not check.ok and check.short_at is not None
    added = battery.charge_to_add(
        path.nodes, path.edges, check, start=1, first_changeable=3, through=2, spec=spec
    )
    assert added is not None and path.nodes[added.index].kind is StopKind.DEPOT
    assert added.index == 3  # the second trip's depot stop, not yet released
    assert added.target_pct >= (14_000 + 16_000) / 1600


# -- item 5 / C9: a van that lost its order gets a recovery order ---------------------------
def _restart_van(h: Harness, van_id: str, *, keep_load: bool) -> ProtocolVan:
    """The van (or its bridge) restarts without its order: a new process where it stands."""
    old = h.vans[van_id]
    van = ProtocolVan(van_id, lon=old.lon, lat=old.lat, soc_pct=old.soc_pct)
    van.message_id = old.message_id + 1000  # its ids keep rising across the restart (C4)
    if keep_load:
        van.on_board = list(old.on_board)
    h.vans[van_id] = van
    _connection(h, van_id, ConnectionState.ONLINE)
    return van


def test_a_van_restarted_without_its_order_gets_a_recovery_order_over_what_is_left() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, order_lost_after_s=5.0))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)  # all four parcels at the station
    h.drive("ST-A-01", 2)  # loaded at the station, P1 delivered at the first door
    order_id = h.orders_for("ST-A-01")[-1].order_id
    van = _restart_van(h, "ST-A-01", keep_load=True)
    for _ in range(5):  # its states carry order_id null for 4 s: not yet
        h.advance(1.0, report=True)
    assert "order_recovered" not in h.kinds()
    h.advance(1.0, report=True)
    (event,) = [e for e in h.events if e.kind == "order_recovered"]
    assert f"carry no order instead of order {order_id}" in event.detail
    recovery = h.orders_for("ST-A-01")[-1]
    assert recovery.order_id == f"{order_id}.r1" and van.order is not None
    assert van.order.order_id == recovery.order_id  # the van took it as a new order
    first = recovery.nodes[0]
    assert first.kind is StopKind.START and (first.lon, first.lat) == (van.lon, van.lat)
    kinds = [a.action_type for n in recovery.nodes for a in n.actions]
    assert NodeActionType.LOAD not in kinds  # the station's loading is not done again
    delivered = {p for n in recovery.nodes for a in n.actions for p in a.parcel_ids}
    assert delivered == {"P2", "P3", "P4"}  # P1 was delivered: not again
    h.drive("ST-A-01", 10)
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.DELIVERED}
    assert [e.parcel_id for e in h.events if e.kind == "parcel_delivered"].count("P1") == 1


def test_a_van_whose_data_is_not_live_is_not_sent_a_recovery_order_until_it_is() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 1)
    van = _restart_van(h, "WH-PORTO-01", keep_load=True)
    van.errors = [VanError(error_type="vcu_link_lost", level=ErrorLevel.WARNING)]
    for _ in range(8):
        h.advance(1.0, report=True)
    (lost,) = [e for e in h.events if e.kind == "order_lost"]
    assert "waiting for a live position" in lost.detail
    assert not h.orders_for("WH-PORTO-01")[-1].order_id.endswith(".r1")
    van.errors = []
    h.advance(1.0, report=True)
    assert h.orders_for("WH-PORTO-01")[-1].order_id.endswith(".r1")
    h.drive("WH-PORTO-01", 5)
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.AT_STATION}


# -- item 6 / C10: cancel waits for the van, keeps what it did, brings the rest home --------
def test_a_van_cancelled_on_its_way_to_a_door_delivers_there_and_returns_the_rest_home() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, resend_first_s=2.0))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)  # P1..P4 at the station
    h.drive("ST-A-01", 2)  # loaded, P1 delivered; on its way to P2's door
    van = h.vans["ST-A-01"]
    h.connected.discard("ST-A-01")  # the cancel is on its way...
    h.core.cancel_vans(["ST-A-01"], h.now_s)
    h.pump()
    assert h.replans == []  # nothing is re-planned before the van confirms
    assert h.core.cancel_outcome("ST-A-01") is None
    van.step()  # ...and the van finishes the stop it was driving to: P2 handed over
    h.connected.add("ST-A-01")
    h.advance(2.5)  # the cancel is sent again and obeyed
    assert van.cancelled
    h.report("ST-A-01")  # P2 delivered, the cancel finished
    assert _status(h, "P2") is ParcelStatus.DELIVERED
    outcome = h.core.cancel_outcome("ST-A-01")
    assert outcome is not None and outcome[0]
    assert "1 parcel(s) delivered meanwhile (P2)" in outcome[1]
    assert "home with 2 parcel(s)" in outcome[1]
    (request,) = h.replans
    assert "P2" not in {p.id for p in request.parcels}  # delivered: never re-planned
    assert request.parcel_location["P3"] == "station" and request.at_station["P3"] == "ST-A"
    assert "P3" in request.ready_at  # there once the return order has unloaded it
    home = h.orders_for("ST-A-01")[-1]
    assert home.order_id.endswith(".h1") and van.order is not None
    assert van.order.order_id == home.order_id
    (unload,) = home.nodes[-1].actions
    assert unload.action_type is NodeActionType.UNLOAD and set(unload.parcel_ids) == {"P3", "P4"}
    # the planner gives P3 and P4 to ST-A-02, loading at the station
    h.replan_done(request, plans.plan([plans.last_mile_route(("P3", "P4"), "ST-A-02")]))
    assert all(not o.nodes[0].released for o in h.orders_for("ST-A-02"))  # not there yet
    h.drive("ST-A-01", 2)  # home, unloaded
    assert {_status(h, "P3"), _status(h, "P4")} == {ParcelStatus.AT_STATION}
    assert h.orders_for("ST-A-02")[-1].nodes[0].released
    h.drive("ST-A-02", 10)
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.DELIVERED}
    delivered = [e.parcel_id for e in h.events if e.kind == "parcel_delivered"]
    assert sorted(delivered) == ["P1", "P2", "P3", "P4"]  # each once
    assert all(
        "P2" not in a.parcel_ids
        for o in h.orders_for("ST-A-02")
        for n in o.nodes
        for a in n.actions
    )
    record = h.core.van_record("ST-A-01")
    assert record is not None and not record.in_service  # until `fleet resume`


def test_a_cancel_the_van_never_confirms_keeps_its_load_its_own_until_it_does() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, cancel_confirm_s=10.0))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)
    h.drive("ST-A-01", 2)
    _connection(h, "ST-A-01", ConnectionState.CONNECTION_BROKEN)
    h.core.cancel_vans(["ST-A-01"], h.now_s)
    h.pump()
    h.advance(9.0, report=True)  # the others keep reporting
    assert h.replans == []
    h.advance(1.5, report=True)
    outcome = h.core.cancel_outcome("ST-A-01")
    assert outcome is not None and not outcome[0] and "not confirmed within 10 s" in outcome[1]
    (request,) = h.replans
    # what it carries stays on board it (out of service): another van planned to take it
    # from its depot waits until it is unloaded there
    by_van = {v.van_id: v for v in request.vans}
    assert set(by_van["ST-A-01"].parcels_on_board) == {"P2", "P3", "P4"}
    assert not by_van["ST-A-01"].in_service
    record = h.core.van_record("ST-A-01")
    assert record is not None and record.returning and record.released == 0  # held
    h.replan_done(request, plans.plan([plans.last_mile_route(("P2", "P3", "P4"), "ST-A-02")]))
    assert all(not o.nodes[0].released for o in h.orders_for("ST-A-02"))
    _connection(h, "ST-A-01", ConnectionState.ONLINE)
    h.advance(5.0, report=True)  # it gets the cancel again...
    h.report("ST-A-01")  # ...confirms it, and is sent its way home
    assert h.orders_for("ST-A-01")[-1].order_id.endswith(".h1")
    h.drive("ST-A-01", 2)
    assert {_status(h, p) for p in ("P2", "P3", "P4")} == {ParcelStatus.AT_STATION}
    assert h.orders_for("ST-A-02")[-1].nodes[0].released
    h.drive("ST-A-02", 10)
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.DELIVERED}


def test_an_emergency_stop_that_failed_on_the_van_is_sent_again_under_a_new_id() -> None:
    h = Harness(config=ControllerConfig(estop_resend_s=0.5))
    h.report()
    h.connected.discard("ST-A-01")
    h.core.instant(InstantActionType.EMERGENCY_STOP, ["ST-A-01"], h.now_s)
    (first,) = h.pump().sends
    action_id = first.message.actions[0].action_id  # type: ignore[union-attr]
    van = h.vans["ST-A-01"]
    van.actions[action_id] = ActionState(
        action_id=action_id,
        action_type="emergency_stop",
        status=ActionStatus.FAILED,
        result_description="link lost",
    )
    h.core.on_state("ST-A-01", van.state(h.now_s), h.now_s)
    out = h.pump()
    (again,) = out.sends
    assert again.urgent and again.message.actions[0].action_id != action_id  # type: ignore[union-attr]
    assert "instant_failed" in h.kinds() and "instant_confirmed" not in h.kinds()
    (status,) = h.core.status(["ST-A-01"], h.now_s).vans
    assert status.mode is VanMode.ESTOP_SENT and "failed: link lost" in status.mode_reason


def test_a_van_that_reports_an_older_update_of_its_order_is_sent_the_current_one_again() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 2)  # at the station: update 1 releases the way back
    h.report("WH-PORTO-01")  # confirms update 1
    record = h.core.van_record("WH-PORTO-01")
    assert record is not None and record.confirmed and record.order is not None
    current = record.order.order_update_id
    van = h.vans["WH-PORTO-01"]
    van.book.order = h.orders_for("WH-PORTO-01")[0]  # restarted from an older saved copy
    h.report("WH-PORTO-01")
    assert "order_lost" in h.kinds()
    h.advance(0.3)
    assert van.order.order_update_id == current  # the current update went out again, taken
    assert h.verdicts[-1] == ("WH-PORTO-01", OrderVerdict.UPDATE)


def test_parcels_a_replan_cannot_place_while_vans_are_out_of_reach_are_not_given_up() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, stale_after_s=10.0))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.advance(11.0)  # every van silent: stale
    urgent = Parcel(id=ParcelId("Q1"), lon=-8.625, lat=41.162, weight_kg=1.0, volume_m3=0.01)
    h.core.add_parcels([urgent], h.now_s)
    h.pump()
    (request,) = h.replans
    assert not any(v.in_service for v in request.vans)
    assert request.unreachable == {v.van_id for v in request.vans}
    nobody = Unserved(ParcelId("Q1"), UnservedReason.NOT_ENOUGH_VANS, "no van in service")
    h.replan_done(request, dataclasses.replace(plans.plan([]), unserved=(nobody,)))
    assert _status(h, "Q1") is ParcelStatus.PLANNED  # not given up
    assert "report(s) again" in h.core.parcel("Q1").detail  # type: ignore[union-attr]
    assert "parcel_unserved" not in h.kinds()
    h.report("ST-A-02")  # a van is back: planned again at once
    again = h.replans[-1]
    assert again.cause == "ST-A-02: available again"
    assert "Q1" in {p.id for p in again.parcels}
    assert {v.van_id: v for v in again.vans}["ST-A-02"].in_service


def test_a_restarted_controller_does_not_take_vans_for_stale_for_its_own_downtime() -> None:
    h = Harness(config=ControllerConfig(release_ahead_stops=1, stale_after_s=10.0))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    snapshot = _snapshot_of(h)
    later = h.now_s + 300.0  # down for five minutes
    again = Harness(config=h.config, snapshot=snapshot, now_s=later, vans=h.vans)
    again.advance(1.0)
    again.core.request_replan("after the restart", again.now_s)
    again.pump()
    assert all(v.in_service for v in again.replans[-1].vans)
    assert "van_stale" not in again.kinds()
    again.report("ST-A-02")
    (status,) = again.core.status(["ST-A-02"], again.now_s).vans
    assert status.mode is not VanMode.STALE
    again.advance(11.0)  # and now it has been silent while the controller listened
    (status,) = again.core.status(["ST-A-02"], again.now_s).vans
    assert status.mode is VanMode.STALE


def test_a_restarted_controller_never_shows_a_state_from_before_it_listened_as_live() -> None:
    """Found by tests/safety (the loop machine): the state restored from the store (or heard
    before the broker link was lost) was shown live, e-stopped or driving, for up to
    ``stale_after_s`` after a restart, however old it was."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1, stale_after_s=10.0))
    h.report()
    snapshot = _snapshot_of(h)
    later = h.now_s + 300.0
    again = Harness(config=h.config, snapshot=snapshot, now_s=later, vans=h.vans)
    again.connected.clear()  # nothing heard yet
    (status,) = again.core.status(["ST-A-02"], later + 1.0).vans
    assert status.mode is VanMode.STALE
    assert "not heard since the controller started listening" in status.mode_reason
    again.connected.add("ST-A-02")
    again.report("ST-A-02")
    (status,) = again.core.status(["ST-A-02"], again.now_s).vans
    assert status.mode is VanMode.IDLE


def _snapshot_of(h: Harness) -> Snapshot:
    """What the store would hold: the latest of every record the harness saw written."""
    h.advance(h.config.flush_interval_s)  # the latest states are written
    parcels: dict[str, ParcelRecord] = {}
    vans: dict[str, VanRecord] = {}
    states: dict[str, VanStateRecord] = {}
    plans_: list[PlanRecord] = []
    for c in h.changes:
        parcels.update(c.parcels)
        vans.update(c.vans)
        states.update(c.van_states)
        plans_.extend(c.plans)
    return Snapshot(
        tuple(parcels.values()), tuple(vans.values()), tuple(states.values()), tuple(plans_)
    )


def test_a_resume_not_yet_confirmed_is_never_sent_again_after_an_emergency_stop() -> None:
    """Found by tests/safety (the loop machine): a resume lost on its way (the bridge was
    restarting) was re-sent two seconds later, after the dispatcher's emergency stop, with a
    fresh message id the van accepted: it released the newer e-stop."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1, resend_first_s=2.0))
    h.report()
    h.connected.discard("ST-A-01")  # the resume is lost
    h.core.instant(InstantActionType.RESUME, ["ST-A-01"], h.now_s)
    h.pump()
    h.advance(0.5)
    h.connected.add("ST-A-01")
    h.core.instant(InstantActionType.EMERGENCY_STOP, ["ST-A-01"], h.now_s)
    h.pump()
    for _ in range(20):  # ten seconds of re-send timers
        h.advance(0.5)
    after_estop = [a.action_type for m in h.instants if m.van_id == "ST-A-01" for a in m.actions]
    assert InstantActionType.RESUME not in after_estop
    assert after_estop and set(after_estop) == {InstantActionType.EMERGENCY_STOP}
    assert "instant_superseded" in h.kinds()
    h.report("ST-A-01")  # and the van stays stopped
    assert h.core.status(["ST-A-01"], h.now_s).vans[0].mode is VanMode.ESTOPPED


def test_a_state_that_arrives_late_is_as_old_as_its_stamp() -> None:
    """Found by tests/safety (the loop machine): states delayed 4 s on a congested link were
    taken as heard on arrival, so data 12 s old was shown live (bound 10 s + the bridge's)."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1, stale_after_s=10.0))
    h.report("ST-A-01")
    van = h.vans["ST-A-01"]
    made_s = h.now_s
    h.now_s += 4.0
    h.core.on_state("ST-A-01", van.state(made_s + 0.5), h.now_s)  # made 3.5 s ago
    (status,) = h.core.status(["ST-A-01"], h.now_s).vans
    assert status.mode is VanMode.IDLE
    h.now_s += 7.0  # heard 7 s ago, made 10.5 s ago
    (status,) = h.core.status(["ST-A-01"], h.now_s).vans
    assert status.mode is VanMode.STALE and "arrived late" in status.mode_reason


def test_a_restarted_controller_never_sends_again_a_resume_from_before_its_restart() -> None:
    """Found by tests/safety (the loop machine): a controller restored from an older copy of
    its store re-sent a resume that copy held unconfirmed; a van whose bridge had lost its
    state dir took it as new and released an emergency stop given after it."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.report()
    h.connected.discard("ST-A-01")
    h.core.instant(InstantActionType.RESUME, ["ST-A-01"], h.now_s)
    h.core.instant(InstantActionType.PAUSE, ["ST-A-01"], h.now_s)
    h.pump()
    snapshot = _snapshot_of(h)
    again = Harness(config=h.config, snapshot=snapshot, now_s=h.now_s + 60.0, vans=h.vans)
    again.core.on_link_up(again.now_s)
    again.pump()
    again.advance(30.0)
    sent = [a.action_type for m in again.instants for a in m.actions]
    assert InstantActionType.RESUME not in sent
    assert InstantActionType.PAUSE in sent  # a safer command is sent again
    assert "instant_superseded" in again.kinds()


def test_a_parcel_back_at_the_warehouse_is_not_loaded_at_the_station_before_its_line_haul() -> None:
    """Found by tests/safety (the loop machine): parcels a cancelled line-haul van unloaded
    back at the warehouse were re-planned through the station; the re-plan overwrote where
    they lay with the station they go to, and the station van's load there was released at
    once — it "loaded" parcels still at the warehouse, and the next re-plan took them for
    on board."""
    p1 = plans.parcels(1)[0]
    day = PlanRecord("P-1", "plan", "dispatch", 0.0, plans.DAY.isoformat(), plans.TIMEZONE, "{}")
    back = ParcelRecord(p1, ParcelStatus.AT_STATION, "P-1", station="WH-PORTO")
    h = Harness(snapshot=Snapshot(parcels=(back,), plans=(day,)))
    h.report()
    h.core.request_replan("test", h.now_s)
    h.pump()
    request = h.replans[-1]
    routes = [
        plans.line_haul_route(["P1"], van="WH-PORTO-02"),
        plans.last_mile_route(["P1"], van="ST-A-01"),
    ]
    h.replan_done(request, plans.plan(routes, n_parcels=1))
    record = h.core.parcel("P1")
    assert record is not None and record.station == "WH-PORTO"  # where it lies
    assert h.orders_for("ST-A-01") == []  # its load at ST-A waits for the line haul
    h.drive("WH-PORTO-02", 2)  # loads at the warehouse, unloads at the station
    record = h.core.parcel("P1")
    assert record is not None and record.status is ParcelStatus.AT_STATION
    assert record.station == "ST-A"
    assert h.orders_for("ST-A-01")  # now it goes


def test_a_parcel_a_van_was_to_deliver_and_does_not_carry_is_location_unknown() -> None:
    """Found by benchmarks/chaos.py: a van's book took a delivery or unload of a parcel it
    did not carry as done, and the controller believed it. The book now fails it (not
    aboard); the controller holds the parcel out of planning as location unknown."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 3)  # all four parcels at the station
    h.drive("ST-A-01", 1)  # loaded at the station
    van = h.vans["ST-A-01"]
    van.on_board = [p for p in van.on_board if p != "P1"]  # its book lost P1
    h.drive("ST-A-01", 1)  # the door of P1
    rec = h.core.parcel("P1")
    assert rec is not None and rec.status is ParcelStatus.FAILED
    assert rec.detail.startswith("location unknown: ST-A-01 was to deliver it")
    assert "parcel_missing" in h.kinds() and "P1" not in [
        e.parcel_id for e in h.events if e.kind == "parcel_delivered"
    ]
    h.drive("ST-A-01", 10)
    assert {_status(h, f"P{i}") for i in range(2, 5)} == {ParcelStatus.DELIVERED}


def test_a_van_holding_an_order_this_controller_never_sent_is_believed_on_its_load() -> None:
    """Found by benchmarks/chaos.py: a controller restored from an older store took a van
    driving a newer controller's order for one that lost its order, and sent it a recovery
    order from the old store — the van unloaded at the station, and loaded at the warehouse,
    parcels it had handed over long before. Now the van is out of service here, drives its
    own order, and what its state lists aboard is the truth."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1, order_lost_after_s=5.0))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 1)  # P1–P4 loaded at the warehouse
    assert {_status(h, f"P{i}") for i in range(1, 5)} == {ParcelStatus.LOADED}
    van = h.vans["WH-PORTO-01"]
    ours = h.orders_for("WH-PORTO-01")[-1]
    # a controller with a newer store sent it another order; it has handed over P3 and P4
    van.book.order = ours.model_copy(update={"order_id": "P-newer"})
    van.on_board = ["P1", "P2"]
    sent_before = len(h.orders_for("WH-PORTO-01"))
    orders_before = len(h.orders)
    for _ in range(10):
        h.advance(1.0, report=True)
    assert "order_unknown" in h.kinds() and "order_recovered" not in h.kinds()
    assert len(h.orders_for("WH-PORTO-01")) == sent_before  # nothing of the old store's
    record = h.core.van_record("WH-PORTO-01")
    assert record is not None and record.in_service is False
    for pid in ("P3", "P4"):
        rec = h.core.parcel(pid)
        assert rec is not None and rec.status is ParcelStatus.FAILED
        assert rec.detail.startswith("location unknown")
    for pid in ("P1", "P2"):
        rec = h.core.parcel(pid)
        assert rec is not None and rec.status is ParcelStatus.LOADED
        assert rec.holder == "WH-PORTO-01"
    # no van is sent to load a parcel whose place is unknown
    loads = {
        p
        for o in h.orders[orders_before:]
        for n in o.nodes
        for a in n.actions
        if a.action_type is NodeActionType.LOAD
        for p in a.parcel_ids
    }
    assert not loads & {"P3", "P4"}


def test_an_emergency_stop_is_never_given_up_and_only_a_resume_supersedes_it() -> None:
    """Issue 14 item 1: an e-stop the van did not confirm was given up after five minutes
    (`instant_gave_up`). A command that makes the van safer goes on being sent until the van
    confirms it or a dispatcher's resume supersedes it."""
    config = ControllerConfig(resend_max_s=30.0, resend_give_up_s=300.0)
    h = Harness(config=config)
    h.report()
    h.core.instant(InstantActionType.EMERGENCY_STOP, ["ST-A-01"], h.now_s)
    h.pump()

    def estops() -> int:
        return sum(
            a.action_type is InstantActionType.EMERGENCY_STOP for m in h.instants for a in m.actions
        )

    for _ in range(30):  # 300 s, the van never reports (its states are lost)
        h.advance(10.0)
    before = estops()
    for _ in range(12):  # two more minutes
        h.advance(10.0)
    assert estops() - before >= 4  # still sent, every resend_max_s
    assert "instant_gave_up" not in h.kinds()
    assert h.kinds().count("instant_overdue") == 1
    h.core.instant(InstantActionType.RESUME, ["ST-A-01"], h.now_s)
    h.pump()
    assert "instant_superseded" in h.kinds()
    after_resume = estops()
    for _ in range(12):
        h.advance(10.0)
    assert estops() == after_resume  # the dispatcher let the van go: not stopped again


def test_a_replan_made_before_a_parcel_was_found_missing_does_not_send_a_van_for_it() -> None:
    """Found by benchmarks/chaos.py (calm days): a re-plan requested while the line-haul van
    still counted as carrying P1 came back after P1 was found location unknown, and its
    route sent the station van to load P1 at the station — where it never arrived."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 1)  # P1–P4 loaded at the warehouse
    h.core.request_replan("test", h.now_s)
    h.pump()
    request = h.replans[-1]
    van = h.vans["WH-PORTO-01"]
    van.on_board = [p for p in van.on_board if p != "P1"]  # its book lost P1
    h.drive("WH-PORTO-01", 2)  # at the station: the unload of P1 fails, not aboard
    assert _status(h, "P1") is ParcelStatus.FAILED
    ids = ["P1", "P2", "P3", "P4"]
    routes = [plans.last_mile_route(ids, van="ST-A-01")]
    before = len(h.orders)
    h.replan_done(request, plans.plan(routes, n_parcels=4))
    sent = {
        p
        for o in h.orders[before:]
        if o.van_id == "ST-A-01"
        for n in o.nodes
        for a in n.actions
        for p in a.parcel_ids
    }
    assert sent == {"P2", "P3", "P4"}


def test_a_van_still_reporting_its_earlier_order_of_this_day_stays_in_service() -> None:
    """A van whose states carry an order this controller sent before the one it counts on
    now (a re-plan gave it a new order it has not taken yet) holds nothing unknown: it is
    not taken for one driving a newer store's order (found by benchmarks/disruption.py's
    full-stack day, where such vans were put out of service and half the day failed)."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1, order_lost_after_s=5.0))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.drive("WH-PORTO-01", 4)  # its line haul done: back at the warehouse
    h.core.request_replan("test", h.now_s)
    h.pump()
    request = h.replans[-1]
    h.connected.discard("WH-PORTO-01")  # the new order does not reach it yet
    routes = [plans.line_haul_route(["P1"], van="WH-PORTO-01")]
    h.replan_done(request, plans.plan(routes, n_parcels=1))
    h.core.request_replan("test again", h.now_s)  # a second new order before it took one
    h.pump()
    h.replan_done(h.replans[-1], plans.plan(routes, n_parcels=1))
    record = h.core.van_record("WH-PORTO-01")
    assert record is not None and record.order is not None
    assert record.order.order_id != "P-test"
    van = h.vans["WH-PORTO-01"]
    assert van.book.order is not None and van.book.order.order_id == "P-test"
    for _ in range(3):
        h.advance(1.0)
        h.core.on_state("WH-PORTO-01", van.state(h.now_s), h.now_s)
        h.pump()
    record = h.core.van_record("WH-PORTO-01")
    assert record is not None and record.in_service
    assert "order_unknown" not in h.kinds()
