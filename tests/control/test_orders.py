"""Turning a planned route into an order: speed caps and the actions at each stop."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.control.orders import local_to_epoch, route_path
from fleet.model import Leg, ParcelId, StopKind, Trip
from fleet.protocol import NodeActionType
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
    # a full van's first stop (the morning plan): nothing to charge
    full = replace(route, trips=(Trip(0, tuple(replace(s, soc_pct=100.0) for s in stops)),))
    path = route_path(full, local_to_epoch(plans.DAY, plans.TIMEZONE), top_speed_mps=20.0)
    assert all(a.action_type is not NodeActionType.CHARGE for a in path.nodes[0].actions)
