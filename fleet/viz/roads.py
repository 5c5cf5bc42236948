"""Layers for a road network: roads by class and the operating area; reused by every map."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fleet.viz.layers import Line, LineLayer, PolygonLayer

if TYPE_CHECKING:  # the road graph's modules are heavy; drawing needs only its arrays
    from fleet.roads import RoadNetwork

# (layer name, highway classes, colour, width in px), drawn in this order (local first)
ROAD_GROUPS: tuple[tuple[str, frozenset[str], str, float], ...] = (
    (
        "Local streets",
        frozenset({"residential", "living_street", "service", "road"}),
        "#a3a3a3",
        0.8,
    ),
    (
        "Connecting roads",
        frozenset({"tertiary", "tertiary_link", "unclassified"}),
        "#c9a227",
        1.3,
    ),
    (
        "Main roads",
        frozenset(
            {
                "primary",
                "primary_link",
                "secondary",
                "secondary_link",
                "trunk",
                "trunk_link",
                "motorway",
                "motorway_link",
            }
        ),
        "#e07b39",
        2.0,
    ),
)


def road_layers(net: RoadNetwork, *, visible: bool = True) -> list[LineLayer]:
    """Every drivable road link of ``net`` (closed ones left out), grouped by class."""
    p = net.prepared
    open_links = np.zeros(len(p.link_u), dtype=np.bool_)
    open_links[p.edge_link] = True
    link_class = np.asarray(p.classes, dtype=object)[p.link_class]
    layers = []
    for name, classes, color, width in ROAD_GROUPS:
        chosen = np.nonzero(open_links & np.isin(link_class, list(classes)))[0]
        lines = []
        for link in chosen.tolist():
            a, b = int(p.geom_offsets[link]), int(p.geom_offsets[link + 1])
            coords = tuple(zip(p.geom_lon[a:b].tolist(), p.geom_lat[a:b].tolist(), strict=True))
            lines.append(Line(coords))
        layers.append(
            LineLayer(name=name, lines=tuple(lines), color=color, width_px=width, visible=visible)
        )
    return layers


def area_layer(net: RoadNetwork) -> PolygonLayer:
    return PolygonLayer(
        name="Operating area",
        polygons=(net.operating_area,),
        fill="#3d85c6",
        fill_opacity=0.08,
        edge="#3d85c6",
        width_px=2.0,
        label=f"operating area of {net.site.name}: {net.area_km2:.1f} km²",
    )
