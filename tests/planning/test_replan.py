"""replan: from the fleet as it is, parcels on board stay with their van, broken vans get
nothing, and the new plan passes the verifier from that starting state."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from fleet.errors import InputError
from fleet.model import Leg, Parcel, Plan, Site, StopKind, VanSpec
from fleet.planning import VanNow, replan, replan_with_state, verify_plan
from fleet.planning.borrow import Sharing
from fleet.planning.engine import RESCUE_WAIT_S
from fleet.planning.replan import RECOVERY_S
from fleet.roads import RoadNetwork
from tests.planning.conftest import ITERATIONS


@dataclass
class Midday:
    vans: list[VanNow]
    parcels: list[Parcel]
    location: dict[str, str]
    at_station: dict[str, str] = field(default_factory=dict)


def midday(plan: Plan, parcels: list[Parcel], now_s: float, net: RoadNetwork) -> Midday:
    """Where everything is at ``now_s`` if the vans kept to ``plan`` exactly."""
    delivered: set[str] = set()
    at_station: dict[str, str] = {}
    vans: list[VanNow] = []
    for r in plan.routes:
        reached = [s for s in r.stops() if s.arrival_s <= now_s]
        board: list[str] = []
        for s in reached:
            board += s.parcels_loaded
            for pid in s.parcels_delivered:
                board.remove(pid)
                if s.kind is StopKind.DOOR:
                    delivered.add(pid)
                elif s.kind is StopKind.STATION:
                    at_station[pid] = s.ref
        for pid in board:
            at_station.pop(pid, None)
        last = reached[-1] if reached else r.trips[0].stops[0]
        vans.append(
            VanNow(
                r.van_id,
                last.lon,
                last.lat,
                last.soc_pct,
                board,
                True,
                max(now_s, last.departure_s) if reached else now_s,
            )
        )
    left = [p for p in parcels if p.id not in delivered]
    carried = {pid for v in vans for pid in v.parcels_on_board}
    location = {
        p.id: "on_board" if p.id in carried else "station" if p.id in at_station else "warehouse"
        for p in left
    }
    return Midday(vans, left, location, {k: v for k, v in at_station.items() if k in location})


NOON = 12 * 3600.0


@pytest.fixture(scope="module")
def state(planned40: Plan, day40: list[Parcel], net: RoadNetwork) -> Midday:
    s = midday(planned40, day40, NOON, net)
    assert any(v.parcels_on_board for v in s.vans), "the scenario needs a van on the road"
    return s


def run(state: Midday, site: Site, van: VanSpec, net: RoadNetwork, **kw: object) -> Plan:
    result, start = replan_with_state(
        state.parcels,
        state.vans,
        site,
        van,
        net,
        now_s=NOON,
        parcel_location=state.location,
        at_station=state.at_station,
        time_limit_s=30,
        max_iterations=ITERATIONS,
        workers=1,
        **kw,  # type: ignore[arg-type]
    )
    assert start.start_soc_pct == {v.van_id: v.soc_pct for v in state.vans} | {
        vid: 100.0 for vid in start.start_soc_pct if vid not in {v.van_id for v in state.vans}
    }
    for pid, where in state.location.items():
        if where == "station":
            assert start.at_station[pid] == state.at_station[pid]
    assert (
        verify_plan(
            result,
            state.parcels,
            site,
            van,
            net,
            at_station=start.at_station,
            start_soc_pct=start.start_soc_pct,
            at_station_from_s=start.at_station_from_s,
        )
        == []
    )
    return result


def test_parcels_on_board_stay_with_their_van(
    state: Midday, site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    result = run(state, site, van, net)
    for v in state.vans:
        if not v.parcels_on_board:
            continue
        route = result.route(v.van_id)
        first = route.trips[0].stops[0]
        assert first.kind is StopKind.START
        assert sorted(first.parcels_loaded) == sorted(v.parcels_on_board)
        handed = {pid for s in route.trips[0].stops for pid in s.parcels_delivered}
        assert handed == set(v.parcels_on_board)
    served = {pid for _, pid in result.delivered()}
    listed = {u.parcel_id for u in result.unserved}
    assert served | listed == {p.id for p in state.parcels} and not served & listed


def test_a_broken_van_gets_nothing_and_its_parcels_go_to_others(
    state: Midday, site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    busiest = max(
        (v for v in state.vans if v.van_id.startswith("ST-")),
        key=lambda v: len(v.parcels_on_board),
    )
    assert busiest.parcels_on_board
    broken = VanNow(
        busiest.van_id,
        busiest.lon,
        busiest.lat,
        busiest.soc_pct,
        busiest.parcels_on_board,
        False,
        NOON,
    )
    vans = [broken if v.van_id == busiest.van_id else v for v in state.vans]
    midday = Midday(vans, state.parcels, state.location, state.at_station)
    home = busiest.van_id.rsplit("-", 1)[0]
    # per-depot: the station's own vans take them, once they are back at the station
    result = run(midday, site, van, net, sharing=Sharing.DEPOT)
    assert busiest.van_id not in {r.van_id for r in result.routes}
    rescued = {pid for vid, pid in result.delivered() if pid in busiest.parcels_on_board}
    assert rescued, "the recovered parcels are delivered by other vans"
    for r in result.routes:
        for s in r.stops():
            if set(s.parcels_delivered) & rescued and s.kind is StopKind.DOOR:
                assert r.depot == home and r.leg is Leg.LAST_MILE
    # whole fleet: one van takes them all in one load at the station, soon after they are back
    result = run(midday, site, van, net)
    loads = {
        pid: (r.van_id, s.ref, s.departure_s - van.depot_load_s)
        for r in result.routes
        for s in r.stops()
        for pid in s.parcels_loaded
        if pid in busiest.parcels_on_board and s.kind is not StopKind.START
    }
    assert set(loads) == set(busiest.parcels_on_board)
    assert len({v for v, _, _ in loads.values()}) == 1
    for _, ref, start_s in loads.values():
        assert ref == home
        assert NOON + RECOVERY_S <= start_s <= NOON + RECOVERY_S + RESCUE_WAIT_S


def test_a_van_low_on_charge_never_goes_below_its_reserve(
    state: Midday, site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    carrier = next(v for v in state.vans if v.parcels_on_board)
    low = VanNow(
        carrier.van_id, carrier.lon, carrier.lat, 12.0, carrier.parcels_on_board, True, NOON
    )
    vans = [low if v.van_id == carrier.van_id else v for v in state.vans]
    result = run(Midday(vans, state.parcels, state.location, state.at_station), site, van, net)
    route = result.route(carrier.van_id)
    assert route.trips[0].stops[0].soc_pct == pytest.approx(12.0)
    assert min(s.soc_pct for s in route.stops()) >= van.range_reserve_pct - 1e-9


def test_inconsistent_states_are_refused_by_name(
    state: Midday, site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    p = state.parcels[0]
    with pytest.raises(InputError, match="'XX-01'"):
        replan(
            [p], [VanNow("XX-01", -51.2, -30.03, 80, [], True, NOON)], site, van, net, now_s=NOON
        )
    twice = [
        VanNow("ST-CENTRO-01", -51.2, -30.03, 80, [p.id], True, NOON),
        VanNow("ST-CENTRO-02", -51.2, -30.03, 80, [p.id], True, NOON),
    ]
    with pytest.raises(InputError, match="on board both"):
        replan([p], twice, site, van, net, now_s=NOON)
    with pytest.raises(InputError, match="no van carries it"):
        replan([p], [], site, van, net, now_s=NOON, parcel_location={p.id: "on_board"})
    with pytest.raises(InputError, match="not among the parcels"):
        replan([], twice[:1], site, van, net, now_s=NOON)


def test_a_van_a_closure_cuts_off_keeps_its_parcels_and_the_rest_is_planned(
    state: Midday, site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    carrier = next(v for v in state.vans if v.van_id.startswith("ST-") and v.parcels_on_board)
    node = net.snap(carrier.lon, carrier.lat).node
    closed = net.with_closures(edges=[(node, m) for m in net.graph.successors(node)])
    extra = replace(state.parcels[0], id="EXTRA")  # a new order, at the warehouse
    midday = Midday(state.vans, [*state.parcels, extra], {**state.location, "EXTRA": "warehouse"})
    result = run(midday, site, van, closed)  # no error: the re-plan goes on without it
    assert carrier.van_id not in {r.van_id for r in result.routes}
    why = {u.parcel_id: u for u in result.unserved}
    for pid in carrier.parcels_on_board:
        assert why[pid].reason.value == "unreachable"
        assert "cuts off" in why[pid].detail
    assert "EXTRA" in {pid for _, pid in result.delivered()}, "the other vans still work"


def _broken_busiest(state: Midday) -> tuple[VanNow, Midday]:
    busiest = max(
        (v for v in state.vans if v.van_id.startswith("ST-")),
        key=lambda v: len(v.parcels_on_board),
    )
    broken = VanNow(
        busiest.van_id,
        busiest.lon,
        busiest.lat,
        busiest.soc_pct,
        busiest.parcels_on_board,
        False,
        NOON,
    )
    vans = [broken if v.van_id == busiest.van_id else v for v in state.vans]
    return broken, Midday(vans, state.parcels, state.location, state.at_station)


def test_a_rescue_trip_takes_the_load_over_where_the_broken_van_stands(
    state: Midday, site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    broken, midday = _broken_busiest(state)
    wanted = set(broken.parcels_on_board)
    result, start = replan_with_state(
        midday.parcels,
        midday.vans,
        site,
        van,
        net,
        now_s=NOON,
        parcel_location=midday.location,
        at_station=midday.at_station,
        time_limit_s=30,
        max_iterations=ITERATIONS,
        workers=1,
        transfer_from=[broken.van_id],
    )
    transfers = [(r, s) for r in result.routes for s in r.stops() if s.kind is StopKind.TRANSFER]
    assert len(transfers) == 1, "one rescue trip meets the broken van"
    rescuer, meet = transfers[0]
    assert meet.ref == broken.van_id and meet.seq == 1
    assert meet.node == net.snap(broken.lon, broken.lat).node
    assert set(meet.parcels_loaded) <= wanted and meet.parcels_loaded
    assert meet.dwell_s >= van.transfer_time_s(len(meet.parcels_loaded)) - 1e-6
    assert meet.departure_s <= NOON + RECOVERY_S + 1e-6, "before the load leaves for the depot"
    delivered_by = dict((pid, vid) for vid, pid in result.delivered())
    assert all(delivered_by[p] == rescuer.van_id for p in meet.parcels_loaded)
    # the verifier checks it from the starting state the plan was made from...
    args = dict(
        at_station=start.at_station,
        start_soc_pct=start.start_soc_pct,
        at_station_from_s=start.at_station_from_s,
        transfer_from=start.transfer_from,
        transfer_until_s=start.transfer_until_s,
        transfer_node=start.transfer_node,
    )
    assert verify_plan(result, midday.parcels, site, van, net, **args) == []  # type: ignore[arg-type]
    # ... and refuses a transfer from a van that does not carry the parcel, or too short
    other = {**args, "transfer_from": {}}
    problems = verify_plan(result, midday.parcels, site, van, net, **other)  # type: ignore[arg-type]
    assert any("is not aboard" in p for p in problems)
    short = replace(
        result,
        routes=tuple(
            replace(
                r,
                trips=tuple(
                    replace(
                        t,
                        stops=tuple(
                            replace(s, departure_s=s.arrival_s + 1.0)
                            if s.kind is StopKind.TRANSFER
                            else s
                            for s in t.stops
                        ),
                    )
                    for t in r.trips
                ),
            )
            for r in result.routes
        ),
    )
    problems = verify_plan(short, midday.parcels, site, van, net, **args)  # type: ignore[arg-type]
    assert any("the transfer takes" in p for p in problems)
