"""The ``fleet`` command: one typer app; each command group lives in its own module."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.markup import escape

from fleet import __version__
from fleet.errors import FleetError

app = typer.Typer(
    name="fleet",
    help="Plan, dispatch and watch a fleet of autonomous electric delivery vans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"fleet {__version__}")


def _register() -> None:
    # Each command module defines ``register(app)``, adding its commands or its group;
    # every module is listed here so that `fleet --help` shows them all.
    from fleet.cli import conformance, console, control, controller, credentials, demo, plan, site

    modules: list[object] = [
        site,
        credentials,
        control,
        plan,
        controller,
        demo,
        console,
        conformance,
    ]
    for module in modules:
        module.register(app)  # type: ignore[attr-defined]


_register()


def main() -> None:
    """Entry point: a FleetError becomes one clear line on stderr and exit code 1.

    typer/click handle usage errors themselves (standalone mode: a usage line, exit 2).
    """
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling: no traceback
        sys.exit(130)
    except FleetError as exc:
        # escaped: a message naming a TOML table ("[tls]") is text, not rich markup
        line = f"[bold red]error:[/] {escape(str(exc))}"
        err_console.print(line, highlight=False, soft_wrap=True)
        sys.exit(1)
