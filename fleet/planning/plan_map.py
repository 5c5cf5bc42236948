"""The plan on the city: one colour per van, stops with their times, unserved parcels."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import replace

from fleet.model.parcel import Parcel
from fleet.model.plan import Leg, Plan, StopKind, VanRoute
from fleet.planning.text import clock, km
from fleet.roads import RoadNetwork
from fleet.viz import Line, LineLayer, MapSpec, Point, PointLayer, area_layer, road_layers

WAREHOUSE_COLOR = "#c0392b"
STATION_COLOR = "#1f5fbf"
UNSERVED_COLOR = "#444444"


def van_colors(n: int) -> list[str]:
    """``n`` well separated colours (golden-ratio hues, two lightness bands)."""
    out = []
    for i in range(n):
        h = (0.07 + i * 0.618033988749895) % 1.0
        lightness = 0.42 if i % 2 == 0 else 0.55
        r, g, b = colorsys.hls_to_rgb(h, lightness, 0.75)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


def _trip_lines(route: VanRoute, color: str) -> list[Line]:
    lines = []
    for trip in route.trips:
        coords: list[tuple[float, float]] = []
        for stop in trip.stops:
            for pt in stop.geometry_in:
                if not coords or coords[-1] != pt:
                    coords.append(pt)
        if len(coords) < 2:
            continue
        end = trip.stops[-1]
        start = trip.stops[0]
        popup = "\n".join(
            [
                f"{route.van_id} trip {trip.index + 1} ({route.leg.value})",
                f"{clock(start.departure_s)} → {clock(end.arrival_s)}",
                f"{len(trip.stops) - 2} stops, {km(end.dist_so_far_m - start.dist_so_far_m)}",
                f"leaves with {start.load_after_kg:.0f} kg, {start.load_after_m3:.2f} m³",
                f"state of charge {start.soc_pct:.0f} % → {end.soc_pct:.0f} %",
            ]
        )
        lines.append(
            Line(
                tuple(coords),
                label=f"{route.van_id} trip {trip.index + 1}",
                popup=popup,
                color=color,
            )
        )
    return lines


def plan_map(plan: Plan, net: RoadNetwork, parcels: Sequence[Parcel] = ()) -> MapSpec:
    colors = dict(zip((r.van_id for r in plan.routes), van_colors(len(plan.routes)), strict=True))
    lh_lines: list[Line] = []
    lm_lines: list[Line] = []
    stops: list[Point] = []
    for r in plan.routes:
        color = colors[r.van_id]
        (lh_lines if r.leg is Leg.LINE_HAUL else lm_lines).extend(_trip_lines(r, color))
        for trip in r.trips:
            for s in trip.stops:
                if s.kind not in (StopKind.DOOR, StopKind.STATION, StopKind.START):
                    continue
                what = s.parcels_delivered or s.parcels_loaded
                head = ", ".join(what[:6]) + (f" (+{len(what) - 6})" if len(what) > 6 else "")
                popup = "\n".join(
                    [
                        f"{s.kind.value} {s.ref}".strip() + f": {head}",
                        f"{r.van_id} trip {trip.index + 1}, stop {s.seq}",
                        f"arrives {clock(s.arrival_s)}, leaves {clock(s.departure_s)}",
                        f"on board after: {s.load_after_kg:.1f} kg, {s.load_after_m3:.3f} m³",
                        f"state of charge {s.soc_pct:.0f} %",
                    ]
                )
                stops.append(
                    Point(
                        s.lon,
                        s.lat,
                        label=f"{r.van_id} {clock(s.arrival_s)}",
                        popup=popup,
                        color=color,
                    )
                )
    by_id = {p.id: p for p in parcels}
    missing = [
        Point(
            by_id[u.parcel_id].lon,
            by_id[u.parcel_id].lat,
            label=f"{u.parcel_id}: {u.reason.value}",
            popup=f"{u.parcel_id} not served ({u.reason.value})\n{u.detail}",
        )
        for u in plan.unserved
        if u.parcel_id in by_id
    ]
    site = net.site
    depots = [
        Point(d.lon, d.lat, label=f"{d.id} - {d.name}", popup=f"{d.id}\n{d.name}\nvans: {d.vans}")
        for d in site.stations
    ]
    wh = site.warehouse
    total = plan.summary
    extra = {
        "day": plan.day.isoformat(),
        "parcels served": f"{total.served:,} of {total.parcels:,}",
        "vans used": f"{total.vans_used} of {total.vans_available}",
        "trips": str(total.trips),
        "distance": f"{km(total.dist_m)} (line haul {km(total.line_haul_dist_m)})",
        "energy": f"{total.energy_kwh:.1f} kWh",
    }
    return MapSpec(
        title=f"{plan.site}: plan for {plan.day.isoformat()}",
        notes=(f"{len(plan.routes)} vans, one colour each; click a route or a stop for details",),
        layers=(
            area_layer(net),
            *(
                replace(layer, color="#c8c8c8", width_px=min(layer.width_px, 1.0))
                for layer in road_layers(net)
            ),
            LineLayer("Line haul", tuple(lh_lines), width_px=3.5, opacity=0.85, hover=True),
            LineLayer("Last mile", tuple(lm_lines), width_px=2.5, opacity=0.85, hover=True),
            PointLayer("Stops", tuple(stops), radius_px=3.5),
            PointLayer(
                "Not served", tuple(missing), color=UNSERVED_COLOR, radius_px=4, marker="diamond"
            ),
            PointLayer(
                "Stations",
                tuple(depots),
                color=STATION_COLOR,
                radius_px=7,
                marker="circle",
                show_labels=True,
            ),
            PointLayer(
                "Warehouse",
                (Point(wh.lon, wh.lat, label=f"{wh.id} - {wh.name}", popup=wh.name),),
                color=WAREHOUSE_COLOR,
                radius_px=8,
                marker="square",
                show_labels=True,
            ),
        ),
        extra=extra,
    )
