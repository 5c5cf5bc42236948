"""``fleet broker credentials``: logins, ACL, signing keys and TLS material for one site."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from fleet.model.site import load_site
from fleet.paths import default_site_file
from fleet.security.credentials import (
    DEFAULT_BROKER_HOSTS,
    CredentialsOptions,
    build_credentials,
    identity_summary,
    write_credentials,
)

console = Console()
BROKER_GROUP = "broker"


def credentials(
    site: Annotated[
        Path | None,
        typer.Option("--site", help="Site config (TOML); default: configs/sites/porto.toml."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Directory to create (refused if it holds files).")
    ] = Path("secrets"),
    tls: Annotated[
        bool,
        typer.Option(
            "--tls", help="Also make a throwaway CA, a server and a client certificate each."
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace credentials an earlier run wrote into --out.")
    ] = False,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Name or address clients use for the broker (repeat; the first goes in the "
            "login files, all go in the server certificate) [default: localhost, 127.0.0.1].",
        ),
    ] = None,
    port: Annotated[
        int,
        typer.Option(
            "--port", help="Port of the operators' listener (controller, dispatcher, console)."
        ),
    ] = 1883,
    listen: Annotated[
        str, typer.Option("--listen", help="Address of the operators' listener ('' = all).")
    ] = "127.0.0.1",
    van_port: Annotated[
        int,
        typer.Option(
            "--van-port", help="Port of the vans' password listener (client id = van id)."
        ),
    ] = 1884,
    van_listen: Annotated[
        str, typer.Option("--van-listen", help="Address of the vans' listener ('' = all).")
    ] = "127.0.0.1",
    tls_port: Annotated[int, typer.Option("--tls-port", help="Port of the TLS listener.")] = 8883,
    tls_listen: Annotated[
        str, typer.Option("--tls-listen", help="Address of the TLS listener ('' = all).")
    ] = "",
    days: Annotated[
        int, typer.Option("--days", help="Validity of the certificates, in days.")
    ] = 365,
    key_generation: Annotated[
        int,
        typer.Option(
            "--key-generation", help="Signing-key generation; raise it to rotate every van key."
        ),
    ] = 1,
) -> None:
    """Generate per-van, controller and dispatcher broker credentials and signing keys.

    Writes Mosquitto password files and an ACL (each van reaches only its own topics), a broker
    config that uses them (a van's client id is bound to its van id on every listener it
    can open), one login file per identity, the controller's master signing
    secret and each van's own key, and with --tls a CA plus certificates. Every file is 0600;
    the directory carries a .gitignore so it never reaches a commit.
    """
    site_file = site if site is not None else default_site_file()
    options = CredentialsOptions(
        tls=tls,
        broker_hosts=tuple(host) if host else DEFAULT_BROKER_HOSTS,
        port=port,
        listen=listen,
        van_port=van_port,
        van_listen=van_listen,
        tls_port=tls_port,
        tls_listen=tls_listen,
        days=days,
        key_generation=key_generation,
    )
    loaded = load_site(site_file)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("credentials", total=1.0)

        def progress(what: str, fraction: float) -> None:
            bar.update(task, description=what, completed=fraction)

        built = build_credentials(loaded, out, options, now=datetime.now(UTC), progress=progress)
    written = write_credentials(built, out, force=force)

    table = Table(title=f"Credentials for site {built.site}", show_lines=False)
    table.add_column("username")
    table.add_column("role")
    table.add_column("files in")
    for username, role, directory in identity_summary(built):
        table.add_row(username, role, f"{written.name}/{directory}")
    console.print(table)
    console.print(
        f"Wrote {len(built.files) + 1} files to {written} (all 0600). Start a broker with:\n"
        f"  mosquitto -c {written / 'broker' / 'mosquitto.conf'}\n"
        "Give each van only its own vans/<van_id>/ directory; keep ca/ca.key offline.",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``credentials`` to the ``broker`` group (creating the group if nobody has yet)."""
    for group in app.registered_groups:
        if group.name == BROKER_GROUP and group.typer_instance is not None:
            group.typer_instance.command("credentials")(credentials)
            return
    broker = typer.Typer(
        name=BROKER_GROUP, help="Run and secure the MQTT broker.", no_args_is_help=True
    )
    broker.command("credentials")(credentials)
    app.add_typer(broker, name=BROKER_GROUP)
