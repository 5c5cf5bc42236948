"""``fleet demo``: the whole system on a day in Porto, in two to three minutes.

An embedded MQTT broker, the controller, and a fleet of simulated vans (each a simulated
vehicle control unit behind a real firmware bridge on a pseudo-terminal) run a planned day
at accelerated time; the KPIs are printed and a report with plots and a map is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from fleet.console.server import ConsoleServer
    from sim.full import Companion, StackInfo

console = Console()
DEMO_SCENARIO = "demo"


def console_companion(
    listen: tuple[str, int],
    tokens: dict[str, str],
    on_ready: Callable[[ConsoleServer], None] | None = None,
) -> Companion:
    """The console as a part of a simulated day (``fleet demo --console``, the page tests):
    it joins the run's broker, topics and clock once the stack is up. ``tokens`` maps a user
    name to ``(role, token)`` as ``"role:token"``."""
    from fleet.console.auth import Role, User, Users, token_digest
    from fleet.console.server import ConsoleServer, ConsoleSettings
    from fleet.console.view import ViewConfig
    from fleet.control.site_planning import site_roster
    from fleet.viz.html import map_data
    from fleet.viz.site_map import base_map

    users = Users(
        [
            User(name, Role(spec.partition(":")[0]), token_digest(spec.partition(":")[2]))
            for name, spec in tokens.items()
        ]
    )

    @contextlib.asynccontextmanager
    async def companion(info: StackInfo) -> AsyncIterator[ConsoleServer]:
        site = info.day.scenario.site
        settings = ConsoleSettings(
            host=listen[0],
            port=listen[1],
            view=ViewConfig(
                stale_after_s=info.controller.stale_after_s,
                battery_kwh=info.day.scenario.van.battery_kwh,
            ),
        )
        map_json = json.dumps(map_data(base_map(info.day.net)), separators=(",", ":")).encode()
        server = ConsoleServer(
            settings,
            address=info.address,
            topics=info.topics,
            clock=info.clock,
            site=site,
            map_json=map_json,
            users=users,
            roster=tuple(site_roster(site)),
        )
        async with server:
            if on_ready is not None:
                on_ready(server)
            yield server

    return companion


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
    with_console: Annotated[
        bool,
        typer.Option(
            "--console", help="Serve the dispatcher's console during the day (docs/console.md)."
        ),
    ] = False,
    console_listen: Annotated[
        str, typer.Option("--console-listen", help="Where the console listens (HOST:PORT).")
    ] = "127.0.0.1:8080",
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
    companion = None
    if with_console:
        from fleet.cli.console import _listen
        from fleet.console.auth import new_token

        token = new_token()

        def ready(server: ConsoleServer) -> None:
            console.print(
                f"[bold]console[/]: {server.url}/login#token={token} (dispatcher 'demo'; "
                f"the link logs you in; API docs at {server.url}/docs)",
                highlight=False,
                soft_wrap=True,
            )

        companion = console_companion(
            _listen(console_listen), {"demo": f"dispatcher:{token}"}, ready
        )
    with RichWatcher(console, sc, sc.demand.parcels) as watcher:
        outcome = run_day(
            sc,
            mode="full",
            speedup=sc.run.speedup,
            broker_url=broker,
            report_dir=report,
            watcher=watcher,
            companion=companion,
        )
    console.print(kpi_table(outcome))
    if outcome.report is not None:
        console.print(f"report: {outcome.report}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
