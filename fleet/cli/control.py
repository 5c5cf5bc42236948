"""Dispatcher commands: ``fleet dispatch | add | status | cancel | pause | resume | estop |
events``, and ``fleet broker run`` (the embedded broker).

Every dispatcher command reaches the running controller through the broker (request on
``fleet/v1/controller/request``, reply on ``.../reply/<client>``; ``docs/controller.md``), so
the CLI may run on any machine that can reach the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar, cast

import typer
from pydantic import JsonValue, ValidationError
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from fleet.control.client import ControllerClient
from fleet.errors import ControlError, InputError
from fleet.identifiers import (
    MAX_ORDERS_BYTES,
    MAX_WATCH_INTERVAL_S,
    MIN_WATCH_INTERVAL_S,
    check_id,
)
from fleet.mqtt import BrokerAddress
from fleet.planning.orders import check_orders_size
from fleet.planning.plan_io import read_plan_document
from fleet.protocol import InstantActionType, Topics, parse_timestamp
from fleet.protocol.control_api import (
    MAX_EVENT_ID,
    MAX_LISTED,
    AddParcelsBody,
    CancelParcelsBody,
    CancelVansBody,
    CommandResult,
    DispatchBody,
    Event,
    EventsBody,
    EventsResult,
    InstantBody,
    ReplanBody,
    RequestBody,
    StatusBody,
    StatusResult,
    VanStatus,
)

console = Console()
T = TypeVar("T")

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
BROKER_GROUP = "broker"

Broker = Annotated[
    str,
    typer.Option(
        "--broker",
        envvar="FLEET_BROKER",
        help="Broker URL: mqtt://host[:port] or mqtts://host[:port].",
    ),
]
Login = Annotated[
    Path | None,
    typer.Option(
        "--login",
        envvar="FLEET_MQTT_LOGIN",
        help="MQTT login file (<identity>/mqtt.toml from `fleet broker credentials`); "
        "overrides the URL's host, port and user.",
    ),
]
Tls = Annotated[
    bool, typer.Option("--tls", help="With --login: use its TLS listener and certificates.")
]
Prefix = Annotated[
    str,
    typer.Option(
        "--topic-prefix", envvar="FLEET_TOPIC_PREFIX", help="Topic prefix (must end with '/')."
    ),
]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the controller.")]
Vans = Annotated[list[str] | None, typer.Argument(help="Van ids.", show_default=False)]


def broker_address(url: str, login: Path | None, tls: bool) -> BrokerAddress:
    if login is not None:
        return BrokerAddress.from_login(login, tls=tls)
    return BrokerAddress.parse(url)


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def _ask(
    url: str, login: Path | None, tls: bool, prefix: str, timeout_s: float, body: RequestBody
) -> object:
    address = broker_address(url, login, tls)
    async with ControllerClient(address, topics=Topics(prefix), timeout_s=timeout_s) as client:
        return await client.request(body)


def _read_orders_text(path: Path) -> str:
    """An orders file's text, its size checked before it is read (docs/limits.md)."""
    check_orders_size(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_ORDERS_BYTES + 1)
        return data.decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


def _body(source: object, build: Callable[[], RequestBody]) -> RequestBody:
    """A request body, or one line naming what the protocol refuses in it (never a traceback)."""
    try:
        return build()
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise InputError(f"{source}: {where}: {first['msg']}") from None


def _ids(values: Sequence[str] | None, what: str) -> tuple[str, ...]:
    """Ids given on the command line, each checked against the one rule (docs/limits.md)."""
    return tuple(check_id(v, what, "argument") for v in values or ())


def _say(result: object) -> None:
    if isinstance(result, CommandResult):
        console.print(result.message, highlight=False)
    else:
        raise ControlError(f"unexpected reply from the controller: {type(result).__name__}")


# -- dispatch and add --------------------------------------------------------------------------
def dispatch(
    plan_file: Annotated[Path, typer.Argument(help="plan.json from `fleet plan`.")],
    orders: Annotated[
        Path,
        typer.Option(
            "--orders",
            help="The orders CSV the plan was made from (the controller verifies the plan "
            "against it).",
        ),
    ],
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    timeout: Timeout = 120.0,
) -> None:
    """Hand a plan to the controller: it verifies it and sends each van its order."""
    document = read_plan_document(plan_file)
    csv_text = _read_orders_text(orders)
    plan = cast("dict[str, JsonValue]", document)
    name = orders.name[-255:]
    body = _body(plan_file, lambda: DispatchBody(plan=plan, orders_csv=csv_text, orders_name=name))
    with console.status("the controller is verifying and dispatching the plan..."):
        result = _run(_ask(broker, login, tls, topic_prefix, timeout, body))
    _say(result)


def add(
    orders: Annotated[
        Path,
        typer.Argument(help="Orders CSV of the urgent parcels (the columns `fleet plan` reads)."),
    ],
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    timeout: Timeout = 30.0,
) -> None:
    """Add urgent parcels during the day: the controller re-plans them onto the running fleet."""
    csv_text = _read_orders_text(orders)
    name = orders.name[-255:]
    body = _body(orders, lambda: AddParcelsBody(orders_csv=csv_text, orders_name=name))
    _say(_run(_ask(broker, login, tls, topic_prefix, timeout, body)))


# -- status ------------------------------------------------------------------------------------
MODE_STYLE = {
    "idle": "dim",
    "driving": "green",
    "at_stop": "cyan",
    "paused": "yellow",
    "estop_sent": "bold yellow",
    "estopped": "bold red",
    "charging": "blue",
    "error": "bold red",
    "stale": "magenta",
    "offline": "red",
    "unknown": "dim",
}


def _ago(stamp: str | None, now_s: float) -> str:
    if stamp is None:
        return "never"
    seconds = max(0.0, now_s - parse_timestamp(stamp))
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _clock(stamp: str | None) -> str:
    if stamp is None:
        return ""
    return datetime.fromtimestamp(parse_timestamp(stamp), tz=UTC).astimezone().strftime("%H:%M")


def status_table(result: StatusResult, now_s: float) -> Table:
    table = Table(title="Fleet", caption=_caption(result), caption_justify="left")
    table.add_column("van", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("position", no_wrap=True)
    table.add_column("km/h", justify="right")
    table.add_column("charge")
    table.add_column("load")
    table.add_column("stop → next")
    table.add_column("ETA", no_wrap=True)
    table.add_column("seen", no_wrap=True)
    for v in result.vans:
        table.add_row(*_row(v, now_s))
    return table


NOT_LIVE = frozenset({"stale", "offline", "unknown"})  # position and speed are not current


def _row(v: VanStatus, now_s: float) -> list[str]:
    mode = v.mode.value.replace("_", " ") + ("" if v.in_service else " (out)")
    if v.mode_reason:
        reason = v.mode_reason if len(v.mode_reason) <= 60 else v.mode_reason[:59] + "…"
        mode += f" ({reason})"
    mode = escape(mode)  # the reason may quote a van's text
    style = MODE_STYLE.get(v.mode.value, "")
    live = v.mode.value not in NOT_LIVE
    where = f"{v.lat:.4f} {v.lon:.4f}" if v.lat is not None and v.lon is not None else ""
    if where and not live:
        where = f"last {where}"  # where it was when last heard, never shown as current
    charge = ""
    if v.soc_pct is not None:
        charge = f"{v.soc_pct:.0f}%"
        if v.remaining_range_m is not None:
            charge += f" {v.remaining_range_m / 1000:.0f} km"
    load = f"{v.load_kg:.0f}kg {v.volume_m3:.1f}m³ {v.parcels_on_board}p"
    stops = " → ".join(x for x in (v.current_stop, v.next_stop) if x)
    return [
        v.van_id,
        f"[{style}]{mode}[/]" if style else mode,
        where,
        f"{v.speed_mps * 3.6:.0f}" if live else "-",
        charge,
        load,
        stops,
        _clock(v.next_eta),
        _ago(v.last_seen, now_s),
    ]


def _caption(result: StatusResult) -> str:
    parcels = ", ".join(f"{k} {n}" for k, n in sorted(result.parcels_by_status.items()))
    rejected = sum(n for k, n in result.counters.items() if k.startswith("rejected_"))
    return (
        f"parcels: {parcels or 'none'}   |   states received {result.counters.get('states', 0)}, "
        f"rejected {rejected}, throttled {result.counters.get('throttled', 0)}, "
        f"re-plans {result.counters.get('replans', 0)}"
    )


def status(
    van: Vans = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            min=MIN_WATCH_INTERVAL_S,
            max=MAX_WATCH_INTERVAL_S,
            help="Seconds between refreshes.",
        ),
    ] = 1.0,
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    timeout: Timeout = 30.0,
) -> None:
    """Show the live fleet: state, position, speed, charge, load, stops and ETA, last seen."""
    body = StatusBody(van_ids=_ids(van, "van id"))

    async def once(client: ControllerClient) -> Table:
        result = await client.request(body)
        if not isinstance(result, StatusResult):
            raise ControlError("unexpected reply from the controller")
        return status_table(result, client.clock.time())

    async def main() -> None:
        address = broker_address(broker, login, tls)
        async with ControllerClient(address, topics=Topics(topic_prefix), timeout_s=timeout) as c:
            table = await once(c)
            if not watch:
                console.print(table)
                return
            with Live(table, console=console, auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)  # the refresh period the user asked for
                    live.update(await once(c), refresh=True)

    _until_interrupted(main)


STOP_GRACE_S = 3.0  # after SIGINT/SIGTERM, a long-running command is gone within this
RECANCEL_S = 0.5  # ... and its task is cancelled again this often until it has ended


def _until_interrupted(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main`` until it ends or SIGINT/SIGTERM arrives. A signal cancels it, and again
    every ``RECANCEL_S`` while it runs (a library may swallow one cancellation); if it has
    not wound down ``STOP_GRACE_S`` later (a broker link that will not close, a worker thread
    that will not join), or a second signal comes, the process exits at once (status 130)."""

    def hard_stop() -> None:
        sys.stderr.flush()
        os._exit(130)

    async def guarded() -> None:
        task = asyncio.ensure_future(main())
        loop = asyncio.get_running_loop()
        stopping: list[threading.Timer] = []

        def cancel_until_done() -> None:
            # a cancellation a library swallows (asyncio.wait_for on Python 3.11, e.g. inside
            # aiomqtt, when the awaited result lands in the same turn) is asked for again
            if not task.done():
                task.cancel()
                loop.call_later(RECANCEL_S, cancel_until_done)

        def on_signal() -> None:
            if stopping:
                hard_stop()
            timer = threading.Timer(STOP_GRACE_S, hard_stop)
            timer.daemon = True
            timer.start()
            stopping.append(timer)
            cancel_until_done()

        loop.add_signal_handler(signal.SIGINT, on_signal)
        loop.add_signal_handler(signal.SIGTERM, on_signal)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(guarded())


# -- cancel, pause, resume, estop --------------------------------------------------------------
def cancel(
    parcel: Annotated[
        list[str] | None, typer.Argument(help="Parcel ids to cancel.", show_default=False)
    ] = None,
    van: Annotated[
        list[str] | None,
        typer.Option("--van", help="Cancel this van's order; its parcels are re-planned (repeat)."),
    ] = None,
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    timeout: Timeout = 30.0,
) -> None:
    """Cancel parcels (taken out of every van's order), or whole vans (--van).

    A cancelled van is out of service at once; the command waits until the van confirms the
    cancel (or the controller's cancel_confirm_s passed), then says what it delivered
    meanwhile and the return order that brings what it still carries home. Exit code 1
    unless every van confirmed.
    """
    if bool(parcel) == bool(van):
        raise typer.BadParameter("give parcel ids, or --van VAN (not both)")
    if not van:
        body = CancelParcelsBody(parcel_ids=_ids(parcel, "parcel id"))
        _say(_run(_ask(broker, login, tls, topic_prefix, timeout, body)))
        return
    # the controller answers once each van confirmed its cancel (or its bound passed)
    cancel_body = CancelVansBody(van_ids=_ids(van, "van id"))
    with console.status("waiting for the van(s) to confirm the cancel..."):
        result = _run(_ask(broker, login, tls, topic_prefix, timeout, cancel_body))
    if not isinstance(result, CommandResult):
        raise ControlError(f"unexpected reply from the controller: {type(result).__name__}")
    unconfirmed = [v for v in van if v not in result.affected]
    if unconfirmed:
        raise ControlError(f"cancel not confirmed by {', '.join(unconfirmed)}: {result.message}")
    console.print(result.message, highlight=False)


def replan(
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept with the re-plan in the event log).")
    ] = "",
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    timeout: Timeout = 30.0,
) -> None:
    """Re-plan the day from the fleet as it is now (a road closed, a van freed up, ...).

    Released stops stay with their vans; everything else is planned again, verified, and
    sent as order updates. `fleet events` shows replan_started and replan_applied.
    """
    _say(_run(_ask(broker, login, tls, topic_prefix, timeout, ReplanBody(reason=reason))))


def _instant(
    action: InstantActionType,
    vans: list[str] | None,
    all_vans: bool,
    broker: str,
    login: Path | None,
    tls: bool,
    topic_prefix: str,
    timeout: float,
) -> None:
    if not vans and not all_vans:
        hint = " (or --all)" if action is InstantActionType.EMERGENCY_STOP else ""
        raise typer.BadParameter(f"name at least one van{hint}")
    body = InstantBody(action=action, van_ids=_ids(vans, "van id"), all_vans=all_vans)
    _say(_run(_ask(broker, login, tls, topic_prefix, timeout, body)))


def pause(
    van: Annotated[list[str], typer.Argument(help="Vans to pause.")],
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    timeout: Timeout = 30.0,
) -> None:
    """Pause vans at the next safe place; they keep their orders."""
    _instant(InstantActionType.PAUSE, van, False, broker, login, tls, topic_prefix, timeout)


def resume(
    van: Annotated[list[str], typer.Argument(help="Vans to resume.")],
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    timeout: Timeout = 30.0,
) -> None:
    """Resume paused or emergency-stopped vans (a cancelled van returns to service)."""
    _instant(InstantActionType.RESUME, van, False, broker, login, tls, topic_prefix, timeout)


def estop(
    van: Vans = None,
    all_vans: Annotated[bool, typer.Option("--all", help="Every van of the fleet.")] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0.0,
            help="Seconds to wait for each van's confirmation (0: do not wait). Exit code 1 "
            "unless every van confirmed.",
        ),
    ] = 5.0,
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    timeout: Timeout = 5.0,
) -> None:
    """Emergency stop: brake now and wait for `fleet resume` (sent ahead of all other traffic).

    Waits up to --wait seconds for each van to confirm it, and says for each: confirmed,
    refused by the van (with its reason) or unconfirmed; the controller keeps re-sending it
    every 0.5 s until the van confirms it.
    """
    if not van and not all_vans:
        raise typer.BadParameter("name at least one van (or --all)")
    body = InstantBody(
        action=InstantActionType.EMERGENCY_STOP, van_ids=_ids(van, "van id"), all_vans=all_vans
    )
    outcome = _run(_estop(broker, login, tls, topic_prefix, timeout, body, wait))
    console.print(outcome.sent, highlight=False)
    for line in outcome.confirmed:
        console.print(line, highlight=False)
    if outcome.problems:
        raise ControlError(
            f"emergency stop not confirmed by {len(outcome.problems)} of "
            f"{len(outcome.problems) + len(outcome.confirmed)} van(s): "
            + "; ".join(outcome.problems)
            + " (the controller keeps re-sending it until each van confirms it)"
        )


@dataclass(frozen=True, slots=True)
class EstopOutcome:
    sent: str
    confirmed: list[str]
    problems: list[str]  # refused or unconfirmed, one per van


async def _estop(
    url: str,
    login: Path | None,
    tls: bool,
    prefix: str,
    timeout_s: float,
    body: InstantBody,
    wait_s: float,
) -> EstopOutcome:
    """Send the e-stop, then follow the controller's events until each van confirmed it or
    ``wait_s`` passed (subscribed before sending, so no confirmation is missed)."""
    address = broker_address(url, login, tls)
    async with ControllerClient(address, topics=Topics(prefix), timeout_s=timeout_s) as client:
        await client.subscribe_events()
        result = await client.request(body)
        if not isinstance(result, CommandResult):
            raise ControlError(f"unexpected reply from the controller: {type(result).__name__}")
        vans = list(result.affected)
        confirmed: dict[str, float] = {}
        refused: dict[str, str] = {}
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    async for e in client.events():
                        if e.van_id not in vans or e.data.get("action") != "emergency_stop":
                            continue
                        if e.kind == "instant_confirmed":
                            rtt = e.data.get("rtt_s")
                            confirmed[e.van_id] = float(rtt) if isinstance(rtt, int | float) else 0
                            if len(confirmed) == len(vans):
                                break
                        elif e.kind in ("instant_refused", "instant_failed"):
                            refused[e.van_id] = e.detail
    lines = [f"{v}: confirmed in {confirmed[v]:.2f} s" for v in vans if v in confirmed]
    problems = []
    for v in vans:
        if v in confirmed:
            continue
        if v in refused:
            problems.append(f"{v}: {refused[v]}")
        elif wait_s > 0:
            problems.append(f"{v}: no confirmation within {wait_s:g} s")
    return EstopOutcome(result.message, lines, problems if wait_s > 0 else [])


# -- events ------------------------------------------------------------------------------------
def _event_line(e: Event) -> str:
    when = datetime.fromtimestamp(parse_timestamp(e.time), tz=UTC).astimezone()
    who = " ".join(x for x in (e.van_id, e.parcel_id) if x)
    return f"{e.event_id:>7} {when:%H:%M:%S} {e.kind:<20} {who:<28} {e.detail}"


def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    van: Annotated[str | None, typer.Option("--van", help="Only this van's events.")] = None,
    parcel: Annotated[
        str | None, typer.Option("--parcel", help="Only this parcel's events.")
    ] = None,
    after: Annotated[
        int, typer.Option("--after", min=0, max=MAX_EVENT_ID, help="Only events after this id.")
    ] = 0,
    limit: Annotated[
        int,
        typer.Option("--limit", min=1, max=MAX_LISTED, help="At most this many past events."),
    ] = 100,
    broker: Broker = DEFAULT_BROKER,
    login: Login = None,
    tls: Tls = False,
    topic_prefix: Prefix = "",
    timeout: Timeout = 30.0,
) -> None:
    """Print the controller's event log (dispatches, orders, deliveries, errors, re-plans)."""

    _ids([van] if van else [], "--van")
    _ids([parcel] if parcel else [], "--parcel")

    def wanted(e: Event) -> bool:
        return (van is None or e.van_id == van) and (parcel is None or e.parcel_id == parcel)

    async def main() -> None:
        address = broker_address(broker, login, tls)
        async with ControllerClient(address, topics=Topics(topic_prefix), timeout_s=timeout) as c:
            if follow:
                await c.subscribe_events()
            last = after
            while True:  # page through the history
                result = await c.request(
                    EventsBody(after_id=last, limit=min(limit, 1000), van_id=van, parcel_id=parcel)
                )
                if not isinstance(result, EventsResult):
                    raise ControlError("unexpected reply from the controller")
                for e in result.events:
                    console.print(_event_line(e), highlight=False, soft_wrap=True)
                    last = e.event_id
                if len(result.events) < min(limit, 1000) or not follow:
                    break
            if not follow:
                return
            async for e in c.events():
                if e.event_id > last and wanted(e):
                    console.print(_event_line(e), highlight=False, soft_wrap=True)
                    last = e.event_id

    _until_interrupted(main)


# -- the embedded broker -----------------------------------------------------------------------
def broker_run(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 1883,
) -> None:
    """Run the embedded MQTT broker (amqtt) until Ctrl-C: for a machine with nothing installed.

    Good for a demo or a small fleet (docs/broker.md gives its measured limit); run
    Mosquitto with configs/mosquitto/ for a real one.
    """

    from fleet.control.embedded_broker import EmbeddedBroker  # amqtt: only when asked for

    async def main() -> None:
        async with EmbeddedBroker(host, port) as b:
            console.print(f"embedded MQTT broker on {b.url} (Ctrl-C to stop)", highlight=False)
            await b.wait_closed()

    _until_interrupted(main)


def register(app: typer.Typer) -> None:
    for name, command in (
        ("dispatch", dispatch),
        ("add", add),
        ("status", status),
        ("cancel", cancel),
        ("replan", replan),
        ("pause", pause),
        ("resume", resume),
        ("estop", estop),
        ("events", events),
    ):
        app.command(name)(command)
    for group in app.registered_groups:
        if group.name == BROKER_GROUP and group.typer_instance is not None:
            group.typer_instance.command("run")(broker_run)
            return
    broker = typer.Typer(
        name=BROKER_GROUP, help="Run and secure the MQTT broker.", no_args_is_help=True
    )
    broker.command("run")(broker_run)
    app.add_typer(broker, name=BROKER_GROUP)
