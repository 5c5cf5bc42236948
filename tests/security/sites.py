"""A small site for the security tests (no map data is read by the code under test)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fleet.model.ids import DepotId
from fleet.model.site import Depot, Site

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def make_site(tmp: Path, vans_per_depot: tuple[int, ...] = (1, 2, 1)) -> Site:
    """A small site; the OSM and area files are never opened by credentials code."""
    depots = [
        Depot(DepotId("WH-TEST" if i == 0 else f"ST-T{i}"), f"depot {i}", -8.6, 41.1, n)
        for i, n in enumerate(vans_per_depot)
    ]
    return Site(
        name="Testville",
        config_file=tmp / "site.toml",
        osm_file=tmp / "none.osm.pbf",
        operating_area_file=tmp / "none.geojson",
        timezone="Europe/Lisbon",
        snap_max_m=150.0,
        shift_start_s=6 * 3600,
        shift_end_s=20 * 3600,
        warehouse=depots[0],
        stations=tuple(depots[1:]),
        excluded_highways=(),
    )
