"""``firmware-bridge conformance vcu``: the VCU conformance kit from the command line.

Prints one row per case as it ends (a rich table at the end), then one JSON line:
``{"cases": …, "passed": …, "failed": …, "skipped": …, "failed_cases": […], "skipped_cases": […]}``.
Exit code 1 when any case failed, 0 otherwise (skipped cases do not fail the run).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from firmware_bridge.conformance.vcu import (
    CASE_NAMES,
    CaseResult,
    Report,
    Status,
    run_vcu_conformance,
    shell_reset,
)
from firmware_bridge.link import url_opener

STYLE = {Status.PASS: "green", Status.FAIL: "bold red", Status.SKIP: "yellow"}
ONLY_HELP = f"Run only this case (repeatable): {', '.join(CASE_NAMES)}."


def register(app: typer.Typer) -> None:
    """Add ``conformance vcu`` to the ``firmware-bridge`` command."""
    conformance = typer.Typer(
        name="conformance",
        help="Conformance kits: test a VCU (or a van) through its wire only.",
        no_args_is_help=True,
    )

    @conformance.command("vcu")
    def vcu(
        serial: str = typer.Option(
            ...,
            "--serial",
            help="The VCU's line: a device (/dev/ttyUSB0), a pseudo-terminal, "
            "socket://HOST:PORT, any pyserial URL (opened at 115200 baud).",
        ),
        reset_command: str | None = typer.Option(
            None,
            "--reset-command",
            help="A shell command that resets the VCU (e.g. cuts its power, or "
            "`kill -USR1 PID` for fleet-sim vcu). Without it the e-stop latch across a reset "
            "is reported as skipped.",
        ),
        only: Annotated[
            list[str] | None, typer.Option("--only", help=ONLY_HELP, show_default=False)
        ] = None,
        skip: Annotated[
            list[str] | None,
            typer.Option("--skip", help="Skip this case (repeatable); reported as skipped."),
        ] = None,
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    ) -> None:
        """Drive a VCU through scripted cases over its serial line: framing, CRC, sequence
        numbers and wrap-around, NAKs, heartbeat loss, e-stop and its latch across a reset,
        version mismatch, a mission. The van moves a few tens of metres: use a test bench or
        a free area."""
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        console = Console()
        console.print(f"VCU conformance on {serial}", highlight=False)

        def show(result: CaseResult) -> None:
            style = STYLE[result.status]
            console.print(
                f"  [{style}]{result.status.value}[/] {result.name} "
                f"({result.seconds:.1f} s): {result.detail}",
                highlight=False,
                soft_wrap=True,
            )

        reset = shell_reset(reset_command) if reset_command else None
        try:
            report = asyncio.run(
                run_vcu_conformance(
                    url_opener(serial),
                    reset=reset,
                    only=only or (),
                    skip=skip or (),
                    on_result=show,
                )
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        except TimeoutError as exc:
            raise typer.BadParameter(f"--serial {serial}: could not open it in 10 s") from exc
        console.print(table(report))
        print(json.dumps(report.summary()), flush=True)
        raise typer.Exit(1 if report.failed else 0)

    app.add_typer(conformance)


def table(report: Report) -> Table:
    t = Table(title="VCU conformance (serial)")
    t.add_column("case")
    t.add_column("result")
    t.add_column("s", justify="right")
    t.add_column("what was seen")
    for r in report.results:
        style = STYLE[r.status]
        t.add_row(r.name, f"[{style}]{r.status.value}[/]", f"{r.seconds:.1f}", r.detail)
    return t
