"""Urgent orders at the controller: planned at once; one no re-plan can meet is an
``urgent_unmet`` event with the planner's reason and earliest time; one given to a warehouse
van's direct trip is delivered by that van at the door."""

from __future__ import annotations

import dataclasses

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
from fleet.protocol import NodeActionType
from fleet.store import ParcelStatus
from tests.control.harness import Harness
from tests.support import plans

URGENT = Parcel(
    id=ParcelId("Q1"),
    lon=plans.DOORS[2][0],
    lat=plans.DOORS[2][1],
    weight_kg=1.0,
    volume_m3=0.01,
    earliest_s=9 * 3600,
    latest_s=10 * 3600,
)


def _running() -> Harness:
    h = Harness()
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    h.core.add_parcels([URGENT], h.now_s)
    h.pump()
    return h


def test_an_urgent_order_is_planned_the_moment_it_is_added() -> None:
    h = _running()
    (request,) = h.replans
    assert request.cause == "urgent order: 1 parcel(s)"
    assert "Q1" in {p.id for p in request.parcels}
    assert request.parcel_location["Q1"] == "warehouse"
    assert h.kinds().index("parcels_added") < h.kinds().index("replan_started")


def test_an_urgent_order_no_van_can_meet_is_an_urgent_unmet_event_with_reason_and_time() -> None:
    h = _running()
    (request,) = h.replans
    why = (
        "the earliest a van can reach it is 10:25 (direct from the warehouse), after its window "
        "closes at 10:00"
    )
    unmet = Unserved(ParcelId("Q1"), UnservedReason.WINDOW_IMPOSSIBLE, why)
    h.replan_done(request, dataclasses.replace(plans.plan([]), unserved=(unmet,)))
    (event,) = [e for e in h.events if e.kind == "urgent_unmet"]
    assert event.parcel_id == "Q1"
    assert event.data["reason"] == "window_impossible"
    assert event.detail == f"window_impossible: {why}"
    rec = h.core.parcel("Q1")
    assert rec is not None and rec.status is ParcelStatus.UNSERVED


def test_an_urgent_order_the_replan_serves_is_no_urgent_unmet_event() -> None:
    h = _running()
    (request,) = h.replans
    h.replan_done(request, plans.plan([_direct_route()]))
    assert "urgent_unmet" not in h.kinds()


def _direct_route() -> VanRoute:
    """WH-PORTO-02 loads Q1 at the warehouse and takes it straight to its door."""
    t0 = 9 * 3600.0
    wh, door = plans.WAREHOUSE, plans.DOORS[2]
    stops = (
        plans._stop(0, StopKind.DEPOT, "WH-PORTO", wh, t0, 900, loaded=["Q1"], dist_m=0, prev=None),
        plans._stop(
            1, StopKind.DOOR, "", door, t0 + 1500, 80, delivered=["Q1"], dist_m=2500, prev=wh
        ),
        plans._stop(2, StopKind.DEPOT, "WH-PORTO", wh, t0 + 2700, 0, dist_m=5000, prev=door),
    )
    return VanRoute(VanId("WH-PORTO-02"), Leg.LINE_HAUL, DepotId("WH-PORTO"), (Trip(0, stops),))


def test_a_warehouse_van_on_a_direct_trip_delivers_the_urgent_order_at_the_door() -> None:
    h = _running()
    (request,) = h.replans
    h.replan_done(request, plans.plan([_direct_route()]))
    (order,) = h.orders_for("WH-PORTO-02")
    door = order.nodes[1]
    assert [a.action_type for a in door.actions] == [NodeActionType.DELIVER]
    h.drive("WH-PORTO-02", 1)  # loads at the warehouse
    rec = h.core.parcel("Q1")
    assert rec is not None and rec.status is ParcelStatus.LOADED
    assert rec.holder == "WH-PORTO-02"
    h.drive("WH-PORTO-02", 1)  # at the door
    rec = h.core.parcel("Q1")
    assert rec is not None and rec.status is ParcelStatus.DELIVERED, rec
    assert rec.holder == "WH-PORTO-02"
