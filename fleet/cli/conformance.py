"""``fleet conformance van``: put any van through the MQTT protocol, through the broker only.

Prints one line per case as it finishes, the table of every case, and last one JSON line
(``cases``, ``passed``, ``failed``, ``skipped``, ``failed_cases``). Exit code 0 when no case
failed, 1 when one did, 2 for a usage error. ``docs/conformance.md`` says what each case checks.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fleet.cli.control import Broker, Login, Prefix, Tls, broker_address
from fleet.conformance import CaseResult, Outcome, Report, VanKitSettings, run_van_conformance
from fleet.model.toml_table import Table as TomlTable
from fleet.protocol import SigningKey, Topics, check_van_id, derive_van_key
from fleet.protocol.errors import TopicError

console = Console()
STYLE = {Outcome.PASSED: "green", Outcome.FAILED: "bold red", Outcome.SKIPPED: "yellow"}

conformance_app = typer.Typer(
    name="conformance",
    help="Check an implementation of the fleet protocols (docs/conformance.md).",
    no_args_is_help=True,
)


def load_van_key(path: Path) -> SigningKey:
    """A van's key file from ``fleet broker credentials`` (``vans/<van>/signing.key``)."""
    root = TomlTable.root(path)
    key_id = root.string("key_id")
    secret_hex = root.string("secret_hex")
    root.finish()
    try:
        return SigningKey(key_id, bytes.fromhex(secret_hex))
    except ValueError as exc:
        raise root.error("secret_hex", str(exc)) from exc


def _keys(van: str, key: Path | None, master: Path | None) -> tuple[SigningKey, SigningKey | None]:
    if (key is None) == (master is None):
        raise typer.BadParameter("give exactly one of --key (the van's key) and --master")
    if key is not None:
        return load_van_key(key), None
    assert master is not None
    from fleet.control.keys import read_master_key

    secret = read_master_key(master)
    own = derive_van_key(secret.secret, van, generation=secret.generation)
    other = derive_van_key(secret.secret, "CONFORMANCE-OTHER-VAN", generation=secret.generation)
    return own, other


def _line(result: CaseResult) -> None:
    style = STYLE[result.outcome]
    console.print(
        f"[{style}]{result.outcome.value.upper():7}[/] {result.name:24} "
        f"[dim]{result.seconds:5.1f} s[/]  {result.detail}",
        highlight=False,
        soft_wrap=True,
    )


def _table(report: Report, van: str) -> Table:
    table = Table(title=f"Van conformance: {van}", caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("case", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("s", justify="right")
    table.add_column("what was seen", overflow="fold")
    for i, r in enumerate(report.results, 1):
        style = STYLE[r.outcome]
        table.add_row(
            str(i), r.name, f"[{style}]{r.outcome.value}[/]", f"{r.seconds:.1f}", r.detail
        )
    s = report.summary()
    table.caption = f"{s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped"
    return table


@conformance_app.command("van")
def van_command(
    van: Annotated[str, typer.Option("--van", help="The id of the van under test.")],
    broker: Broker = "mqtt://127.0.0.1:1883",
    login: Login = None,
    tls: Tls = False,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="The van's signing key (vans/<van>/signing.key)."),
    ] = None,
    master: Annotated[
        Path | None,
        typer.Option(
            "--master",
            help="The controller's master key (controller/signing-master.key) instead of "
            "--key; also gives the wrong-van case a genuine key of another van.",
        ),
    ] = None,
    restart_command: Annotated[
        str | None,
        typer.Option(
            "--restart-command",
            help="Shell command that restarts the van and returns (the van runs on). Kill it "
            "(SIGKILL) to check its last will too. Without it the restart cases are skipped.",
        ),
    ] = None,
    topic_prefix: Prefix = "",
    leg_m: Annotated[
        float, typer.Option("--leg-m", help="Length of each leg of the kit's orders (m).")
    ] = 25.0,
    speed_mps: Annotated[
        float, typer.Option("--speed-mps", help="Speed cap of the kit's orders (m/s).")
    ] = 5.0,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", help="Seconds to wait for the van ONLINE.")
    ] = 30.0,
    drive_timeout: Annotated[
        float, typer.Option("--drive-timeout", help="Seconds the van has to drive one leg.")
    ] = 60.0,
) -> None:
    """Drive a van through the MQTT protocol's cases, playing its controller."""
    try:
        check_van_id(van)
        topics = Topics(topic_prefix)
    except TopicError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not (0 < leg_m <= 200 and 0 < speed_mps <= 40):
        raise typer.BadParameter("--leg-m must be in (0, 200] and --speed-mps in (0, 40]")
    own, other = _keys(van, key, master)
    settings = VanKitSettings(
        address=broker_address(broker, login, tls),
        van_id=van,
        key=own,
        other_key=other,
        topics=topics,
        restart_command=restart_command,
        connect_timeout_s=connect_timeout,
        drive_timeout_s=drive_timeout,
        leg_m=leg_m,
        speed_mps=speed_mps,
    )
    console.print(f"van conformance: {van} on {settings.address}", highlight=False)
    report = asyncio.run(run_van_conformance(settings, on_result=_line))
    console.print(_table(report, van))
    sys.stdout.flush()
    print(report.json_line(), flush=True)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(conformance_app, name="conformance")
