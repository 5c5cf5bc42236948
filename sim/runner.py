"""One simulated day from a scenario to its KPIs and report, for ``fleet-sim run`` and
``fleet demo``: prepare the day, run it in the chosen mode, compute the KPIs, write the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sim.day import PreparedDay, prepare_day
from sim.fast import FastRun
from sim.full import Companion, FullRun
from sim.kpi import Kpis, compute_kpis
from sim.report import RunInfo, write_run_report
from sim.scenario import Scenario
from sim.trace import Trace

Mode = Literal["fast", "full"]


class Watcher:
    """What a front end shows while a day runs (the CLI draws progress bars from it)."""

    def preparing(self, stage: str, fraction: float) -> None:
        """Road network, parcels, the morning plan: ``fraction`` of the way (0..1)."""

    def running(self, t_s: float, delivered: int, active: int) -> None:
        """Simulated time (seconds after midnight), parcels delivered, vans driving."""

    def ran(self, t_s: float, delivered: int) -> None:
        """The day is over at ``t_s`` with ``delivered`` parcels handed over."""

    def reporting(self) -> None:
        """Writing the report."""

    def reported(self) -> None:
        """The report is written."""


@dataclass(frozen=True, slots=True)
class Outcome:
    day: PreparedDay
    trace: Trace
    kpis: Kpis
    report: Path | None  # report.html, when a report directory was given
    mode: Mode
    speedup: float | None


def run_day(
    scenario: Scenario,
    *,
    mode: Mode,
    speedup: float | None = None,
    broker_url: str | None = None,
    report_dir: Path | None = None,
    watcher: Watcher | None = None,
    max_iterations: int | None = None,
    companion: Companion | None = None,
) -> Outcome:
    """Prepare ``scenario``'s day, run it in ``mode``, and report on it."""
    w = watcher or Watcher()
    day = prepare_day(scenario, progress=w.preparing, max_iterations=max_iterations)
    progress: Callable[[float, int, int], None] = w.running
    trace: Trace
    if mode == "fast":
        trace = FastRun(day, progress=progress).run()
    else:
        trace = FullRun(
            day, speedup=speedup, broker_url=broker_url, progress=progress, companion=companion
        ).run()
    w.ran(trace.end_s, len({d.parcel for d in trace.delivered}))
    kpis = compute_kpis(trace, scenario.van)
    page: Path | None = None
    if report_dir is not None:
        w.reporting()
        notes = [
            f"The morning plan ({day.plan.summary.served} of {day.plan.summary.parcels} parcels "
            f"known at the start, {day.plan.summary.vans_used} vans) took "
            f"{day.plan_wall_s:.1f} s to make; orders arriving later were handed in every "
            f"{scenario.run.order_batch_s // 60} min."
        ]
        info = RunInfo(
            scenario=scenario.name,
            description=scenario.description,
            site=scenario.site.name,
            day=scenario.day.isoformat(),
            mode=mode,
            seed=scenario.seed,
            vans=scenario.fleet.total,
            parcels=len(day.demand.parcels),
            speedup_asked=(speedup or scenario.run.speedup) if mode == "full" else None,
            notes=tuple(notes),
        )
        page = write_run_report(report_dir, trace, kpis, net=day.net, info=info)
        w.reported()
    return Outcome(day, trace, kpis, page, mode, speedup if mode == "full" else None)
