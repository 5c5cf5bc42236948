"""The operating area: the GeoJSON polygon(s) where the L4 van is approved to drive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeAlias

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.validation import explain_validity

from fleet.errors import ConfigError
from fleet.roads.geo import equal_area_xy

Area: TypeAlias = Polygon | MultiPolygon  # lon/lat degrees

_POLYGON_TYPES = ("Polygon", "MultiPolygon")


def load_operating_area(path: Path) -> Area:
    """Read a GeoJSON Polygon, MultiPolygon, Feature or FeatureCollection of them (lon/lat).

    All polygons are merged into one area. Anything else (points, lines, rings that cross
    themselves, coordinates off the globe) is a :class:`ConfigError` naming the file and the
    feature.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: operating-area file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the operating-area file: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}"
        ) from exc
    parts = [_polygon(path, where, geom) for where, geom in _geometries(path, doc)]
    if not parts:
        raise ConfigError(f"{path}: no Polygon or MultiPolygon in the operating-area file")
    area: Area = shapely.union_all(parts) if len(parts) > 1 else parts[0]
    if not isinstance(area, Polygon | MultiPolygon) or area.is_empty:
        raise ConfigError(f"{path}: the operating area is empty")
    return area


def _geometries(path: Path, doc: object) -> list[tuple[str, object]]:
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a GeoJSON object, got {type(doc).__name__}")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise ConfigError(f"{path}: FeatureCollection: 'features' must be a list")
        out: list[tuple[str, object]] = []
        for i, feature in enumerate(features):
            if not isinstance(feature, dict) or feature.get("type") != "Feature":
                raise ConfigError(f"{path}: features[{i}]: expected a GeoJSON Feature")
            out.append((f"features[{i}].geometry", feature.get("geometry")))
        return out
    if kind == "Feature":
        return [("geometry", doc.get("geometry"))]
    if kind in _POLYGON_TYPES:
        return [("(top level)", doc)]
    raise ConfigError(
        f"{path}: expected a Polygon, MultiPolygon, Feature or FeatureCollection, got type {kind!r}"
    )


def _polygon(path: Path, where: str, geom: object) -> Area:
    if not isinstance(geom, dict) or geom.get("type") not in _POLYGON_TYPES:
        got = geom.get("type") if isinstance(geom, dict) else geom
        raise ConfigError(f"{path}: {where}: expected a Polygon or MultiPolygon, got {got!r}")
    try:
        poly: Area = shape(geom)
    except (ValueError, TypeError, IndexError, AttributeError, shapely.errors.GEOSException) as exc:
        raise ConfigError(f"{path}: {where}: malformed coordinates: {exc}") from exc
    if not isinstance(poly, Polygon | MultiPolygon) or poly.is_empty:
        raise ConfigError(f"{path}: {where}: empty polygon")
    coords = shapely.get_coordinates(poly)
    if not np.all(np.isfinite(coords)):
        raise ConfigError(f"{path}: {where}: coordinates must be finite numbers")
    lon, lat = coords[:, 0], coords[:, 1]
    if lon.min() < -180 or lon.max() > 180 or lat.min() < -90 or lat.max() > 90:
        raise ConfigError(
            f"{path}: {where}: coordinates must be [lon, lat] in degrees WGS84 "
            f"(lon -180..180, lat -90..90); got lon {lon.min():g}..{lon.max():g}, "
            f"lat {lat.min():g}..{lat.max():g}"
        )
    if not poly.is_valid:
        raise ConfigError(f"{path}: {where}: invalid polygon: {explain_validity(poly)}")
    return poly


def area_km2(area: Area) -> float:
    """Surface of the area on the Earth in km² (equal-area projection, holes subtracted)."""
    lat0 = float(area.centroid.y)
    projected = shapely.transform(area, lambda xy: equal_area_xy(xy, lat0))
    return float(projected.area) / 1e6
