"""``fleet-sim run``: one simulated day of a scenario, in the full stack or the fast mode."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fleet.errors import ConfigError
from sim.console import RichWatcher, kpi_table
from sim.runner import Mode, run_day
from sim.scenario import load_scenario, resolve_scenario

console = Console()


def run(
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            "-s",
            help="A scenario file, or the name of a shipped one (normal, heavy, bad_day, "
            "poa_small, demo; configs/scenarios/).",
        ),
    ],
    vans: Annotated[
        int | None, typer.Option("--vans", help="Resize the fleet to this many vans.")
    ] = None,
    parcels: Annotated[
        int | None, typer.Option("--parcels", help="Draw this many parcels instead.")
    ] = None,
    speedup: Annotated[
        float | None,
        typer.Option(
            "--speedup",
            help="Full stack: simulated seconds per wall second (default: the scenario's).",
        ),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="Fast mode: in-process, no broker, as fast as possible (large fleets).",
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the day's demand.")] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write report.md, report.html, plots and a map here."),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            help="Full stack: an MQTT broker to use (mqtt://HOST:PORT, e.g. Mosquitto); "
            "default: an embedded one, started for the run.",
        ),
    ] = None,
    plan_iterations: Annotated[
        int | None,
        typer.Option(
            "--plan-iterations",
            help="Cap the planner's search (the plan then does not depend on the machine).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """Simulate one delivery day of a scenario and print its KPIs.

    By default every van is a simulated VCU behind a real firmware bridge, all traffic goes
    through an MQTT broker and the real controller decides (the full stack, at --speedup).
    With --fast the same vans, controller core and re-planner run in one process, as fast as
    the machine allows.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("amqtt").setLevel(logging.ERROR)
        logging.getLogger("transitions").setLevel(logging.ERROR)
    if fast and (speedup is not None or broker is not None):
        raise ConfigError(
            "--fast runs without a broker and as fast as it can: drop --speedup and --broker"
        )
    sc = load_scenario(resolve_scenario(scenario)).with_overrides(
        vans=vans, parcels=parcels, seed=seed, speedup=speedup
    )
    mode: Mode = "fast" if fast else "full"
    how = "fast mode" if fast else f"full stack at ×{sc.run.speedup:g}"
    console.print(
        f"[bold]{sc.name}[/]: {sc.site.name}, {sc.day}, {sc.fleet.total} vans, "
        f"{sc.demand.parcels} parcels, {len(sc.events)} events; {how}",
        highlight=False,
    )
    with RichWatcher(console, sc, sc.demand.parcels) as watcher:
        outcome = run_day(
            sc,
            mode=mode,
            speedup=sc.run.speedup,
            broker_url=broker,
            report_dir=report,
            watcher=watcher,
            max_iterations=plan_iterations,
        )
    console.print(kpi_table(outcome))
    if outcome.report is not None:
        console.print(f"report: {outcome.report}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
