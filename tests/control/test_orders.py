"""Turning a planned route into an order: speed caps and the actions at each stop."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.control.orders import local_to_epoch, route_path
from fleet.model import Leg, ParcelId, StopKind, Trip, load_van_spec
from fleet.protocol import NodeActionType, parse_timestamp
from tests.control.harness import VAN_FILE
from tests.support import plans

TOP_SPEED_MPS = 60 / 3.6


def test_each_edge_is_capped_at_the_speed_of_its_roads_not_the_vans_top_speed() -> None:
    route = plans.last_mile_route()
    path = route_path(route, local_to_epoch(plans.DAY, plans.TIMEZONE), top_speed_mps=TOP_SPEED_MPS)
    stops = list(route.stops())
    for i, edge in enumerate(path.edges):
        a, b = stops[i], stops[i + 1]
        road = (b.dist_so_far_m - a.dist_so_far_m) / (b.arrival_s - a.departure_s)
        assert edge.max_speed_mps == pytest.approx(min(road, TOP_SPEED_MPS))
    assert path.edges[0].max_speed_mps == pytest.approx(400.0 / 120.0)  # 12 km/h streets


def test_a_fast_road_is_still_capped_at_the_vans_top_speed() -> None:
    route = plans.line_haul_route()
    (trip,) = route.trips
    stops = list(trip.stops)
    # 2.5 km in 60 s: a road faster than the van may drive
    stops[1] = replace(stops[1], arrival_s=stops[0].departure_s + 60.0)
    route = replace(route, trips=(Trip(0, tuple(stops)),))
    path = route_path(route, local_to_epoch(plans.DAY, plans.TIMEZONE), top_speed_mps=TOP_SPEED_MPS)
    assert path.edges[0].max_speed_mps == pytest.approx(TOP_SPEED_MPS)


def test_parcels_a_last_mile_van_brings_back_to_its_depot_are_unloaded_not_delivered() -> None:
    route = plans.last_mile_route()
    (trip,) = route.trips
    stops = list(trip.stops)
    stops[-1] = replace(stops[-1], parcels_delivered=(ParcelId("P4"),))
    route = replace(route, trips=(Trip(0, tuple(stops)),))
    assert route.leg is Leg.LAST_MILE and stops[-1].kind is StopKind.DEPOT
    path = route_path(route, local_to_epoch(plans.DAY, plans.TIMEZONE), top_speed_mps=TOP_SPEED_MPS)
    (action,) = path.nodes[-1].actions
    assert action.action_type is NodeActionType.UNLOAD and action.parcel_ids == ("P4",)
    doors = [a.action_type for n in path.nodes[1:-1] for a in n.actions]
    assert set(doors) == {NodeActionType.DELIVER}


def test_a_stop_where_the_plan_charges_carries_a_charge_action_with_its_target() -> None:
    route = plans.last_mile_route()
    (trip,) = route.trips
    stops = list(trip.stops)
    # the van comes back at 90 % and the plan has it leave its depot at 97 %
    stops[-1] = replace(stops[-1], soc_pct=97.0, departure_s=stops[-1].arrival_s + 1800.0)
    route = replace(route, trips=(Trip(0, tuple(stops)),))
    path = route_path(route, local_to_epoch(plans.DAY, plans.TIMEZONE), top_speed_mps=TOP_SPEED_MPS)
    charges = [
        (n.node_id, a.target_soc_pct, a.parcel_ids)
        for n in path.nodes[1:]
        for a in n.actions
        if a.action_type is NodeActionType.CHARGE
    ]
    assert charges == [(path.nodes[-1].node_id, 97.0, ())]


def test_an_orders_first_stop_at_its_depot_charges_to_the_planned_departure_charge() -> None:
    """A re-plan gives a van back at its depot at 40 % a new order; the plan charges it
    there while it loads. With no earlier stop to compare with, the order must still say so."""
    route = plans.line_haul_route()
    (trip,) = route.trips
    stops = [replace(s, soc_pct=s.soc_pct - 50.0) for s in trip.stops]  # 40 % and lower
    route = replace(route, trips=(Trip(0, tuple(stops)),))
    path = route_path(route, local_to_epoch(plans.DAY, plans.TIMEZONE), top_speed_mps=TOP_SPEED_MPS)
    first = [a for a in path.nodes[0].actions if a.action_type is NodeActionType.CHARGE]
    assert [a.target_soc_pct for a in first] == [stops[0].soc_pct]
    # a full van's first stop (the morning plan): nothing to charge by the plan; the
    # controller adds one if the van's reported battery needs it (tests/control/test_safety.py)
    full = replace(route, trips=(Trip(0, tuple(replace(s, soc_pct=100.0) for s in stops)),))
    path = route_path(full, local_to_epoch(plans.DAY, plans.TIMEZONE), top_speed_mps=20.0)
    assert all(a.action_type is not NodeActionType.CHARGE for a in path.nodes[0].actions)


def test_a_door_reached_before_its_window_has_its_work_held_until_the_window_opens() -> None:
    """The plan has the van wait at a door for its window: the wait is part of the stop's
    dwell, not of its work. The bridge starts the work at the planned departure minus the
    action's duration, so the duration must be the service alone or the parcel is handed over
    before the window opens."""
    route = plans.last_mile_route()
    (trip,) = route.trips
    stops = list(trip.stops)
    k = next(i for i, s in enumerate(stops) if s.kind is StopKind.DOOR)
    service_s, wait_s = 95.4, 600.0
    opens_s = stops[k].departure_s - service_s  # the window opens when the service begins
    stops[k] = replace(stops[k], arrival_s=opens_s - wait_s)
    route = replace(route, trips=(Trip(0, tuple(stops)),))
    to_epoch = local_to_epoch(plans.DAY, plans.TIMEZONE)
    path = route_path(
        route, to_epoch, top_speed_mps=TOP_SPEED_MPS, door_work_s=lambda stop: service_s
    )
    node = path.nodes[k]
    (deliver,) = node.actions
    assert deliver.action_type is NodeActionType.DELIVER
    assert node.planned_departure is not None
    work_starts = parse_timestamp(node.planned_departure) - deliver.duration_s
    assert to_epoch(opens_s) < work_starts <= to_epoch(opens_s) + 1.0
    # without the service times the work is the whole dwell, the wait included
    plain = route_path(route, to_epoch, top_speed_mps=TOP_SPEED_MPS)
    assert plain.nodes[k].actions[0].duration_s == pytest.approx(wait_s + service_s)


def test_a_van_that_waited_at_a_door_for_its_window_is_not_counted_late() -> None:
    """The controller measures a van's lateness when it reaches a node; at a door where the
    plan waits for the window the bridge reaches the node when the work starts, not at the
    planned arrival."""
    from fleet.control.core import _lateness

    route = plans.last_mile_route()
    (trip,) = route.trips
    stops = list(trip.stops)
    k = next(i for i, s in enumerate(stops) if s.kind is StopKind.DOOR)
    stops[k] = replace(stops[k], arrival_s=stops[k].departure_s - 80.0 - 900.0)
    route = replace(route, trips=(Trip(0, tuple(stops)),))
    to_epoch = local_to_epoch(plans.DAY, plans.TIMEZONE)
    path = route_path(route, to_epoch, top_speed_mps=TOP_SPEED_MPS, door_work_s=lambda s: 80.0)
    node = path.nodes[k]
    work_starts = to_epoch(stops[k].departure_s) - node.actions[0].duration_s
    assert _lateness(node, work_starts, first=False) == pytest.approx(0.0, abs=1e-3)
    assert _lateness(node, work_starts + 60, first=False) == pytest.approx(60.0, abs=1e-3)
    # the first node, where the van stands and loads until it leaves: due at its departure,
    # never early
    depot = path.nodes[0]
    leaves = to_epoch(stops[0].departure_s)
    assert depot.actions and _lateness(depot, leaves + 30, first=True) == pytest.approx(30.0)
    assert _lateness(depot, leaves - 600, first=True) == 0.0
    # a node without work (the trip's end): its planned arrival
    end = path.nodes[-1]
    assert not end.actions
    arrives = to_epoch(stops[-1].arrival_s)
    assert _lateness(end, arrives - 20, first=False) == pytest.approx(-20.0, abs=1e-3)


def test_an_actions_duration_is_its_work_never_the_wait_of_a_long_depot_stay() -> None:
    """Issue 14, item 12: a van at its depot from 05:00 to 11:12 (22,367 s) loads for
    depot_load_s and charges for what its energy needs; the rest is waiting, which the planned
    departure says. Each action's duration_s is its own work."""
    van = load_van_spec(VAN_FILE)
    route = plans.line_haul_route()
    (trip,) = route.trips
    stops = list(trip.stops)
    stops[0] = replace(stops[0], arrival_s=5 * 3600.0, departure_s=5 * 3600.0 + 22_367.0)
    later = stops[0].departure_s - trip.stops[0].departure_s
    stops[1:] = [
        replace(s, arrival_s=s.arrival_s + later, departure_s=s.departure_s + later)
        for s in stops[1:]
    ]
    # a second trip: back at the depot at 60 %, loads again and charges to 80 % meanwhile
    back = replace(
        stops[2],
        soc_pct=80.0,
        departure_s=stops[2].arrival_s + 7200.0,
        parcels_loaded=(ParcelId("P9"),),
    )
    stops[2] = back
    stops[1] = replace(stops[1], soc_pct=65.0)
    route = replace(route, trips=(Trip(0, tuple(stops)),))
    to_epoch = local_to_epoch(plans.DAY, plans.TIMEZONE)
    path = route_path(route, to_epoch, top_speed_mps=TOP_SPEED_MPS, van=van)
    first = {a.action_type: a for a in path.nodes[0].actions}
    assert first[NodeActionType.LOAD].duration_s == van.depot_load_s
    assert first[NodeActionType.CHARGE].duration_s <= van.charge_time_s(van.battery_kwh) + 1
    station = {a.action_type: a for a in path.nodes[1].actions}
    assert station[NodeActionType.UNLOAD].duration_s == van.station_unload_s
    again = {a.action_type: a for a in path.nodes[2].actions}
    assert again[NodeActionType.LOAD].duration_s == van.depot_load_s
    # 65 % at the station, 2.5 km of road (0.75 kWh) to the depot, charged to 80 %
    arrival_pct = 65.0 - 0.75 / van.battery_kwh * 100.0
    need_s = van.charge_time_s((80.0 - arrival_pct) / 100.0 * van.battery_kwh)
    assert again[NodeActionType.CHARGE].duration_s == pytest.approx(need_s, abs=1.0)
    assert all(a.duration_s < 22_367.0 / 2 for n in path.nodes for a in n.actions)
