"""``fleet console``: the dispatcher's web console and HTTP API (``docs/console.md``,
``docs/api.md``), and ``fleet console user add`` for its logins."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fleet.errors import ConfigError
from fleet.paths import config_dir

console = Console(stderr=True)
console_app = typer.Typer(
    help="The dispatcher's web console and HTTP API (docs/console.md, docs/api.md).",
    invoke_without_command=True,
    no_args_is_help=False,
)
user_app = typer.Typer(help="Console logins: per-user tokens with a role.", no_args_is_help=True)
console_app.add_typer(user_app, name="user")

DEFAULT_USERS = Path("secrets/console/users.toml")


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


@console_app.callback()
def console_run(
    ctx: typer.Context,
    broker: Annotated[
        str,
        typer.Option("--broker", envvar="FLEET_BROKER", help="Broker URL: mqtt://host[:port]."),
    ] = "mqtt://127.0.0.1:1883",
    login: Annotated[
        Path | None,
        typer.Option(
            "--login",
            envvar="FLEET_MQTT_LOGIN",
            help="MQTT login file: console/mqtt.toml from `fleet broker credentials`.",
        ),
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="With --login: the broker's TLS listener.")
    ] = False,
    prefix: Annotated[
        str, typer.Option("--topic-prefix", envvar="FLEET_TOPIC_PREFIX", help="Topic prefix.")
    ] = "",
    listen: Annotated[
        str, typer.Option("--listen", help="Address and port to serve on (HOST:PORT).")
    ] = "127.0.0.1:8080",
    users: Annotated[
        Path, typer.Option("--users", help="Users file (`fleet console user add`).")
    ] = DEFAULT_USERS,
    site_file: Annotated[Path | None, typer.Option("--site", help="Site TOML.")] = None,
    van_file: Annotated[Path | None, typer.Option("--van", help="Van TOML.")] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="The controller's TOML (its stale bound is ours)."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="... and this private key (PEM).")
    ] = None,
    late_after_s: Annotated[
        float, typer.Option("--late-after", help="Seconds behind plan that make a parcel late.")
    ] = 900.0,
    time_factor: Annotated[
        float, typer.Option("--time-factor", help="As the controller's (simulation); 1 = wall.")
    ] = 1.0,
    start_epoch: Annotated[
        float | None, typer.Option("--start-epoch", help="With --time-factor: its start.")
    ] = None,
) -> None:
    """Serve the console until Ctrl-C: the live fleet on a map, alerts, events, actions, and
    the HTTP API (OpenAPI at /docs)."""
    if ctx.invoked_subcommand is not None:
        return
    from fleet.cli.control import broker_address
    from fleet.console.auth import Users
    from fleet.console.server import ConsoleServer, ConsoleSettings
    from fleet.console.view import ViewConfig
    from fleet.control.config import load_controller_config
    from fleet.control.site_planning import site_roster
    from fleet.model.site import load_site
    from fleet.model.van import load_van_spec
    from fleet.protocol import Topics
    from fleet.protocol.clock import Clock, ScaledClock, WallClock
    from fleet.roads import load_network
    from fleet.viz.html import map_data
    from fleet.viz.site_map import base_map

    host, port = _listen(listen)
    address = broker_address(broker, login, tls)
    user_list = Users.load(users)
    if not user_list.by_name:
        raise ConfigError(f"{users}: no users (add one with `fleet console user add`)")
    site = load_site(site_file or config_dir() / "sites" / "porto.toml")
    van = load_van_spec(van_file or config_dir() / "van.toml")
    controller = load_controller_config(config_file or config_dir() / "controller.toml")
    console.print(f"loading the road network of {site.name} …", highlight=False)
    net = load_network(site, van)
    map_json = json.dumps(map_data(base_map(net)), separators=(",", ":")).encode()
    clock: Clock = (
        WallClock()
        if time_factor == 1.0
        else ScaledClock(start_epoch if start_epoch is not None else time.time(), time_factor)
    )
    settings = ConsoleSettings(
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        view=ViewConfig(
            stale_after_s=controller.stale_after_s,
            late_after_s=late_after_s,
            battery_kwh=van.battery_kwh,
        ),
    )
    roster = tuple(site_roster(site))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = ConsoleServer(
            settings,
            address=address,
            topics=Topics(prefix),
            clock=clock,
            site=site,
            map_json=map_json,
            users=user_list,
            roster=roster,
        )
        async with server:
            console.print(
                f"console at {server.url} (API docs at {server.url}/docs)", highlight=False
            )
            await stop.wait()
        console.print("console stopped", highlight=False)

    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop  # the faster event loop, where it is installed (not on Windows)
        except ImportError:
            asyncio.run(main())
        else:
            uvloop.run(main())


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The user's name (letters, digits, _ . -).")],
    role: Annotated[
        str, typer.Option("--role", help="dispatcher (may act) or viewer (sees only).")
    ] = "viewer",
    users: Annotated[Path, typer.Option("--users", help="Users file.")] = DEFAULT_USERS,
    rate_per_s: Annotated[
        float | None,
        typer.Option("--rate", help="Requests per second for this user (an API integration)."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Give an existing user a new token.")
    ] = False,
) -> None:
    """Add a console user and print their token (shown once; only its hash is stored)."""
    from fleet.console.auth import Role, add_user

    if role not in (Role.DISPATCHER.value, Role.VIEWER.value):
        raise ConfigError(f"--role {role!r}: expected 'dispatcher' or 'viewer'")
    if rate_per_s is not None and not rate_per_s > 0:
        raise ConfigError(f"--rate {rate_per_s}: expected a number > 0")
    token = add_user(users, name, Role(role), rate_per_s=rate_per_s, replace=replace)
    console.print(f"{name} ({role}) added to {users}; the token (shown once):", highlight=False)
    typer.echo(token)


@console_app.command("cert")
def cert(
    ca_dir: Annotated[
        Path, typer.Option("--ca", help="The CA directory of `fleet broker credentials --tls`.")
    ] = Path("secrets/ca"),
    hosts: Annotated[
        list[str] | None,
        typer.Option("--host", help="A name or address the console is reached at (repeat)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for console.crt/.key.")] = Path(
        "secrets/console"
    ),
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
) -> None:
    """Issue the console's HTTPS certificate from the broker's throwaway CA (TLS as for the
    broker): browsers and API clients that trust ca.crt trust the console."""
    import os
    from datetime import UTC, datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from fleet.security import tls

    names = hosts or ["127.0.0.1", "localhost"]
    try:
        ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ca_dir}: cannot read ca.crt and ca.key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca_dir}/ca.key: expected the EC key `fleet broker credentials` makes")
    ca = tls.CertificateAuthority(ca_cert.subject.rfc4514_string(), ca_cert, key)
    issued = tls.issue_server_cert(ca, names, datetime.now(UTC), days=days)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, data in (("console.crt", issued.cert_pem), ("console.key", issued.key_pem)):
        fd = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    console.print(
        f"wrote {out}/console.crt and console.key for {', '.join(names)}; serve with "
        f"`fleet console --tls-cert {out}/console.crt --tls-key {out}/console.key`",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(console_app, name="console")
