"""Fleet sizing: the fewest vans per depot that serve every parcel, and where a day is short."""

from __future__ import annotations

import pytest

from fleet.model import Parcel, ParcelId, Site, Unserved, UnservedReason, VanSpec
from fleet.model.ids import DepotId
from fleet.planning.sizing import FleetSizing, shortage_depot, size_fleet
from fleet.roads import RoadNetwork
from tests.planning.conftest import BACKSTOP_S, PlanFn

ITERATIONS = 200  # a small day: each search converges well before this


def _size(
    parcels: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork, **kw: object
) -> FleetSizing:
    return size_fleet(
        parcels,
        site,
        van,
        net,
        time_limit_s=BACKSTOP_S,
        max_iterations=ITERATIONS,
        workers=1,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def day20(day40: list[Parcel]) -> list[Parcel]:
    return day40[:20]


@pytest.fixture(scope="module")
def sized20(day20: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork) -> FleetSizing:
    return _size(day20, site, van, net)


def test_a_small_day_needs_fewer_vans_than_the_site_has_and_they_serve_every_parcel(
    sized20: FleetSizing, plan: PlanFn, day20: list[Parcel]
) -> None:
    needed = sized20.needed()
    assert all(not d.at_least and d.short_now == 0 and d.short_sized == 0 for d in sized20.depots)
    assert sum(needed.values()) < sum(d.available for d in sized20.depots)
    assert all(d.needed <= d.offered for d in sized20.depots)
    assert sized20.sized.summary.served == sized20.current.summary.served
    # the answer holds: the day planned with exactly those vans leaves nobody for want of one
    again = plan(day20, vans={str(d): n for d, n in needed.items()}, max_iterations=ITERATIONS)
    assert not [u for u in again.unserved if u.reason is UnservedReason.NOT_ENOUGH_VANS]


def test_a_station_without_vans_is_short_now_and_sized_to_serve_its_parcels(
    sized20: FleetSizing, day20: list[Parcel], site: Site, van: VanSpec, net: RoadNetwork
) -> None:
    needed = sized20.needed()
    busiest = max((st.id for st in site.stations), key=lambda d: needed[d])
    assert needed[busiest] >= 1
    result = _size(day20, site, van, net, vans={busiest: 0})
    row = {d.depot: d for d in result.depots}[busiest]
    assert row.available == 0 and row.short_now > 0
    assert row.needed >= 1 and row.short_sized == 0


def test_a_shortage_is_put_down_to_the_depot_the_planner_names(site: Site) -> None:
    st = site.stations[0].id
    other = site.stations[1].id

    def short(detail: str) -> Unserved:
        return Unserved(ParcelId("P1"), UnservedReason.NOT_ENOUGH_VANS, detail)

    served = {ParcelId("P1"): DepotId(other)}
    line_haul = short(f"the line haul could not bring it to {st} in time (4 warehouse vans)")
    assert shortage_depot(line_haul, site, served) == site.warehouse.id
    last_mile = short(f"no van of station {st} had room or time for it (4 vans)")
    assert shortage_depot(last_mile, site, served) == st
    assert shortage_depot(short("no van had room or time for it"), site, served) == other
    assert shortage_depot(short("no van had room or time for it"), site, {}) is None
