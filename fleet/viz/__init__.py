"""Maps: a small layer model (lines, points, polygons in lon/lat) and two renderers.

``write_map(spec, path)`` writes a self-contained, offline HTML page (``.html``: fleet's one
map code, ``static/fleetmap.js``, on vendored Leaflet — the console draws with it too) or an
image (``.png``, ``.svg``, ``.pdf``, via matplotlib). Site maps, plan maps and simulation reports
all build a :class:`MapSpec` from these layers.
"""

from __future__ import annotations

import os
from pathlib import Path

from fleet.errors import InputError
from fleet.viz.html import render_html
from fleet.viz.layers import (
    OSM_ATTRIBUTION,
    Line,
    LineLayer,
    MapSpec,
    Point,
    PointLayer,
    PolygonLayer,
)
from fleet.viz.roads import area_layer, road_layers

IMAGE_FORMATS = (".png", ".svg", ".pdf")  # drawn by fleet.viz.image (matplotlib)
MAP_FORMATS = (".html", ".htm", *IMAGE_FORMATS)

__all__ = [
    "MAP_FORMATS",
    "OSM_ATTRIBUTION",
    "Line",
    "LineLayer",
    "MapSpec",
    "Point",
    "PointLayer",
    "PolygonLayer",
    "area_layer",
    "check_map_path",
    "road_layers",
    "write_map",
]


def check_map_path(path: Path) -> None:
    """Refuse an output name whose format we cannot write, before any long work starts."""
    if path.suffix.lower() not in MAP_FORMATS:
        raise InputError(
            f"{path}: cannot tell the map format from {path.suffix or 'no suffix'!r}; "
            f"expected one of {', '.join(MAP_FORMATS)}"
        )


def write_map(spec: MapSpec, path: Path) -> None:
    """Write ``spec`` to ``path`` (format from the suffix); the file appears whole or not at all."""
    check_map_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        if path.suffix.lower() in (".html", ".htm"):
            tmp.write_text(render_html(spec), encoding="utf-8")
        else:
            from fleet.viz.image import write_image  # matplotlib: imported only when drawing

            write_image(spec, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
