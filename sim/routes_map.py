"""The report's map: the routes actually driven, with depots, deliveries, breakdowns and
road closures marked, drawn by :mod:`fleet.viz` (an offline, self-contained HTML page)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from shapely.geometry import Polygon

from fleet.roads import RoadNetwork
from fleet.viz import (
    Line,
    LineLayer,
    MapSpec,
    Point,
    PointLayer,
    PolygonLayer,
    area_layer,
    road_layers,
    write_map,
)
from sim.clock import format_day_s
from sim.trace import LonLat, Trace

# a qualitative palette (vans cycle through it)
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
)
MAX_DELIVERY_POINTS = 20_000


def _joined(paths: list[tuple[LonLat, ...]]) -> list[tuple[LonLat, ...]]:
    """Consecutive drives that meet end to start become one line (fewer, longer lines)."""
    out: list[list[LonLat]] = []
    for path in paths:
        if len(path) < 2:
            continue
        if out and out[-1][-1] == path[0]:
            out[-1].extend(path[1:])
        else:
            out.append(list(path))
    return [tuple(p) for p in out if len(p) >= 2]


def routes_map(trace: Trace, net: RoadNetwork, title: str) -> MapSpec:
    site = net.site
    by_van: dict[str, list[tuple[LonLat, ...]]] = defaultdict(list)
    km: dict[str, float] = defaultdict(float)
    for d in sorted(trace.drives, key=lambda d: (d.van, d.t0_s)):
        by_van[d.van].append(d.path)
        km[d.van] += d.dist_m / 1000.0
    route_lines: list[Line] = []
    for i, van in enumerate(sorted(by_van)):
        color = PALETTE[i % len(PALETTE)]
        for coords in _joined(by_van[van]):
            route_lines.append(
                Line(coords, label=van, popup=f"{van}\n{km[van]:.1f} km driven", color=color)
            )
    layers: list[LineLayer | PointLayer | PolygonLayer] = [area_layer(net)]
    # the road network in quiet greys, so that the routes driven stand out
    layers += [
        dataclasses.replace(layer, color="#b8b8b8", opacity=0.6)
        for layer in road_layers(net)
        if layer.name != "Local streets"
    ]
    layers.append(LineLayer("Routes driven", tuple(route_lines), width_px=2.5, hover=True))
    closed_lines = tuple(
        Line(line, label=f"closed at {format_day_s(c.t_s)}", color="#d62728")
        for c in trace.closures
        for line in c.lines
        if len(line) >= 2
    )
    if closed_lines:
        layers.append(
            LineLayer("Closed roads", closed_lines, color="#d62728", width_px=4, dashed=True)
        )
    areas = tuple(Polygon(c.polygon) for c in trace.closures if len(c.polygon) >= 3)
    if areas:
        layers.append(
            PolygonLayer(
                "Closed areas",
                areas,
                fill="#d62728",
                fill_opacity=0.15,
                edge="#d62728",
                label="road closure",
            )
        )
    delivered = [
        Point(p.lon, p.lat, label=f"{d.parcel} by {d.van} at {format_day_s(d.t_s)}")
        for d in trace.delivered[:MAX_DELIVERY_POINTS]
        if (p := trace.parcels.get(d.parcel)) is not None
    ]
    layers.append(PointLayer("Deliveries", tuple(delivered), color="#2ca02c", radius_px=2.5))
    if trace.breakdowns:
        layers.append(
            PointLayer(
                "Breakdowns",
                tuple(
                    Point(
                        b.lon,
                        b.lat,
                        label=f"{b.van} broke down at {format_day_s(b.t_s)}",
                        popup=f"{b.van}\nbroke down at {format_day_s(b.t_s)}\n"
                        f"{len(b.parcels)} parcels to re-plan",
                    )
                    for b in trace.breakdowns
                ),
                color="#d62728",
                radius_px=8,
                marker="triangle",
                show_labels=True,
            )
        )
    layers.append(
        PointLayer(
            "Stations",
            tuple(Point(s.lon, s.lat, label=f"{s.id} - {s.name}") for s in site.stations),
            color="#1f5fbf",
            radius_px=6,
            show_labels=True,
        )
    )
    layers.append(
        PointLayer(
            "Warehouse",
            (Point(site.warehouse.lon, site.warehouse.lat, label=site.warehouse.id),),
            color="#c0392b",
            radius_px=7,
            marker="square",
            show_labels=True,
        )
    )
    total_km = sum(km.values())
    return MapSpec(
        title=title,
        layers=tuple(layers),
        notes=(f"{len(by_van)} vans drove {total_km:,.1f} km; {len(trace.delivered)} deliveries",),
        extra={
            "scenario": trace.scenario,
            "mode": trace.mode,
            "simulated": f"{format_day_s(trace.start_s)}–{format_day_s(trace.end_s)}",
            "breakdowns": str(len(trace.breakdowns)),
            "road closures": str(len(trace.closures)),
        },
    )


def write_routes_map(trace: Trace, net: RoadNetwork, path: Path, title: str) -> Path:
    write_map(routes_map(trace, net, title), path)
    return path
