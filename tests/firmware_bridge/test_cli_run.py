"""``firmware-bridge run`` as a user runs it: a real process, stopped by a signal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest
from bridge_fixtures import LAT0, LON0, REPO, line_order

from fleet.model import load_van_spec
from fleet.protocol import SigningKey, State, Topics, VanTopic, decode, encode, sign
from fleet.protocol.clock import WallClock
from sim.vcu import SimulatedVcu, vcu_port
from sim.vehicle import Vehicle
from tests.support.brokers import BrokerEndpoint

pytestmark = pytest.mark.slow

BRIDGE = str(Path(sys.executable).parent / "firmware-bridge")
STOP_BOUND_S = 1.0
VAN = "WH-TEST-01"


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A port that takes TCP connections into its backlog and never answers: a broker that
    hangs (its connect() blocks in aiomqtt's worker thread once the backlog is full)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        yield s.getsockname()[1]


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Bridges a test started; any still running at the end (a failed test) are killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _start(
    started: list[subprocess.Popen[str]], tmp_path: Path, broker: str, prefix: str
) -> subprocess.Popen[str]:
    key = tmp_path / "signing.key"
    key.write_text(f'key_id = "{VAN}.k1"\nsecret_hex = "{"ab" * 32}"\n')
    proc = subprocess.Popen(
        [BRIDGE, "run", "--van", VAN, "--serial", "loop://", "--broker", broker,
         "--key-file", str(key), "--state-dir", str(tmp_path / "state"),
         "--topic-prefix", prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    started.append(proc)
    return proc


def _wait_for(proc: subprocess.Popen[str], words: tuple[str, ...], timeout_s: float) -> str:
    assert proc.stdout is not None
    seen = ""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sel.select(0.1):
                line = proc.stdout.readline()
                seen += line
                if any(w in line for w in words):
                    return seen
    raise AssertionError(f"none of {words} in the bridge's output:\n{seen}")


def _stop_time(proc: subprocess.Popen[str], sig: signal.Signals) -> float:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
    return time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_connected_bridge_stops_within_a_second_and_says_offline(
    mosquitto: BrokerEndpoint,
    tmp_path: Path,
    sig: signal.Signals,
    started: list[subprocess.Popen[str]],
) -> None:
    proc = _start(started, tmp_path, f"mqtt://{mosquitto.host}:{mosquitto.port}", mosquitto.prefix)
    _wait_for(proc, ("connected to",), 30)
    assert _stop_time(proc, sig) < STOP_BOUND_S
    got = subprocess.run(
        ["mosquitto_sub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-C", "1", "-W", "5",
         "-t", f"{mosquitto.prefix}fleet/v1/vans/{VAN}/connection"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert '"connection_state":"OFFLINE"' in got.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_bridge_whose_broker_hangs_still_stops_within_a_second(
    silent_broker: int,
    tmp_path: Path,
    sig: signal.Signals,
    started: list[subprocess.Popen[str]],
) -> None:
    proc = _start(started, tmp_path, f"mqtt://127.0.0.1:{silent_broker}", "test/")
    _wait_for(proc, ("unreachable",), 30)  # the first attempt timed out; the next one hangs
    time.sleep(0.5)
    assert _stop_time(proc, sig) < STOP_BOUND_S


# ---- restarts: the bridge's order book survives SIGTERM and SIGKILL (issue 14 item 5) -----


def _key() -> SigningKey:
    return SigningKey(key_id=f"{VAN}.k1", secret=bytes.fromhex("ab" * 32))


def _start_on(
    started: list[subprocess.Popen[str]], tmp_path: Path, serial: str, broker: str, prefix: str
) -> subprocess.Popen[str]:
    key = tmp_path / "signing.key"
    key.write_text(f'key_id = "{VAN}.k1"\nsecret_hex = "{"ab" * 32}"\n')
    log = open(tmp_path / f"bridge-{len(started)}.log", "w")  # noqa: SIM115 (closed with the test)
    proc = subprocess.Popen(
        [BRIDGE, "run", "--van", VAN, "--serial", serial, "--broker", broker,
         "--key-file", str(key), "--state-dir", str(tmp_path / "state"),
         "--topic-prefix", prefix, "--baud", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    log.close()
    started.append(proc)
    return proc


@dataclass
class _Watch:
    """What the controller side sees of the van: states and connection messages, in order."""

    states: list[State] = field(default_factory=list)
    online: list[int] = field(default_factory=list)  # index into states at each ONLINE
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, what: Callable[[], bool], timeout_s: float = 60.0) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not what():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError as exc:
            seen = [
                (s.order_id, s.order_update_id, s.last_node_sequence_id, s.load.parcel_ids)
                for s in self.states[-3:]
            ]
            raise AssertionError(f"not seen within {timeout_s} s; last states: {seen}") from exc

    @property
    def last(self) -> State:
        return self.states[-1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_bridge_stopped_mid_order_comes_back_with_its_order_and_parcels_and_drives_on(
    mosquitto: BrokerEndpoint,
    tmp_path: Path,
    sig: signal.Signals,
    started: list[subprocess.Popen[str]],
) -> None:
    async def scenario() -> None:
        prefix = mosquitto.prefix
        topics = Topics(prefix)
        clock = WallClock()
        spec = load_van_spec(REPO / "configs" / "van.toml")
        port = vcu_port("pty")
        assert port.path is not None
        vcu = SimulatedVcu(port, Vehicle(spec, lon=LON0, lat=LAT0), clock=clock)
        vcu_task = asyncio.create_task(vcu.run(), name="vcu")
        watch = _Watch()
        broker = mosquitto.url
        try:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
                await client.subscribe(topics.van(VAN, VanTopic.STATE), qos=0)
                await client.subscribe(topics.van(VAN, VanTopic.CONNECTION), qos=1)

                async def listen() -> None:
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        if message.topic.value.endswith("/state"):
                            watch.states.append(decode(State, message.payload))
                        elif b'"ONLINE"' in message.payload and not message.retain:
                            watch.online.append(len(watch.states))
                        watch.changed.set()

                listener = asyncio.create_task(listen())
                _start_on(started, tmp_path, port.path, broker, prefix)
                await watch.until(lambda: bool(watch.states))
                now = clock.time()
                base = line_order(stops=5, released=3, spacing_m=20, message_id=1, now_s=now)
                order_topic = topics.van(VAN, VanTopic.ORDER)
                await client.publish(order_topic, encode(sign(base, _key())), qos=1)
                update = line_order(
                    stops=5, released=5, spacing_m=20, update_id=1, message_id=2, now_s=now
                )
                await client.publish(order_topic, encode(sign(update, _key())), qos=1)
                # on the way to n2: n0's load and n1's delivery done
                await watch.until(
                    lambda: (
                        watch.last.order_update_id == 1
                        and watch.last.last_node_sequence_id == 2
                        and watch.last.driving
                        and "P1" not in watch.last.load.parcel_ids
                    )
                )
                before = watch.last
                assert before.load.parcel_ids == ("P2", "P3", "P4")
                stopped = started[-1]
                onlines = len(watch.online)
                stopped.send_signal(sig)
                stopped.wait(10)
                assert stopped.returncode == (0 if sig is signal.SIGTERM else -signal.SIGKILL)
                _start_on(started, tmp_path, port.path, broker, prefix)
                # the restarted bridge's first state: the same order, update, progress, load
                await watch.until(lambda: len(watch.online) > onlines)
                await watch.until(lambda: len(watch.states) > watch.online[-1])
                first = watch.states[watch.online[-1]]
                assert (first.order_id, first.order_update_id) == ("O-1", 1)
                reached = first.last_node_sequence_id
                assert reached is not None and reached >= 2
                ahead = {f"P{i}" for i in range(1, 5) if 2 * i > reached}
                assert ahead <= set(first.load.parcel_ids) <= ahead | {f"P{reached // 2}"}
                # and it drives on to the end: every parcel delivered once
                await watch.until(
                    lambda: watch.last.last_node_sequence_id == 8 and not watch.last.load.parcel_ids
                )
                after = watch.states[watch.online[-1] :]
                assert all(s.order_id == "O-1" for s in after)
                # the VCU's mission was carried on, nothing of it sent twice
                assert len({m for m, _ in vcu.applied_segments}) == 1
                assert vcu.applied_segments == sorted(set(vcu.applied_segments))
                listener.cancel()
        finally:
            vcu_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await vcu_task
            port.close()

    asyncio.run(asyncio.wait_for(scenario(), 150))
    book = json.loads((tmp_path / "state" / "order-book.json").read_text())
    assert book["order"] is not None and book["parcels_on_board"] == []
    assert os.stat(tmp_path / "state" / "order-book.json").st_mode & 0o777 == 0o600


def test_a_telemetry_bound_that_is_not_positive_is_refused_with_the_option_named(
    tmp_path: Path,
) -> None:
    key = tmp_path / "signing.key"
    key.write_text(f'key_id = "{VAN}.k1"\nsecret_hex = "{"ab" * 32}"\n')
    got = subprocess.run(
        [BRIDGE, "run", "--van", VAN, "--serial", "loop://", "--key-file", str(key),
         "--state-dir", str(tmp_path / "state"), "--telemetry-stale", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode != 0
    assert "--telemetry-stale" in got.stdout + got.stderr
