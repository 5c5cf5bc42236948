"""``fleet demo``: the whole system on a day in Porto, in two to three minutes.

An embedded MQTT broker, the controller, and a fleet of simulated vans (each a simulated
vehicle control unit behind a real firmware bridge on a pseudo-terminal) run a planned day
at accelerated time; the KPIs are printed and a report with plots and a map is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
DEMO_SCENARIO = "demo"


def demo(
    report: Annotated[
        Path, typer.Option("--report", help="Where to write the report (report.html, plots, map).")
    ] = Path("out/demo"),
    speedup: Annotated[
        float | None,
        typer.Option("--speedup", help="Simulated seconds per wall second (default 600)."),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker", help="Use this MQTT broker (mqtt://HOST:PORT) instead of an embedded one."
        ),
    ] = None,
    scenario: Annotated[
        str, typer.Option("--scenario", help="Another scenario to run (name or file).")
    ] = DEMO_SCENARIO,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """Run a simulated delivery day on the real Porto road network, end to end.

    Plans the day with the real planner, starts an embedded broker, the controller and one
    simulated van per vehicle (a simulated VCU behind a real firmware bridge), runs the day
    at accelerated time with late urgent orders and a breakdown, prints the KPIs and writes
    a report (Markdown and HTML with plots and a map of the routes driven).
    """
    # The simulator (and the planner, roads and controller under it) load only when the
    # command runs, so that `fleet --help` and the other commands start quickly.
    from sim.console import RichWatcher, kpi_table
    from sim.runner import run_day
    from sim.scenario import load_scenario, resolve_scenario

    if not verbose:
        for name in ("amqtt", "transitions", "firmware_bridge", "sim.vcu", "mqtt"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    sc = load_scenario(resolve_scenario(scenario)).with_overrides(speedup=speedup)
    console.print(
        f"[bold]fleet demo[/]: {sc.description}\n"
        f"{sc.site.name}, {sc.day}: {sc.fleet.total} vans "
        f"({sc.fleet.warehouse_vans} at the warehouse, the rest at {len(sc.site.stations)} "
        f"stations), {sc.demand.parcels} parcels; every van a simulated VCU behind a real "
        f"firmware bridge, an embedded MQTT broker, the real controller; "
        f"time ×{sc.run.speedup:g}.",
        highlight=False,
    )
    with RichWatcher(console, sc, sc.demand.parcels) as watcher:
        outcome = run_day(
            sc,
            mode="full",
            speedup=sc.run.speedup,
            broker_url=broker,
            report_dir=report,
            watcher=watcher,
        )
    console.print(kpi_table(outcome))
    if outcome.report is not None:
        console.print(f"report: {outcome.report}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
