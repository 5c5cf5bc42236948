"""The site map: roads, operating area, warehouse and stations."""

from __future__ import annotations

from fleet.roads import RoadNetwork
from fleet.roads.summary import DepotSnap, SiteSummary
from fleet.viz.layers import Line, LineLayer, MapSpec, Point, PointLayer
from fleet.viz.roads import area_layer, road_layers

WAREHOUSE_COLOR = "#c0392b"
STATION_COLOR = "#1f5fbf"


def _popup(d: DepotSnap) -> str:
    kind = "warehouse" if d.is_warehouse else "station"
    lines = [f"{d.depot.id} ({kind})", d.depot.name, f"vans: {d.depot.vans}"]
    lines.append(f"lon {d.depot.lon:.5f}, lat {d.depot.lat:.5f}")
    if d.snap is not None:
        lines.append(f"{d.snap.dist_m:.0f} m from the road (node {d.snap.node})")
    else:
        lines.append(f"NOT ON THE ROAD NETWORK: {d.refused}")
    return "\n".join(lines)


def site_map(net: RoadNetwork, summary: SiteSummary) -> MapSpec:
    site = net.site
    wh = [d for d in summary.depots if d.is_warehouse]
    st = [d for d in summary.depots if not d.is_warehouse]
    snap_lines = tuple(
        Line(((d.depot.lon, d.depot.lat), (d.snap.lon, d.snap.lat)), label=f"{d.snap.dist_m:.0f} m")
        for d in summary.depots
        if d.snap is not None and d.snap.dist_m > 0
    )

    def points(ds: list[DepotSnap]) -> tuple[Point, ...]:
        return tuple(
            Point(d.depot.lon, d.depot.lat, label=f"{d.depot.id} - {d.depot.name}", popup=_popup(d))
            for d in ds
        )

    extra = {
        "road nodes": f"{net.num_nodes:,}",
        "road edges": f"{net.num_edges:,}",
        "operating area": f"{net.area_km2:.1f} km²",
        "depots": f"1 warehouse, {len(st)} stations",
    }
    if summary.longest is not None:
        leg = summary.longest
        extra["longest depot leg"] = (
            f"{leg.source} → {leg.target}: {leg.dist_m / 1000:.1f} km, {leg.time_s / 60:.0f} min"
        )
    return MapSpec(
        title=f"{site.name}: road network and operating area",
        notes=(f"{site.config_file.name} · van top speed {net.van.top_speed_kmh:g} km/h",),
        layers=(
            area_layer(net),
            *road_layers(net),
            LineLayer(
                name="Snap to road", lines=snap_lines, color="#333333", width_px=1.2, dashed=True
            ),
            PointLayer(
                name="Stations",
                points=points(st),
                color=STATION_COLOR,
                radius_px=6,
                marker="circle",
                show_labels=True,
            ),
            PointLayer(
                name="Warehouse",
                points=points(wh),
                color=WAREHOUSE_COLOR,
                radius_px=7,
                marker="square",
                show_labels=True,
            ),
        ),
        extra=extra,
    )


def base_map(net: RoadNetwork) -> MapSpec:
    """What every live map of the site sits on: the operating area, the roads, the depots
    (the console draws its vans, routes and parcels over it)."""
    site = net.site

    def depot_points(warehouse: bool) -> tuple[Point, ...]:
        return tuple(
            Point(
                d.lon,
                d.lat,
                label=f"{d.id} - {d.name}",
                popup=f"{d.id} ({'warehouse' if warehouse else 'station'})\n{d.name}\n"
                f"vans: {d.vans}",
            )
            for d in site.depots
            if (d.id == site.warehouse.id) == warehouse
        )

    return MapSpec(
        title=f"{site.name}: live",
        layers=(
            area_layer(net),
            *road_layers(net),
            PointLayer(
                name="Stations",
                points=depot_points(False),
                color=STATION_COLOR,
                radius_px=6,
                show_labels=True,
            ),
            PointLayer(
                name="Warehouse",
                points=depot_points(True),
                color=WAREHOUSE_COLOR,
                radius_px=7,
                marker="square",
                show_labels=True,
            ),
        ),
    )
