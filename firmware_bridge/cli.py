"""The ``firmware-bridge`` command: ``run`` (the on-van bridge) and ``monitor`` (a bench tool)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from firmware_bridge import wire
from firmware_bridge.bridge import (
    DEFAULT_STATE_PERIOD_S,
    DEFAULT_TELEMETRY_STALE_S,
    DEFAULT_TICK_S,
    DEFAULT_VCU_GRACE_S,
    BridgeService,
    BridgeSettings,
    load_signing_key,
)
from firmware_bridge.bridge.config import ConfigFileError
from firmware_bridge.link import LinkConfig, LinkEvent, SerialLink, default_window, url_opener
from firmware_bridge.link.health import describe_counts, fault_counts
from fleet.errors import FleetError
from fleet.mqtt import BrokerAddress
from fleet.protocol import SigningKey, check_van_id
from fleet.protocol.clock import WallClock

app = typer.Typer(
    name="firmware-bridge",
    help="The on-van bridge between the fleet's MQTT commands and the vehicle control unit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _van_key(key_file: Path, van: str) -> SigningKey:
    """The van's key, refused at start-up if it is another van's: key ids are ``<van>.k<n>``
    (``fleet.protocol.derive_van_key``), and a bridge with another van's key would refuse
    every command the controller signs for this van."""
    key = load_signing_key(key_file)
    owner, sep, generation = key.key_id.rpartition(".k")
    if sep and generation.isdigit() and owner != van:
        raise ConfigFileError(
            f"{key_file}: key {key.key_id!r} is van {owner}'s signing key, but this bridge "
            f"runs van {van} (--van); give it {van}'s signing.key"
        )
    return key


@app.command()
def run(
    key_file: Annotated[
        Path,
        typer.Option(
            "--key-file",
            help="The van's signing key (signing.key from `fleet broker credentials`).",
        ),
    ],
    van: str = typer.Option(..., "--van", help="This van's id, e.g. WH-PORTO-01."),
    serial: str = typer.Option(
        ...,
        "--serial",
        help="The VCU's serial line: a device (/dev/ttyUSB0), a pseudo-terminal, "
        "socket://HOST:PORT, loop:// — any pyserial URL.",
    ),
    broker: str = typer.Option(
        "mqtt://127.0.0.1:1883", "--broker", help="mqtt[s]://[USER:PASS@]HOST[:PORT]."
    ),
    mqtt_config: Annotated[
        Path | None,
        typer.Option(
            "--mqtt-config",
            help="mqtt.toml from `fleet broker credentials` (login and TLS); overrides --broker.",
        ),
    ] = None,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            help="Where the order book, the store-and-forward spool and the anti-replay "
            "counters live (kept across restarts: give the same directory each time).",
        ),
    ] = Path("bridge-state"),
    baud: int = typer.Option(
        115200,
        "--baud",
        help="Line rate our writes are paced at; 0 turns pacing off (and allows 128 frames "
        "in flight instead of 16).",
    ),
    topic_prefix: str = typer.Option("", "--topic-prefix", help="Topic prefix (tests only)."),
    spool_max: int = typer.Option(10_000, "--spool-max", help="Messages kept while offline."),
    state_period: float = typer.Option(
        DEFAULT_STATE_PERIOD_S,
        "--state-period",
        help="Seconds between unprompted states (events publish at once).",
    ),
    tick: float = typer.Option(
        DEFAULT_TICK_S, "--tick", help="Seconds between checks whether a state is due."
    ),
    vcu_grace: float = typer.Option(
        DEFAULT_VCU_GRACE_S,
        "--vcu-grace",
        help="Seconds a lost VCU link is reported as a warning before it turns fatal.",
    ),
    telemetry_stale: float = typer.Option(
        DEFAULT_TELEMETRY_STALE_S,
        "--telemetry-stale",
        help="Seconds after which the VCU's latest telemetry is reported stale "
        "(vcu_telemetry_stale), never as live.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    """Run the bridge: MQTT orders and instant actions → serial frames; telemetry → MQTT state."""
    _logging(verbose)
    check_van_id(van)
    for name, value in (
        ("--state-period", state_period),
        ("--tick", tick),
        ("--telemetry-stale", telemetry_stale),
    ):
        if not value > 0:
            raise typer.BadParameter(f"{name} {value}: expected > 0")
    if not vcu_grace >= 0:
        raise typer.BadParameter(f"--vcu-grace {vcu_grace}: expected ≥ 0")
    settings = BridgeSettings(
        van_id=van,
        serial_url=serial,
        broker=(
            BrokerAddress.from_login(mqtt_config, tls=None)  # TLS if the login has it
            if mqtt_config
            else BrokerAddress.parse(broker)
        ),
        keys=(_van_key(key_file, van),),
        state_dir=state_dir,
        topic_prefix=topic_prefix,
        baud=baud,
        link=LinkConfig(wire.Role.BRIDGE, line_baud=baud, window=default_window(baud)),
        spool_max_messages=spool_max,
        state_period_s=state_period,
        tick_s=tick,
        vcu_grace_s=vcu_grace,
        telemetry_stale_s=telemetry_stale,
    )
    console.print(
        f"bridge for van [bold]{van}[/]: serial {serial} ⇄ {settings.broker}; state in {state_dir}",
        highlight=False,
    )

    async def serve() -> None:
        # SIGTERM (systemd, docker stop) and SIGINT (Ctrl-C) end the bridge cleanly and at
        # once: OFFLINE is published (given up after 1 s at most), the port closed
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        service = BridgeService(settings, WallClock())
        # Everything made at start-up (modules, schemas, the service) lives as long as the
        # process: take it out of the collector's reach, so that a collection triggered while
        # a command is handled only walks what was made since (no 1-2 ms pauses in the e-stop
        # path; measured with benchmarks/serial_link.py).
        gc.collect()
        gc.freeze()
        with contextlib.suppress(asyncio.CancelledError):
            await service.run()

    _run_until_stopped(serve())
    console.print("stopped")
    _exit_now()


def _run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` without its last step: it waits for the default executor's threads,
    and a broker connect() stuck in one (a host that accepts nothing) would hold the exit
    for the connect timeout. The loop is closed without waiting for them."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            loop.run_until_complete(main)
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()  # shuts the executor down without waiting


def _exit_now() -> None:
    """Leave at once, everything written: files are written synchronously (spool, counters),
    the log and the console are flushed here. Python's own exit would still join a worker
    thread blocked in a broker connect()."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _describe(frame: wire.Frame) -> str:
    m = frame.message
    head = f"{m.TYPE.name:<14} seq={frame.seq:<5} ack={frame.ack:<5}"
    if isinstance(m, wire.Telemetry):
        return (
            f"{head} {m.lon:.7f},{m.lat:.7f} hdg={m.heading_cdeg / 100:.1f}° "
            f"v={m.speed_cmps / 100:.2f} m/s soc={m.soc_cpct / 100:.2f}% "
            f"range={m.range_m / 1000:.1f} km odo={m.odometer_m} m mission={m.mission_id} "
            f"wp={'-' if m.last_wp == wire.WP_NONE else m.last_wp}/{m.wp_queued} "
            f"{m.drive_state.name} door={m.door.name} faults=0x{m.fault_bits:04x} "
            f"estop={m.estop_id}"
        )
    if isinstance(m, wire.DriveSegment):
        return (
            f"{head} mission={m.mission_id} wp={m.first_wp}..{m.first_wp + len(m.waypoints) - 1} "
            f"cap={m.speed_cap_cmps / 100:.2f} m/s stop={m.stop_at_end} dwell={m.dwell_s}s"
        )
    fields = ", ".join(f"{f.name}={getattr(m, f.name)!s}" for f in dataclasses.fields(m))
    return f"{head} {fields}"


@app.command()
def monitor(
    serial: str = typer.Option(..., "--serial", help="Any pyserial URL or device path."),
    link: bool = typer.Option(
        False,
        "--link",
        help="Also answer as a bridge (HELLO, heartbeats, ACKs) so a VCU sees a live peer.",
    ),
    seconds: float = typer.Option(0.0, "--seconds", help="Stop after this long (0: never)."),
) -> None:
    """Decode and print live frames from a serial line (a bench tool for engineers)."""
    decoder = wire.FrameDecoder()
    start = time.monotonic()
    counts = {"frames": 0, "bad": 0}
    links: list[SerialLink] = []  # for the line-fault counts at the end

    def show(data: bytes) -> bytes:
        for r in decoder.feed(data):
            t = time.monotonic() - start
            if isinstance(r, wire.Frame):
                counts["frames"] += 1
                console.print(f"{t:9.3f}  {_describe(r)}", highlight=False, soft_wrap=True)
            else:
                counts["bad"] += 1
                console.print(
                    f"{t:9.3f}  [red]BAD {r.kind.value}[/] ({r.size} bytes): {r.detail}",
                    highlight=False,
                )
        return data

    def ignore(_: LinkEvent) -> None:
        return None

    async def main() -> None:
        clock = WallClock()
        config = LinkConfig(wire.Role.BRIDGE)
        if link:
            serial_link = SerialLink(
                url_opener(serial), config=config, clock=clock, on_event=ignore, rx_filter=show
            )
        else:
            # passive: read and decode only; nothing is ever written to the line
            serial_link = SerialLink(
                url_opener(serial),
                config=config,
                clock=clock,
                on_event=ignore,
                rx_filter=show,
                tx_filter=lambda data: b"",
            )
        links.append(serial_link)
        async with serial_link:
            if seconds > 0:
                await asyncio.sleep(seconds)
            else:
                await asyncio.Event().wait()

    console.print(f"monitoring {serial} ({'as a bridge' if link else 'passive'}); Ctrl-C stops")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    console.print(f"{counts['frames']} frames, {counts['bad']} bad")
    for serial_link in links:
        faults = describe_counts(fault_counts(serial_link.core.stats))
        console.print(f"line faults: {faults}", highlight=False)


def _register_conformance() -> None:
    from firmware_bridge.conformance.cli import register  # `conformance vcu`: the VCU kit

    register(app)


_register_conformance()


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
