"""Real MQTT brokers for tests: the embedded one and Mosquitto (pytest plugin).

Fixtures:

* ``broker`` — parametrised over ``embedded`` (amqtt in a background thread, one per session)
  and ``mosquitto`` (the system broker on 127.0.0.1:1883, or a private ``mosquitto`` on a
  free port when none listens there). Every test gets a unique topic prefix
  (``broker.topics``), so tests sharing a broker never see each other's messages.
* ``mosquitto`` — the Mosquitto endpoint only.
* ``mosquitto_factory`` — ``start(extra_config: str = "") -> MosquittoProcess``: a private
  ``mosquitto`` with its own config (auth, ACL, TLS, limits) that the test can ``restart()``
  or ``kill()``; stopped at the end of the test.

Where the ``mosquitto`` binary is missing (and nothing listens on 127.0.0.1:1883), the
Mosquitto tests skip with the reason — unless ``FLEET_REQUIRE_MOSQUITTO=1`` (set by
``.ci/run``), where they fail, so that CI skips nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.control.embedded_broker import EmbeddedBroker
from fleet.protocol.topics import Topics

LOOPBACK = "127.0.0.1"
SYSTEM_MOSQUITTO_PORT = 1883
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together while they are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [int(s.getsockname()[1]) for s in socks]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port, 0.2):
            return
        time.sleep(0.02)  # polling a port: there is no event to await from another process
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout_s} s")


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def mosquitto_required() -> bool:
    return os.environ.get("FLEET_REQUIRE_MOSQUITTO") == "1"


def skip_or_fail(reason: str) -> None:
    if mosquitto_required():
        pytest.fail(f"{reason} (FLEET_REQUIRE_MOSQUITTO=1: Mosquitto tests must not skip)")
    pytest.skip(reason)


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where a test's broker listens, and the topic prefix that isolates the test."""

    kind: str  # "embedded" or "mosquitto"
    host: str
    port: int
    prefix: str

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)


def unique_prefix() -> str:
    return f"test/{uuid.uuid4().hex[:12]}/"


class EmbeddedBrokerThread:
    """The embedded broker on its own event loop in a daemon thread (a server apart)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._broker = EmbeddedBroker(LOOPBACK, 0)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> int:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._broker.start(), self._loop).result(START_TIMEOUT_S)
        return self._broker.port

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._broker.stop(), self._loop).result(
                START_TIMEOUT_S
            )
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
        self._loop.close()


BASE_CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
"""


class MosquittoProcess:
    """A private ``mosquitto`` with a config written for one test."""

    def __init__(
        self, binary: str, workdir: Path, extra_config: str = "", full_config: str | None = None
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.host = LOOPBACK
        self.config_file = workdir / f"mosquitto-{self.port}.conf"
        text = BASE_CONFIG + extra_config if full_config is None else full_config
        self.config_file.write_text(text.replace("{port}", str(self.port)), encoding="utf-8")
        self.log_file = workdir / f"mosquitto-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MosquittoProcess:
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            wait_for_port(self.host, self.port)
        except RuntimeError as exc:
            self.stop()
            log_text = self.log_file.read_text(errors="replace")
            raise RuntimeError(f"mosquitto did not start: {exc}\n{log_text}") from exc
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: the broker dies without a word to its clients."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def endpoint(self, prefix: str | None = None) -> BrokerEndpoint:
        return BrokerEndpoint("mosquitto", self.host, self.port, prefix or unique_prefix())


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _embedded_broker_port() -> Iterator[int]:
    runner = EmbeddedBrokerThread()
    port = runner.start()
    yield port
    runner.stop()


@pytest.fixture(scope="session")
def _mosquitto_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The system Mosquitto if it listens on 1883, else a private one, else unavailable."""
    if port_open(LOOPBACK, SYSTEM_MOSQUITTO_PORT):
        yield LOOPBACK, SYSTEM_MOSQUITTO_PORT
        return
    binary = mosquitto_binary()
    if binary is None:
        yield "", 0
        return
    proc = MosquittoProcess(binary, tmp_path_factory.mktemp("mosquitto")).start()
    yield proc.host, proc.port
    proc.stop()


@pytest.fixture
def mosquitto(_mosquitto_address: tuple[str, int]) -> BrokerEndpoint:
    host, port = _mosquitto_address
    if not port:
        skip_or_fail("no mosquitto binary and no broker on 127.0.0.1:1883")
    return BrokerEndpoint("mosquitto", host, port, unique_prefix())


@pytest.fixture
def embedded_broker(_embedded_broker_port: int) -> BrokerEndpoint:
    return BrokerEndpoint("embedded", LOOPBACK, _embedded_broker_port, unique_prefix())


@pytest.fixture(
    params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)],
)
def broker(request: pytest.FixtureRequest) -> BrokerEndpoint:
    """Each test using this runs once per broker kind."""
    name = "embedded_broker" if request.param == "embedded" else "mosquitto"
    endpoint: BrokerEndpoint = request.getfixturevalue(name)
    return endpoint


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoProcess]]:
    binary = mosquitto_binary()
    started: list[MosquittoProcess] = []

    def start(extra_config: str = "", *, full_config: str | None = None) -> MosquittoProcess:
        """A private broker: our base config plus ``extra_config``, or ``full_config`` alone
        (``{port}`` in either is replaced by the port chosen)."""
        if binary is None:
            skip_or_fail("the mosquitto binary is not installed (apt-get install mosquitto)")
            raise AssertionError("unreachable")  # skip_or_fail always raises
        proc = MosquittoProcess(binary, tmp_path, extra_config, full_config).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
