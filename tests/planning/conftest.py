"""Planning fixtures: the small Porto Alegre site, its road network (cached once per session
in a private directory) and small days of parcels made from its real streets."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fleet.model import Parcel, Plan, Site, VanSpec, load_site, load_van_spec
from fleet.planning import plan_day, verify_plan
from fleet.planning.sample import sample_orders
from fleet.roads import RoadNetwork, load_network

REPO = Path(__file__).resolve().parents[2]
SITES = REPO / "configs" / "sites"

# Test searches are capped by iterations, not time, so that results do not depend on the
# machine's load; the time limit is only a backstop.
ITERATIONS = 400
BACKSTOP_S = 30.0


@pytest.fixture(scope="session")
def plan_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("plan-road-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEET_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="session")
def van() -> VanSpec:
    return load_van_spec(REPO / "configs" / "van.toml")


@pytest.fixture(scope="session")
def site() -> Site:
    return load_site(SITES / "poa.toml")


@pytest.fixture(scope="session")
def net(plan_cache: Path, site: Site, van: VanSpec) -> RoadNetwork:
    return load_network(site, van)


@pytest.fixture(scope="session")
def day40(net: RoadNetwork) -> list[Parcel]:
    """40 parcels on Porto Alegre's residential streets (a third with windows)."""
    return sample_orders(net, 40, seed=7)


PlanFn = Callable[..., Plan]


@pytest.fixture(scope="session")
def plan(site: Site, van: VanSpec, net: RoadNetwork) -> PlanFn:
    """``plan(parcels, **kw)``: plan_day with test settings, then verify again here."""

    def run(parcels: Sequence[Parcel], *, spec: VanSpec | None = None, **kw: Any) -> Plan:
        v = spec or van
        kw.setdefault("time_limit_s", BACKSTOP_S)
        kw.setdefault("max_iterations", ITERATIONS)
        kw.setdefault("workers", 1)
        result = plan_day(parcels, site, v, net, **kw)
        assert verify_plan(result, parcels, site, v, net) == []
        return result

    return run


@pytest.fixture(scope="session")
def planned40(plan: PlanFn, day40: list[Parcel]) -> Plan:
    return plan(day40, seed=1)


def parcel(pid: str, lon: float, lat: float, **kw: Any) -> Parcel:
    base = Parcel(pid, lon, lat, 2.0, 0.01)  # type: ignore[arg-type]
    return replace(base, **kw)
