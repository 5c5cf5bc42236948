"""Loading a site's network: bad inputs are refused with the file named; progress is reported."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.model import Site, VanSpec
from fleet.roads import load_network


def test_unknown_excluded_road_class_names_the_site_file(
    road_cache: Path, poa_site: Site, van: VanSpec
) -> None:
    site = dataclasses.replace(poa_site, excluded_highways=("motorway", "motorwya"))
    with pytest.raises(ConfigError, match=r"poa\.toml: \[roads\] exclude_highways: .*'motorwya'"):
        load_network(site, van)


def test_area_with_no_roads_in_it_is_refused(
    road_cache: Path, poa_site: Site, van: VanSpec, tmp_path: Path
) -> None:
    area = tmp_path / "elsewhere.geojson"
    ring = [[-8.62, 41.14], [-8.60, 41.14], [-8.60, 41.16], [-8.62, 41.14]]  # Porto, not POA
    area.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    site = dataclasses.replace(poa_site, operating_area_file=area)
    with pytest.raises(ConfigError, match=r"no drivable road lies inside the operating area"):
        load_network(site, van)


def test_unreadable_extract_is_refused_by_name(
    road_cache: Path, poa_site: Site, van: VanSpec, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.osm.pbf"
    bad.write_bytes(b"\x00\x00\x00\x0dthis is not a protocol buffer at all" * 10)
    site = dataclasses.replace(poa_site, osm_file=bad)
    with pytest.raises(ConfigError, match=r"broken\.osm\.pbf: cannot read the OpenStreetMap"):
        load_network(site, van, use_cache=False)


def test_progress_runs_from_zero_to_one(road_cache: Path, poa_site: Site, van: VanSpec) -> None:
    seen: list[tuple[str, float]] = []
    load_network(poa_site, van, use_cache=False, progress=lambda s, f: seen.append((s, f)))
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("OSM" in stage for stage, _ in seen)
