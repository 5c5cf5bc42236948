"""Operating-area files: what is accepted, what is refused (file and feature named), and the
area in km²."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from fleet.errors import ConfigError
from fleet.roads.area import area_km2, load_operating_area
from fleet.roads.geo import EARTH_RADIUS_M

SQUARE = [[-8.62, 41.14], [-8.60, 41.14], [-8.60, 41.16], [-8.62, 41.16], [-8.62, 41.14]]
OTHER = [[-8.58, 41.14], [-8.56, 41.14], [-8.56, 41.16], [-8.58, 41.16], [-8.58, 41.14]]


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "area.geojson"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "Polygon", "coordinates": [SQUARE]},
        {
            "type": "Feature",
            "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [SQUARE]},
        },
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}
            ],
        },
    ],
    ids=["polygon", "feature", "collection"],
)
def test_polygon_in_any_wrapper_is_read(tmp_path: Path, doc: object) -> None:
    area = load_operating_area(_write(tmp_path, doc))
    assert isinstance(area, Polygon)
    assert area.equals(Polygon(SQUARE))


def test_several_features_are_merged(tmp_path: Path) -> None:
    doc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}
            for ring in (SQUARE, OTHER)
        ],
    }
    area = load_operating_area(_write(tmp_path, doc))
    assert isinstance(area, MultiPolygon) and len(area.geoms) == 2


def test_shipped_areas_are_valid_and_sized(configs_dir: Path) -> None:
    porto = load_operating_area(configs_dir / "sites" / "porto_area.geojson")
    poa = load_operating_area(configs_dir / "sites" / "poa_area.geojson")
    assert area_km2(porto) == pytest.approx(220.8, abs=0.1)
    assert area_km2(poa) == pytest.approx(89.7, abs=0.1)


def test_area_in_km2_matches_the_spherical_formula() -> None:
    # a lon/lat box on the sphere: R² Δλ (sin φ2 − sin φ1)
    lon0, lat0, lon1, lat1 = -8.7, 41.1, -8.5, 41.3
    exact = (
        EARTH_RADIUS_M**2
        * math.radians(lon1 - lon0)
        * (math.sin(math.radians(lat1)) - math.sin(math.radians(lat0)))
    )
    assert area_km2(box(lon0, lat0, lon1, lat1)) == pytest.approx(exact / 1e6, rel=1e-9)
    holed = Polygon(box(0, 0, 1, 1).exterior.coords, [box(0.25, 0.25, 0.75, 0.75).exterior.coords])
    assert area_km2(holed) < area_km2(box(0, 0, 1, 1))


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"type": "Point", "coordinates": [0, 0]},
            r"expected a Polygon, MultiPolygon, Feature or FeatureCollection, got type 'Point'",
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
            },
            r"geometry: expected a Polygon or MultiPolygon, got 'LineString'",
        ),
        ({"type": "FeatureCollection", "features": []}, r"no Polygon or MultiPolygon"),
        (
            {"type": "FeatureCollection", "features": [{"type": "Polygon"}]},
            r"features\[0\]: expected a GeoJSON Feature",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            r"invalid polygon: Self-intersection",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [0, 95], [1, 95], [0, 0]]]},
            r"degrees WGS84 .*lat 0\.\.95",
        ),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, r"malformed coordinates"),
        ({"type": "Polygon", "coordinates": "nope"}, r"malformed coordinates|expected"),
        ([1, 2, 3], r"expected a GeoJSON object, got list"),
    ],
    ids=[
        "point",
        "line",
        "empty",
        "not-a-feature",
        "bow-tie",
        "latitude-95",
        "two-points",
        "string",
        "list",
    ],
)
def test_bad_area_is_refused_naming_file_and_feature(
    tmp_path: Path, doc: object, expected: str
) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError, match=expected) as info:
        load_operating_area(path)
    assert str(path) in str(info.value)


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "area.geojson"
    path.write_text('{"type": "Polygon",\n "coordinates": [[[0, 0], [1, 0],]]}')
    with pytest.raises(ConfigError, match=r"area\.geojson: line 2 column \d+: not valid JSON"):
        load_operating_area(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.geojson: operating-area file not found"):
        load_operating_area(tmp_path / "nowhere.geojson")
