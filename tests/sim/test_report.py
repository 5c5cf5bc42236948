"""The report: Markdown and a self-contained HTML page with the KPIs, plots and events."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fleet.model import DepotId, VanId, load_van_spec
from sim.kpi import compute_kpis
from sim.report import RunInfo, write_report
from sim.trace import Departure, Drive, Incident, SocSample, Trace

PNG = b"\x89PNG\r\n\x1a\n"


def _info(trace: Trace) -> RunInfo:
    return RunInfo(
        scenario="t",
        description="a test day",
        site="Test city",
        day="2026-11-24",
        mode="fast",
        seed=1,
        vans=len(trace.vans),
        parcels=len(trace.parcels),
        speedup_asked=None,
    )


def test_report_holds_kpis_events_and_plots(
    tmp_path: Path, van_file: Path, make_trace: Callable[[], Trace]
) -> None:
    trace = make_trace()
    trace.wall_s = 2.0
    trace.incidents.append(Incident(5000.0, "replan_failed", None, "plan breaks:\n  a | b"))
    kpis = compute_kpis(trace, load_van_spec(van_file))
    map_file = tmp_path / "map.html"
    map_file.write_text("<html><body><svg id='routes'></svg></body></html>")
    page = write_report(tmp_path, _info(trace), trace, kpis, map_html=map_file)
    md = (tmp_path / "report.md").read_text()
    assert "| on time | 3 | 60.0 % |" in md
    assert "| failed: too_heavy | 1 | 20.0 % |" in md
    assert "| 01:06:40 | ST-1-01 | 2 | 2 | 35 min 00 s |" in md  # breakdown recovered in 2100 s
    assert "Re-plans: 1 (breakdown: 1)." in md
    assert "| plan breaks: a \\| b |" in md  # one line per row, bars escaped
    assert "![Deliveries over the day](deliveries.png)" in md
    assert "(map.html)" in md
    for name in ("deliveries.png", "soc.png", "utilisation.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 3  # self-contained: plots inlined
    assert "srcdoc=" in text and "&lt;svg id=&#x27;routes&#x27;&gt;" in text
    assert "<strong>t</strong>" in text
    assert json.loads((tmp_path / "kpis.json").read_text())["on_time"] == 3
    assert json.loads((tmp_path / "trace.json").read_text())["mode"] == "fast"


def test_report_of_a_large_fleet_shows_the_spread(tmp_path: Path, van_file: Path) -> None:
    trace = Trace(scenario="big", mode="fast", seed=1, start_s=21600.0, end_s=72000.0)
    for i in range(120):
        van = VanId(f"ST-{i:03d}")
        trace.vans[van] = DepotId("ST")
        trace.departures.append(Departure(van, 22000.0, 100.0 + i, 2.0 + i / 10, 10))
        trace.drives.append(Drive(van, 22000.0, 30000.0, 50_000.0, 15.0, 5, ()))
        for h in range(7, 20):
            trace.soc.append(SocSample(van, h * 3600.0, 100.0 - (h - 6) * (2 + i % 5)))
    trace.finish(72000.0, {})
    kpis = compute_kpis(trace, load_van_spec(van_file))
    write_report(tmp_path, _info(trace), trace, kpis)
    md = (tmp_path / "report.md").read_text()
    assert "## Map" not in md  # no map given: no dangling link
    assert md.count("| ST-") == 120
    assert (tmp_path / "soc.png").stat().st_size > 10_000
