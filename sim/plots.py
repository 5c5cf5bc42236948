"""The report's plots: deliveries over time, state-of-charge traces, utilisation per van.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global state, no
display needed), saved as PNG.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fleet.model import ParcelId, VanId
from sim.kpi import Kpis
from sim.trace import Trace

_DPI = 110
_MANY_VANS = 40  # above this, plots show the spread instead of one line or bar per van


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return path


def _hours(t_s: np.ndarray) -> np.ndarray:
    return t_s / 3600.0


def _mark_events(ax: Axes, trace: Trace) -> None:
    for i, b in enumerate(trace.breakdowns):
        ax.axvline(b.t_s / 3600.0, color="tab:red", ls="--", lw=1, label=None if i else "breakdown")
    for i, c in enumerate(trace.closures):
        ax.axvline(
            c.t_s / 3600.0, color="tab:purple", ls=":", lw=1, label="road closed" if i else None
        )
    seen: set[str] = set()
    for inc in trace.incidents:
        label = None if inc.kind in seen else inc.kind.replace("_", " ")
        seen.add(inc.kind)
        ax.axvline(inc.t_s / 3600.0, color="tab:gray", ls="-.", lw=0.8, label=label)


def plot_deliveries(trace: Trace, path: Path) -> Path:
    """Cumulative parcels ordered, delivered and delivered late over the day."""
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    first: dict[ParcelId, float] = {}
    for d in sorted(trace.delivered, key=lambda d: d.t_s):
        first.setdefault(d.parcel, d.t_s)
    times = np.sort(np.array(list(first.values()), dtype=np.float64))
    late_t = np.sort(
        np.array(
            [
                t
                for pid, t in first.items()
                if (p := trace.parcels.get(pid)) is not None
                and p.latest_s is not None
                and t > p.latest_s
            ],
            dtype=np.float64,
        )
    )
    ordered = np.sort(np.array([p.ordered_s for p in trace.parcels.values()], dtype=np.float64))
    start, end = trace.start_s, trace.end_s

    def steps(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs = np.concatenate([[start], ts, [end]])
        ys = np.concatenate([[0], np.arange(1, len(ts) + 1), [len(ts)]])
        return _hours(xs), ys

    ax.step(*steps(ordered), where="post", color="tab:gray", label="ordered")
    ax.step(*steps(times), where="post", color="tab:green", label="delivered")
    ax.step(*steps(late_t), where="post", color="tab:orange", label="delivered late")
    _mark_events(ax, trace)
    ax.set_xlim(start / 3600.0, end / 3600.0)
    ax.set_xlabel("time of day (h)")
    ax.set_ylabel("parcels")
    ax.set_title("Deliveries over the day")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_soc(trace: Trace, path: Path) -> Path:
    """State of charge of every van over the day (the spread when the fleet is large)."""
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    series: dict[VanId, list[tuple[float, float]]] = defaultdict(list)
    for s in trace.soc:
        series[s.van].append((s.t_s, s.soc_pct))
    for pts in series.values():  # a van keeps its charge until the day ends
        last = max(pts)
        if last[0] < trace.end_s:
            pts.append((trace.end_s, last[1]))
    if len(series) <= _MANY_VANS:
        for van in sorted(series):
            pts = sorted(series[van])
            ax.plot([t / 3600.0 for t, _ in pts], [v for _, v in pts], lw=1, label=van)
        if len(series) <= 12:
            ax.legend(fontsize=7, ncol=2, loc="lower left")
    else:
        grid = np.linspace(trace.start_s, trace.end_s, 200)
        rows = []
        for van in sorted(series):
            pts = sorted(series[van])
            ts = np.array([t for t, _ in pts])
            vs = np.array([v for _, v in pts])
            rows.append(np.interp(grid, ts, vs, left=vs[0], right=vs[-1]))
        arr = np.vstack(rows)
        h = _hours(grid)
        ax.fill_between(h, arr.min(axis=0), arr.max(axis=0), alpha=0.25, label="min–max")
        q = np.percentile(arr, [10, 50, 90], axis=0)
        ax.fill_between(h, q[0], q[2], alpha=0.35, label="10–90 %")
        ax.plot(h, q[1], color="black", lw=1, label=f"median of {len(series)} vans")
        ax.legend(fontsize=8, loc="lower left")
    _mark_events(ax, trace)
    ax.set_ylim(0, 100)
    ax.set_xlim(trace.start_s / 3600.0, trace.end_s / 3600.0)
    ax.set_xlabel("time of day (h)")
    ax.set_ylabel("state of charge (%)")
    ax.set_title("Battery state of charge")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_utilisation(kpis: Kpis, path: Path) -> Path:
    """Mean load leaving the depot per van, by weight and by volume (a histogram if many)."""
    used = [v for v in kpis.per_van if v.trips > 0]
    if len(used) <= _MANY_VANS:
        fig = Figure(figsize=(8, max(3.0, 0.28 * len(used) + 1.2)))
        ax = fig.add_subplot()
        y = np.arange(len(used))
        ax.barh(y - 0.2, [v.utilisation_kg_pct for v in used], height=0.4, label="by kg")
        ax.barh(y + 0.2, [v.utilisation_m3_pct for v in used], height=0.4, label="by m³")
        ax.set_yticks(y, [v.van for v in used], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("mean load leaving the depot (% of capacity)")
    else:
        fig = Figure(figsize=(8, 4))
        ax = fig.add_subplot()
        bins = [5.0 * i for i in range(21)]
        ax.hist([v.utilisation_kg_pct for v in used], bins=bins, alpha=0.6, label="by kg")
        ax.hist([v.utilisation_m3_pct for v in used], bins=bins, alpha=0.6, label="by m³")
        ax.set_xlabel("mean load leaving the depot (% of capacity)")
        ax.set_ylabel("vans")
    ax.set_xlim(0, 100)
    ax.set_title(f"Utilisation per van ({len(used)} vans used)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
