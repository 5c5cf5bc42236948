"""Fixtures for the simulator tests: a small site of our own, written to a tmp dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POA_PBF = REPO / "configs" / "sites" / "data" / "poa_osm.pbf"

SITE_TOML = """\
[site]
name = "Test city"
osm_file = "{pbf}"
operating_area_file = "area.geojson"
timezone = "America/Sao_Paulo"
snap_max_m = 300.0

[shift]
start = "07:00"
end = "19:00"

[warehouse]
id = "WH-T"
name = "Warehouse"
lon = -51.20
lat = -30.05
vans = 2

[[stations]]
id = "ST-A"
name = "Station A"
lon = -51.22
lat = -30.03
vans = 2

[[stations]]
id = "ST-B"
name = "Station B"
lon = -51.18
lat = -30.06
vans = 1
"""

SCENARIO_TOML = """\
[scenario]
name = "tiny"
description = "a test day"
site = "site.toml"
van = "{van}"
day = "2026-11-24"
seed = 7

[run]
start = "07:00"
end = "19:00"

[fleet]
warehouse_vans = 1
station_vans = 2

[demand]
parcels = 40
weight_kg = {{ kind = "lognormal", median = 3.0, sigma = 0.8, min = 0.2, max = 30.0 }}
volume_m3 = {{ kind = "uniform", min = 0.01, max = 0.1 }}
window_share = 0.3
window_slots = ["09:00-12:00", "13:00-17:00"]
late_share = 0.2
late_from = "09:00"
late_until = "13:00"
urgent_share = 0.5

[[events]]
at = "10:00"
kind = "breakdown"
van = "ST-A-01"

[[events]]
at = "09:30"
kind = "road_closure"
center = [-51.21, -30.04]
radius_m = 300.0
until = "12:00"

[[events]]
at = "11:00"
kind = "link_loss"
van = "busiest"
duration_s = 600

[[events]]
at = "11:30"
kind = "serial_corruption"
van = "ST-B-01"
duration_s = 900
frame_error_share = 0.05

[[events]]
at = "12:00"
kind = "controller_restart"
down_s = 20
"""


@pytest.fixture()
def tiny_site(tmp_path: Path) -> Path:
    ring = [
        [-51.26, -30.11],
        [-51.14, -30.11],
        [-51.14, -29.99],
        [-51.26, -29.99],
        [-51.26, -30.11],
    ]
    area = {"type": "Polygon", "coordinates": [ring]}
    (tmp_path / "area.geojson").write_text(json.dumps(area))
    site = tmp_path / "site.toml"
    site.write_text(SITE_TOML.format(pbf=POA_PBF))
    return site


@pytest.fixture()
def tiny_scenario(tmp_path: Path, tiny_site: Path, van_file: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SCENARIO_TOML.format(van=van_file))
    return path
