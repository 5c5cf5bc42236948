#!/usr/bin/env python3
"""MQTT load: N protocol-level vans publish state at 1 Hz while the controller tracks them.

    python benchmarks/mqtt_load.py --vans 1000 --seconds 30
    python benchmarks/mqtt_load.py --vans 500 --seconds 10 --no-max      # quick look

Processes, as in production: a private Mosquitto with the settings of
``configs/mosquitto/dev.conf`` (``set_tcp_nodelay``, ``max_queued_messages`` raised; or
``--broker URL`` for one you run), the **real controller service** (store on SQLite, message
validation, signing, rate limits) in its own process, one **plain aiomqtt subscriber** process
on the same state topics (what the broker delivers to a client that does nothing), and one
**van process** with N protocol-level vans (``--vans-per-connection`` share a connection):
each van publishes its state once a second (QoS 0, staggered over the second), verifies every
signed order it receives and echoes it in a state at once, as the firmware bridge does.
Meanwhile the harness dispatches ``--orders-per-second`` plans of one order each, evenly
spaced over each second (a plan for many vans at once is a burst: each order is signed in
turn, ~0.3 ms apiece, and the last waits for all before it).

Measured over the run: state messages published, processed by the controller and received
by the plain subscriber (lost = published - processed by the controller), their rates and
ratio, the controller's processing lag (arrival minus the van's stamp), and order round trips
(controller's publish -> the van's state echoing the order, processed), p50/p99. Then, unless
``--no-max``, shorter trials find ``max_vans``: the largest fleet at 1 Hz with nothing lost
and states processed within 1 s (p99).

Prints a table, then one JSON line with ``lost``, ``controller_ratio``, ``order_rtt_p50_ms``,
``order_rtt_p99_ms``, ``max_vans`` and the raw figures. Timings are of this machine at this
moment (other work on it shows up in them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiomqtt  # noqa: E402
from pydantic import JsonValue  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fleet.control.client import ControllerClient  # noqa: E402
from fleet.control.config import ControllerConfig  # noqa: E402
from fleet.control.core import CheckedPlan, ReplanRequest, check_plan  # noqa: E402
from fleet.control.keys import MasterKey  # noqa: E402
from fleet.control.service import ControllerService, settle_heap  # noqa: E402
from fleet.errors import ControlError  # noqa: E402
from fleet.model import (  # noqa: E402
    DepotId,
    Leg,
    NodeId,
    Parcel,
    ParcelId,
    Plan,
    PlanSummary,
    Stop,
    StopKind,
    Trip,
    VanId,
    VanRoute,
    load_van_spec,
)
from fleet.mqtt import NODELAY, BrokerAddress  # noqa: E402
from fleet.protocol import (  # noqa: E402
    Battery,
    CommandVerifier,
    DecodeError,
    Load,
    Order,
    SignatureError,
    State,
    Topics,
    VanPosition,
    VanTopic,
    decode,
    derive_van_key,
    format_timestamp,
    make_header,
    parse_timestamp,
)
from fleet.protocol.clock import WallClock  # noqa: E402
from fleet.protocol.control_api import (  # noqa: E402
    AddParcelsBody,
    DispatchBody,
    StatusBody,
    StatusResult,
)
from fleet.store import SqliteStore  # noqa: E402

console = Console()
MASTER = MasterKey(bytes(range(32)))
DEPOT = (-8.6110, 41.1496)  # Porto
DAY = date(2026, 11, 23)
TIMEZONE = "Europe/Lisbon"
DRAIN_S = 10.0  # after the vans stop: time allowed for the last messages to be processed
SLOT_S = 0.005  # the vans process wakes this often and publishes every state then due


def van_ids(n: int) -> list[str]:
    return [f"BENCH-{k:05d}" for k in range(1, n + 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- a synthetic plan: one short route per van (the planner is not what is measured) --------
def _stop(seq: int, kind: StopKind, at: tuple[float, float], t_s: float, **kw: object) -> Stop:
    return Stop(
        seq=seq,
        kind=kind,
        ref="BENCH" if kind is StopKind.DEPOT else "",
        node=NodeId(seq + 1),
        lon=at[0],
        lat=at[1],
        arrival_s=t_s,
        departure_s=t_s + 60,
        parcels_loaded=kw.get("loaded", ()),  # type: ignore[arg-type]
        parcels_delivered=kw.get("delivered", ()),  # type: ignore[arg-type]
        load_after_kg=0.0,
        load_after_m3=0.0,
        dist_so_far_m=500.0 * seq,
        energy_so_far_kwh=0.15 * seq,
        soc_pct=90.0,
        geometry_in=() if seq == 0 else (DEPOT, (DEPOT[0] + 0.001, DEPOT[1] + 0.001)),
    )


def bench_plan(vans: list[str], batch: int) -> tuple[Plan, list[Parcel]]:
    routes, parcels = [], []
    door = (DEPOT[0] + 0.001, DEPOT[1] + 0.001)
    for van in vans:
        pid = ParcelId(f"B{batch}-{van}")
        parcels.append(Parcel(pid, door[0], door[1], 5.0, 0.05))
        stops = (
            _stop(0, StopKind.DEPOT, DEPOT, 8 * 3600, loaded=(pid,)),
            _stop(1, StopKind.DOOR, door, 8 * 3600 + 300, delivered=(pid,)),
            _stop(2, StopKind.DEPOT, DEPOT, 8 * 3600 + 600),
        )
        routes.append(VanRoute(VanId(van), Leg.LAST_MILE, DepotId("BENCH"), (Trip(0, stops),)))
    summary = PlanSummary(
        len(parcels), len(parcels), 0, len(vans), len(vans), len(vans), 0.0, 0.0, 0.0, 0.0, ()
    )
    return Plan("bench", DAY, TIMEZONE, "", tuple(routes), (), summary), parcels


class BenchPlanning:
    """Dispatch bodies name a batch of vans; the plan is built here, without a road network."""

    def load_dispatch(self, body: DispatchBody) -> CheckedPlan:
        vans = [str(v) for v in body.plan["vans"]]  # type: ignore[union-attr]
        plan, parcels = bench_plan(vans, int(body.plan["batch"]))  # type: ignore[arg-type]
        return check_plan(plan, parcels, json.dumps(body.plan), lambda p, ps: [])

    def parse_parcels(self, body: AddParcelsBody, day: date) -> list[Parcel]:
        raise ControlError("the benchmark adds no parcels")

    def replan(self, request: ReplanRequest) -> CheckedPlan:
        raise ControlError("the benchmark does not re-plan")


# -- the processes --------------------------------------------------------------------------
def controller_main(pipe: Pipe, host: str, port: int, prefix: str, db: str, n: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    profile_to = os.environ.get("FLEET_BENCH_PROFILE")
    if profile_to:  # --profile-controller: cProfile the whole controller process
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            _controller(pipe, host, port, prefix, db, n)
        finally:
            profiler.disable()
            profiler.dump_stats(profile_to)
        return
    _controller(pipe, host, port, prefix, db, n)


def _controller(pipe: Pipe, host: str, port: int, prefix: str, db: str, n: int) -> None:

    async def main() -> None:
        with SqliteStore(Path(db)) as store:
            service = ControllerService(
                address=BrokerAddress(host, port),
                store=store,
                config=ControllerConfig(name="bench-controller", stale_after_s=30.0),
                van=load_van_spec(REPO / "configs" / "van.toml"),
                roster={v: DEPOT for v in van_ids(n)},
                clock=WallClock(),
                master_key=MASTER,
                planning=BenchPlanning(),
                topics=Topics(prefix),
            )
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, service.stop)
            settle_heap()  # as `fleet controller run` does
            runner = asyncio.create_task(service.run())
            await service.ready.wait()
            pipe.send("ready")
            await runner

    asyncio.run(main())


def subscriber_main(pipe: Pipe, host: str, port: int, prefix: str, until: float) -> None:
    """Counts what the broker delivers and how late (arrival minus the van's stamp), doing
    nothing else: the reference the controller is measured against."""
    lags: list[float] = []
    mark = b'"timestamp":"'

    async def main() -> int:
        count = 0
        async with aiomqtt.Client(host, port, socket_options=NODELAY) as client:
            await client.subscribe(Topics(prefix).all_vans(VanTopic.STATE), qos=0)
            pipe.send("ready")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - time.time()):
                    async for message in client.messages:
                        count += 1
                        payload = message.payload
                        if isinstance(payload, bytes) and (at := payload.find(mark)) >= 0:
                            stamp = payload[at + len(mark) : at + len(mark) + 24].decode()
                            lags.append(time.time() - parse_timestamp(stamp))
        return count

    count = asyncio.run(main())
    pipe.send(
        {"received": count, "lag_p50_ms": _pct_ms(lags, 0.5), "lag_p99_ms": _pct_ms(lags, 0.99)}
    )


def _pct_ms(values_s: list[float], q: float) -> int:
    if not values_s:
        return 0
    ordered = sorted(values_s)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000)


@dataclass
class _Van:
    van_id: str
    verifier: CommandVerifier
    tail: str  # the state JSON after the header
    seq: int = 0


def _tail(van_id: str, order: Order | None) -> str:
    state = State(
        header=make_header(van_id, 0, 0.0),
        van_id=van_id,
        order_id=order.order_id if order else None,
        order_update_id=order.order_update_id if order else 0,
        position=VanPosition(lon=DEPOT[0], lat=DEPOT[1], heading_deg=0.0),
        battery=Battery(soc_pct=90.0, remaining_range_m=144_000.0),
        load=Load(load_kg=0.0, volume_m3=0.0),
    )
    text = state.model_dump_json()
    return text[text.index(',"van_id"') :]


def vans_main(
    pipe: Pipe,
    host: str,
    port: int,
    prefix: str,
    n: int,
    per_connection: int,
    start: float,
    seconds: float,
) -> None:
    topics = Topics(prefix)
    vans = [
        _Van(v, CommandVerifier(v, [derive_van_key(MASTER.secret, v)]), _tail(v, None))
        for v in van_ids(n)
    ]
    state_topic = {v.van_id: topics.van(v.van_id, VanTopic.STATE) for v in vans}
    order_topic = {topics.van(v.van_id, VanTopic.ORDER): v for v in vans}
    published = 0
    refused = 0
    order_legs: list[float] = []  # the controller's stamp on an order -> the van has it
    echoed: dict[str, float] = {}  # van -> when it published its last echo

    def payload(van: _Van) -> bytes:
        van.seq += 1
        head = (
            f'{{"header":{{"message_id":{van.seq},"timestamp":"{format_timestamp(time.time())}"'
            f',"version":"1.0","sender":"{van.van_id}"}}'
        )
        return (head + van.tail).encode()

    async def listen(client: aiomqtt.Client) -> None:
        nonlocal published, refused
        async for message in client.messages:
            van = order_topic.get(message.topic.value)
            if van is None:
                continue
            try:
                order = decode(Order, message.payload)
                order_legs.append(time.time() - parse_timestamp(order.header.timestamp))
                van.verifier.verify(order, time.time())
            except (DecodeError, SignatureError):
                refused += 1
                continue
            van.tail = _tail(van.van_id, order)
            await client.publish(state_topic[van.van_id], payload(van), qos=0)  # the echo
            echoed[van.van_id] = time.time()
            published += 1

    async def main() -> None:
        nonlocal published
        async with contextlib.AsyncExitStack() as stack:
            groups = [vans[i : i + per_connection] for i in range(0, len(vans), per_connection)]
            clients = []
            for group in groups:
                client = aiomqtt.Client(host, port, socket_options=NODELAY, keepalive=30)
                await stack.enter_async_context(client)
                for van in group:
                    await client.subscribe(topics.van(van.van_id, VanTopic.ORDER), qos=1)
                clients.append(client)
            readers = [asyncio.create_task(listen(c)) for c in clients]
            # These vans stand for a thousand devices, each with its own collector: one
            # process's collection pausing them all at once would be measured as the
            # controller's delay. Their set-up is frozen and they make next to no garbage
            # cycles in a run.
            gc.collect()
            gc.freeze()
            gc.disable()
            pipe.send("ready")
            owner = {van.van_id: clients[i // per_connection] for i, van in enumerate(vans)}
            await asyncio.sleep(max(0.0, start - time.time()))  # the agreed start
            # Staggered over the second: van k is due at k/n s. One wake-up per slot publishes
            # every state then due (a sleep per van would cost this process more CPU than the
            # controller spends on the state).
            due = [
                (second + k / len(vans), van)
                for second in range(int(seconds))
                for k, van in enumerate(vans)
            ]
            i = 0
            while i < len(due):
                now = time.time() - start
                while i < len(due) and due[i][0] <= now:
                    van = due[i][1]
                    await owner[van.van_id].publish(state_topic[van.van_id], payload(van), qos=0)
                    published += 1
                    i += 1
                if i < len(due):
                    await asyncio.sleep(max(SLOT_S, due[i][0] - (time.time() - start)))
            await asyncio.sleep(DRAIN_S / 2)  # late orders still get their echo
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    asyncio.run(main())
    pipe.send(
        {
            "published": published,
            "refused": refused,
            "order_leg_p50_ms": _pct_ms(order_legs, 0.5),
            "order_leg_p99_ms": _pct_ms(order_legs, 0.99),
            "echoed": echoed,
        }
    )


# -- one run -------------------------------------------------------------------------------
@dataclass
class Result:
    vans: int
    seconds: float
    published: int
    processed: int
    received: int
    throttled: int
    late: int  # states the controller processed more than 1 s after the van's stamp
    lag_p50_ms: int
    lag_p99_ms: int
    lag_max_ms: int
    rtts_ms: list[float]
    refused: int
    sub_lag_p50_ms: int
    sub_lag_p99_ms: int
    order_leg_p50_ms: int  # the controller's stamp on an order -> the van has it
    order_leg_p99_ms: int
    echo_leg_p50_ms: int  # the van publishes its echo -> the controller processes it
    echo_leg_p99_ms: int
    cpu_s: dict[str, float]  # CPU seconds per process over the measured window

    @property
    def lost(self) -> int:
        return max(0, self.published - self.processed)

    @property
    def ratio(self) -> float:
        return self.processed / self.received if self.received else 0.0

    @property
    def keeps_up(self) -> bool:
        """Nothing lost, and at least 99 % of the run's states processed within 1 s (the
        controller counts late states since its start; its p50/p99 cover recent ones)."""
        return self.lost == 0 and self.late <= 0.01 * self.processed

    def rtt(self, q: float) -> float:
        if not self.rtts_ms:
            return float("nan")
        ordered = sorted(self.rtts_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Mosquitto:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.access(binary, os.X_OK):
            raise SystemExit(
                "mosquitto is not installed (apt-get install mosquitto), or pass --broker"
            )
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        dev = (REPO / "configs" / "mosquitto" / "dev.conf").read_text()
        conf.write_text(dev.replace("listener 1883 127.0.0.1", f"listener {self.port} 127.0.0.1"))
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)  # polling another process's port: no event to await
        raise SystemExit("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(
    host: str,
    port: int,
    n: int,
    seconds: float,
    orders_per_s: float,
    per_connection: int,
    broker_pid: int | None,
) -> Result:
    ctx = mp.get_context("spawn")
    prefix = f"bench/{os.getpid()}-{time.time_ns() % 10**9}/"
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        c_pipe, c_child = ctx.Pipe()
        controller = ctx.Process(target=controller_main, args=(c_child, host, port, prefix, db, n))
        controller.start()
        if not c_pipe.poll(120):
            raise SystemExit("the controller did not start")
        c_pipe.recv()
        setup_s = 5.0 + n / 2000  # the vans connect and subscribe
        start = time.time() + setup_s
        until = start + seconds + DRAIN_S
        s_pipe, s_child = ctx.Pipe()
        subscriber = ctx.Process(target=subscriber_main, args=(s_child, host, port, prefix, until))
        subscriber.start()
        s_pipe.recv()
        v_pipe, v_child = ctx.Pipe()
        vans = ctx.Process(
            target=vans_main, args=(v_child, host, port, prefix, n, per_connection, start, seconds)
        )
        vans.start()
        if not v_pipe.poll(start - time.time() + 30):
            raise SystemExit("the vans did not connect")
        v_pipe.recv()
        pids = {
            "controller": controller.pid,
            "plain subscriber": subscriber.pid,
            "vans": vans.pid,
            "broker": broker_pid,
        }
        status, cpu = asyncio.run(
            _dispatch_and_watch(host, port, prefix, n, start, seconds, orders_per_s, pids)
        )
        van_report = v_pipe.recv()
        sub_report = s_pipe.recv()
        for proc in (vans, subscriber):
            proc.join(30)
        assert controller.pid is not None
        os.kill(controller.pid, signal.SIGTERM)
        controller.join(30)
        with SqliteStore(Path(db)) as store:
            confirmed = [e for e in store.events(limit=1_000_000) if e.kind == "order_confirmed"]
        rtts = [float(e.data["rtt_s"]) * 1000 for e in confirmed]  # type: ignore[arg-type]
        echoed: dict[str, float] = van_report["echoed"]
        back_legs = [e.time_s - echoed[e.van_id] for e in confirmed if e.van_id in echoed]
    counters = status.counters
    return Result(
        vans=n,
        seconds=seconds,
        published=van_report["published"],
        processed=counters.get("states", 0),
        received=sub_report["received"],
        throttled=counters.get("throttled", 0),
        late=counters.get("states_late_1s", 0),
        lag_p50_ms=counters.get("state_lag_p50_ms", 0),
        lag_p99_ms=counters.get("state_lag_p99_ms", 0),
        lag_max_ms=counters.get("state_lag_max_ms", 0),
        rtts_ms=rtts,
        refused=van_report["refused"],
        sub_lag_p50_ms=sub_report["lag_p50_ms"],
        sub_lag_p99_ms=sub_report["lag_p99_ms"],
        order_leg_p50_ms=van_report["order_leg_p50_ms"],
        order_leg_p99_ms=van_report["order_leg_p99_ms"],
        echo_leg_p50_ms=_pct_ms(back_legs, 0.5),
        echo_leg_p99_ms=_pct_ms(back_legs, 0.99),
        cpu_s=cpu,
    )


async def _dispatch_and_watch(
    host: str,
    port: int,
    prefix: str,
    n: int,
    start: float,
    seconds: float,
    orders_per_s: float,
    pids: dict[str, int | None],
) -> tuple[StatusResult, dict[str, float]]:
    ids = van_ids(n)
    batch = max(1, round(orders_per_s))
    async with ControllerClient(
        BrokerAddress(host, port), topics=Topics(prefix), timeout_s=60
    ) as client:
        await asyncio.sleep(max(0.0, start - time.time()))
        before = {k: cpu_s(pid) for k, pid in pids.items() if pid is not None}
        await asyncio.sleep(1.0)
        for second in range(int(seconds) - 2):  # one plan a second, each van at most once
            chunk: list[JsonValue] = list(ids[second * batch : (second + 1) * batch])
            if not chunk:
                break
            for k, van in enumerate(chunk):  # spread over the second, as releases are
                await client.request(
                    DispatchBody(plan={"batch": second * batch + k, "vans": [van]}, orders_csv="")
                )
                await asyncio.sleep(max(0.0, start + 2 + second + (k + 1) / batch - time.time()))
        await asyncio.sleep(max(0.0, start + seconds - time.time()))
        cpu = {k: cpu_s(pids[k]) - v for k, v in before.items()}
        await asyncio.sleep(max(0.0, start + seconds + DRAIN_S - time.time()))
        result = await client.request(StatusBody(van_ids=()))
        assert isinstance(result, StatusResult)
        return result, cpu


# -- report -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vans", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--broker",
        help="mqtt://host:port of a broker you run (default: a "
        "private Mosquitto with configs/mosquitto/dev.conf)",
    )
    parser.add_argument("--orders-per-second", type=float, default=10.0)
    parser.add_argument("--vans-per-connection", type=int, default=25)
    parser.add_argument("--no-max", action="store_true", help="skip the max_vans search")
    parser.add_argument("--trial-seconds", type=float, default=10.0)
    parser.add_argument("--max-limit", type=int, default=8000)
    parser.add_argument(
        "--profile-controller", metavar="FILE", help="write a cProfile of the controller here"
    )
    args = parser.parse_args()
    if args.profile_controller:
        os.environ["FLEET_BENCH_PROFILE"] = str(Path(args.profile_controller).resolve())

    with tempfile.TemporaryDirectory() as tmp:
        broker = None if args.broker else Mosquitto(Path(tmp))
        address = BrokerAddress.parse(args.broker) if args.broker else None
        host = address.host if address else "127.0.0.1"
        port = address.port if address else broker.port  # type: ignore[union-attr]
        broker_pid = broker.proc.pid if broker else None
        try:
            console.print(
                f"{args.vans} vans at 1 Hz for {args.seconds:g} s through "
                f"{'Mosquitto (private, dev.conf)' if broker else args.broker} ..."
            )
            result = run_once(
                host,
                port,
                args.vans,
                args.seconds,
                args.orders_per_second,
                args.vans_per_connection,
                broker_pid,
            )
            trials: list[Result] = []
            max_vans = None
            if not args.no_max:
                max_vans = find_max(host, port, args, trials, broker_pid)
        finally:
            if broker is not None:
                broker.stop()
    report(result, trials, max_vans)


def find_max(
    host: str, port: int, args: argparse.Namespace, trials: list[Result], broker_pid: int | None
) -> int:
    """Step up by 1000 vans until a trial falls behind, then halve the gap twice."""

    def ok(n: int) -> bool:
        console.print(f"  trial: {n} vans for {args.trial_seconds:g} s ...")
        r = run_once(
            host,
            port,
            n,
            args.trial_seconds,
            args.orders_per_second,
            args.vans_per_connection,
            broker_pid,
        )
        trials.append(r)
        return r.keeps_up

    good, bad = 0, None
    n = 1000
    while n <= args.max_limit:
        if ok(n):
            good, n = n, n + 1000
        else:
            bad = n
            break
    if bad is None:
        return good
    for _ in range(2):
        mid = (good + bad) // 2
        if mid in (good, bad):
            break
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def report(result: Result, trials: list[Result], max_vans: int | None) -> None:
    window = result.seconds
    table = Table(
        title=f"MQTT load: {result.vans} vans at 1 Hz, {window:g} s (Mosquitto, loopback)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("states published by the vans", f"{result.published:,}"),
        ("processed by the controller", f"{result.processed:,}"),
        ("received by a plain subscriber", f"{result.received:,}"),
        ("lost (published - processed)", f"{result.lost:,}"),
        ("controller rate, msg/s", f"{result.processed / window:,.0f}"),
        ("plain subscriber rate, msg/s", f"{result.received / window:,.0f}"),
        ("controller / plain subscriber", f"{result.ratio:.3f}"),
        (
            "controller: state lag p50 / p99 / max, ms",
            f"{result.lag_p50_ms} / {result.lag_p99_ms} / {result.lag_max_ms}",
        ),
        (
            "plain subscriber: state lag p50 / p99, ms",
            f"{result.sub_lag_p50_ms} / {result.sub_lag_p99_ms}",
        ),
        *(
            (f"CPU of {name}, % of one core", f"{100 * used / window:.0f}")
            for name, used in result.cpu_s.items()
        ),
        ("throttled", f"{result.throttled}"),
        ("processed more than 1 s late", f"{result.late}"),
        ("orders confirmed", f"{len(result.rtts_ms)}"),
        ("order round trip p50 / p99, ms", f"{result.rtt(0.5):.2f} / {result.rtt(0.99):.2f}"),
        (
            "of which controller's stamp -> van, p50 / p99, ms",
            f"{result.order_leg_p50_ms} / {result.order_leg_p99_ms}",
        ),
        (
            "of which van's echo -> controller, p50 / p99, ms",
            f"{result.echo_leg_p50_ms} / {result.echo_leg_p99_ms}",
        ),
        ("orders refused by vans", f"{result.refused}"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if trials:
        t = Table(title="max_vans search (nothing lost, >= 99 % of states processed within 1 s)")
        columns = ("vans", "published", "lost", "ratio", "late > 1 s", "plain sub. lag p99 ms")
        for col in (*columns, "controller CPU %", "keeps up"):
            t.add_column(col, justify="right")
        for r in trials:
            t.add_row(
                str(r.vans),
                f"{r.published:,}",
                str(r.lost),
                f"{r.ratio:.3f}",
                f"{r.late:,}",
                str(r.sub_lag_p99_ms),
                f"{100 * r.cpu_s.get('controller', 0) / r.seconds:.0f}",
                "yes" if r.keeps_up else "no",
            )
        console.print(t)
    print(
        json.dumps(
            {
                "vans": result.vans,
                "seconds": window,
                "published": result.published,
                "processed": result.processed,
                "subscriber_received": result.received,
                "lost": result.lost,
                "controller_ratio": round(result.ratio, 4),
                "controller_rate_msg_s": round(result.processed / window, 1),
                "subscriber_rate_msg_s": round(result.received / window, 1),
                "state_lag_p99_ms": result.lag_p99_ms,
                "states_late_1s": result.late,
                "subscriber_state_lag_p99_ms": result.sub_lag_p99_ms,
                "controller_cpu_pct": round(100 * result.cpu_s.get("controller", 0) / window, 1),
                "orders_confirmed": len(result.rtts_ms),
                "order_rtt_p50_ms": round(result.rtt(0.5), 3),
                "order_rtt_p99_ms": round(result.rtt(0.99), 3),
                "order_rtt_mean_ms": round(statistics.fmean(result.rtts_ms), 3)
                if result.rtts_ms
                else None,
                "order_leg_p99_ms": result.order_leg_p99_ms,
                "echo_leg_p99_ms": result.echo_leg_p99_ms,
                "max_vans": max_vans,
            }
        )
    )


if __name__ == "__main__":
    main()
