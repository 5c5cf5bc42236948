#!/usr/bin/env python3
"""Console load: 1,000 vans at 1 Hz through the real stack, 10 live-stream clients, and the
parcel API hammered.

    python benchmarks/console_load.py --vans 1000 --clients 10 --seconds 40

Processes: a private Mosquitto (``configs/mosquitto/dev.conf``), the **real controller**
service and the **protocol-level vans** of ``benchmarks/mqtt_load.py`` (each van publishes its
state once a second, staggered, and echoes every order; ten one-van plans are dispatched a
second), the **real console** (``fleet console``, its own process, reading every van's state,
order and the event log from the broker), one process with ``--clients`` live-stream clients
(``GET /api/stream``, server-sent events), and one load process for the parcel API.

Measured, in two windows so that neither disturbs the other:

* **stream window** (from 5 s after the vans start, ``--stream-seconds``): for every van
  update a client receives, the delay from the van's state time stamp (the van's clock, the
  same machine) to the client having it — p50/p99 over all clients — and the console's CPU;
* **API window** (after it, to the end of the run): ``GET /api/parcels/{id}`` for the
  dispatched parcels, picked at random, over ``--api-connections`` keep-alive connections
  — requests/s (every answer checked: 200 and the parcel asked for) — and the console's CPU.

The controller's own figures (states lost, processing lag p99, states over 1 s late) are read
from its counters at the end: with the console on the same broker they should match
``benchmarks/mqtt_load.py``'s.

Prints a table and one JSON line with ``vans``, ``clients``, ``update_p50_ms``,
``update_p99_ms``, ``api_parcel_rps``, ``server_cpu_pct`` and the raw figures.
Targets: ``update_p99_ms`` <= 1000, ``api_parcel_rps`` >= 2000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import mqtt_load  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fleet.console.auth import Role, add_user  # noqa: E402
from fleet.protocol.timestamps import parse_timestamp  # noqa: E402

console = Console()
WARMUP_S = 5.0


STATE_TIME = re.compile(rb'"state_time":"([0-9T:.-]+)Z"')
_HOURS: dict[bytes, float] = {}


def _stamp_s(stamp: bytes) -> float:
    """``YYYY-MM-DDTHH:MM:SS.mmm`` (UTC) to epoch seconds, the hour's epoch cached."""
    hour = stamp[:13]
    base = _HOURS.get(hour)
    if base is None:
        base = _HOURS[hour] = parse_timestamp(hour.decode() + ":00:00Z")
    return base + int(stamp[14:16]) * 60 + float(stamp[17:])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- HTTP/1.1 over a raw socket: the load generators must cost less than the server -------
async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


def stream_main(pipe: Pipe, port: int, token: str, clients: int, t0: float, t1: float) -> None:
    """``clients`` SSE readers; the delay of every van update received in [t0, t1)."""
    delays: list[float] = []
    updates = [0] * clients

    async def one(k: int) -> None:
        reader, writer = await _open(port)
        writer.write(
            f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
        while time.time() < t1:
            size_line = await reader.readuntil(b"\r\n")  # chunked: one chunk per message
            size = int(size_line.strip(), 16)
            chunk = await reader.readexactly(size + 2)
            now = time.time()
            if now < t0:
                continue
            # lean on purpose: a busy reader would add its own delay to what it measures
            for stamp in STATE_TIME.findall(chunk):
                delays.append(now - _stamp_s(stamp))
                updates[k] += 1
        writer.close()

    async def main() -> None:
        pipe.send("ready")
        await asyncio.gather(*(one(k) for k in range(clients)))

    asyncio.run(main())
    pipe.send({"delays": delays, "updates": updates})


def api_main(
    pipe: Pipe, port: int, token: str, connections: int, t0: float, t1: float, ids: list[str]
) -> None:
    """Keep-alive connections asking for random parcels as fast as answers come back."""
    done = 0
    bad = 0

    async def one(seed: int) -> None:
        nonlocal done, bad
        rng = random.Random(seed)
        reader, writer = await _open(port)
        auth = f"Authorization: Bearer {token}\r\n"
        while time.time() < t1:
            pid = rng.choice(ids)
            writer.write(
                f"GET /api/parcels/{pid} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
            )
            status, body = await _response(reader)
            if status == 200 and f'"parcel_id":"{pid}"'.encode() in body:
                done += 1
            else:
                bad += 1
        writer.close()

    async def main() -> None:
        pipe.send("ready")
        await asyncio.sleep(max(0.0, t0 - time.time()))
        await asyncio.gather(*(one(k) for k in range(connections)))

    asyncio.run(main())
    pipe.send({"done": done, "bad": bad, "seconds": t1 - t0})


async def _get(port: int, token: str, path: str) -> tuple[int, object]:
    reader, writer = await _open(port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    status, body = await _response(reader)
    writer.close()
    return status, json.loads(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vans", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the vans run")
    parser.add_argument("--stream-seconds", type=float, default=15.0)
    parser.add_argument("--api-connections", type=int, default=16)
    parser.add_argument("--orders-per-second", type=float, default=10.0)
    parser.add_argument("--vans-per-connection", type=int, default=25)
    args = parser.parse_args()
    api_from = WARMUP_S + args.stream_seconds + 2.0
    if args.seconds < api_from + 5:
        raise SystemExit(f"--seconds must be at least {api_from + 5:g}")

    ctx = mp.get_context("spawn")
    prefix = f"cbench/{os.getpid()}-{time.time_ns() % 10**9}/"
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        broker = mqtt_load.Mosquitto(tmp)
        host, port = "127.0.0.1", broker.port
        users = tmp / "users.toml"
        token = add_user(users, "bench", Role.VIEWER, rate_per_s=1e6)
        http_port = mqtt_load.free_port()
        fleet_bin = Path(sys.executable).with_name("fleet")
        console_proc = subprocess.Popen(
            [
                str(fleet_bin), "console",
                "--broker", f"mqtt://{host}:{port}",
                "--topic-prefix", prefix,
                "--listen", f"127.0.0.1:{http_port}",
                "--users", str(users),
                "--site", str(REPO / "configs" / "sites" / "poa.toml"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        procs: list[mp.process.BaseProcess] = []
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", http_port), 0.2),
                ):
                    break
                if console_proc.poll() is not None:
                    raise SystemExit(
                        f"the console stopped: {console_proc.stderr.read().decode()[-2000:]}"
                    )  # type: ignore[union-attr]
                time.sleep(0.1)  # another process's port: no event to await
            else:
                raise SystemExit("the console did not start")
            db = str(tmp / "bench.db")
            c_pipe, c_child = ctx.Pipe()
            controller = ctx.Process(
                target=mqtt_load.controller_main, args=(c_child, host, port, prefix, db, args.vans)
            )
            controller.start()
            procs.append(controller)
            if not c_pipe.poll(120):
                raise SystemExit("the controller did not start")
            c_pipe.recv()
            start = time.time() + 5.0 + args.vans / 2000
            t_stream0, t_stream1 = start + WARMUP_S, start + WARMUP_S + args.stream_seconds
            t_api0, t_api1 = start + api_from, start + args.seconds - 1.0
            s_pipe, s_child = ctx.Pipe()
            streams = ctx.Process(
                target=stream_main,
                args=(s_child, http_port, token, args.clients, t_stream0, t_stream1),
            )
            streams.start()
            procs.append(streams)
            s_pipe.recv()
            v_pipe, v_child = ctx.Pipe()
            vans = ctx.Process(
                target=mqtt_load.vans_main,
                args=(
                    v_child,
                    host,
                    port,
                    prefix,
                    args.vans,
                    args.vans_per_connection,
                    start,
                    args.seconds,
                ),
            )
            vans.start()
            procs.append(vans)
            v_pipe.recv()
            pids = {"controller": controller.pid, "vans": vans.pid, "broker": broker.proc.pid}
            watch = asyncio.run(
                _watch(
                    args,
                    host,
                    port,
                    prefix,
                    http_port,
                    token,
                    start,
                    (t_stream0, t_stream1),
                    (t_api0, t_api1),
                    console_proc.pid,
                    pids,
                    ctx,
                )
            )
            van_report = v_pipe.recv()
            stream_report = s_pipe.recv()
            for proc in procs[1:]:
                proc.join(30)
            assert controller.pid is not None
            os.kill(controller.pid, signal.SIGTERM)
            controller.join(30)
            with mqtt_load.SqliteStore(Path(db)) as store:
                rtts_ms = [
                    float(e.data["rtt_s"]) * 1000  # type: ignore[arg-type]
                    for e in store.events(limit=1_000_000)
                    if e.kind == "order_confirmed"
                ]
        finally:
            console_proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                console_proc.wait(15)
            if console_proc.poll() is None:
                console_proc.kill()
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
            broker.stop()

    delays_ms = [d * 1000 for d in stream_report["delays"]]
    status = watch["status"]
    counters = status["counters"]
    published = van_report["published"]
    result = {
        "vans": args.vans,
        "clients": args.clients,
        "update_p50_ms": round(_pct(delays_ms, 0.5), 1),
        "update_p99_ms": round(_pct(delays_ms, 0.99), 1),
        "update_max_ms": round(max(delays_ms, default=float("nan")), 1),
        "updates_received": len(delays_ms),
        "updates_per_client_s": round(len(delays_ms) / args.clients / args.stream_seconds, 1),
        "api_parcel_rps": round(watch["api"]["done"] / watch["api"]["seconds"], 1),
        "api_bad": watch["api"]["bad"],
        "api_parcels": watch["parcels"],
        "server_cpu_pct": round(100 * watch["cpu_stream_s"] / args.stream_seconds, 1),
        "server_cpu_pct_api": round(100 * watch["cpu_api_s"] / (t_api1 - t_api0), 1),
        "controller_lost": published - counters.get("states", 0),
        "controller_states_late_1s": counters.get("states_late_1s", 0),
        "controller_lag_p99_ms": counters.get("state_lag_p99_ms", 0),
        "controller_cpu_pct": round(100 * watch["cpu"]["controller"] / args.seconds, 1),
        "controller_order_rtt_p50_ms": round(_pct(rtts_ms, 0.5), 1),
        "controller_order_rtt_p99_ms": round(_pct(rtts_ms, 0.99), 1),
        "published": published,
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine shows here
    }
    table = Table(title=f"console load: {args.vans} vans at 1 Hz, {args.clients} stream clients")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    targets = {"update_p99_ms": "<= 1000", "api_parcel_rps": ">= 2000"}
    for key, value in result.items():
        table.add_row(key, str(value), targets.get(key, ""))
    console.print(table)
    print(json.dumps(result))


async def _watch(
    args: argparse.Namespace,
    host: str,
    port: int,
    prefix: str,
    http_port: int,
    token: str,
    start: float,
    stream_window: tuple[float, float],
    api_window: tuple[float, float],
    console_pid: int,
    pids: dict[str, int | None],
    ctx: mp.context.SpawnContext,
) -> dict[str, object]:
    """Dispatch the vans' orders (as mqtt_load does), measure the console's CPU in each
    window, start the API load on the parcels the console knows, read the controller."""
    dispatch = asyncio.create_task(
        mqtt_load._dispatch_and_watch(
            host, port, prefix, args.vans, start, args.seconds, args.orders_per_second, pids
        )
    )
    await asyncio.sleep(max(0.0, stream_window[0] - time.time()))
    c0 = mqtt_load.cpu_s(console_pid)
    await asyncio.sleep(max(0.0, stream_window[1] - time.time()))
    cpu_stream = mqtt_load.cpu_s(console_pid) - c0
    _, parcels = await _get(http_port, token, "/api/parcels?limit=10000")
    ids = [p["parcel_id"] for p in parcels["parcels"]]  # type: ignore[index]
    if not ids:
        raise SystemExit("the console knows no parcels: were the orders dispatched?")
    a_pipe, a_child = ctx.Pipe()
    loader = ctx.Process(
        target=api_main,
        args=(a_child, http_port, token, args.api_connections, api_window[0], api_window[1], ids),
    )
    loader.start()
    await asyncio.to_thread(a_pipe.recv)
    await asyncio.sleep(max(0.0, api_window[0] - time.time()))
    c1 = mqtt_load.cpu_s(console_pid)
    await asyncio.sleep(max(0.0, api_window[1] - time.time()))
    cpu_api = mqtt_load.cpu_s(console_pid) - c1
    api = await asyncio.to_thread(a_pipe.recv)
    loader.join(10)
    status, cpu = await dispatch
    return {
        "status": status.model_dump(),
        "cpu": cpu,
        "cpu_stream_s": cpu_stream,
        "cpu_api_s": cpu_api,
        "api": api,
        "parcels": len(ids),
    }


if __name__ == "__main__":
    main()
