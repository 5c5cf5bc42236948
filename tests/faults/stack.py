"""The whole stack as real processes, for one fault-injection run.

``Stack`` starts, in a work directory of its own: credentials for the site (``fleet broker
credentials``'s builder), a private Mosquitto from the generated config (with persistence,
so a restart keeps queued commands and retained messages), the controller, and per van a
simulated VCU listening on a socket and a firmware bridge connected to it and — through a
:class:`~tests.support.netcut.CuttableLink`, so its cellular link can be cut — to the broker.
All processes share one accelerated clock (``--start-epoch``/``--factor``/``--anchor``).

The test drives it through the dispatcher's login like a user would (a ``ControllerClient``),
watches the controller's event stream, and reads what the VCUs and bridges did from their
event files. Every process is ended by its own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

from fleet.control.client import ControllerClient
from fleet.errors import ControlError
from fleet.model import load_site
from fleet.mqtt import BrokerAddress
from fleet.protocol import Topics, decode
from fleet.protocol.control_api import (
    DispatchBody,
    Event,
    InstantBody,
    StatusBody,
    StatusResult,
    VanMode,
)
from fleet.protocol.messages import InstantActionType
from fleet.security.credentials import CredentialsOptions, build_credentials, write_credentials
from fleet.store import SqliteStore
from fleet.store.records import TERMINAL_STATUSES
from tests.faults.world import World
from tests.support.brokers import LOOPBACK, free_ports, mosquitto_binary, port_open, skip_or_fail
from tests.support.netcut import CuttableLink

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
ESTOP_BOUND_S = 1.0  # dispatcher request → VCU latched, wall time, on a loaded 2-core machine


class ProcessFailed(RuntimeError):
    pass


class Proc:
    """One child process: started, waited for (``ready``), signalled and ended by its pid."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.args, self.log, self.env = name, args, log, env
        self.proc: asyncio.subprocess.Process | None = None
        self.ready_info = ""  # what the process said after "ready" (the VCU: its port)
        self._drain: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, *, wait_ready: bool = True) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args,
                cwd=REPO,
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        if wait_ready:
            assert self.proc.stdout is not None
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    while not (line := await self.proc.stdout.readline()).startswith(b"ready"):
                        if not line:
                            raise ProcessFailed(f"{self.name} exited:\n{self.tail()}")
                    self.ready_info = line.decode().strip().removeprefix("ready").strip()
            except TimeoutError as exc:
                raise ProcessFailed(f"{self.name} not ready:\n{self.tail()}") from exc
        self._drain = asyncio.create_task(self._drain_stdout())

    async def _drain_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while await self.proc.stdout.read(4096):
            pass

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL: no goodbye, no cleanup."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()

    async def stop(self, timeout_s: float = 15.0) -> int | None:
        if not self.running:
            return None if self.proc is None else self.proc.returncode
        assert self.proc is not None
        self.proc.terminate()
        try:
            async with asyncio.timeout(timeout_s):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise ProcessFailed(f"{self.name} ignored SIGTERM:\n{self.tail()}") from None
        finally:
            if self._drain is not None:
                self._drain.cancel()


@dataclass
class Van:
    van_id: str
    vcu: Proc
    bridge: Proc
    link: CuttableLink | None  # only for vans whose cellular link a scenario cuts
    vcu_events: Path
    bridge_events: Path


def read_events(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Observer:
    """The dispatcher's view, over the dispatcher's login: the controller's live event stream
    (a subscription that reconnects when the broker restarts) and requests, each on a fresh
    ``ControllerClient`` as the ``fleet`` CLI makes them, retried while the broker or the
    controller is restarting (requests are idempotent)."""

    login: Path
    events: list[Event] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress.from_login(self.login)

    async def run(self) -> None:
        address = self.address
        topic = Topics().controller_events
        while True:
            try:
                async with aiomqtt.Client(
                    address.host,
                    address.port,
                    username=address.username,
                    password=address.password,
                    identifier=f"observer-{os.getpid()}",
                ) as client:
                    await client.subscribe(topic, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        self.events.append(decode(Event, bytes(payload), topic=topic))
                        self.changed.set()
            except aiomqtt.MqttError:
                pass
            self.connected.clear()
            await asyncio.sleep(0.1)  # the broker is restarting: try again shortly

    async def request(self, body: Any, *, attempts: int = 100, timeout_s: float = 10.0) -> Any:
        last: Exception | None = None
        for _ in range(attempts):
            try:
                async with ControllerClient(self.address, timeout_s=timeout_s) as client:
                    return await client.request(body)
            except ControlError as exc:
                last = exc
                await asyncio.sleep(0.2)  # the broker or the controller is restarting
        raise AssertionError(f"request {body.command} kept failing: {last}")

    async def wait_for(self, what: Callable[[Event], bool], timeout_s: float = 60.0) -> Event:
        seen = 0
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.events[seen:]:
                    if what(event):
                        return event
                seen = len(self.events)
                self.changed.clear()
                await self.changed.wait()


class Stack:
    def __init__(
        self,
        world: World,
        workdir: Path,
        *,
        factor: float,
        corrupt: float = 0.0,
        seed: int = 0,
        cuttable: frozenset[str] = frozenset(),
    ) -> None:
        self.world, self.workdir, self.factor = world, workdir, factor
        self.cuttable = cuttable  # vans whose broker link goes through a CuttableLink
        self.corrupt, self.seed = corrupt, seed
        self.anchor = 0.0
        self.port, self.van_port = free_ports(2)  # operators' listener, vans' listener
        self.secrets = workdir / "secrets"
        self.db = workdir / "fleet.db"
        self.dbs: list[Path] = [self.db]  # every store the controller ran on, in order
        self.broker: Proc | None = None
        self.controller: Proc | None = None
        self.vans: dict[str, Van] = {}
        self.observer: Observer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.timeline: list[tuple[str, float]] = []  # (what, wall seconds since the start)
        self.measured: dict[str, Any] = {}  # what a scenario measured on its way (its e-stop)
        self._t0 = time.monotonic()
        self._exit = contextlib.AsyncExitStack()

    # -- clock --------------------------------------------------------------------------------
    def mark(self, what: str) -> None:
        self.timeline.append((what, round(time.monotonic() - self._t0, 3)))

    def sim_now(self) -> float:
        return self.world.start_epoch_s + (time.time() - self.anchor) * self.factor

    def clock_args(self) -> list[str]:
        return [
            "--start-epoch", repr(self.world.start_epoch_s), "--factor", repr(self.factor),
            "--anchor", repr(self.anchor), "--van", str(self.world.van_file),
        ]  # fmt: skip

    def _proc(self, name: str, role: str, *args: str) -> Proc:
        argv = [sys.executable, "-m", "tests.faults.proc", role, *self.clock_args(), *args]
        return Proc(name, argv, self.workdir / f"{name}.log", self.world.env())

    # -- lifetime -----------------------------------------------------------------------------
    async def __aenter__(self) -> Stack:
        binary = mosquitto_binary()
        if binary is None:
            skip_or_fail("the mosquitto binary is not installed (apt-get install mosquitto)")
            raise AssertionError("unreachable")
        site = load_site(self.world.site_file)
        creds = build_credentials(
            site,
            self.secrets,
            CredentialsOptions(port=self.port, van_port=self.van_port),
            now=datetime.now(UTC),
        )
        write_credentials(creds, self.secrets)
        conf = self.secrets / "broker" / "mosquitto.conf"
        persist = self.workdir / "mosquitto-data"
        persist.mkdir()
        extra = f"persistence true\npersistence_location {persist}/\nautosave_interval 1\n"
        # made as root, the config already runs the broker as root (our 0600 files are
        # root's; docs/security.md); Mosquitto refuses a second `user` line
        conf.write_text(conf.read_text() + extra)
        self.broker = Proc(
            "mosquitto", [binary, "-c", str(conf)], self.workdir / "mosquitto.log", dict(os.environ)
        )
        try:
            await self.start_broker()
            self.mark("broker ready")
            self.anchor = time.time() + 0.5
            self.controller = self._proc(
                "controller", "controller",
                "--db", str(self.db), "--login", str(self.secrets / "controller" / "mqtt.toml"),
                "--key", str(self.secrets / "controller" / "signing-master.key"),
                "--site", str(self.world.site_file),
                "--config", str(self.world.controller_file(self.factor)),
            )  # fmt: skip
            homes = sorted(self.world.homes.items())
            vcus = {v: self._vcu(v, lon, lat, i) for i, (v, (lon, lat)) in enumerate(homes)}
            # Python start-up dominates: start the controller and the VCUs together, then the
            # bridges (each on the port its VCU listens on)
            await asyncio.gather(self.controller.start(), *(p.start() for p in vcus.values()))
            for van_id, vcu in vcus.items():
                self.vans[van_id] = await self._van(van_id, vcu, int(vcu.ready_info))
            self.mark("controller and VCUs ready")
            await asyncio.gather(*(v.bridge.start() for v in self.vans.values()))
            self.mark("bridges ready")
            self.observer = Observer(self.secrets / "dispatcher" / "mqtt.toml")
            self._tasks.append(asyncio.create_task(self.observer.run(), name="observer"))
            async with asyncio.timeout(START_TIMEOUT_S):
                await self.observer.connected.wait()
            self.mark("observer ready")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start_broker(self) -> None:
        assert self.broker is not None
        await self.broker.start(wait_ready=False)
        async with asyncio.timeout(START_TIMEOUT_S):
            while not all(port_open(LOOPBACK, p, 0.2) for p in (self.port, self.van_port)):
                if not self.broker.running:
                    raise ProcessFailed(f"mosquitto exited:\n{self.broker.tail()}")
                await asyncio.sleep(0.02)  # another process's port: nothing to await

    def use_db(self, db: Path) -> None:
        """The controller's next start runs on store ``db`` (new, or a restored copy)."""
        assert self.controller is not None and not self.controller.running
        args = self.controller.args
        args[args.index("--db") + 1] = str(db)
        self.db = db
        self.dbs.append(db)

    def backup_db(self, dest: Path) -> None:
        """A consistent copy of the running controller's store, as ``sqlite3 fleet.db
        .backup`` takes one (the WAL included)."""
        with (
            contextlib.closing(sqlite3.connect(self.db)) as src,
            contextlib.closing(sqlite3.connect(dest)) as dst,
        ):
            src.backup(dst)

    def _vcu(self, van_id: str, lon: float, lat: float, index: int) -> Proc:
        return self._proc(
            f"vcu-{van_id}", "vcu", "--port", "0", "--lon", repr(lon), "--lat", repr(lat),
            "--corrupt", repr(self.corrupt), "--seed", str(self.seed * 100 + index),
            "--events", str(self.workdir / f"vcu-{van_id}.jsonl"),
        )  # fmt: skip

    async def _van(self, van_id: str, vcu: Proc, serial_port: int) -> Van:
        link: CuttableLink | None = None
        if van_id in self.cuttable:
            link = await self._exit.enter_async_context(CuttableLink(LOOPBACK, self.van_port))
        bridge_events = self.workdir / f"bridge-{van_id}.jsonl"
        bridge = self._proc(
            f"bridge-{van_id}", "bridge", "--van-id", van_id,
            "--serial", f"socket://127.0.0.1:{serial_port}",
            "--login", str(self.secrets / "vans" / van_id / "mqtt.toml"),
            "--broker-port", str(link.port if link is not None else self.van_port),
            "--key", str(self.secrets / "vans" / van_id / "signing.key"),
            "--state-dir", str(self.workdir / f"bridge-{van_id}"),
            "--events", str(bridge_events),
        )  # fmt: skip
        return Van(van_id, vcu, bridge, link, self.workdir / f"vcu-{van_id}.jsonl", bridge_events)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        procs = [p for v in self.vans.values() for p in (v.bridge, v.vcu)]
        procs += [p for p in (self.controller, self.broker) if p is not None]
        for proc in procs:
            with contextlib.suppress(ProcessFailed, ProcessLookupError):
                await proc.stop()
        await self._exit.aclose()

    # -- driving it like a user ---------------------------------------------------------------
    async def dispatch(self) -> str:
        assert self.observer is not None
        result = await self.observer.request(
            DispatchBody(
                plan=json.loads(self.world.plan_file.read_text(encoding="utf-8")),
                orders_csv=self.world.orders_file.read_text(encoding="utf-8"),
                orders_name=self.world.orders_file.name,
            )
        )
        return str(result.message)

    async def status(self, *, timeout_s: float = 10.0) -> StatusResult:
        assert self.observer is not None
        result = await self.observer.request(StatusBody(), timeout_s=timeout_s)
        assert isinstance(result, StatusResult)
        return result

    async def wait_day_done(self, timeout_s: float) -> StatusResult:
        """Until every parcel is in a terminal state (delivered, failed, cancelled, unserved)."""
        assert self.observer is not None
        terminal = {s.value for s in TERMINAL_STATUSES}
        async with asyncio.timeout(timeout_s):
            while True:
                status = await self.status()
                total = sum(status.parcels_by_status.values())
                done = sum(n for s, n in status.parcels_by_status.items() if s in terminal)
                if total >= len(self.world.parcel_ids) and done == total:
                    return status
                self.observer.changed.clear()
                with contextlib.suppress(TimeoutError):  # re-ask after a second anyway
                    await asyncio.wait_for(self.observer.changed.wait(), 1.0)

    async def wait_vans_settled(self, timeout_s: float) -> StatusResult:
        """Until every van stands still in a known mode (its route finished, or broken down):
        the modes the controller reports then are each van's final state."""
        settled = {VanMode.IDLE, VanMode.AT_STOP, VanMode.CHARGING, VanMode.ERROR}
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.status()
            modes = {v.van_id: v.mode for v in status.vans}
            if all(modes.get(v) in settled for v in self.vans) or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.1)  # asked for, as the CLI does: the controller pushes no mode

    async def wait_vans_fresh(self, since_sim_s: float, van_ids: list[str]) -> float:
        """Wall seconds until the controller has heard from each van after ``since_sim_s``."""
        started = time.monotonic()
        while True:
            # a request sent just before the controller re-subscribed is lost: ask again soon
            status = await self.status(timeout_s=1.0)
            seen = {v.van_id: v.last_seen for v in status.vans}
            if all(
                seen.get(v) is not None
                and datetime.fromisoformat(str(seen[v]).replace("Z", "+00:00")).timestamp()
                >= since_sim_s
                for v in van_ids
            ):
                return time.monotonic() - started
            await asyncio.sleep(0.05)  # status is asked for; the controller pushes no event

    async def estop_probe(self, van_id: str, *, resume: bool = True) -> float:
        """Emergency-stop one van through the dispatcher and the controller, as an operator
        would; the wall time until its VCU latched it (TimeoutError after 30 s: not obeyed).
        Then resume it, unless told not to."""
        assert self.observer is not None
        events = self.vans[van_id].vcu_events
        before = len([e for e in read_events(events) if e["ev"] == "estop"])
        started = time.time()
        await self.observer.request(
            InstantBody(action=InstantActionType.EMERGENCY_STOP, van_ids=(van_id,))
        )
        async with asyncio.timeout(30):
            while True:
                stops = [e for e in read_events(events) if e["ev"] == "estop"]
                if len(stops) > before:
                    latched = stops[before]["wall"]
                    break
                await asyncio.sleep(0.005)  # another process's file: nothing to await
        if resume:
            await self.resume(van_id)
        return float(latched - started)

    async def resume(self, van_id: str) -> None:
        assert self.observer is not None
        await self.observer.request(InstantBody(action=InstantActionType.RESUME, van_ids=(van_id,)))

    # -- reading the outcome ------------------------------------------------------------------
    def store_events(self) -> list[Any]:
        """The event log of the store the controller ran on last."""
        with SqliteStore(self.db) as store:
            return store.events(limit=1_000_000)

    def final_modes(self, status: StatusResult) -> dict[str, VanMode]:
        return {v.van_id: v.mode for v in status.vans}
