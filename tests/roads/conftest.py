"""Road-network fixtures: the shipped sites, loaded once per session into a private cache.

The cache directory is a session tmp dir (``FLEET_CACHE_DIR``), so tests never touch
``~/.cache`` and build each graph at most once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.model import Site, VanSpec, load_site, load_van_spec
from fleet.roads import RoadNetwork, load_network

REPO = Path(__file__).resolve().parents[2]
SITES = REPO / "configs" / "sites"

# Rua dos Andradas, Centro Histórico, Porto Alegre: one-way (oneway=yes) eastwards; the
# link between these two intersections is 159.5 m long and has no edge back.
ANDRADAS_FROM = 443403724
ANDRADAS_TO = 443403694
ANDRADAS_LINK_M = 159.5

# In the Guaíba, inside the Porto Alegre operating area, 1.3 km from the nearest road.
IN_THE_LAKE = (-51.2530, -30.0662)
# South of the Porto Alegre operating area (the extract has roads there; the van may not go).
SOUTH_OF_AREA = (-51.2000, -30.1050)


@pytest.fixture(scope="session")
def road_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("road-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEET_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="session")
def van() -> VanSpec:
    return load_van_spec(REPO / "configs" / "van.toml")


@pytest.fixture(scope="session")
def poa_site() -> Site:
    return load_site(SITES / "poa.toml")


@pytest.fixture(scope="session")
def poa(road_cache: Path, poa_site: Site, van: VanSpec) -> RoadNetwork:
    return load_network(poa_site, van)


@pytest.fixture(scope="session")
def porto(road_cache: Path, van: VanSpec) -> RoadNetwork:
    return load_network(load_site(SITES / "porto.toml"), van)
