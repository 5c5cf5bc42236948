"""Crashes the fuzzing found and that are fixed: each stays here as a regression test."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.model.site import Site, load_site
from fleet.planning.orders import parse_orders
from tests.security.sites import make_site

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
