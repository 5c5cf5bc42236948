"""The ``fleet-sim`` command: simulated vehicle control units and (later) whole-day simulation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fleet.errors import FleetError
from fleet.model import load_van_spec
from fleet.paths import default_van_file
from fleet.protocol.clock import WallClock

app = typer.Typer(
    name="fleet-sim",
    help="Simulate vans: a vehicle control unit on a serial line, or a whole delivery day.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Simulate vans: a vehicle control unit on a serial line, or a whole delivery day."""


@app.command()
def vcu(
    serial: str = typer.Option(
        "pty",
        "--serial",
        help="pty: a new pseudo-terminal (its path is printed); socket://HOST:PORT: listen "
        "there for a bridge given the same URL; anything else: a pyserial URL or device.",
    ),
    baud: int = typer.Option(115200, "--baud", help="Line rate to pace at; 0 turns pacing off."),
    van_file: Annotated[
        Path | None, typer.Option("--van-file", help="Van config (default configs/van.toml).")
    ] = None,
    lon: float = typer.Option(-8.6110, "--lon", help="Start longitude (degrees)."),
    lat: float = typer.Option(41.1496, "--lat", help="Start latitude (degrees)."),
    soc_pct: float = typer.Option(100.0, "--soc", help="Start state of charge (%)."),
    fault_corrupt: float = typer.Option(
        0.0, "--fault-corrupt", help="Share of line bytes corrupted, each direction (0..1)."
    ),
    fault_drop: float = typer.Option(
        0.0, "--fault-drop", help="Share of line bytes dropped, each direction (0..1)."
    ),
    fault_stall_at: float | None = typer.Option(
        None, "--fault-stall-at", help="Stall the serial side at this uptime (s)."
    ),
    fault_stall_s: float = typer.Option(10.0, "--fault-stall-s", help="How long a stall lasts."),
    fault_fatal_at: float | None = typer.Option(
        None, "--fault-fatal-at", help="Raise a fatal fault at this uptime (s)."
    ),
    fault_reboot_at: float | None = typer.Option(
        None, "--fault-reboot-at", help="Reboot at this uptime (s)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the byte faults."),
    nvm: Annotated[
        Path | None,
        typer.Option(
            "--nvm",
            help="File holding the VCU's non-volatile memory (the e-stop latch), so that it "
            "survives a restart of this process too; default: kept in the process, where it "
            "survives a reboot (SIGUSR1).",
        ),
    ] = None,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    """Run a simulated VCU that a `firmware-bridge run` can connect to.

    SIGUSR1 reboots its firmware in place (a reset: new link session, mission forgotten,
    e-stop latch kept), e.g. `--reset-command "kill -USR1 PID"` for `firmware-bridge
    conformance vcu`."""
    import signal

    from sim.vcu import SimulatedVcu, VcuConfig, VcuFaults, VcuMemory, vcu_port
    from sim.vehicle import Vehicle

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    spec = load_van_spec(van_file or default_van_file())
    try:
        faults = VcuFaults(
            corrupt=fault_corrupt,
            drop=fault_drop,
            stall_at_s=fault_stall_at,
            stall_s=fault_stall_s,
            fatal_at_s=fault_fatal_at,
            reboot_at_s=fault_reboot_at,
            seed=seed,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    from firmware_bridge import wire
    from firmware_bridge.link import LinkConfig

    port = vcu_port(serial)
    config = VcuConfig(baud=baud, link=LinkConfig(wire.Role.VCU, line_baud=baud))
    vehicle = Vehicle(spec, lon=lon, lat=lat, soc_pct=soc_pct)
    memory = VcuMemory(nvm)
    sim = SimulatedVcu(
        port, vehicle, clock=WallClock(), config=config, faults=faults, memory=memory
    )
    console.print(f"simulated VCU ({spec.name}) {port.description}", highlight=False)
    if port.path:
        console.print(f"bridge: firmware-bridge run --serial {port.path} ...", highlight=False)
    console.print(f"reset: kill -USR1 {os.getpid()}", highlight=False)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, sim.request_reboot)
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await sim.run()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    finally:
        port.close()


def _register_run() -> None:
    from sim.run_cli import register  # `fleet-sim run`: a whole simulated day

    register(app)


_register_run()


def main() -> None:
    """Entry point: a FleetError becomes one clear line on stderr and exit code 1."""
    try:
        app(standalone_mode=False)
    except FleetError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # usage errors (typer's bundled click) know how to show themselves
        show = getattr(exc, "show", None)
        code = getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
