"""Self-contained HTML maps: inline data drawn by Leaflet with pan, zoom, popups, layers.

No CDN, no tiles, no network: the file opens offline in any browser. Leaflet (vendored, pinned:
``fleet/viz/static/leaflet/VENDOR.md``) and fleet's one map code (``static/fleetmap.js``, which
the dispatcher's console uses too) are inlined in the page. Coordinates travel as integers in
1e-5 degrees (about a metre), each line delta-encoded, which keeps a city's road network to a
few megabytes. Every text is inserted with ``textContent``, never as HTML.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from fleet.viz.layers import Layer, LineLayer, MapSpec, PointLayer, PolygonLayer

SCALE = 100_000  # integer coordinate units per degree


def _delta(coords: list[tuple[float, float]] | tuple[tuple[float, float], ...]) -> list[int]:
    a = np.rint(np.asarray(coords, dtype=np.float64) * SCALE).astype(np.int64)
    a[1:] -= a[:-1].copy()
    return [int(v) for v in a.ravel()]


def _texts(values: list[str]) -> list[str] | None:
    return values if any(values) else None


def _layer_json(layer: Layer) -> dict[str, object]:
    if isinstance(layer, LineLayer):
        return {
            "kind": "lines",
            "name": layer.name,
            "color": layer.color,
            "width": layer.width_px,
            "opacity": layer.opacity,
            "dashed": layer.dashed,
            "hover": layer.hover,
            "visible": layer.visible,
            "lines": [_delta(line.coords) for line in layer.lines],
            "labels": _texts([line.label for line in layer.lines]),
            "popups": _texts([line.popup for line in layer.lines]),
            "colors": (
                [line.color or layer.color for line in layer.lines]
                if any(line.color for line in layer.lines)
                else None
            ),
        }
    if isinstance(layer, PointLayer):
        xy = np.rint(
            np.asarray([(p.lon, p.lat) for p in layer.points], dtype=np.float64).reshape(-1, 2)
            * SCALE
        ).astype(np.int64)
        return {
            "kind": "points",
            "name": layer.name,
            "color": layer.color,
            "radius": layer.radius_px,
            "marker": layer.marker,
            "show_labels": layer.show_labels,
            "visible": layer.visible,
            "xy": [int(v) for v in xy.ravel()],
            "labels": _texts([p.label for p in layer.points]),
            "popups": _texts([p.popup for p in layer.points]),
            "colors": (
                [p.color or layer.color for p in layer.points]
                if any(p.color for p in layer.points)
                else None
            ),
        }
    assert isinstance(layer, PolygonLayer)
    return {
        "kind": "polygons",
        "name": layer.name,
        "fill": layer.fill,
        "fill_opacity": layer.fill_opacity,
        "edge": layer.edge,
        "width": layer.width_px,
        "label": layer.label,
        "visible": layer.visible,
        "rings": [_delta(ring) for ring in layer.rings()],
    }


STATIC = "static"  # package data of fleet.viz: leaflet/, fleetmap.js, fleetmap.css


def static_text(name: str) -> str:
    """A file of ``fleet/viz/static`` (``leaflet/leaflet.js``, ``fleetmap.js``, ...)."""
    return _static_text(name)


@cache
def _static_text(name: str) -> str:
    node = resources.files("fleet.viz").joinpath(STATIC)
    for part in name.split("/"):
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")


def map_data(spec: MapSpec) -> dict[str, object]:
    """The map as the JSON object ``fleetmap.js`` draws (the console serves it as is)."""
    return {
        "title": spec.title,
        "notes": list(spec.notes),
        "extra": [[k, v] for k, v in spec.extra.items()],
        "attribution": spec.attribution,
        "attribution_url": spec.attribution_url,
        "scale": SCALE,
        "layers": [_layer_json(layer) for layer in spec.layers],
    }


def _inline(text: str) -> str:
    # "</" would end an inline <script> or <style> element early; "<\/" means the same in
    # JSON strings and JavaScript strings, and never occurs outside them in our files.
    return text.replace("</", "<\\/")


def render_html(spec: MapSpec) -> str:
    """The whole page as one string."""
    payload = json.dumps(map_data(spec), ensure_ascii=False, separators=(",", ":"))
    leaflet_js = _static_text("leaflet/leaflet.js")
    # the source map is not shipped; a page opened offline must not ask for it
    leaflet_js = leaflet_js.replace("//# sourceMappingURL=leaflet.js.map", "")
    return (
        _PAGE.replace("%%TITLE%%", html.escape(spec.title))
        .replace(
            "%%STYLE%%",
            _inline(_static_text("leaflet/leaflet.css") + _static_text("fleetmap.css") + _STYLE),
        )
        .replace("%%LEAFLET%%", _inline(leaflet_js))
        .replace("%%FLEETMAP%%", _inline(_static_text("fleetmap.js")))
        .replace("%%SCRIPT%%", _SCRIPT)
        .replace("%%DATA%%", _inline(payload))
    )


def write_html(spec: MapSpec, path: Path) -> None:
    path.write_text(render_html(spec), encoding="utf-8")


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%%TITLE%%</title>
<style>%%STYLE%%</style>
</head>
<body>
<div id="map" aria-label="map"></div>
<aside id="panel" class="fm-panel"></aside>
<script type="application/json" id="map-data">%%DATA%%</script>
<script>%%LEAFLET%%</script>
<script>%%FLEETMAP%%</script>
<script>%%SCRIPT%%</script>
</body>
</html>
"""

_STYLE = """
html, body { margin: 0; height: 100%; overflow: hidden; }
#map { position: absolute; inset: 0; }
"""

_SCRIPT = """
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("map-data").textContent);
  FleetMap.create(document.getElementById("map"), data, {
    panel: document.getElementById("panel"),
  });
})();
"""
