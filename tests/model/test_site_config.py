"""Site configs: the shipped sites load, and every kind of mistake names file, table and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.model import load_site
from fleet.model.site import Departure


@pytest.fixture
def site_text(configs_dir: Path) -> str:
    """The Porto Alegre site with absolute data paths, so variants can live in a tmp dir."""
    sites = configs_dir / "sites"
    text = (sites / "poa.toml").read_text()
    text = text.replace('"data/poa_osm.pbf"', f'"{sites / "data" / "poa_osm.pbf"}"')
    return text.replace('"poa_area.geojson"', f'"{sites / "poa_area.geojson"}"')


def test_shipped_sites_load(configs_dir: Path) -> None:
    porto = load_site(configs_dir / "sites" / "porto.toml")
    assert porto.name == "Porto" and porto.timezone == "Europe/Lisbon"
    assert porto.warehouse.id == "WH-PORTO" and porto.warehouse.vans == 6
    assert len(porto.stations) >= 5 and all(4 <= s.vans <= 6 for s in porto.stations)
    assert (porto.shift_start_s, porto.shift_end_s) == (6 * 3600, 20 * 3600)
    assert porto.osm_file.name == "porto_portugal.osm.pbf" and porto.osm_file.is_file()
    assert porto.operating_area_file.name == "porto_area.geojson"
    assert "motorway" in porto.excluded_highways
    poa = load_site(configs_dir / "sites" / "poa.toml")
    assert poa.timezone == "America/Sao_Paulo" and len(poa.stations) >= 3
    ids = [d.id for d in (*porto.depots, *poa.depots)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)  # topic-safe


def _variant(site_text: str, tmp_path: Path, old: str, new: str) -> Path:
    assert re.search(old, site_text, flags=re.M), old
    out = tmp_path / "site.toml"
    out.write_text(re.sub(old, new, site_text, count=1, flags=re.M))
    return out


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            r"^snap_max_m = .*$",
            "snap_max_m = 150.0\nsnap_radius_m = 3",
            r"\[site\] snap_radius_m: unknown key",
        ),
        (r"^\[shift\]$", '[shift]\nbreak = "12:00"', r"\[shift\] break: unknown key"),
        (r"^vans = 4$", 'vans = 4\ncolour = "red"', r"\[warehouse\] colour: unknown key"),
        (r"^timezone = .*$", "", r"\[site\] timezone: missing"),
        (r"^snap_max_m = .*$", "", r"\[site\] snap_max_m: missing"),
        (r"^lat = -30\.00815$", "", r"\[warehouse\] lat: missing"),
        (r"^lon = -51\.22697$", "lon = 190.0", r"\[stations\[0\]\] lon: expected a number <= 180"),
        (r"^lat = -30\.00815$", "lat = -91.0", r"\[warehouse\] lat: expected a number >= -90"),
        (r"^lon = -51\.22697$", 'lon = "west"', r"\[stations\[0\]\] lon: expected a number"),
        (r"^snap_max_m = .*$", "snap_max_m = 0", r"\[site\] snap_max_m: expected a number > 0"),
        (r"^vans = 4$", "vans = -1", r"\[warehouse\] vans: expected a whole number >= 0"),
        (
            r"^osm_file = .*$",
            'osm_file = "missing.osm.pbf"',
            r"site\.osm_file: file not found: .*missing\.osm\.pbf",
        ),
        (
            r"^operating_area_file = .*$",
            'operating_area_file = "nope.geojson"',
            r"site\.operating_area_file: file not found",
        ),
        (
            r'^id = "ST-MOINHOS"$',
            'id = "ST-CENTRO"',
            r"stations\[1\]\.id: duplicate depot id 'ST-CENTRO'",
        ),
        (r'^id = "ST-CENTRO"$', 'id = "WH-POA"', r"stations\[0\]\.id: duplicate depot id 'WH-POA'"),
        (r'^end = "20:00"$', 'end = "05:00"', r"\[shift\] end: the shift must end after it starts"),
        (r'^start = "06:00"$', 'start = "6 am"', r"\[shift\] start: expected a time HH:MM"),
        (
            r"^timezone = .*$",
            'timezone = "Porto/Alegre"',
            r"\[site\] timezone: expected an IANA time zone",
        ),
        (
            r"^exclude_highways = .*$",
            'exclude_highways = "motorway"',
            r"\[roads\] exclude_highways: expected a list of strings",
        ),
        (
            r'^end = "20:00"$',
            'end = "20:00"\ndeparture = "soon"',
            r"\[shift\] departure: expected one of early, late, got 'soon'",
        ),
        (
            r'^end = "20:00"$',
            'end = "20:00"\ndeparture = 1',
            r"\[shift\] departure: expected a string",
        ),
    ],
    ids=[
        "unknown-key-site",
        "unknown-key-shift",
        "unknown-key-depot",
        "missing-timezone",
        "missing-snap",
        "missing-lat",
        "lon-out-of-range",
        "lat-out-of-range",
        "lon-not-a-number",
        "zero-snap",
        "negative-vans",
        "missing-osm-file",
        "missing-area-file",
        "duplicate-station-id",
        "station-id-equals-warehouse",
        "shift-ends-before-start",
        "bad-clock",
        "bad-timezone",
        "exclude-not-a-list",
        "departure-unknown",
        "departure-not-a-string",
    ],
)
def test_site_error_names_file_table_and_key(
    site_text: str, tmp_path: Path, old: str, new: str, expected: str
) -> None:
    bad = _variant(site_text, tmp_path, old, new)
    with pytest.raises(ConfigError, match=expected) as info:
        load_site(bad)
    assert str(bad) in str(info.value)


def test_departure_is_early_unless_the_site_says_late(site_text: str, tmp_path: Path) -> None:
    assert load_site(_variant(site_text, tmp_path, r"^$", "")).departure is Departure.EARLY
    late = _variant(site_text, tmp_path, r'^end = "20:00"$', 'end = "20:00"\ndeparture = "late"')
    assert load_site(late).departure is Departure.LATE


def test_site_without_stations_is_refused(site_text: str, tmp_path: Path) -> None:
    head = site_text.split("[[stations]]")[0]
    bad = tmp_path / "site.toml"
    bad.write_text(head)
    with pytest.raises(ConfigError, match=r"stations: missing"):
        load_site(bad)
