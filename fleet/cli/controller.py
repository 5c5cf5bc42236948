"""``fleet controller run``: the controller service, with its store, keys and road network."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fleet.cli.control import DEFAULT_BROKER, Broker, Login, Prefix, Tls, broker_address
from fleet.model import load_site, load_van_spec
from fleet.paths import config_dir, default_site_file, default_van_file
from fleet.protocol import Topics
from fleet.protocol.clock import Clock, ScaledClock, WallClock

console = Console(stderr=True)
controller_app = typer.Typer(
    name="controller", help="Run the fleet controller.", no_args_is_help=True
)
DEFAULT_KEY = Path("secrets/controller/signing-master.key")


@controller_app.command("run")
def run(
    db: Annotated[Path, typer.Option("--db", help="The store (SQLite, WAL).")] = Path("fleet.db"),
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    site_file: Annotated[
        Path | None, typer.Option("--site", help="Site config (default: configs/sites/porto.toml).")
    ] = None,
    van_file: Annotated[
        Path | None, typer.Option("--van", help="Van config (default: configs/van.toml).")
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="Controller tuning (default: configs/controller.toml)."),
    ] = None,
    key: Annotated[
        Path,
        typer.Option(
            "--key",
            help="Master signing key (controller/signing-master.key of `fleet broker "
            "credentials`).",
        ),
    ] = DEFAULT_KEY,
    create_key: Annotated[
        bool, typer.Option("--create-key", help="Create --key if it does not exist (mode 600).")
    ] = False,
    time_factor: Annotated[
        float,
        typer.Option(
            "--time-factor", help="Run the clock this many times faster (simulation); 1 = wall."
        ),
    ] = 1.0,
    durable: Annotated[
        bool,
        typer.Option(
            "--durable", help="fsync every commit (survives power loss, not only a killed process)."
        ),
    ] = False,
    start_epoch: Annotated[
        float | None,
        typer.Option("--start-epoch", help="With --time-factor: UTC epoch seconds to start at."),
    ] = None,
) -> None:
    """Run the controller until Ctrl-C: dispatch plans, track vans, re-plan on events.

    It resumes from --db after a restart, even after kill -9: nothing dispatched is lost and
    no order goes out twice with different content.
    """
    # The service, the planner and the road graph load when the command runs (fast --help).
    from fleet.control.config import load_controller_config
    from fleet.control.keys import create_master_key, read_master_key
    from fleet.control.service import ControllerService, settle_heap
    from fleet.control.site_planning import SitePlanning, site_roster
    from fleet.roads import load_network
    from fleet.store import SqliteStore

    config = load_controller_config(config_file or config_dir() / "controller.toml")
    van = load_van_spec(van_file or default_van_file())
    site = load_site(site_file or default_site_file())
    master = create_master_key(key) if create_key and not key.exists() else read_master_key(key)
    address = broker_address(broker, login, tls)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{site.name}: road network", total=1.0)

        def report(stage: str, fraction: float) -> None:
            progress.update(task, description=f"{site.name}: {stage}", completed=fraction)

        net = load_network(site, van, progress=report)
    planning = SitePlanning(site, van, net, replan_time_limit_s=config.replan_time_limit_s)
    clock: Clock = (
        WallClock()
        if time_factor == 1.0
        else ScaledClock(start_epoch if start_epoch is not None else time.time(), time_factor)
    )
    with SqliteStore(db, durable=durable) as store:
        service = ControllerService(
            address=address,
            store=store,
            config=config,
            van=van,
            roster=site_roster(site),
            clock=clock,
            master_key=master,
            planning=planning,
            topics=Topics(topic_prefix),
        )
        console.print(
            f"controller {config.name}: site {site.name} ({len(service.core.roster)} vans), "
            f"broker {address}, store {db} (Ctrl-C to stop)",
            highlight=False,
        )

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, service.stop)
            await service.run()

        settle_heap()
        asyncio.run(main())


def register(app: typer.Typer) -> None:
    app.add_typer(controller_app, name="controller")
