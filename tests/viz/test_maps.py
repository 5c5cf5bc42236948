"""The map layer model and both renderers, on small hand-made maps."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait
from shapely.geometry import Polygon, box

from fleet.errors import InputError
from fleet.viz import (
    OSM_ATTRIBUTION,
    Line,
    LineLayer,
    MapSpec,
    Point,
    PointLayer,
    PolygonLayer,
    write_map,
)
from fleet.viz.html import SCALE, render_html, static_text
from tests.support.browser import browser, console_errors

__all__ = ["browser"]  # the fixture

ROUTE = ((-8.61, 41.15), (-8.605, 41.152), (-8.60, 41.149))


def _spec(title: str = "Test map") -> MapSpec:
    holed = Polygon(
        box(-8.63, 41.13, -8.58, 41.17).exterior.coords,
        [box(-8.62, 41.14, -8.615, 41.145).exterior.coords],
    )
    return MapSpec(
        title=title,
        notes=("a note",),
        extra={"vans": "3"},
        layers=(
            PolygonLayer("Area", (holed,), label="the area"),
            LineLayer("Roads", (Line(ROUTE), Line(ROUTE[::-1])), color="#999999"),
            LineLayer(
                "Routes",
                (Line(ROUTE, label="van 1", popup="van 1\n3 stops", color="#ff0000"),),
                width_px=3,
                hover=True,
            ),
            PointLayer(
                "Depots",
                (Point(-8.61, 41.15, label="WH </script><b>x</b>", popup="warehouse"),),
                marker="square",
                show_labels=True,
            ),
        ),
    )


def _payload(page: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="map-data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def _undelta(flat: list[int]) -> list[tuple[float, float]]:
    out, x, y = [], 0, 0
    for i in range(0, len(flat), 2):
        x += flat[i]
        y += flat[i + 1]
        out.append((x / SCALE, y / SCALE))
    return out


def test_html_is_self_contained_and_attributed() -> None:
    page = render_html(_spec())
    assert page.startswith("<!DOCTYPE html>")
    assert OSM_ATTRIBUTION in page and "openstreetmap.org/copyright" in page
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img|@import|url\(http", page)
    # data, Leaflet, fleet's map code, the start-up: labels cannot close an element early
    assert page.count("</script>") == 4
    assert page.count("</style>") == 1
    assert static_text("fleetmap.js").replace("</", "<\\/") in page


def test_the_one_map_code_is_inlined_with_leaflet() -> None:
    page = render_html(_spec())
    assert 't.version="1.9.4"' in page  # the vendored Leaflet, not another copy
    assert "FleetMap.create(" in page
    assert "sourceMappingURL" not in page  # nothing asks for a file that is not there


def test_html_carries_the_layers_and_coordinates_to_a_metre() -> None:
    data = _payload(render_html(_spec()))
    layers = data["layers"]
    assert isinstance(layers, list)
    assert [layer["kind"] for layer in layers] == ["polygons", "lines", "lines", "points"]
    route = layers[2]
    assert route["labels"] == ["van 1"] and route["colors"] == ["#ff0000"] and route["hover"]
    for (x, y), (lon, lat) in zip(_undelta(route["lines"][0]), ROUTE, strict=True):
        assert abs(x - lon) <= 0.5 / SCALE and abs(y - lat) <= 0.5 / SCALE
    assert len(layers[0]["rings"]) == 2  # the hole travels too
    assert layers[3]["labels"] == ["WH </script><b>x</b>"]  # text, never markup
    assert data["extra"] == [["vans", "3"]] and data["notes"] == ["a note"]


def test_title_is_escaped_in_the_page_head() -> None:
    page = render_html(_spec(title="<Porto & Gaia>"))
    assert "<title>&lt;Porto &amp; Gaia&gt;</title>" in page


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_images_are_written_with_the_attribution(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"map{suffix}"
    write_map(_spec(), out)
    data = out.read_bytes()
    magic = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}[suffix]
    assert data.startswith(magic)
    if suffix == ".svg":
        assert "OpenStreetMap contributors" in data.decode()


def test_unknown_format_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"map\.jpeg: cannot tell the map format"):
        write_map(_spec(), tmp_path / "map.jpeg")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_render_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    out = tmp_path / "map.png"
    out.write_bytes(b"previous map")
    with pytest.raises(ValueError, match="nothing to draw"):
        write_map(MapSpec(title="empty", layers=()), out)
    assert out.read_bytes() == b"previous map"
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]


def test_layers_refuse_bad_colours_and_short_lines() -> None:
    with pytest.raises(ValueError, match="colour must look like"):
        LineLayer("x", (), color="red")
    with pytest.raises(ValueError, match="at least 2 points"):
        Line(((0.0, 0.0),))
    with pytest.raises(ValueError, match="colour"):
        Point(0, 0, color="#12345")


def test_bounds_cover_every_layer() -> None:
    assert _spec().bounds() == pytest.approx((-8.63, 41.13, -8.58, 41.17))


# -- in a real browser -------------------------------------------------------------------
def test_the_offline_map_draws_in_chromium_with_text_never_markup(
    tmp_path: Path, browser: Any
) -> None:
    page = tmp_path / "map.html"
    write_map(_spec(), page)
    browser.get(page.as_uri())
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return document.querySelectorAll('.fm-label').length") == 1
    )
    label = browser.find_element(By.CSS_SELECTOR, ".fm-label")
    assert label.text == "WH </script><b>x</b>"  # the label is text: no <b> element made
    assert browser.find_elements(By.CSS_SELECTOR, ".fm-label b") == []
    assert browser.find_element(By.CSS_SELECTOR, ".fm-panel h1").text == "Test map"
    layer_names = [
        e.text
        for e in browser.find_elements(By.CSS_SELECTOR, ".leaflet-control-layers-overlays label")
    ]
    assert layer_names == ["Area", "Roads", "Routes", "Depots"]
    # the drawn canvas is not blank: the roads and the area are on it
    painted = browser.execute_script(
        "const c = document.querySelector('canvas.leaflet-zoom-animated');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;"
    )
    assert painted > 1000
    assert console_errors(browser) == []
