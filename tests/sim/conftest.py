"""Fixtures for the simulator tests: a small site of our own, written to a tmp dir."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.model import DepotId, ParcelId, VanId
from sim.trace import (
    BreakdownRecord,
    Delivered,
    Departure,
    Drive,
    Loaded,
    ParcelInfo,
    Replan,
    SocSample,
    Trace,
    Unloaded,
)

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


A, B = VanId("ST-1-01"), VanId("ST-1-02")
ST = DepotId("ST-1")


def _p(
    i: int, earliest: int | None = None, latest: int | None = None, urgent: bool = False
) -> ParcelInfo:
    return ParcelInfo(ParcelId(f"P{i}"), 0.0, 0.0, 10.0, 0.1, earliest, latest, 0, urgent)


@pytest.fixture()
def make_trace() -> Callable[[], Trace]:
    """A small hand-made day: two vans, five parcels, a breakdown and a re-plan."""
    return _small_trace


def _small_trace() -> Trace:
    tr = Trace(scenario="t", mode="fast", seed=1, start_s=0.0, end_s=20_000.0, warehouse="ST-1")
    tr.vans = {A: ST, B: ST}
    tr.add_parcels([_p(1, 1000, 2000), _p(2, None, 3000, urgent=True), _p(3), _p(4), _p(5)])
    for i in (1, 2, 3, 4):
        tr.loaded.append(Loaded(100.0, A, ParcelId(f"P{i}"), ST))
    tr.departures.append(Departure(A, 100.0, 40.0, 0.4, 4))
    tr.drives.append(Drive(A, 100.0, 500.0, 4000.0, 1.2, 4, ()))
    tr.delivered.append(Delivered(1500.0, A, ParcelId("P1")))  # on time
    tr.delivered.append(Delivered(3500.0, A, ParcelId("P2")))  # late by 500 s
    tr.soc.append(SocSample(A, 3500.0, 80.0))
    # A breaks down with P3, P4 aboard; they go back to the station and B takes them
    tr.breakdowns.append(BreakdownRecord(4000.0, A, 0.0, 0.0, (ParcelId("P3"), ParcelId("P4"))))
    for i in (3, 4):
        tr.unloaded.append(Unloaded(5800.0, A, ParcelId(f"P{i}"), ST, "breakdown"))
    tr.replans.append(Replan(4000.0, "breakdown", "A", 2))
    tr.loaded.append(Loaded(6000.0, B, ParcelId("P3"), ST))
    tr.loaded.append(Loaded(6100.0, B, ParcelId("P4"), ST))
    tr.departures.append(Departure(B, 6100.0, 20.0, 0.2, 2))
    tr.drives.append(Drive(B, 6100.0, 6500.0, 6000.0, 1.8, 2, ()))
    tr.drives.append(Drive(B, 7000.0, 7500.0, 2000.0, 0.6, 0, ()))
    tr.soc.append(SocSample(B, 7500.0, 55.5))
    tr.delivered.append(Delivered(6500.0, B, ParcelId("P3")))
    tr.delivered.append(Delivered(6600.0, B, ParcelId("P4")))
    tr.finish(20_000.0, {ParcelId("P5"): ("too_heavy", "P5 weighs too much")})
    return tr
