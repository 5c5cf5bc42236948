"""Static maps (PNG, SVG, PDF) with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch
from matplotlib.path import Path as MplPath
from matplotlib.patheffects import withStroke

from fleet.viz.layers import LineLayer, MapSpec, PointLayer, PolygonLayer

_MARKERS = {"circle": "o", "square": "s", "triangle": "^", "diamond": "D"}


def write_image(spec: MapSpec, path: Path, *, width_in: float = 11.0, dpi: int = 150) -> None:
    """Draw ``spec`` into ``path``; the format follows the suffix (.png, .svg, .pdf)."""
    min_lon, min_lat, max_lon, max_lat = spec.bounds()
    mid_lat = (min_lat + max_lat) / 2
    aspect = 1.0 / max(math.cos(math.radians(mid_lat)), 1e-6)  # degrees lat per degree lon
    span_x = max(max_lon - min_lon, 1e-6)
    span_y = max(max_lat - min_lat, 1e-6) * aspect
    height_in = min(max(width_in * span_y / span_x, 4.0), 16.0) + 0.8
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.05, 0.05, 0.9, 0.88))
    ax.set_facecolor("#f4f3ef")
    handles: list[matplotlib.artist.Artist] = []
    for z, layer in enumerate(spec.layers):
        if not layer.visible:
            continue
        if isinstance(layer, PolygonLayer):
            for ring_set in _polygon_paths(layer):
                ax.add_patch(
                    PathPatch(
                        ring_set,
                        facecolor=_rgba(layer.fill, layer.fill_opacity),
                        edgecolor=layer.edge,
                        linewidth=layer.width_px * 0.75,
                        zorder=z,
                    )
                )
            handles.append(
                Patch(facecolor=_rgba(layer.fill, 0.35), edgecolor=layer.edge, label=layer.name)
            )
        elif isinstance(layer, LineLayer):
            if layer.lines:
                colors = [line.color or layer.color for line in layer.lines]
                ax.add_collection(
                    LineCollection(
                        [list(line.coords) for line in layer.lines],
                        colors=colors,
                        linewidths=layer.width_px * 0.6,
                        linestyles="dashed" if layer.dashed else "solid",
                        alpha=layer.opacity,
                        zorder=z,
                        capstyle="round",
                        joinstyle="round",
                    )
                )
            handles.append(
                Line2D(
                    [],
                    [],
                    color=layer.color,
                    linewidth=max(1.5, layer.width_px * 0.6),
                    linestyle="--" if layer.dashed else "-",
                    label=layer.name,
                )
            )
        elif isinstance(layer, PointLayer):
            if layer.points:
                ax.scatter(
                    [p.lon for p in layer.points],
                    [p.lat for p in layer.points],
                    s=(layer.radius_px * 1.6) ** 2,
                    c=[p.color or layer.color for p in layer.points],
                    marker=_MARKERS[layer.marker],
                    edgecolors="white",
                    linewidths=0.8,
                    zorder=100 + z,
                )
                if layer.show_labels:
                    for p in layer.points:
                        if p.label:
                            ax.annotate(
                                p.label,
                                (p.lon, p.lat),
                                xytext=(layer.radius_px + 2, 2),
                                textcoords="offset points",
                                fontsize=8,
                                zorder=200 + z,
                                path_effects=[withStroke(linewidth=2.5, foreground="white")],
                            )
            handles.append(
                Line2D(
                    [],
                    [],
                    color=layer.color,
                    marker=_MARKERS[layer.marker],
                    linestyle="",
                    markersize=7,
                    markeredgecolor="white",
                    label=layer.name,
                )
            )
    pad_x = span_x * 0.03
    pad_y = (max_lat - min_lat) * 0.03
    ax.set_xlim(min_lon - pad_x, max_lon + pad_x)
    ax.set_ylim(min_lat - pad_y, max_lat + pad_y)
    ax.set_aspect(aspect)
    ax.tick_params(labelsize=7, colors="#666666")
    ax.set_xlabel("longitude (°)", fontsize=7, color="#666666")
    ax.set_ylabel("latitude (°)", fontsize=7, color="#666666")
    title = spec.title + ("\n" + " · ".join(spec.notes) if spec.notes else "")
    ax.set_title(title, fontsize=11, loc="left")
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.9)
    if spec.extra:
        text = "\n".join(f"{k}: {v}" for k, v in spec.extra.items())
        ax.text(
            0.01,
            0.01,
            text,
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#cccccc"},
            zorder=300,
        )
    fig.text(0.99, 0.01, spec.attribution, ha="right", va="bottom", fontsize=7, color="#444444")
    fig.savefig(path, format=path.suffix.lstrip(".").lower())


def _rgba(color: str, alpha: float) -> tuple[float, float, float, float]:
    r, g, b = (int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return r, g, b, alpha


def _polygon_paths(layer: PolygonLayer) -> list[MplPath]:
    """One compound path per ring set, holes included (even-odd filling)."""
    paths = []
    for ring in layer.rings():
        codes = [MplPath.MOVETO] + [MplPath.LINETO] * (len(ring) - 2) + [MplPath.CLOSEPOLY]
        paths.append(MplPath(ring, codes))
    return [MplPath.make_compound_path(*paths)] if paths else []
