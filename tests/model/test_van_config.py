"""The van config: the shipped file is right, and every kind of mistake names file, table, key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.model import load_van_spec


def test_shipped_van_has_the_l4_limits(van_file: Path) -> None:
    van = load_van_spec(van_file)
    assert van.range_km == 160
    assert van.top_speed_kmh == 60
    assert van.payload_kg == 1000
    assert van.cargo_volume_m3 == 24
    assert van.usable_range_km == pytest.approx(160 * (1 - van.range_reserve_pct / 100))
    assert van.battery_kwh / van.consumption_kwh_per_km == pytest.approx(160, rel=0.02)


def _variant(van_file: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = van_file.read_text()
    assert re.search(old, text, flags=re.M), old
    out = tmp_path / "van.toml"
    out.write_text(re.sub(old, new, text, count=1, flags=re.M))
    return out


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (r"^range_km = .*$", "range_km = -5.0", r"\[van\] range_km: expected a number > 0"),
        (r"^range_km = .*$", "range_km = 0", r"\[van\] range_km: expected a number > 0"),
        (r"^payload_kg = .*$", "payload_kg = -1.0", r"\[van\] payload_kg: expected a number > 0"),
        (
            r"^range_reserve_pct = .*$",
            "range_reserve_pct = 100.0",
            r"\[van\] range_reserve_pct: .*< 100",
        ),
        (
            r"^range_reserve_pct = .*$",
            "range_reserve_pct = -1",
            r"\[van\] range_reserve_pct: .*>= 0",
        ),
        (
            r"^top_speed_kmh = .*$",
            'top_speed_kmh = "fast"',
            r"\[van\] top_speed_kmh: expected a number",
        ),
        (r"^payload_kg = .*$", "payload_kilos = 1000.0", r"\[van\] payload_kg: missing"),
        (r"^name = .*$", 'name = "x"\ncolour = "red"', r"\[van\] colour: unknown key"),
        (
            r"^door_stop_s = .*$",
            "door_stop_s = -3",
            r"\[service\] door_stop_s: expected a number >= 0",
        ),
        (
            r"^battery_kwh = .*$",
            "battery_kwh = 80.0",
            r"\[van\] consumption_kwh_per_km: .* 266\.7 km",
        ),
        (r"^\[service\]$", "[servce]", r"\[servce\]|service: missing"),
    ],
    ids=[
        "negative-range",
        "zero-range",
        "negative-payload",
        "reserve-100",
        "negative-reserve",
        "wrong-type",
        "missing-key",
        "unknown-key",
        "negative-service-time",
        "inconsistent-battery",
        "misspelt-table",
    ],
)
def test_config_error_names_file_table_and_key(
    van_file: Path, tmp_path: Path, old: str, new: str, expected: str
) -> None:
    bad = _variant(van_file, tmp_path, old, new)
    with pytest.raises(ConfigError, match=expected) as info:
        load_van_spec(bad)
    assert str(bad) in str(info.value)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "van.toml"
    bad.write_text("[van]\nrange_km = = 3\n")
    with pytest.raises(ConfigError, match=r"van\.toml: not valid TOML: .*line 2"):
        load_van_spec(bad)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_van_spec(tmp_path / "nope.toml")
