"""Crashes the fuzzing found and that are fixed: each stays here as a regression test."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from firmware_bridge import wire
from firmware_bridge.bridge.core import BridgeCore, PublishState
from fleet.errors import ConfigError
from fleet.model.site import Site, load_site
from fleet.planning.orders import parse_orders
from fleet.protocol import CommandVerifier, ErrorLevel, derive_van_key
from tests.security.sites import make_site
from tests.support import protocol_examples as ex

REPO = Path(__file__).resolve().parents[2]
HEADER = "parcel_id,lon,lat,weight_kg,volume_m3,earliest,latest\n"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


@pytest.mark.parametrize(
    "row",
    [
        "P1,-8.6,41.1,1,0.01,0001-01-01T00:00:00+12:00,",
        "P1,-8.6,41.1,1,0.01,9999-12-31T23:59:59-12:00,",
        "P1,-8.6,41.1,1,0.01,9999-12-31T10:00,2026-11-24T00:00",
    ],
    ids=["year-1-east-of-utc", "year-9999-west-of-utc", "day-after-9999-12-31"],
)
def test_a_time_at_the_end_of_the_calendar_is_a_bad_row(site: Site, row: str) -> None:
    orders = parse_orders([HEADER, row + "\n"], Path("orders.csv"), site)
    assert [b.field for b in orders.bad_rows] in (["earliest"], ["latest"])


def test_a_site_config_naming_an_impossible_file_name_is_a_config_error(tmp_path: Path) -> None:
    site_file = tmp_path / "site.toml"
    text = (REPO / "configs" / "sites" / "poa.toml").read_text(encoding="utf-8")
    site_file.write_text(
        text.replace('osm_file = "data/poa_osm.pbf"', f'osm_file = "{"x" * 300}"'),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="osm_file"):
        load_site(site_file)


def _telemetry(**fields: int) -> wire.Telemetry:
    base = dict(
        uptime_ms=1, lon_e7=-86110000, lat_e7=411496000, heading_cdeg=0, speed_cmps=0,
        soc_cpct=8000, range_m=100_000, odometer_m=0, mission_id=0, last_wp=wire.WP_NONE,
        wp_queued=0, drive_state=wire.DriveState.IDLE, door=wire.DoorState.CLOSED,
        fault_bits=0, estop_id=0,
    )  # fmt: skip
    return wire.Telemetry(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reading", "field", "bound"),
    [
        ({"speed_cmps": 20_000}, "speed_mps", 100.0),
        ({"range_m": 20_000_000}, "remaining_range_m", 10_000_000.0),
    ],
)
def test_an_implausible_vcu_reading_is_clamped_and_reported_not_fatal_to_the_bridge(
    reading: dict[str, int], field: str, bound: float
) -> None:
    key = derive_van_key(ex.MASTER_SECRET, ex.VAN)
    core = BridgeCore(ex.VAN, CommandVerifier(ex.VAN, [key]), mission_ids=1)
    core.on_link_up()
    (published,) = [a for a in core.on_telemetry(_telemetry(**reading), ex.NOW_S)
                    if isinstance(a, PublishState)]  # fmt: skip
    state = published.state
    got = state.speed_mps if field == "speed_mps" else state.battery.remaining_range_m
    assert got == bound
    (warning,) = [e for e in state.errors if e.error_type == "implausible_reading"]
    assert warning.level is ErrorLevel.WARNING
    assert [(r.key, r.value) for r in warning.references] == [("field", field)]
    assert field in warning.description


@pytest.mark.parametrize(
    ("key", "value"),
    [("warehouse_vans", 2**63 - 1), ("station_vans", 10_001), ("parcels", 10**12)],
)
def test_a_scenario_asking_for_an_absurd_fleet_or_day_is_a_config_error(
    tmp_path: Path, key: str, value: int
) -> None:
    """Found by benchmarks/fuzz.py: ``warehouse_vans = 9223372036854775807`` made
    ``load_scenario`` build a list of that many van ids until the machine ran out of memory."""
    from sim.scenario import load_scenario

    text = (REPO / "configs" / "scenarios" / "poa_small.toml").read_text(encoding="utf-8")
    text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
    assert f"{key} = {value}" in text
    scenarios = tmp_path / "configs" / "scenarios"
    scenarios.mkdir(parents=True)
    shutil.copytree(REPO / "configs" / "sites", tmp_path / "configs" / "sites")
    shutil.copy(REPO / "configs" / "van.toml", tmp_path / "configs" / "van.toml")
    (scenarios / "big.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=key):
        load_scenario(scenarios / "big.toml")
