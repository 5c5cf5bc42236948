"""The terminal side of a simulated day: progress bars while it runs, the KPIs after.

Shared by ``fleet-sim run`` and ``fleet demo``.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from sim.clock import format_day_s
from sim.runner import Outcome, Watcher
from sim.scenario import Scenario


class RichWatcher(Watcher):
    """Two bars: preparing the day, then the day itself (simulated time, parcels, vans)."""

    def __init__(self, console: Console, scenario: Scenario, parcels_hint: int) -> None:
        self.console = console
        self.scenario = scenario
        self.parcels_hint = parcels_hint
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._prep: TaskID | None = None
        self._day: TaskID | None = None
        self._report: TaskID | None = None
        self._last_draw = 0.0

    def __enter__(self) -> RichWatcher:
        self.progress.__enter__()
        self._prep = self.progress.add_task("preparing the day", total=1.0, detail="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def preparing(self, stage: str, fraction: float) -> None:
        if self._prep is not None:
            self.progress.update(self._prep, completed=fraction, detail=stage)

    def running(self, t_s: float, delivered: int, active: int) -> None:
        run = self.scenario.run
        if self._day is None:
            if self._prep is not None:
                self.progress.update(self._prep, completed=1.0, detail="ready")
            self._day = self.progress.add_task(
                "simulated day", total=float(run.end_s - run.start_s), detail=""
            )
        now = time.monotonic()
        if now - self._last_draw < 0.2:
            return
        self._last_draw = now
        self.progress.update(
            self._day,
            completed=max(0.0, min(t_s, run.end_s) - run.start_s),
            detail=f"{format_day_s(t_s)}  delivered {delivered}/{self.parcels_hint}  "
            f"vans active {active}",
        )

    def ran(self, t_s: float, delivered: int) -> None:
        self._last_draw = 0.0
        self.running(t_s, delivered, 0)
        if self._day is not None:
            run = self.scenario.run
            self.progress.update(self._day, completed=float(run.end_s - run.start_s))

    def reporting(self) -> None:
        self._report = self.progress.add_task("writing the report", total=1.0, detail="")

    def reported(self) -> None:
        if self._report is not None:
            self.progress.update(self._report, completed=1.0)


def kpi_table(outcome: Outcome) -> Table:
    k = outcome.kpis
    table = Table(title=f"{k.scenario} · {k.mode} mode", show_header=True, header_style="bold")
    table.add_column("KPI")
    table.add_column("value", justify="right")

    def pct(n: int) -> str:
        return f"{n} ({100.0 * n / k.parcels:.1f} %)" if k.parcels else str(n)

    rows = [
        ("parcels", str(k.parcels)),
        ("delivered on time", pct(k.on_time)),
        ("delivered late", pct(k.late)),
        ("delivered early (before the window)", pct(k.early)),
        ("failed", pct(k.failed)),
        ("urgent on time", f"{k.urgent_on_time} of {k.urgent}"),
        (
            "km driven (loaded / empty)",
            f"{k.km_driven:,.1f} ({k.km_loaded:,.1f} / {k.km_empty:,.1f})",
        ),
        ("energy drawn", f"{k.energy_kwh:,.1f} kWh"),
        ("lowest state of charge", f"{k.lowest_soc_pct:.1f} % ({k.lowest_soc_van or '-'})"),
        ("utilisation kg / m³", f"{k.utilisation_kg_pct:.1f} % / {k.utilisation_m3_pct:.1f} %"),
        ("vans used", f"{k.vans_used} of {k.vans}"),
        (
            "re-plans",
            f"{k.replans}"
            + (
                " (" + ", ".join(f"{c} {n}" for c, n in k.replans_by_cause.items()) + ")"
                if k.replans
                else ""
            ),
        ),
    ]
    for b in k.breakdowns:
        recovered = f"{b.recovery_s / 60:.0f} min" if b.recovery_s is not None else "not recovered"
        rows.append(
            (f"breakdown {b.van} at {format_day_s(b.at_s)}", f"{b.parcels} parcels, {recovered}")
        )
    rows += [
        (
            "integrity: twice / never loaded / not there / lost",
            f"{k.delivered_twice} / {k.delivered_unloaded} / {k.loaded_unavailable} / {k.lost}",
        ),
        ("MQTT messages lost", str(k.messages_lost)),
        (
            "simulated / wall",
            f"{k.sim_s / 3600:.1f} h in {k.wall_s:.1f} s (×{k.speedup:,.0f})",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
