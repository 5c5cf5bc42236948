"""The prepared-graph cache: used when its inputs are unchanged, rebuilt when it is damaged or
stale, never trusted blindly."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import fleet.roads.network as network_module
from fleet.model import Site, VanSpec
from fleet.roads import RoadNetwork, load_network
from fleet.roads.cache import cache_key, file_sha256
from fleet.roads.osm import WaySet, read_drivable_ways


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("FLEET_CACHE_DIR", str(d))
    return d


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every time the OSM extract is parsed (the real parser still runs)."""
    calls: list[Path] = []

    def recording(path: Path, excluded: frozenset[str] = frozenset()) -> WaySet:
        calls.append(path)
        return read_drivable_ways(path, excluded)

    monkeypatch.setattr(network_module, "read_drivable_ways", recording)
    return calls


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "roads").glob("*.npz"))


def _same_graph(a: RoadNetwork, b: RoadNetwork) -> bool:
    pa, pb = a.prepared, b.prepared
    return all(
        np.array_equal(getattr(pa, f.name), getattr(pb, f.name))
        if isinstance(getattr(pa, f.name), np.ndarray)
        else getattr(pa, f.name) == getattr(pb, f.name)
        for f in dataclasses.fields(pa)
    )


def test_second_load_comes_from_the_cache(
    cache: Path, parses: list[Path], poa_site: Site, van: VanSpec
) -> None:
    first = load_network(poa_site, van)
    assert len(parses) == 1 and len(_entries(cache)) == 1
    stages: list[str] = []
    second = load_network(poa_site, van, progress=lambda stage, _f: stages.append(stage))
    assert len(parses) == 1, "the cache was not used"
    assert "loaded from cache" in stages
    assert _same_graph(first, second)


def test_corrupted_cache_file_is_rebuilt(
    cache: Path,
    parses: list[Path],
    poa_site: Site,
    van: VanSpec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = load_network(poa_site, van)
    (entry,) = _entries(cache)
    entry.write_bytes(entry.read_bytes()[:5000])  # truncated mid-write, say
    with caplog.at_level(logging.WARNING, logger="fleet.roads.cache"):
        again = load_network(poa_site, van)
    assert len(parses) == 2
    assert "damaged cache entry" in caplog.text
    assert _same_graph(first, again)
    load_network(poa_site, van)  # and the rebuilt entry is good again
    assert len(parses) == 2


def test_cache_with_inconsistent_arrays_is_rebuilt(
    cache: Path, parses: list[Path], poa_site: Site, van: VanSpec
) -> None:
    load_network(poa_site, van)
    (entry,) = _entries(cache)
    with np.load(entry) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["edge_link"] = arrays["edge_link"] + 10_000_000  # points at links that do not exist
    with entry.open("wb") as fh:
        np.savez(fh, **arrays)
    net = load_network(poa_site, van)
    assert len(parses) == 2
    assert int(net.prepared.edge_link.max()) < len(net.prepared.link_u)


def test_cache_entry_for_other_inputs_is_not_used(
    cache: Path, parses: list[Path], poa_site: Site, van: VanSpec
) -> None:
    load_network(poa_site, van)
    (entry,) = _entries(cache)
    # an entry copied under this key from another site's inputs must not be trusted
    with np.load(entry) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["key"] = np.asarray("0" * 64)
    with entry.open("wb") as fh:
        np.savez(fh, **arrays)
    load_network(poa_site, van)
    assert len(parses) == 2


def test_key_changes_with_the_van_speed_area_and_road_settings(
    cache: Path, parses: list[Path], poa_site: Site, van: VanSpec, tmp_path: Path
) -> None:
    load_network(poa_site, van)
    load_network(poa_site, dataclasses.replace(van, top_speed_kmh=50.0))
    load_network(poa_site, van)
    assert len(parses) == 2 and len(_entries(cache)) == 2
    osm = file_sha256(poa_site.osm_file)
    area = file_sha256(poa_site.operating_area_file)
    base = cache_key(osm, area, ("motorway", "trunk"), 60.0)
    assert cache_key(osm, area, ("trunk", "motorway", "trunk"), 60.0) == base  # same set
    assert cache_key(osm, area, ("motorway",), 60.0) != base
    assert cache_key(osm, area, ("motorway", "trunk"), 50.0) != base
    assert cache_key(osm, "0" * 64, ("motorway", "trunk"), 60.0) != base
    assert cache_key("0" * 64, area, ("motorway", "trunk"), 60.0) != base
    # the same polygon in a file with other bytes is another key: no parsing of GeoJSON
    # is trusted to decide that two areas are the same
    copy = tmp_path / "area.geojson"
    shutil.copy(poa_site.operating_area_file, copy)
    copy.write_text(copy.read_text() + "\n")
    assert file_sha256(copy) != area


def test_no_cache_reads_the_extract_and_writes_nothing(
    cache: Path, parses: list[Path], poa_site: Site, van: VanSpec
) -> None:
    load_network(poa_site, van, use_cache=False)
    load_network(poa_site, van, use_cache=False)
    assert len(parses) == 2 and _entries(cache) == []


def test_unwritable_cache_only_costs_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, poa_site: Site, van: VanSpec
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("FLEET_CACHE_DIR", str(blocker))
    net = load_network(poa_site, van)
    assert net.num_nodes > 0
