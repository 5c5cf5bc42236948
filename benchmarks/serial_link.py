"""Serial link benchmark (issue 5): link throughput over a pseudo-terminal against the raw pty,
and emergency-stop latency from MQTT publish to the VCU with telemetry flowing.

    python benchmarks/serial_link.py [--seconds 5] [--estops 200] [--broker mqtt://127.0.0.1:1883]

1. **raw pty**: 64-byte frames written to the pty master, read from the raw slave by another
   thread, for ``--seconds``; once with one ``os.write`` per frame and once in 64 KiB batches.
2. **link**: a bridge-role :class:`SerialLink` on the pty slave (opened by pyserial) sends
   64-byte DRIVE_SEGMENT frames through the full link (sequence numbers, window, ACKs, CRC,
   COBS) to a VCU-role link on the master in **another process**, which counts what it
   delivers in order (window 128: the default 16 suits a 115200-baud line, where 16 full
   frames already fill 0.36 s of line time). ``link_vs_raw`` = link bytes/s ÷ raw bytes/s (one write per frame);
   ``link_vs_raw_batched`` uses the batched raw rate.
3. **e-stop**: ``fleet-sim``'s simulated VCU (no baud pacing, telemetry at 50 Hz) in one
   process, ``firmware-bridge run`` in another, Mosquitto on loopback; this process publishes
   signed emergency stops and the VCU prints when each arrives (CLOCK_MONOTONIC is shared by
   the processes). Latency = VCU receipt − just before the MQTT publish.

Prints a table, then one JSON line with ``link_vs_raw``, ``frames_per_s``, ``estop_p50_ms``,
``estop_p99_ms`` (targets: ≥ 0.5, ≤ 5 ms p99). Timings on a shared machine are provisional.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from firmware_bridge import wire  # noqa: E402
from firmware_bridge.link import (  # noqa: E402
    Delivered,
    LinkConfig,
    LinkEvent,
    PtyPair,
    Received,
    SerialLink,
    url_opener,
)
from fleet.protocol.clock import WallClock  # noqa: E402

FRAME = wire.DriveSegment(1, 0, 1000, 0, False, tuple((i, i) for i in range(5)))
FRAME_BYTES = len(wire.encode_frame(FRAME, seq=1, ack=1))
BENCH_LINK = LinkConfig(wire.Role.BRIDGE, line_baud=0, max_queue=4096, window=128)


# ---- 1. raw pty ---------------------------------------------------------------------------


def raw_pty(seconds: float, batched: bool) -> float:
    master, slave = os.openpty()
    tty.setraw(slave)
    received = [0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                received[0] += len(os.read(slave, 65536))
            except OSError:
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    frame = wire.encode_frame(FRAME, seq=1, ack=1)
    batch = frame * (65536 // len(frame))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if batched:
            os.write(master, batch)
        else:
            for _ in range(1000):
                os.write(master, frame)
    elapsed = time.perf_counter() - t0
    time.sleep(0.1)
    stop.set()
    os.close(master)
    os.close(slave)
    t.join(1)
    return received[0] / elapsed


# ---- 2. link throughput ---------------------------------------------------------------------


async def link_receiver(seconds: float) -> None:
    """Child: the VCU end on a pty master; prints the slave path, then frames delivered."""
    pair = PtyPair()
    delivered = [0]
    first = [0.0]

    def on_event(event: LinkEvent) -> None:
        if isinstance(event, Received) and isinstance(event.message, wire.DriveSegment):
            if not delivered[0]:
                first[0] = time.perf_counter()
            delivered[0] += 1

    async def opener() -> object:
        return pair.transport()

    link = SerialLink(
        opener,  # type: ignore[arg-type]
        config=LinkConfig(wire.Role.VCU, line_baud=0),
        clock=WallClock(),
        on_event=on_event,
        name="bench-vcu",
    )
    print(pair.slave_path, flush=True)
    async with link:
        await asyncio.sleep(seconds + 3.0)
    elapsed = time.perf_counter() - first[0] if delivered[0] else 1.0
    print(json.dumps({"frames": delivered[0], "elapsed_s": elapsed}), flush=True)
    pair.close()


async def link_sender(path: str, seconds: float) -> dict[str, float]:
    delivered = asyncio.Event()
    count = [0]

    def on_event(event: LinkEvent) -> None:
        if isinstance(event, Delivered):
            count[0] += 1
            delivered.set()

    link = SerialLink(
        url_opener(path), config=BENCH_LINK, clock=WallClock(), on_event=on_event, name="bench"
    )
    async with link:
        while not link.up:
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            while link.core.queued < 2048:
                link.send(FRAME)
            delivered.clear()
            await delivered.wait()
        elapsed = time.perf_counter() - t0
        stats = link.core.stats
    return {
        "acked_frames": count[0],
        "elapsed_s": elapsed,
        "retransmits": stats.retransmits,
        "bad_frames": stats.bad_frames,
    }


def link_throughput(seconds: float) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--link-child", str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    path = child.stdout.readline().strip()
    sent = asyncio.run(link_sender(path, seconds))
    out, _ = child.communicate(timeout=seconds + 30)
    got = json.loads(out.strip().splitlines()[-1])
    frames_per_s = sent["acked_frames"] / sent["elapsed_s"]
    return {
        "frames_per_s": frames_per_s,
        "bytes_per_s": frames_per_s * FRAME_BYTES,
        "delivered": got["frames"],
        "acked": sent["acked_frames"],
        "retransmits": sent["retransmits"],
        "bad_frames": sent["bad_frames"],
    }


# ---- 3. e-stop latency ------------------------------------------------------------------------


async def vcu_child() -> None:
    """Child: a simulated VCU on a new pty, no pacing, telemetry at 50 Hz; prints e-stops."""
    from fleet.model import load_van_spec
    from sim.vcu import SimulatedVcu, VcuConfig, vcu_port
    from sim.vehicle import Vehicle

    spec = load_van_spec(REPO / "configs" / "van.toml")
    port = vcu_port("pty")
    print(port.path, flush=True)

    def on_estop(estop_id: int) -> None:
        print(f"ESTOP {estop_id} {time.monotonic_ns()}", flush=True)

    vcu = SimulatedVcu(
        port,
        Vehicle(spec, lon=-8.611, lat=41.1496),
        clock=WallClock(),
        config=VcuConfig(baud=0, telemetry_hz=50.0, link=LinkConfig(wire.Role.VCU, line_baud=0)),
        on_estop=on_estop,
    )
    await vcu.run()


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _broker(tmp: Path) -> tuple[str, int, subprocess.Popen[bytes] | None]:
    if _port_open("127.0.0.1", 1883):
        return "127.0.0.1", 1883, None
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        if _port_open("127.0.0.1", port):
            break
        time.sleep(0.05)
    return "127.0.0.1", port, proc


async def estop_latency(count: int, tmp: Path) -> list[float]:
    import aiomqtt

    from fleet.protocol import (
        InstantAction,
        InstantActions,
        InstantActionType,
        Topics,
        VanTopic,
        derive_van_key,
        encode,
        make_header,
        sign,
    )

    van = "BENCH-01"
    key = derive_van_key(os.urandom(32), van)
    key_file = tmp / "signing.key"
    key_file.write_text(f'key_id = "{key.key_id}"\nsecret_hex = "{key.secret.hex()}"\n')
    prefix = f"bench/{uuid.uuid4().hex[:8]}/"
    host, port, broker = _broker(tmp)
    vcu = subprocess.Popen(
        [sys.executable, __file__, "--vcu-child"], stdout=subprocess.PIPE, text=True
    )
    assert vcu.stdout is not None
    pty_path = vcu.stdout.readline().strip()
    bridge = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "firmware-bridge"),
            "run",
            "--van",
            van,
            "--serial",
            pty_path,
            "--broker",
            f"mqtt://{host}:{port}",
            "--key-file",
            str(key_file),
            "--state-dir",
            str(tmp / "bridge"),
            "--baud",
            "0",
            "--topic-prefix",
            prefix,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    arrivals: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read_vcu() -> None:
        assert vcu.stdout is not None
        for line in vcu.stdout:
            if line.startswith("ESTOP"):
                loop.call_soon_threadsafe(arrivals.put_nowait, int(line.split()[2]))

    threading.Thread(target=read_vcu, daemon=True).start()
    topics = Topics(prefix)
    latencies: list[float] = []
    try:
        async with aiomqtt.Client(
            host, port, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        ) as client:
            await client.subscribe(topics.van(van, VanTopic.STATE))
            async with asyncio.timeout(30):  # the bridge is up and sees the VCU
                async for _ in client.messages:
                    break
            await asyncio.sleep(1.0)
            for i in range(count):
                msg = InstantActions(
                    header=make_header("bench", i + 1, time.time()),
                    van_id=van,
                    actions=(
                        InstantAction(
                            action_id=f"E{i}", action_type=InstantActionType.EMERGENCY_STOP
                        ),
                    ),
                )
                payload = encode(sign(msg, key))
                t0 = time.monotonic_ns()
                await client.publish(topics.van(van, VanTopic.INSTANT), payload, qos=1)
                t1 = await asyncio.wait_for(arrivals.get(), 5)
                latencies.append((t1 - t0) / 1e6)
                await asyncio.sleep(0.02)
    finally:
        for proc in (bridge, vcu):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if broker is not None:
            broker.terminate()
            broker.wait(5)
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--estops", type=int, default=200)
    parser.add_argument("--link-child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--vcu-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.link_child is not None:
        asyncio.run(link_receiver(args.link_child))
        return
    if args.vcu_child:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(vcu_child())
        return

    raw_single = raw_pty(args.seconds, batched=False)
    raw_batched = raw_pty(args.seconds, batched=True)
    link = link_throughput(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        lat = asyncio.run(estop_latency(args.estops, Path(tmp)))

    rows = [
        (
            "raw pty, one write per frame",
            f"{raw_single / 1e6:.2f} MB/s",
            f"{raw_single / FRAME_BYTES:,.0f} frames/s",
        ),
        (
            "raw pty, 64 KiB writes",
            f"{raw_batched / 1e6:.2f} MB/s",
            f"{raw_batched / FRAME_BYTES:,.0f} frames/s",
        ),
        (
            f"link (seq, window {BENCH_LINK.window}, ACK, CRC, COBS)",
            f"{link['bytes_per_s'] / 1e6:.2f} MB/s",
            f"{link['frames_per_s']:,.0f} frames/s",
        ),
        (
            "link / raw (one write per frame)",
            f"{link['bytes_per_s'] / raw_single:.2f}",
            "target ≥ 0.50",
        ),
        ("link / raw (64 KiB writes)", f"{link['bytes_per_s'] / raw_batched:.2f}", ""),
        ("e-stop MQTT → VCU p50", f"{statistics.median(lat):.2f} ms", f"n = {len(lat)}"),
        ("e-stop MQTT → VCU p99", f"{percentile(lat, 99):.2f} ms", "target ≤ 5 ms"),
        ("e-stop MQTT → VCU max", f"{max(lat):.2f} ms", ""),
    ]
    print(f"serial link benchmark — {FRAME_BYTES}-byte frames, {args.seconds:g} s per run")
    for name, a, b in rows:
        print(f"  {name:<40} {a:>14}   {b}")
    print(
        f"  link: {link['delivered']} frames delivered in order, {link['retransmits']} "
        f"retransmits, {link['bad_frames']} bad frames"
    )
    print(
        json.dumps(
            {
                "link_vs_raw": round(link["bytes_per_s"] / raw_single, 3),
                "link_vs_raw_batched": round(link["bytes_per_s"] / raw_batched, 3),
                "frames_per_s": round(link["frames_per_s"]),
                "link_bytes_per_s": round(link["bytes_per_s"]),
                "raw_bytes_per_s": round(raw_single),
                "raw_batched_bytes_per_s": round(raw_batched),
                "frame_bytes": FRAME_BYTES,
                "window": BENCH_LINK.window,
                "estop_p50_ms": round(statistics.median(lat), 3),
                "estop_p99_ms": round(percentile(lat, 99), 3),
                "estop_max_ms": round(max(lat), 3),
                "estops": len(lat),
            }
        )
    )


if __name__ == "__main__":
    main()
