"""The fast mode's van keeps time with the full stack's: the bridge's own core and a stepped
sim.vehicle, fed the same orders from a real plan, reach and finish every stop at the same
times (within the stepping's resolution) and drive the same distance on the same energy."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from firmware_bridge import wire
from firmware_bridge.bridge import BridgeCore
from firmware_bridge.bridge.core import PublishState, SendSerial
from fleet.control.orders import local_to_epoch, make_order, released, route_path
from fleet.model import Plan, VanSpec
from fleet.planning import plan_day
from fleet.protocol import (
    ActionStatus,
    CommandVerifier,
    InstantAction,
    InstantActions,
    InstantActionType,
    NodeAction,
    NodeActionType,
    Order,
    State,
    derive_van_key,
    encode,
    make_header,
    parse_timestamp,
    sign,
)
from fleet.roads import RoadNetwork, load_network
from sim.demand import day_demand
from sim.fast.motion import Leg
from sim.fast.van import FastVan
from sim.scenario import Scenario, load_scenario
from sim.vehicle import Vehicle

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def scenario(configs_dir: Path) -> Scenario:
    return load_scenario(configs_dir / "scenarios" / "poa_small.toml")


@pytest.fixture(scope="module")
def net(scenario: Scenario) -> RoadNetwork:
    return load_network(scenario.site, scenario.van)


@pytest.fixture(scope="module")
def plan(scenario: Scenario, net: RoadNetwork) -> Plan:
    parcels = day_demand(scenario, net).known_by(scenario.run.start_s)
    return plan_day(
        parcels,
        scenario.site,
        scenario.van,
        net,
        time_limit_s=5,
        seed=1,
        day=scenario.day,
        max_iterations=300,
        workers=1,
    )


def _order(plan: Plan, van_id: str, spec: VanSpec, now_s: float) -> Order:
    route = plan.route(van_id)
    path = route_path(
        route, local_to_epoch(plan.day, plan.timezone), top_speed_mps=spec.top_speed_mps
    )
    return make_order(
        make_header("ctl", 1, now_s), van_id, "o1", 0, released(path, len(path.nodes))
    )


# ---- the fast van, on a tiny event loop ---------------------------------------------------


class Loop:
    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.dead: set[int] = set()

    def at(self, time_s: float, action: Callable[[], None]) -> Callable[[], None]:
        n = next(self.seq)
        heapq.heappush(self.heap, (time_s, n, action))
        return lambda: self.dead.add(n)

    def run(self) -> None:
        while self.heap:
            _, n, action = heapq.heappop(self.heap)
            if n not in self.dead:
                action()


@dataclass
class Seen:
    reached: dict[int, float] = field(default_factory=dict)  # node index → time
    done: dict[int, float] = field(default_factory=dict)
    states: list[State] = field(default_factory=list)

    def drove(self, van: FastVan, t0_s: float, t1_s: float, leg: Leg, dist_m: float) -> None:
        pass

    def node_reached(self, van: FastVan, t_s: float, order: Order, node_index: int) -> None:
        self.reached.setdefault(node_index, t_s)

    def node_done(
        self,
        van: FastVan,
        t_s: float,
        order: Order,
        node_index: int,
        loaded: tuple[str, ...],
        unloaded: tuple[str, ...],
    ) -> None:
        self.done.setdefault(node_index, t_s)

    def stopped(self, van: FastVan, t_s: float, why: str) -> None:
        pass

    def take_over(self, van: FastVan, from_van: str, parcel_ids: tuple[str, ...]) -> set[str]:
        return set()


def _run_fast(
    order: Order, spec: VanSpec, lon: float, lat: float, t0: float, soc_pct: float = 100.0
) -> tuple[Seen, FastVan]:
    loop, seen = Loop(), Seen()
    van = FastVan(
        order.van_id,
        spec,
        lon=lon,
        lat=lat,
        soc_pct=soc_pct,
        scheduler=loop,
        observer=seen,
        publish=seen.states.append,
    )
    van.receive_order(order, t0)
    loop.run()
    return seen, van


# ---- the bridge's core and a stepped vehicle, as the VCU drives it -------------------------


def _run_stepped(
    order: Order,
    spec: VanSpec,
    lon: float,
    lat: float,
    t0: float,
    dt: float,
    soc_pct: float = 100.0,
) -> tuple[Seen, Vehicle]:
    key = derive_van_key(SECRET, order.van_id)
    core = BridgeCore(
        order.van_id, CommandVerifier(order.van_id, [key], max_age_s=1e9, max_ahead_s=1e9)
    )
    vehicle = Vehicle(spec, lon=lon, lat=lat, soc_pct=soc_pct)
    mission = {"id": 0, "queued": 0}
    seen = Seen()
    now = t0

    def telemetry() -> wire.Telemetry:
        return wire.Telemetry(
            uptime_ms=int((now - t0) * 1000) & 0xFFFF_FFFF,
            lon_e7=wire.to_e7(vehicle.lon),
            lat_e7=wire.to_e7(vehicle.lat),
            heading_cdeg=round(vehicle.heading_deg * 100) % 36000,
            speed_cmps=round(vehicle.speed_mps * 100),
            soc_cpct=round(vehicle.soc_pct * 100),
            range_m=round(vehicle.remaining_range_km * 1000),
            odometer_m=round(vehicle.odometer_m),
            mission_id=mission["id"],
            last_wp=wire.WP_NONE if vehicle.last_wp is None else vehicle.last_wp,
            wp_queued=mission["queued"],
            drive_state=vehicle.state,
            door=vehicle.door,
            fault_bits=int(wire.FaultBit.CHARGING) if vehicle.charging else 0,
            estop_id=0,
        )

    def apply(actions: list[object]) -> None:
        queue = list(actions)  # in order, as the serial link carries them
        while queue:
            a = queue.pop(0)
            if isinstance(a, SendSerial) and isinstance(a.message, wire.DriveSegment):
                seg = a.message
                if seg.mission_id != mission["id"]:
                    vehicle.clear_route()
                    mission["id"], mission["queued"] = seg.mission_id, 0
                vehicle.append(
                    [(wire.from_e7(x), wire.from_e7(y)) for x, y in seg.waypoints],
                    first_index=seg.first_wp,
                    speed_cap_mps=seg.speed_cap_cmps / 100.0,
                    stop_at_end=seg.stop_at_end,
                    dwell_s=float(seg.dwell_s),
                )
                mission["queued"] += len(seg.waypoints)
                queue.extend(core.on_delivered(a.tag))
            elif isinstance(a, SendSerial) and isinstance(a.message, wire.Charge):
                # as the simulated VCU does it (sim/vcu.py)
                vehicle.start_charging(a.message.target_cpct / 100.0, spec.charging_power_kw)
                queue.extend(core.on_delivered(a.tag))
                queue.extend(core.on_telemetry(telemetry(), now))
            elif isinstance(a, PublishState):
                s = a.state
                if s.last_node_sequence_id is not None:
                    seen.reached.setdefault(s.last_node_sequence_id // 2, now)
                for st in s.action_states:
                    if st.status is ActionStatus.FINISHED:
                        seen.done.setdefault(int(st.action_id[1:].split(".")[0]), now)

    apply(core.on_link_up())
    apply(core.on_telemetry(telemetry(), now))
    apply(core.on_order_payload(encode(sign(order, key)), now))
    last_node = len(order.nodes) - 1
    while now - t0 < 16 * 3600:
        vehicle.step(dt)
        now += dt
        apply(core.on_telemetry(telemetry(), now))  # a VCU reports at least every dt
        if last_node in seen.reached and vehicle.state is wire.DriveState.HOLDING:
            break
    return seen, vehicle


def test_fast_van_matches_bridge_and_stepped_vehicle_stop_by_stop(
    plan: Plan, scenario: Scenario
) -> None:
    spec = scenario.van
    t0 = local_to_epoch(plan.day, plan.timezone)(scenario.run.start_s)
    checked = 0
    for route in plan.routes:
        if not route.trips or len(list(route.stops())) < 3:
            continue
        depot = (
            scenario.site.warehouse
            if route.depot == scenario.site.warehouse.id
            else scenario.site.station(route.depot)
        )
        order = _order(plan, route.van_id, spec, t0)
        fast, van = _run_fast(order, spec, depot.lon, depot.lat, t0)
        dt = 0.5
        slow, vehicle = _run_stepped(order, spec, depot.lon, depot.lat, t0, dt)
        with_actions = {i for i, n in enumerate(order.nodes) if n.actions}
        assert set(fast.reached) == set(slow.reached) == set(range(len(order.nodes)))
        assert with_actions <= set(fast.done) and set(slow.done) == with_actions
        for i in range(len(order.nodes)):
            tol = 1.0 + 2 * dt + 0.002 * (slow.reached[i] - t0)
            assert fast.reached[i] == pytest.approx(slow.reached[i], abs=tol), (
                f"{route.van_id} node {i} reached"
            )
            if i in with_actions:
                assert fast.done[i] == pytest.approx(slow.done[i], abs=tol), (
                    f"{route.van_id} node {i} done"
                )
        for i, node in enumerate(order.nodes):
            # a stop's work never starts before its planned departure minus the work's time
            if i in with_actions and node.planned_departure is not None:
                planned = parse_timestamp(node.planned_departure)
                assert fast.done[i] >= planned - 1e-6, f"{route.van_id} node {i} done early"
                assert slow.done[i] >= planned - 1e-6, f"{route.van_id} node {i} done early"
        assert van.odometer_m == pytest.approx(vehicle.odometer_m, rel=1e-3, abs=1.0)
        assert van.energy_kwh == pytest.approx(vehicle.energy_kwh, rel=1e-3)
        assert van.parcels_on_board == []  # everything loaded was handed over
        checked += 1
    assert checked >= 2


def test_fast_van_order_rules_follow_the_protocol(plan: Plan, scenario: Scenario) -> None:
    spec = scenario.van
    t0 = local_to_epoch(plan.day, plan.timezone)(scenario.run.start_s)
    route = next(r for r in plan.routes if r.trips)
    path = route_path(
        route, local_to_epoch(plan.day, plan.timezone), top_speed_mps=spec.top_speed_mps
    )
    loop, seen = Loop(), Seen()
    wh = scenario.site.warehouse
    van = FastVan(
        route.van_id,
        spec,
        lon=wh.lon,
        lat=wh.lat,
        soc_pct=100.0,
        scheduler=loop,
        observer=seen,
        publish=seen.states.append,
    )
    base = make_order(make_header("ctl", 1, t0), route.van_id, "o1", 0, released(path, 2))
    van.receive_order(base, t0)
    loop.run()
    # it stops at the end of the released base and holds there
    assert van.last_node_seq == 2 and van.move is None
    assert seen.states[-1].last_node_sequence_id == 2
    # a stale update is refused and reported in state; the van does not move
    van.receive_order(base.model_copy(update={"order_update_id": 0, "nodes": base.nodes}), t0 + 1)
    stale = make_order(make_header("ctl", 2, t0), route.van_id, "o1", 0, released(path, 3))
    van.receive_order(stale, t0 + 2)
    assert any("conflicting_update" in e.description for e in seen.states[-1].errors)
    # an update extends the base; a pause stops it mid-way and a resume carries on
    update = make_order(
        make_header("ctl", 3, t0), route.van_id, "o1", 1, released(path, len(path.nodes))
    )
    t = max(seen.done.values())
    van.receive_order(update, t)
    assert van.move is not None
    mid = t + van.move.leg.duration_s / 2
    loop.at(
        mid,
        lambda: van.receive_instant(
            InstantActions(
                header=make_header("ctl", 4, mid),
                van_id=route.van_id,
                actions=(InstantAction(action_id="I1", action_type=InstantActionType.PAUSE),),
            ),
            mid,
        ),
    )
    loop.at(
        mid + 600,
        lambda: van.receive_instant(
            InstantActions(
                header=make_header("ctl", 5, mid + 600),
                van_id=route.van_id,
                actions=(InstantAction(action_id="I2", action_type=InstantActionType.RESUME),),
            ),
            mid + 600,
        ),
    )
    loop.run()
    assert van.last_node_seq == path.nodes[-1].sequence_id
    assert van.parcels_on_board == []
    odo_plain = _run_fast(
        update.model_copy(update={"order_update_id": 0}), spec, wh.lon, wh.lat, t0
    )[1].odometer_m
    assert van.odometer_m == pytest.approx(
        odo_plain, rel=1e-6, abs=0.5
    )  # the pause adds no distance


def test_breakdown_stops_the_van_where_it_is_and_reports_fatal(
    plan: Plan, scenario: Scenario
) -> None:
    spec = scenario.van
    t0 = local_to_epoch(plan.day, plan.timezone)(scenario.run.start_s)
    route = next(r for r in plan.routes if r.trips)
    order = _order(plan, route.van_id, spec, t0)
    loop, seen = Loop(), Seen()
    wh = scenario.site.warehouse
    van = FastVan(
        route.van_id,
        spec,
        lon=wh.lon,
        lat=wh.lat,
        soc_pct=100.0,
        scheduler=loop,
        observer=seen,
        publish=seen.states.append,
    )
    # the van waits at its depot until node 0's planned departure, then drives
    assert order.nodes[0].planned_departure is not None
    leave = parse_timestamp(order.nodes[0].planned_departure)
    van.receive_order(order, t0)
    assert van.move is None or leave <= t0
    while van.move is None and loop.heap:
        _, n, action = heapq.heappop(loop.heap)
        if n not in loop.dead:
            action()
    # break down half way along the first drive
    first = van.move
    assert first is not None and first.t0_s == pytest.approx(leave)
    when = leave + first.leg.duration_s / 2
    loop.at(when, lambda: van.break_down(when))
    loop.run()
    assert van.fatal and van.move is None
    assert 0 < van.odometer_m < first.leg.dist_m
    last = seen.states[-1]
    assert any(e.level.value == "fatal" and e.error_type == "vehicle_fault" for e in last.errors)
    assert last.position is not None and (last.position.lon, last.position.lat) != (wh.lon, wh.lat)


def test_waypoints_cut_incrementally_equal_the_bridges(plan: Plan, scenario: Scenario) -> None:
    from firmware_bridge.bridge import base_waypoints

    spec = scenario.van
    t0 = local_to_epoch(plan.day, plan.timezone)(scenario.run.start_s)
    for route in plan.routes:
        if not route.trips:
            continue
        path = route_path(
            route, local_to_epoch(plan.day, plan.timezone), top_speed_mps=spec.top_speed_mps
        )
        loop, seen = Loop(), Seen()
        wh = scenario.site.warehouse
        van = FastVan(
            route.van_id,
            spec,
            lon=wh.lon,
            lat=wh.lat,
            soc_pct=100.0,
            scheduler=loop,
            observer=seen,
            publish=seen.states.append,
        )
        for update, count in enumerate(range(1, len(path.nodes) + 1, 2)):
            order = make_order(
                make_header("ctl", update + 1, t0),
                route.van_id,
                "o1",
                update,
                released(path, count),
            )
            van.receive_order(order, t0)
            assert van.waypoints == base_waypoints(order)


def test_fast_van_charges_like_the_bridge_and_the_stepped_vehicle(
    plan: Plan, scenario: Scenario
) -> None:
    spec = scenario.van
    t0 = local_to_epoch(plan.day, plan.timezone)(scenario.run.start_s)
    route = next(r for r in plan.routes if r.trips and len(list(r.stops())) >= 3)
    depot = (
        scenario.site.warehouse
        if route.depot == scenario.site.warehouse.id
        else scenario.site.station(route.depot)
    )
    order = _order(plan, route.van_id, spec, t0)
    # a charge to 90 % at the first stop after the depot, starting the day at 60 %
    k = 1
    charge = NodeAction(
        action_id="c1", action_type=NodeActionType.CHARGE, duration_s=60.0, target_soc_pct=90.0
    )
    nodes = list(order.nodes)
    nodes[k] = nodes[k].model_copy(update={"actions": (*nodes[k].actions, charge)})
    order = order.model_copy(update={"nodes": tuple(nodes)})
    fast, van = _run_fast(order, spec, depot.lon, depot.lat, t0, soc_pct=60.0)
    dt = 0.5
    slow, vehicle = _run_stepped(order, spec, depot.lon, depot.lat, t0, dt, soc_pct=60.0)
    # the charge (30 % of the battery at the charging power) holds the van at the stop
    charge_s = 0.3 * spec.battery_kwh / spec.charging_power_kw * 3600
    assert fast.done[k] - fast.reached[k] >= charge_s * 0.99
    for i in range(len(order.nodes)):
        tol = 2.0 + 2 * dt + 0.002 * (slow.reached[i] - t0)
        assert fast.reached[i] == pytest.approx(slow.reached[i], abs=tol), f"node {i}"
    assert van.energy_kwh == pytest.approx(vehicle.energy_kwh, rel=1e-3)
    # charged to 90 % at the stop, then drew only what it drove after it
    drawn = van.odometer_m / 1000 * spec.consumption_kwh_per_km
    assert 0.9 * spec.battery_kwh - drawn - 1e-6 <= van.energy_kwh < 0.9 * spec.battery_kwh
    assert any(s.battery.charging for s in fast.states)


def test_a_new_orders_charge_at_the_node_the_van_stands_at_is_charged_before_it_leaves(
    plan: Plan, scenario: Scenario
) -> None:
    """A re-plan's order for a van at its depot starts there with a ``charge`` action: the van
    charges while it waits for the planned departure, not only at stops it drives to."""
    spec = scenario.van
    t0 = local_to_epoch(plan.day, plan.timezone)(scenario.run.start_s)
    route = next(r for r in plan.routes if r.trips and len(list(r.stops())) >= 3)
    depot = (
        scenario.site.warehouse
        if route.depot == scenario.site.warehouse.id
        else scenario.site.station(route.depot)
    )
    order = _order(plan, route.van_id, spec, t0)
    charge = NodeAction(
        action_id="c0", action_type=NodeActionType.CHARGE, duration_s=0.0, target_soc_pct=90.0
    )
    nodes = list(order.nodes)
    nodes[0] = nodes[0].model_copy(update={"actions": (*nodes[0].actions, charge)})
    order = order.model_copy(update={"nodes": tuple(nodes)})
    fast, van = _run_fast(order, spec, depot.lon, depot.lat, t0, soc_pct=40.0)
    # 50 % of the battery at the charging power before the van leaves its depot
    charge_s = 0.5 * spec.battery_kwh / spec.charging_power_kw * 3600
    departure = order.nodes[0].planned_departure
    planned = parse_timestamp(departure) if departure else t0
    assert fast.done[0] >= max(planned, t0 + charge_s * 0.99)
    assert fast.reached[1] > fast.done[0]
    drawn = van.odometer_m / 1000 * spec.consumption_kwh_per_km
    assert van.energy_kwh == pytest.approx(0.9 * spec.battery_kwh - drawn, rel=1e-6)
    assert any(s.battery.charging for s in fast.states)


def test_the_bridge_and_the_fast_van_share_the_first_node_charge_rule(
    plan: Plan, scenario: Scenario
) -> None:
    """One order book: a van standing 60 m from its new order's first node (a depot's own
    position against the point the plan uses for it) charges there before it leaves, in the
    full stack's bridge and in the fast van alike (they once used 30 m and 100 m)."""
    spec = scenario.van
    t0 = local_to_epoch(plan.day, plan.timezone)(scenario.run.start_s)
    route = next(r for r in plan.routes if r.trips and len(list(r.stops())) >= 3)
    order = _order(plan, route.van_id, spec, t0)
    charge = NodeAction(
        action_id="c0", action_type=NodeActionType.CHARGE, duration_s=0.0, target_soc_pct=90.0
    )
    nodes = list(order.nodes)
    nodes[0] = nodes[0].model_copy(update={"actions": (*nodes[0].actions, charge)})
    order = order.model_copy(update={"nodes": tuple(nodes)})
    lon, lat = order.nodes[0].lon, order.nodes[0].lat + 60.0 / (111_195.0)
    fast, van = _run_fast(order, spec, lon, lat, t0, soc_pct=40.0)
    slow, vehicle = _run_stepped(order, spec, lon, lat, t0, 0.5, soc_pct=40.0)
    charge_s = 0.5 * spec.battery_kwh / spec.charging_power_kw * 3600
    for name, seen in (("fast", fast), ("bridge", slow)):
        assert seen.done[0] >= t0 + charge_s * 0.99, name  # charged before it left the depot
    assert van.energy_kwh == pytest.approx(vehicle.energy_kwh, rel=2e-3)
