"""``firmware-bridge run`` as a user runs it: a real process, stopped by a signal."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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
