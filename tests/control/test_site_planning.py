"""The controller with the real planner on the small Porto Alegre site: dispatch a planned
day through the independent verifier, break a van mid-route, re-plan with
``fleet.planning.replan``, and drive to the end. No parcel is lost or delivered twice."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.control.core import CheckedPlan
from fleet.control.orders import local_to_epoch
from fleet.control.site_planning import SitePlanning, site_roster
from fleet.errors import VerificationError
from fleet.model import Leg, Parcel, ParcelId, Plan, Site, VanSpec, load_site, load_van_spec
from fleet.planning import plan_day, write_orders
from fleet.planning.plan_io import plan_to_json
from fleet.planning.sample import sample_orders
from fleet.protocol.control_api import AddParcelsBody, DispatchBody
from fleet.roads import RoadNetwork, load_network
from fleet.store import TERMINAL_STATUSES, ParcelStatus
from tests.control.harness import Harness

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def poa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, VanSpec, RoadNetwork]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEET_CACHE_DIR", str(tmp_path_factory.mktemp("road-cache")))
        site = load_site(REPO / "configs" / "sites" / "poa.toml")
        van = load_van_spec(REPO / "configs" / "van.toml")
        yield site, van, load_network(site, van)


@pytest.fixture(scope="module")
def day(poa: tuple[Site, VanSpec, RoadNetwork]) -> tuple[Plan, list[Parcel]]:
    site, van, net = poa
    parcels = sample_orders(net, 12, seed=3)
    plan = plan_day(parcels, site, van, net, time_limit_s=30, max_iterations=200, workers=1, seed=1)
    return plan, parcels


def _body(plan: Plan, parcels: list[Parcel], tmp_path: Path) -> DispatchBody:
    csv = tmp_path / "orders.csv"
    write_orders(parcels, csv)
    return DispatchBody(plan=plan_to_json(plan), orders_csv=csv.read_text(), orders_name=csv.name)


def _harness(poa: tuple[Site, VanSpec, RoadNetwork], plan: Plan) -> Harness:
    site, van, _ = poa
    h = Harness(roster=site_roster(site), van_spec=van)
    h.now_s = plan_start(plan, h)
    h.report()  # every van is connected and reporting (a silent one gets no new work)
    return h


def plan_start(plan: Plan, h: Harness) -> float:
    first = min(r.trips[0].stops[0].departure_s for r in plan.routes)
    return local_to_epoch(plan.day, plan.timezone)(first)


def _drive_everything(h: Harness, rounds: int = 50) -> None:
    for _ in range(rounds):
        moved = False
        for van_id, van in h.vans.items():
            if van.step():
                moved = True
                h.report(van_id)
        h.advance(60, report=True)
        if not moved:
            return


def test_a_planned_day_passes_the_verifier_and_is_dispatched(
    poa: tuple[Site, VanSpec, RoadNetwork], day: tuple[Plan, list[Parcel]], tmp_path: Path
) -> None:
    plan, parcels = day
    site, van, net = poa
    checked = SitePlanning(site, van, net).load_dispatch(_body(plan, parcels, tmp_path))
    assert checked.problems == ()
    h = _harness(poa, plan)
    h.core.dispatch(checked, h.now_s)
    h.pump()
    _drive_everything(h)
    statuses = collections.Counter(h.core.parcel(p.id).status for p in parcels)  # type: ignore[union-attr]
    assert statuses == {ParcelStatus.DELIVERED: len(parcels)}


def test_a_tampered_plan_is_refused_by_the_verifier(
    poa: tuple[Site, VanSpec, RoadNetwork], day: tuple[Plan, list[Parcel]], tmp_path: Path
) -> None:
    plan, parcels = day
    site, van, net = poa
    body = _body(plan, parcels, tmp_path)
    document = dict(body.plan)
    routes = [dict(r) for r in document["routes"]]  # type: ignore[union-attr]
    document["routes"] = routes[1:]  # drop the line haul: the stations never get the parcels
    checked = SitePlanning(site, van, net).load_dispatch(body.model_copy(update={"plan": document}))
    assert checked.problems
    h = _harness(poa, plan)
    with pytest.raises(VerificationError):
        h.core.dispatch(checked, h.now_s)
    h.pump()
    assert h.orders == []


def test_a_van_breaking_down_mid_route_is_replanned_with_the_real_planner(
    poa: tuple[Site, VanSpec, RoadNetwork], day: tuple[Plan, list[Parcel]], tmp_path: Path
) -> None:
    plan, parcels = day
    site, van, net = poa
    planning = SitePlanning(site, van, net, replan_time_limit_s=5.0)
    h = _harness(poa, plan)
    h.core.dispatch(planning.load_dispatch(_body(plan, parcels, tmp_path)), h.now_s)
    h.pump()
    line_haul = [r.van_id for r in plan.routes if r.leg is Leg.LINE_HAUL]
    for van_id in line_haul:
        while h.vans[van_id].step():
            h.report(van_id)
            h.advance(60, report=True)
    victim = max(
        (r for r in plan.routes if r.leg is Leg.LAST_MILE), key=lambda r: len(list(r.stops()))
    ).van_id
    h.drive(victim, 2)  # loaded at its station, first door done
    on_board = list(h.vans[victim].on_board)
    assert on_board
    h.vans[victim].fatal("traction battery isolation fault")
    h.report(victim)
    assert h.replans == []  # a fatal error may clear within its grace
    h.advance(h.config.fatal_grace_s, report=True)  # it did not: declared broken down
    (request,) = h.replans
    assert not {v.van_id: v for v in request.vans}[victim].in_service
    checked: CheckedPlan = planning.replan(request)
    assert all(r.van_id != victim for r in checked.plan.routes)
    h.core.replan_done(checked, h.now_s)
    h.pump()
    assert "replan_applied" in h.kinds()
    _drive_everything(h)
    final = {p.id: h.core.parcel(p.id) for p in parcels}
    assert all(rec is not None and rec.status in TERMINAL_STATUSES for rec in final.values()), {
        pid: rec.status for pid, rec in final.items() if rec
    }
    delivered = collections.Counter(e.parcel_id for e in h.events if e.kind == "parcel_delivered")
    assert all(n == 1 for n in delivered.values())
    for pid in on_board:  # the broken van's load went out on other vans (or says why not)
        rec = final[pid]
        assert rec is not None
        assert rec.status is ParcelStatus.DELIVERED or rec.detail, rec
        if rec.status is ParcelStatus.DELIVERED:
            assert rec.holder != victim


def test_an_urgent_parcel_added_mid_day_is_replanned_and_delivered(
    poa: tuple[Site, VanSpec, RoadNetwork], day: tuple[Plan, list[Parcel]], tmp_path: Path
) -> None:
    plan, parcels = day
    site, van, net = poa
    planning = SitePlanning(site, van, net, replan_time_limit_s=5.0)
    h = _harness(poa, plan)
    h.core.dispatch(planning.load_dispatch(_body(plan, parcels, tmp_path)), h.now_s)
    h.pump()
    for van_id in [r.van_id for r in plan.routes if r.leg is Leg.LINE_HAUL]:
        while h.vans[van_id].step():
            h.report(van_id)
            h.advance(60, report=True)
    urgent_csv = tmp_path / "urgent.csv"
    extra = sample_orders(net, 1, seed=99)[0]
    urgent = Parcel(ParcelId("URGENT-1"), extra.lon, extra.lat, 3.0, 0.02)
    write_orders([urgent], urgent_csv)
    body = AddParcelsBody(orders_csv=urgent_csv.read_text(), orders_name=urgent_csv.name)
    added = planning.parse_parcels(body, plan.day)
    assert [p.id for p in added] == ["URGENT-1"]
    h.core.add_parcels(added, h.now_s)
    h.pump()
    (request,) = h.replans
    assert request.cause.startswith("urgent order")
    assert request.parcel_location["URGENT-1"] == "warehouse"
    h.core.replan_done(planning.replan(request), h.now_s)
    h.pump()
    _drive_everything(h)
    final = h.core.parcel("URGENT-1")
    assert final is not None and final.status is ParcelStatus.DELIVERED, final
    assert all(h.core.parcel(p.id).status is ParcelStatus.DELIVERED for p in parcels)  # type: ignore[union-attr]
    kinds = h.kinds()
    assert kinds.count("replan_started") == 1 and "replan_applied" in kinds
