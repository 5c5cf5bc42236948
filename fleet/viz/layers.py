"""The layer model every map is drawn from: lines, points and polygons in lon/lat.

A map (:class:`MapSpec`) is a title and an ordered list of layers, drawn bottom to top.
Both renderers (self-contained HTML, matplotlib images) read only these types, so site maps,
plan maps and simulation reports build layers and call :func:`fleet.viz.write_map`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from shapely.geometry import MultiPolygon, Polygon

LonLat = tuple[float, float]
Marker = Literal["circle", "square", "triangle", "diamond"]

OSM_ATTRIBUTION = "© OpenStreetMap contributors"
OSM_COPYRIGHT_URL = "https://www.openstreetmap.org/copyright"

_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def _check_color(color: str | None, what: str) -> None:
    if color is not None and not _COLOR.match(color):
        raise ValueError(f"{what}: colour must look like '#1f77b4', got {color!r}")


@dataclass(frozen=True, slots=True)
class Line:
    """One polyline; ``label`` shows on hover, ``popup`` on click (plain text, newlines kept)."""

    coords: tuple[LonLat, ...]
    label: str = ""
    popup: str = ""
    color: str | None = None  # overrides the layer's colour

    def __post_init__(self) -> None:
        if len(self.coords) < 2:
            raise ValueError(f"a line needs at least 2 points, got {len(self.coords)}")
        _check_color(self.color, "Line")


@dataclass(frozen=True, slots=True)
class Point:
    lon: float
    lat: float
    label: str = ""
    popup: str = ""
    color: str | None = None

    def __post_init__(self) -> None:
        _check_color(self.color, "Point")


@dataclass(frozen=True, slots=True)
class LineLayer:
    name: str
    lines: tuple[Line, ...]
    color: str = "#555555"
    width_px: float = 1.5
    opacity: float = 1.0
    dashed: bool = False
    hover: bool = False  # labels on hover (keep off for tens of thousands of road links)
    visible: bool = True  # initially shown (HTML maps let the reader toggle layers)

    def __post_init__(self) -> None:
        _check_color(self.color, f"layer {self.name!r}")


@dataclass(frozen=True, slots=True)
class PointLayer:
    name: str
    points: tuple[Point, ...]
    color: str = "#d62728"
    radius_px: float = 5.0
    marker: Marker = "circle"
    show_labels: bool = False  # write each label beside its point, not only on hover
    visible: bool = True

    def __post_init__(self) -> None:
        _check_color(self.color, f"layer {self.name!r}")


@dataclass(frozen=True, slots=True)
class PolygonLayer:
    name: str
    polygons: tuple[Polygon | MultiPolygon, ...]
    fill: str = "#1f77b4"
    fill_opacity: float = 0.12
    edge: str = "#1f77b4"
    width_px: float = 1.5
    label: str = ""
    visible: bool = True

    def __post_init__(self) -> None:
        _check_color(self.fill, f"layer {self.name!r}")
        _check_color(self.edge, f"layer {self.name!r}")

    def rings(self) -> list[list[LonLat]]:
        """Every exterior and interior ring of every polygon (even-odd fill makes holes)."""
        out: list[list[LonLat]] = []
        for geom in self.polygons:
            parts = list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]
            for poly in parts:
                for ring in (poly.exterior, *poly.interiors):
                    out.append([(float(x), float(y)) for x, y, *_ in ring.coords])
        return out


Layer = LineLayer | PointLayer | PolygonLayer


@dataclass(frozen=True, slots=True)
class MapSpec:
    """A map: drawn bottom layer first. ``notes`` are lines of text shown under the title."""

    title: str
    layers: tuple[Layer, ...]
    notes: tuple[str, ...] = ()
    attribution: str = OSM_ATTRIBUTION
    attribution_url: str = OSM_COPYRIGHT_URL
    extra: dict[str, str] = field(default_factory=dict)  # shown as a key/value list

    def bounds(self) -> tuple[float, float, float, float]:
        """``(min_lon, min_lat, max_lon, max_lat)`` over every layer."""
        xs: list[float] = []
        ys: list[float] = []
        for lon, lat in iter_coords(self.layers):
            xs.append(lon)
            ys.append(lat)
        if not xs:
            raise ValueError(f"map {self.title!r} has nothing to draw")
        return min(xs), min(ys), max(xs), max(ys)


def iter_coords(layers: Sequence[Layer]) -> Iterable[LonLat]:
    for layer in layers:
        if isinstance(layer, LineLayer):
            for line in layer.lines:
                yield from line.coords
        elif isinstance(layer, PointLayer):
            for p in layer.points:
                yield p.lon, p.lat
        else:
            for ring in layer.rings():
                yield from ring
