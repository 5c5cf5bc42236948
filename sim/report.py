"""The run's report: ``report.md`` and ``report.html`` from one outline, plots beside them.

``write_report`` lays the KPIs, the events and the per-van figures out once, as an outline of
headings, paragraphs, tables and images, and renders it twice: Markdown (images as files
beside it) and a self-contained HTML page (images inlined, the route map embedded).
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from fleet.roads import RoadNetwork
from sim.clock import format_day_s
from sim.errors import ReportError
from sim.kpi import Kpis
from sim.plots import plot_deliveries, plot_soc, plot_utilisation
from sim.trace import Trace

MAP_FILE = "map.html"


@dataclass(slots=True)
class _Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(slots=True)
class _Image:
    file: str
    caption: str


@dataclass(slots=True)
class _Section:
    title: str
    blocks: list[str | _Table | _Image] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What was run, for the report's header."""

    scenario: str
    description: str
    site: str
    day: str
    mode: str
    seed: int
    vans: int
    parcels: int
    speedup_asked: float | None  # full stack: the clock's factor; fast: None
    notes: tuple[str, ...] = ()


def _pct(n: int, of: int) -> str:
    return f"{100.0 * n / of:.1f} %" if of else "—"


def _dur(s: float | None) -> str:
    if s is None:
        return "not recovered"
    s = round(s)
    return f"{s // 3600} h {s // 60 % 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def _outline(
    info: RunInfo, trace: Trace, k: Kpis, images: list[_Image], has_map: bool
) -> list[_Section]:
    speed = f"×{k.speedup:,.0f}" if k.wall_s > 0 else "—"
    head = _Section("Run")
    head.blocks.append(
        f"Scenario **{info.scenario}** on {info.site}, {info.day}, seed {info.seed}, "
        f"**{info.mode}** mode. {info.description}".strip()
    )
    head.blocks.append(
        f"Simulated {format_day_s(trace.start_s)}–{format_day_s(trace.end_s)} "
        f"({k.sim_s / 3600:.1f} h) in {k.wall_s:.1f} s of wall time ({speed} real time"
        + (f"; clock factor {info.speedup_asked:g}" if info.speedup_asked else "")
        + f"). {info.vans} vans, {info.parcels} parcels."
    )
    head.blocks.extend(info.notes)

    deliveries = _Section("Deliveries")
    rows = [
        ["parcels", str(k.parcels), ""],
        ["delivered", str(k.delivered), _pct(k.delivered, k.parcels)],
        ["on time", str(k.on_time), _pct(k.on_time, k.parcels)],
        ["late", str(k.late), _pct(k.late, k.parcels)],
        ["early", str(k.early), _pct(k.early, k.parcels)],
        ["failed", str(k.failed), _pct(k.failed, k.parcels)],
    ]
    rows.extend([f"failed: {r}", str(n), _pct(n, k.parcels)] for r, n in k.failed_by_reason.items())
    rows.append(
        ["urgent on time", f"{k.urgent_on_time} of {k.urgent}", _pct(k.urgent_on_time, k.urgent)]
    )
    if k.late:
        rows.append(["mean lateness", _dur(k.mean_late_by_s), ""])
    deliveries.blocks.append(_Table(["", "parcels", "share"], rows))

    fleet = _Section("Fleet")
    fleet.blocks.append(
        _Table(
            ["", "value"],
            [
                ["vans used", f"{k.vans_used} of {k.vans}"],
                ["km driven", f"{k.km_driven:,.1f}"],
                ["km loaded / empty", f"{k.km_loaded:,.1f} / {k.km_empty:,.1f}"],
                ["energy drawn (kWh)", f"{k.energy_kwh:,.1f}"],
                ["energy charged (kWh)", f"{k.charged_kwh:,.1f}"],
                ["lowest state of charge", f"{k.lowest_soc_pct:.1f} % ({k.lowest_soc_van or '—'})"],
                ["utilisation by kg", f"{k.utilisation_kg_pct:.1f} %"],
                ["utilisation by m³", f"{k.utilisation_m3_pct:.1f} %"],
            ],
        )
    )

    events = _Section("Events and re-plans")
    causes = ", ".join(f"{c}: {n}" for c, n in k.replans_by_cause.items()) or "none"
    events.blocks.append(f"Re-plans: {k.replans} ({causes}).")
    if k.breakdowns:
        events.blocks.append(
            _Table(
                ["breakdown", "van", "parcels", "on other vans", "time to recover"],
                [
                    [
                        format_day_s(b.at_s),
                        b.van,
                        str(b.parcels),
                        str(b.recovered),
                        _dur(b.recovery_s),
                    ]
                    for b in k.breakdowns
                ],
            )
        )
    timeline: list[tuple[float, list[str]]] = []
    timeline.extend(
        (b.t_s, [format_day_s(b.t_s), "breakdown", b.van, f"{len(b.parcels)} parcels affected"])
        for b in trace.breakdowns
    )
    for c in trace.closures:
        until = f" until {format_day_s(c.until_s)}" if c.until_s is not None else ""
        timeline.append(
            (
                c.t_s,
                [
                    format_day_s(c.t_s),
                    "road closure",
                    "",
                    f"{len(c.lines)} road segments closed{until}",
                ],
            )
        )
    timeline.extend(
        (i.t_s, [format_day_s(i.t_s), i.kind.replace("_", " "), i.van or "", i.detail])
        for i in trace.incidents
    )
    timeline.extend(
        (
            r.t_s,
            [
                format_day_s(r.t_s),
                f"re-plan ({r.cause})",
                "",
                f"{r.detail}; {r.moved_parcels} parcels changed van",
            ],
        )
        for r in trace.replans
    )
    if timeline:
        events.blocks.append(
            _Table(
                ["time", "event", "van", "detail"],
                [row for _, row in sorted(timeline, key=lambda e: e[0])],
            )
        )

    integrity = _Section("Integrity")
    integrity.blocks.append(
        _Table(
            ["check", "count"],
            [
                ["parcels delivered twice", str(k.delivered_twice)],
                ["delivered by a van that never loaded them", str(k.delivered_unloaded)],
                ["loaded where the parcel was not (at that time)", str(k.loaded_unavailable)],
                ["parcels lost (neither delivered nor failed with a reason)", str(k.lost)],
                ["MQTT messages lost", str(k.messages_lost)],
                ["serial frames corrupted (caught by CRC, resent)", str(k.serial_frames_corrupted)],
            ],
        )
    )

    plots = _Section("Plots")
    plots.blocks.extend(images)
    sections = [head, deliveries, fleet, events, integrity, plots]
    if has_map:
        sections.append(
            _Section(
                "Map",
                [
                    f"Routes actually driven, with the warehouse, stations, breakdowns and road "
                    f"closures marked: [{MAP_FILE}]({MAP_FILE}). Map data © OpenStreetMap "
                    "contributors (ODbL)."
                ],
            )
        )
    per_van = _Section("Per van")
    per_van.blocks.append(
        _Table(
            [
                "van",
                "trips",
                "delivered",
                "km",
                "km loaded",
                "kWh",
                "lowest SoC %",
                "util. kg %",
                "util. m³ %",
            ],
            [
                [
                    v.van,
                    str(v.trips),
                    str(v.delivered),
                    f"{v.km:.1f}",
                    f"{v.km_loaded:.1f}",
                    f"{v.energy_kwh:.1f}",
                    f"{v.lowest_soc_pct:.1f}",
                    f"{v.utilisation_kg_pct:.1f}",
                    f"{v.utilisation_m3_pct:.1f}",
                ]
                for v in k.per_van
            ],
        )
    )
    sections.append(per_van)
    return sections


# -- renderers -----------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    """One table cell: no line breaks, no stray column bars."""
    return " ".join(text.split()).replace("|", "\\|")


def _render_md(title: str, sections: list[_Section]) -> str:
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, _Table):
                out.append("| " + " | ".join(b.header) + " |")
                out.append("|" + "|".join("---" for _ in b.header) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                out.append("")
            else:
                out += [f"![{b.caption}]({b.file})", ""]
    return "\n".join(out)


def _html_inline(text: str) -> str:
    """Escape, then turn the two Markdown marks the outline uses (**bold**, [a](b)) into HTML."""
    esc = html.escape(text)
    esc = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", esc)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', esc)


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3;text-align:left}td{text-align:right}td:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}figure{margin:0 0 1em}
iframe{width:100%;height:640px;border:1px solid #ccc}
"""


def _render_html(title: str, sections: list[_Section], out_dir: Path, map_html: Path | None) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, str):
                parts.append(f"<p>{_html_inline(b)}</p>")
            elif isinstance(b, _Table):
                parts.append(
                    "<table><tr>"
                    + "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
                    + "</tr>"
                )
                parts.extend(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                    for row in b.rows
                )
                parts.append("</table>")
            else:
                data = base64.b64encode((out_dir / b.file).read_bytes()).decode("ascii")
                cap = html.escape(b.caption)
                parts.append(
                    f"<figure><img alt='{cap}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{cap}</figcaption></figure>"
                )
        if sec.title == "Map" and map_html is not None:
            # srcdoc keeps the report one self-contained file; the map also stands alone.
            doc = html.escape(map_html.read_text(), quote=True)
            parts.append(f'<iframe title="route map" srcdoc="{doc}"></iframe>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    out_dir: Path,
    info: RunInfo,
    trace: Trace,
    kpis: Kpis,
    *,
    map_html: Path | None = None,
) -> Path:
    """Write ``report.md``, ``report.html``, the plots, ``kpis.json`` and ``trace.json``.

    ``map_html`` is the route map already written into ``out_dir`` (it is linked from the
    Markdown and embedded in the HTML). Returns the path of ``report.html``.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        images = [
            _Image(
                plot_deliveries(trace, out_dir / "deliveries.png").name, "Deliveries over the day"
            ),
            _Image(plot_soc(trace, out_dir / "soc.png").name, "State of charge of each van"),
            _Image(plot_utilisation(kpis, out_dir / "utilisation.png").name, "Utilisation per van"),
        ]
        title = f"fleet simulation — {info.scenario} ({info.mode} mode)"
        sections = _outline(info, trace, kpis, images, map_html is not None)
        (out_dir / "report.md").write_text(_render_md(title, sections) + "\n")
        page = out_dir / "report.html"
        page.write_text(_render_html(title, sections, out_dir, map_html))
        (out_dir / "kpis.json").write_text(json.dumps(kpis.to_json(), indent=1) + "\n")
        trace.write_json(out_dir / "trace.json")
    except OSError as exc:
        raise ReportError(f"cannot write the report into {out_dir}: {exc}") from exc
    return page


def write_run_report(
    out_dir: Path,
    trace: Trace,
    kpis: Kpis,
    *,
    net: RoadNetwork,
    info: RunInfo,
) -> Path:
    """The whole report of a run: the route map (when routes were kept), then the rest."""
    from sim.routes_map import write_routes_map

    out_dir.mkdir(parents=True, exist_ok=True)
    map_path: Path | None = None
    if any(d.path for d in trace.drives):
        title = f"{info.scenario} ({info.mode} mode): routes driven on {info.day}"
        try:
            map_path = write_routes_map(trace, net, out_dir / MAP_FILE, title)
        except OSError as exc:
            raise ReportError(f"cannot write the map into {out_dir}: {exc}") from exc
    return write_report(out_dir, info, trace, kpis, map_html=map_path)
