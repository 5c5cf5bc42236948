"""The whole control loop in one process, in simulated time, for the safety machine.

What is real here and what is not (``docs/chaos.md``):

* **real**: the controller's core (:class:`fleet.control.core.ControllerCore`) with a real
  SQLite store (:class:`fleet.store.SqliteStore`, a file in a temporary directory) and the
  service's signer (:class:`fleet.control.keys.Signer`); each van's firmware bridge core
  (:class:`firmware_bridge.bridge.core.BridgeCore`, with its persisted
  :class:`~firmware_bridge.bridge.order_book.OrderBook` and the verifier's counters); each
  van's VCU firmware (:class:`sim.vcu.SimulatedVcu` with its non-volatile
  :class:`~sim.vcu.VcuMemory`, driving :class:`sim.vehicle.Vehicle`); signatures and
  replay checks; the battery rules (:mod:`fleet.control.battery`).
* **modelled**: the MQTT broker is an in-memory network (:class:`Network`) that can lose,
  duplicate, reorder and delay each message; persistent sessions keep commands for a
  bridge that is away; retained ``connection`` messages and the bridge's last will are
  replayed as a broker would. The serial line carries whole messages (no bytes, CRC or
  resends: the link layer has its own tests and conformance kit); a frame is acknowledged
  when the VCU takes it, an emergency stop is repeated until a powered VCU takes it.
* **stubbed**: the re-planner (:func:`stub_replan`) puts each parcel on a van in service
  with a hand-built route (no road network, no PyVRP), as ``tests/control/harness.py`` does;
  the plan verifier accepts every plan.

Everything is deterministic for a given seed: one :class:`random.Random` draws every fault.
"""

from __future__ import annotations

import json
import random
import sqlite3
import tempfile
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from firmware_bridge import wire
from firmware_bridge.bridge.core import (
    Action,
    BridgeCore,
    DiscardSerial,
    EmergencyStopSerial,
    PublishState,
    SaveBook,
    SaveCounters,
    SendSerial,
)
from firmware_bridge.link import LinkDown, LinkUp
from fleet.control import battery
from fleet.control.config import ControllerConfig
from fleet.control.core import ControllerCore, ReplanRequest, check_plan
from fleet.control.keys import MasterKey, Signer
from fleet.model import (
    DepotId,
    Leg,
    Parcel,
    ParcelId,
    Plan,
    Stop,
    StopKind,
    Trip,
    Unserved,
    UnservedReason,
    VanId,
    VanRoute,
    load_van_spec,
)
from fleet.protocol import (
    ActionStatus,
    CommandVerifier,
    Connection,
    ConnectionState,
    InstantActions,
    InstantActionType,
    NodeActionType,
    Order,
    derive_van_key,
    make_header,
)
from fleet.protocol.control_api import VanMode
from fleet.store import SqliteStore
from fleet.store.records import ParcelStatus
from sim.vcu import SimulatedVcu, VcuConfig, VcuPort
from sim.vehicle import Vehicle
from tests.support import plans

REPO = Path(__file__).resolve().parents[2]
SPEC = load_van_spec(REPO / "configs" / "van.toml")
START_S = datetime.combine(plans.DAY, time(6, 0), tzinfo=ZoneInfo(plans.TIMEZONE)).timestamp()
MASTER = MasterKey(bytes(range(32)), 1)

TICK_S = 0.5  # one step of the world: VCU telemetry, bridge and controller ticks
CONNECTED = ("WH-PORTO-01", "ST-A-01", "ST-A-02")  # vans with a bridge and a VCU
GHOST = "WH-PORTO-02"  # in the plan, never connects
TELEMETRY_STALE_S = 1.0  # the bridge's bound on the VCU's data (two world steps)
VCU_GRACE_S = 5.0
CONFIG = ControllerConfig(release_ahead_stops=1)
# the oldest data the controller may show as live: silence up to stale_after_s, on top of
# telemetry up to the bridge's bound, on top of one world step
LIVE_BOUND_S = CONFIG.stale_after_s + TELEMETRY_STALE_S + TICK_S
# a van that lost its order: the controller has acted within this many seconds of a healthy
# link (order_lost_after_s, two states, a state period and a round trip)
ORDER_LOST_BOUND_S = CONFIG.order_lost_after_s + 4.0
REPLAN_DELAY_S = 1.0  # a stub re-plan takes this long
LIVE_MODES = frozenset(
    {
        VanMode.DRIVING,
        VanMode.AT_STOP,
        VanMode.IDLE,
        VanMode.PAUSED,
        VanMode.ESTOPPED,
        VanMode.CHARGING,
        VanMode.ERROR,
    }
)
CHECK_KINDS = (
    "estop_unobeyed",
    "stale_live",
    "parcels_lost",
    "parcels_duplicated",
    "orders_beyond_battery",
    "order_lost_unhandled",
)


def local_s(epoch_s: float) -> float:
    return epoch_s - START_S + 6 * 3600.0


# ---------------------------------------------------------------------------- the plan


def _stop(
    seq: int,
    kind: StopKind,
    ref: str,
    at: tuple[float, float],
    arrival_s: float,
    dwell_s: float,
    dist_m: float,
    prev: tuple[float, float] | None,
    *,
    loaded: Iterable[str] = (),
    delivered: Iterable[str] = (),
) -> Stop:
    return plans._stop(
        seq,
        kind,
        ref,
        at,
        arrival_s,
        dwell_s,
        loaded=tuple(loaded),
        delivered=tuple(delivered),
        dist_m=dist_m,
        prev=prev,
    )


def door_of(pid: str) -> tuple[float, float]:
    return plans.DOORS[min(int(pid[1:]) - 1, 2)]


def line_haul(
    van: str, pids: list[str], t0_s: float, start: tuple[float, float] | None
) -> VanRoute:
    """``start``: where the van is (a re-plan), else it starts at the warehouse."""
    stops: list[Stop] = []
    t, dist, prev = t0_s, 0.0, start
    if start is not None:
        stops.append(_stop(0, StopKind.START, "", start, t, 0, 0.0, None))
        dist += 2500.0
        t += 240.0
    stops.append(
        _stop(
            len(stops), StopKind.DEPOT, "WH-PORTO", plans.WAREHOUSE, t, 60, dist, prev, loaded=pids
        )
    )
    stops.append(
        _stop(
            len(stops),
            StopKind.STATION,
            "ST-A",
            plans.STATION,
            t + 300,
            120,
            dist + 2500,
            plans.WAREHOUSE,
            delivered=pids,
        )
    )
    stops.append(
        _stop(
            len(stops),
            StopKind.DEPOT,
            "WH-PORTO",
            plans.WAREHOUSE,
            t + 720,
            0,
            dist + 5000,
            plans.STATION,
        )
    )
    return VanRoute(VanId(van), Leg.LINE_HAUL, DepotId("WH-PORTO"), (Trip(0, tuple(stops)),))


def last_mile(
    van: str,
    load: list[str],
    on_board: list[str],
    t0_s: float,
    start: tuple[float, float] | None,
) -> VanRoute:
    """Loads ``load`` at the station (if any), delivers them and ``on_board`` at their doors."""
    stops: list[Stop] = []
    t, dist, prev = t0_s, 0.0, start
    if start is not None:
        stops.append(_stop(0, StopKind.START, "", start, t, 0, 0.0, None))
    if load or not stops:
        if stops:
            dist += 1500.0
            t += 150.0
        stops.append(
            _stop(len(stops), StopKind.DEPOT, "ST-A", plans.STATION, t, 60, dist, prev, loaded=load)
        )
        prev, t = plans.STATION, t + 60
    doors: dict[tuple[float, float], list[str]] = {}
    for pid in sorted(load + on_board):
        doors.setdefault(door_of(pid), []).append(pid)
    for at, pids in doors.items():
        dist += 600.0
        t += 90.0
        stops.append(_stop(len(stops), StopKind.DOOR, "", at, t, 40, dist, prev, delivered=pids))
        prev, t = at, t + 40
    stops.append(
        _stop(len(stops), StopKind.DEPOT, "ST-A", plans.STATION, t + 120, 0, dist + 900, prev)
    )
    return VanRoute(VanId(van), Leg.LAST_MILE, DepotId("ST-A"), (Trip(0, tuple(stops)),))


def first_plan() -> tuple[Plan, list[Parcel]]:
    parcels = plans.parcels(6)
    t0 = local_s(START_S)
    routes = [
        line_haul("WH-PORTO-01", ["P1", "P2", "P3", "P4"], t0, None),
        last_mile("ST-A-01", ["P1", "P2", "P3", "P4"], [], t0 + 420, None),
        line_haul(GHOST, ["P5", "P6"], t0, None),
        last_mile("ST-A-02", ["P5", "P6"], [], t0 + 420, None),
    ]
    return plans.plan(routes, n_parcels=len(parcels)), parcels


def stub_replan(request: ReplanRequest) -> Plan:
    """A plan for ``request`` without a road network: what an in-service van carries it
    delivers; parcels at the station go to a station van in service, parcels at the
    warehouse to a warehouse van and a station van in service; the rest is unserved."""
    t0 = local_s(request.now_s) + 60.0
    vans = {v.van_id: v for v in request.vans}
    up = [v for v in request.vans if v.in_service]
    holders = {p: v.van_id for v in request.vans for p in v.parcels_on_board}
    st_vans = [v.van_id for v in up if v.van_id.startswith("ST-")]
    wh_vans = [v.van_id for v in up if v.van_id.startswith("WH-")]
    carry: dict[str, list[str]] = {}
    load: dict[str, list[str]] = {}
    haul: dict[str, list[str]] = {}
    unserved: list[Unserved] = []
    for p in request.parcels:
        pid = str(p.id)
        where = request.parcel_location.get(pid, "warehouse")
        holder = holders.get(pid)
        if where == "on_board" and holder is not None:
            if vans[holder].in_service and holder.startswith("ST-"):
                carry.setdefault(holder, []).append(pid)
                continue
            if vans[holder].in_service and holder in wh_vans:
                haul.setdefault(holder, []).append(pid)  # it unloads it at the station
                if st_vans:
                    load.setdefault(st_vans[0], []).append(pid)
                continue
            unserved.append(
                Unserved(
                    ParcelId(pid), UnservedReason.NOT_ENOUGH_VANS, "on board a van out of service"
                )
            )
            continue
        if where == "station" and request.at_station.get(pid, "ST-A") != "ST-A":
            where = "warehouse"  # unloaded at the warehouse (a van sent home after a cancel)
        if where == "station" and st_vans:
            load.setdefault(st_vans[0], []).append(pid)
            continue
        if where == "warehouse" and wh_vans and st_vans:
            haul.setdefault(wh_vans[0], []).append(pid)
            load.setdefault(st_vans[0], []).append(pid)
            continue
        unserved.append(
            Unserved(ParcelId(pid), UnservedReason.NOT_ENOUGH_VANS, "no van in service")
        )
    routes: list[VanRoute] = []
    for van_id in sorted(set(haul)):
        v = vans[van_id]
        routes.append(line_haul(van_id, haul[van_id], t0, (v.lon, v.lat)))
    for van_id in sorted(set(load) | set(carry)):
        v = vans[van_id]
        delay = (
            420.0
            if any(van_id in load and p in load[van_id] for h in haul.values() for p in h)
            else 0.0
        )
        routes.append(
            last_mile(
                van_id, load.get(van_id, []), carry.get(van_id, []), t0 + delay, (v.lon, v.lat)
            )
        )
    plan = plans.plan(routes, n_parcels=len(request.parcels))
    return Plan(
        site=plan.site,
        day=request.day,
        timezone=request.timezone,
        created_utc=plan.created_utc,
        routes=plan.routes,
        unserved=tuple(unserved),
        summary=plan.summary,
    )


# ---------------------------------------------------------------------------- network


@dataclass
class Packet:
    due_s: float
    seq: int
    van_id: str
    kind: str  # order | instant | state | connection
    payload: Any


@dataclass
class Weather:
    """What the network does to messages of one direction until ``until_s``."""

    kind: str  # loss | duplicate | reorder | delay
    until_s: float
    amount: float


class Network:
    """The broker: per-van queues each way; faults apply to messages sent while they last."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.to_van: list[Packet] = []
        self.to_controller: list[Packet] = []
        self.weather: dict[tuple[str, str], list[Weather]] = {}
        self._seq = 0
        self.applied: Counter[str] = Counter()

    def impaired(self, van_id: str, now_s: float) -> bool:
        return any(
            w.until_s > now_s for d in ("down", "up") for w in self.weather.get((van_id, d), [])
        )

    def send(self, direction: str, packet_args: tuple[str, str, Any], now_s: float) -> None:
        van_id, kind, payload = packet_args
        queue = self.to_van if direction == "down" else self.to_controller
        delays = [0.0]
        for w in self.weather.get((van_id, direction), []):
            if w.until_s <= now_s:
                continue
            if w.kind == "loss" and self.rng.random() < w.amount:
                self.applied["loss"] += 1
                return
            if w.kind == "duplicate":
                self.applied["duplicate"] += 1
                delays.append(self.rng.uniform(0.0, w.amount))
            elif w.kind == "reorder":
                self.applied["reorder"] += 1
                delays[0] += self.rng.uniform(0.0, w.amount)
            elif w.kind == "delay":
                self.applied["delay"] += 1
                delays[0] += w.amount
        for d in delays:
            self._seq += 1
            queue.append(Packet(now_s + d, self._seq, van_id, kind, payload))

    def due(self, direction: str, now_s: float) -> list[Packet]:
        queue = self.to_van if direction == "down" else self.to_controller
        ready = sorted((p for p in queue if p.due_s <= now_s), key=lambda p: (p.due_s, p.seq))
        if ready:
            keep = [p for p in queue if p.due_s > now_s]
            queue[:] = keep
        return ready


# ---------------------------------------------------------------------------- the VCU


class _Outbox:
    """The VCU's side of the modelled serial line: what its firmware sends."""

    def __init__(self) -> None:
        self.sent: list[wire.Message] = []

    def send(self, message: wire.Message) -> int:
        self.sent.append(message)
        return 0

    def send_now(self, message: wire.Message) -> None:
        self.sent.append(message)


class _WorldClock:
    def __init__(self, world: LoopWorld) -> None:
        self.world = world

    def monotonic(self) -> float:
        return self.world.now_s

    def time(self) -> float:
        return self.world.now_s


class LoopVcu(SimulatedVcu):
    """The simulated VCU's firmware, its serial line replaced by :class:`_Outbox`."""

    outbox: _Outbox

    @property
    def link(self) -> Any:  # type: ignore[override]
        return self.outbox

    def take(self) -> list[wire.Message]:
        out, self.outbox.sent = self.outbox.sent, []
        return out


def make_vcu(world: LoopWorld, van_id: str, lon: float, lat: float) -> LoopVcu:
    port = VcuPort(opener=_no_port, description="in memory", close=lambda: None)
    vcu = LoopVcu(
        port,
        Vehicle(SPEC, lon=lon, lat=lat, soc_pct=90.0),
        clock=_WorldClock(world),  # type: ignore[arg-type]
        config=VcuConfig(baud=0, telemetry_hz=1 / TICK_S),
    )
    vcu.outbox = _Outbox()
    vcu._link = vcu.outbox  # type: ignore[assignment]
    vcu.power_on()
    return vcu


async def _no_port() -> Any:
    raise AssertionError("the in-memory VCU opens no port")


# ---------------------------------------------------------------------------- the bridge


class BridgeNode:
    """One van's bridge process; what it persisted survives it (``saved_book``)."""

    def __init__(self, world: LoopWorld, van_id: str) -> None:
        self.world = world
        self.van_id = van_id
        self.key = derive_van_key(MASTER.secret, van_id, generation=MASTER.generation)
        self.saved_book: dict[str, Any] | None = None
        self.saved_counters: dict[str, int] = {}
        self.core: BridgeCore | None = None
        self.estop_seq = 0
        self.unacked_estops: dict[int, str] = {}
        self.link_up = False
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.core is not None

    def start(self) -> None:
        w = self.world
        self.starts += 1
        verifier = CommandVerifier(
            self.van_id, [self.key], max_age_s=600.0, last_message_ids=self.saved_counters
        )
        core = BridgeCore(
            self.van_id,
            verifier,
            mission_ids=w.rng.randrange(1, 1 << 30),
            vcu_grace_s=VCU_GRACE_S,
            telemetry_stale_s=TELEMETRY_STALE_S,
        )
        if self.saved_book is not None:
            core.restore(json.loads(json.dumps(self.saved_book)))
        self.core = core
        self.estop_seq = 0  # a new serial link numbers its e-stops from 1
        self.unacked_estops = {}
        self.link_up = False
        self.connection(ConnectionState.ONLINE)
        vcu = w.vcus[self.van_id]
        if vcu.powered:
            self.vcu_link_up()

    def crash(self) -> None:
        """SIGKILL: nothing more is written; the broker publishes the last will."""
        if self.core is None:
            return
        self.core = None
        self.link_up = False
        self.connection(ConnectionState.CONNECTION_BROKEN, from_will=True)
        self.world.vcus[self.van_id].link_event(LinkDown("bridge gone"))

    def connection(self, state: ConnectionState, *, from_will: bool = False) -> None:
        w = self.world
        mid = 1 if self.core is None else self.core.next_message_id(w.now_s)
        message = Connection(
            header=make_header(self.van_id, mid, w.now_s),
            van_id=self.van_id,
            connection_state=state,
        )
        w.retained[self.van_id] = message
        w.net.send("up", (self.van_id, "connection", message), w.now_s)
        if self.core is not None:
            self.apply(self.core.save_if_changed())

    def vcu_link_up(self) -> None:
        if self.core is None or self.link_up:
            return
        self.link_up = True
        self.apply(self.core.on_link_up())
        self.world.vcus[self.van_id].link_event(LinkUp(1, True, False))

    def vcu_link_down(self, reason: str) -> None:
        if self.core is None or not self.link_up:
            return
        self.link_up = False
        self.apply(self.core.on_link_down(reason, self.world.now_s))

    def apply(self, actions: list[Action]) -> None:
        w = self.world
        core = self.core
        if core is None:
            return
        for action in actions:
            if isinstance(action, SendSerial):
                if self.link_up:
                    w.vcus[self.van_id].receive(action.message, action.tag)
                    self.apply(core.on_delivered(action.tag))
                else:
                    self.apply(core.on_send_failed(action.tag, "link lost", link_lost=True))
            elif isinstance(action, EmergencyStopSerial):
                self.estop_seq = self.estop_seq % 0xFFFF + 1
                core.estop_sent(self.estop_seq)
                self.unacked_estops[self.estop_seq] = action.tag
                self.repeat_estops()
            elif isinstance(action, DiscardSerial):
                pass
            elif isinstance(action, PublishState):
                w.net.send("up", (self.van_id, "state", action.state), w.now_s)
                w.published[self.van_id][action.state.header.message_id] = w.data_time(self.van_id)
            elif isinstance(action, SaveBook):
                self.saved_book = json.loads(json.dumps(core.book_document()))
            elif isinstance(action, SaveCounters):
                for k, n in action.counters.items():
                    self.saved_counters[k] = max(self.saved_counters.get(k, -1), n)
        w.ledger.observe(self.van_id, core.book, w)

    def repeat_estops(self) -> None:
        """The link repeats an e-stop until a powered VCU acknowledges it, link up or not."""
        vcu = self.world.vcus[self.van_id]
        if self.core is None or not vcu.powered:
            return
        for estop_id, tag in list(self.unacked_estops.items()):
            del self.unacked_estops[estop_id]
            vcu.receive(wire.EmergencyStop(estop_id, 0), tag)
            self.apply(self.core.on_delivered(tag))


# ---------------------------------------------------------------------------- the van


class VanNode:
    """A VCU and its vehicle; ``powered`` False while it reboots."""

    def __init__(self, world: LoopWorld, van_id: str, at: tuple[float, float]) -> None:
        self.world = world
        self.van_id = van_id
        self.firmware = make_vcu(world, van_id, *at)
        self.powered = True
        self.back_at_s: float | None = None
        self.telemetry_at_s = world.now_s  # when the latest telemetry the bridge has was made

    @property
    def vehicle(self) -> Vehicle:
        return self.firmware.vehicle

    def receive(self, message: wire.Message, tag: str) -> None:
        if not self.powered:
            return
        self.world.checks.frame_to_vcu(self.van_id, message, tag)
        self.firmware._on_message(message)
        self.flush()

    def link_event(self, event: LinkUp | LinkDown) -> None:
        if self.powered:
            self.firmware._on_link_event(event)
            self.flush()

    def flush(self) -> None:
        """What the firmware sent goes to a bridge whose link is up, else nowhere."""
        bridge = self.world.bridges[self.van_id]
        for message in self.firmware.take():
            if bridge.core is None or not bridge.link_up:
                continue
            if isinstance(message, wire.Telemetry):
                self.telemetry_at_s = self.world.now_s
                bridge.apply(bridge.core.on_telemetry(message, self.world.now_s))
            elif isinstance(message, wire.FaultReport):
                bridge.apply(bridge.core.on_fault_report(message, self.world.now_s))

    def reboot(self, off_s: float) -> None:
        bridge = self.world.bridges[self.van_id]
        bridge.vcu_link_down("the VCU rebooted")
        self.powered = False
        self.firmware.vehicle.speed_mps = 0.0
        self.back_at_s = self.world.now_s + off_s

    def step(self, dt_s: float) -> None:
        w = self.world
        if not self.powered:
            if self.back_at_s is not None and w.now_s >= self.back_at_s:
                self.powered, self.back_at_s = True, None
                self.firmware.power_on()
                self.firmware.take()
                bridge = w.bridges[self.van_id]
                if bridge.running:
                    bridge.vcu_link_up()
                    bridge.repeat_estops()
            return
        self.firmware.step_firmware(w.now_s, dt_s)
        self.firmware.send_telemetry()
        self.flush()


# ---------------------------------------------------------------------------- controller


class ControllerNode:
    def __init__(self, world: LoopWorld, db: Path) -> None:
        self.world = world
        self.db = db
        self.store: SqliteStore | None = None
        self.core: ControllerCore | None = None
        self.signer: Signer | None = None
        self.replans: deque[tuple[float, ReplanRequest]] = deque()

    def start(self) -> None:
        w = self.world
        self.store = SqliteStore(self.db)
        self.signer = Signer(CONFIG.name, MASTER, self.store.reserve_message_ids)
        self.core = ControllerCore(
            config=CONFIG,
            van=SPEC,
            roster=plans.ROSTER,
            snapshot=self.store.load(),
            now_s=w.now_s,
        )
        self.replans.clear()
        self.core.on_link_up(w.now_s)
        for van_id, message in sorted(w.retained.items()):  # the broker's retained messages
            self.core.on_connection(van_id, message, w.now_s)
        self.flush()

    def stop(self) -> None:
        if self.store is not None:
            self.store.close()
        self.store = self.core = self.signer = None
        self.replans.clear()

    def flush(self) -> None:
        w = self.world
        core, store, signer = self.core, self.store, self.signer
        if core is None or store is None or signer is None:
            return
        out = core.drain()
        if out.changes:
            store.commit(out.changes)
            w.events.update(e.kind for e in out.changes.events)
        for send in sorted(out.sends, key=lambda s: not s.urgent):
            message_id, payload = signer.sign(send.message, w.now_s)
            core.command_signed(send.van_id, send.message, message_id)
            kind = "order" if isinstance(send.message, Order) else "instant"
            if isinstance(send.message, InstantActions):
                for a in send.message.actions:
                    w.issued.setdefault(a.action_id, len(w.issued) + 1)
            if isinstance(send.message, Order):
                w.checks.order_sent(send.van_id, send.message)
                core.order_published(send.van_id, send.message, w.now_s)
            w.net.send("down", (send.van_id, kind, payload), w.now_s)
        for request in out.replans:
            self.replans.append((w.now_s + REPLAN_DELAY_S, request))

    def step(self) -> None:
        w = self.world
        core = self.core
        if core is None:
            return
        while self.replans and self.replans[0][0] <= w.now_s:
            _, request = self.replans.popleft()
            checked = check_plan(
                stub_replan(request),
                list(request.parcels),
                "{}",
                _accept,
                plan_id=request.replan_id,
            )
            core.replan_done(checked, w.now_s)
            self.flush()
        core.tick(w.now_s)
        self.flush()


def _accept(plan: Plan, parcels: Any) -> list[str]:
    return []


# ---------------------------------------------------------------------------- ledger


@dataclass
class Ledger:
    """Where each parcel physically is, from what the vans' order books did: ``WH-PORTO``,
    ``ST-A``, ``van:<id>`` or ``delivered``."""

    where: dict[str, str] = field(default_factory=dict)
    done: set[tuple[str, str, str]] = field(default_factory=set)  # (van, order, action)
    versions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def observe(self, van_id: str, book: Any, world: LoopWorld) -> None:
        seen = (id(book), book.version)  # a restarted bridge has a new book
        if self.versions.get(van_id) == seen:
            return
        self.versions[van_id] = seen
        order = book.order
        if order is None:
            return
        by_id = {a.action_id: (n, a) for n in order.nodes for a in n.actions}
        for state in book.action_states():
            if state.status is not ActionStatus.FINISHED:
                continue
            key = (van_id, order.order_id, state.action_id)
            if key in self.done or state.action_id not in by_id:
                continue
            self.done.add(key)
            node, action = by_id[state.action_id]
            failed = set(state.failed_parcel_ids)
            for pid in action.parcel_ids:
                if pid in failed:
                    continue
                self.move(van_id, action.action_type, pid, node.ref, world)

    def move(self, van_id: str, kind: NodeActionType, pid: str, ref: str, world: LoopWorld) -> None:
        here = self.where.get(pid, "WH-PORTO")
        van = f"van:{van_id}"
        checks = world.checks
        if kind is NodeActionType.LOAD:
            if here == van:
                return
            if here != ref:
                checks.violate(
                    "parcels_duplicated",
                    f"{van_id} loaded {pid} at {ref or 'a door'}; it is {here}",
                )
            self.where[pid] = van
        elif kind is NodeActionType.UNLOAD:
            # unloading a parcel that is already there (a controller restored from an older
            # store sends a van home to unload what it unloaded before) loses nothing
            if here not in (van, ref):
                checks.violate("parcels_lost", f"{van_id} unloaded {pid} at {ref}; it is {here}")
            self.where[pid] = ref or here
        elif kind is NodeActionType.DELIVER:
            if here == "delivered":
                checks.violate("parcels_duplicated", f"{van_id} delivered {pid} a second time")
            elif here != van:
                checks.violate("parcels_lost", f"{van_id} reported {pid} delivered; it is {here}")
            self.where[pid] = "delivered"


# ---------------------------------------------------------------------------- invariants


@dataclass
class Checks:
    """The invariants, counted; ``log`` keeps the first violations for the report."""

    world: LoopWorld
    counts: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    by_fault: Counter[str] = field(default_factory=Counter)
    stale_live_s_max: float = 0.0
    _stale_since: dict[str, float] = field(default_factory=dict)
    # e-stop: since when each van's VCU holds a latch the dispatcher set, its odometer then
    latched_odo: dict[str, float] = field(default_factory=dict)
    estop_seq: dict[str, int] = field(default_factory=dict)  # newest dispatcher e-stop obeyed
    released_by_resume: set[str] = field(default_factory=set)
    lost_since: dict[str, float] = field(default_factory=dict)
    released: dict[tuple[str, str], int] = field(default_factory=dict)  # stops released so far
    last_fault: str = "start"

    def violate(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        self.by_fault[self.last_fault] += 1
        if len(self.log) < 50:
            self.log.append(
                f"t={self.world.now_s - START_S:.2f}s [{self.last_fault}] {kind}: {detail}"
            )
            if len(self.log) == 1:
                self.log.append("    after: " + " | ".join(self.world.history))

    # -- e-stop
    def frame_to_vcu(self, van_id: str, message: wire.Message, tag: str) -> None:
        """Before the VCU takes ``message`` (sent by the bridge under ``tag``): an e-stop
        raises the newest dispatcher e-stop the VCU has obeyed; a RESUME that would release
        the latch must come from a dispatcher resume issued after that e-stop."""
        w = self.world
        vcu = w.vcus[van_id].firmware
        action_id = tag[3:] if tag.startswith("ia:") else ""
        if isinstance(message, wire.EmergencyStop) and action_id:
            seq = w.issued.get(action_id, 0)
            self.estop_seq[van_id] = max(self.estop_seq.get(van_id, 0), seq)
        if isinstance(message, wire.Resume) and vcu.vehicle.estopped:
            if message.estop_id != vcu.estop_id:
                return  # the VCU ignores it
            self.released_by_resume.add(van_id)
            seq = w.issued.get(action_id, 0) if action_id else 0
            newest = self.estop_seq.get(van_id, 0)
            if seq <= newest:
                self.violate(
                    "estop_unobeyed",
                    f"{van_id}: RESUME ({tag or 'the bridge own'}) released the e-stop latch; "
                    f"it was given before the newest e-stop the VCU obeyed",
                )

    def check_estop(self, van_id: str) -> None:
        """The VCU does not move while latched; its latch ends only with a RESUME."""
        van = self.world.vcus[van_id]
        v = van.vehicle
        latched = van.firmware.memory.estop_latched
        was = van_id in self.latched_odo
        if latched and was:
            moved = v.odometer_m - self.latched_odo[van_id]
            if moved > 0.5:
                self.violate("estop_unobeyed", f"{van_id} moved {moved:.1f} m while latched")
                self.latched_odo[van_id] = v.odometer_m
        elif latched:
            # from the first step it holds, after braking to a stop
            self.latched_odo[van_id] = v.odometer_m + v.speed_mps**2 / (2 * SPEC.max_decel_mps2)
        elif was:
            del self.latched_odo[van_id]
            if van_id not in self.released_by_resume:
                self.violate("estop_unobeyed", f"{van_id}: the VCU's latch ended with no RESUME")
        self.released_by_resume.discard(van_id)

    # -- stale data
    def check_stale(self, van_id: str, status_mode: VanMode, data_s: float | None) -> None:
        w = self.world
        if status_mode in LIVE_MODES and data_s is not None and w.now_s - data_s > LIVE_BOUND_S:
            since = self._stale_since.setdefault(van_id, w.now_s)
            span = w.now_s - since + TICK_S
            self.stale_live_s_max = max(self.stale_live_s_max, span)
            if since == w.now_s:
                self.violate(
                    "stale_live",
                    f"{van_id} shown {status_mode.value} with data {w.now_s - data_s:.1f} s old",
                )
        else:
            self._stale_since.pop(van_id, None)

    # -- battery
    def order_sent(self, van_id: str, order: Order) -> None:
        """Every release must be finishable from the van's reported battery above the reserve
        (the state the controller holds when it sends it)."""
        core = self.world.controller.core
        assert core is not None
        v = core._vans.get(van_id)
        state = v.state if v is not None else None
        released = [n for n in order.nodes if n.released]
        key = (van_id, order.order_id)
        if len(released) <= self.released.get(key, 0):
            return  # nothing newly released (a base is never taken back)
        self.released[key] = len(released)
        start = 0
        done: set[str] = set()
        lead_m = 0.0
        if state is not None and state.order_id == order.order_id:
            if state.last_node_sequence_id is not None:
                start = state.last_node_sequence_id // 2
            done = {a.action_id for a in state.action_states if a.status is ActionStatus.FINISHED}
        elif state is not None and state.position is not None:
            first = order.nodes[0]
            away = plans_distance((state.position.lon, state.position.lat), (first.lon, first.lat))
            lead_m = (
                away * 1.3 if away > first.allowed_deviation_m + CONFIG.gps_tolerance_m else 0.0
            )
        have_m = battery.usable_m(state, SPEC)
        check = battery.check_range(
            order.nodes,
            order.edges,
            start=min(start, len(order.nodes) - 1),
            lead_m=lead_m,
            have_m=have_m,
            through=len(released) - 1,
            spec=SPEC,
            done=done,
        )
        if not check.ok:
            self.violate(
                "orders_beyond_battery",
                f"{van_id}: order {order.order_id} update {order.order_update_id} releases "
                f"{len(released)} stops; {check.need_m:.0f} m to drive, {have_m:.0f} m above "
                "the reserve",
            )

    # -- a van that lost its order
    def check_order_held(self, van_id: str) -> None:
        w = self.world
        core = w.controller.core
        bridge = w.bridges[van_id]
        if core is None or bridge.core is None or w.net.impaired(van_id, w.now_s):
            self.lost_since.pop(van_id, None)
            return
        rec = core.van_record(van_id)
        book = bridge.core.book
        wanted = rec is not None and rec.order is not None and rec.echoed and rec.released > 0
        if not wanted or rec is None or rec.finished or rec.cancelled or not rec.in_service:
            self.lost_since.pop(van_id, None)
            return
        assert rec.order is not None
        held = book.order is not None and book.order.order_id == rec.order.order_id
        if held or not bridge.link_up:
            self.lost_since.pop(van_id, None)
            return
        since = self.lost_since.setdefault(van_id, w.now_s)
        if w.now_s - since > ORDER_LOST_BOUND_S:
            self.violate(
                "order_lost_unhandled",
                f"{van_id} holds {book.order.order_id if book.order else 'no order'} for "
                f"{w.now_s - since:.1f} s; the controller still counts on {rec.order.order_id}",
            )
            self.lost_since[van_id] = w.now_s


def plans_distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    from fleet.control.orders import straight_m

    return straight_m(a, b)


# ---------------------------------------------------------------------------- the world


class LoopWorld:
    def __init__(self, seed: int, workdir: Path | None = None) -> None:
        self.rng = random.Random(seed)
        self.now_s = START_S
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="loop-")
        self.dir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.net = Network(self.rng)
        self.retained: dict[str, Connection] = {}
        self.published: dict[str, dict[int, float]] = {v: {} for v in plans.ROSTER}
        self.checks = Checks(self)
        self.ledger = Ledger()
        self.faults: Counter[str] = Counter()
        self.history: deque[str] = deque(maxlen=12)  # the latest rules applied
        self.steps = 0
        self.ticks = 0
        self.issued: dict[str, int] = {}  # instant action id -> order of issue
        self.events: Counter[str] = Counter()  # the controller's events, by kind
        self.wiped: set[str] = set()  # vans whose bridge lost its state dir: the book is not
        # what the van carries (the parcels are still in it)
        self.db_generation = 0
        self.backup: Path | None = None
        self.vcus: dict[str, VanNode] = {
            van_id: VanNode(self, van_id, plans.ROSTER[van_id]) for van_id in CONNECTED
        }
        self.bridges: dict[str, BridgeNode] = {
            van_id: BridgeNode(self, van_id) for van_id in CONNECTED
        }
        self.controller = ControllerNode(self, self.dir / "fleet-0.db")
        self.controller.start()
        for bridge in self.bridges.values():
            bridge.start()
        self.run(1.0)
        plan, parcels = first_plan()
        core = self.controller.core
        assert core is not None
        core.dispatch(check_plan(plan, parcels, "{}", _accept, plan_id="P-chaos"), self.now_s)
        self.controller.flush()
        self.faults["never_connects"] += 1

    def close(self) -> None:
        self.controller.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- time
    def data_time(self, van_id: str) -> float:
        return self.vcus[van_id].telemetry_at_s

    def run(self, seconds: float) -> None:
        end = self.now_s + seconds
        while self.now_s < end - 1e-9:
            self.tick()

    def tick(self) -> None:
        self.now_s += TICK_S
        self.ticks += 1
        for van in self.vcus.values():
            van.step(TICK_S)
        for bridge in self.bridges.values():
            if bridge.core is not None:
                bridge.apply(bridge.core.tick(self.now_s))
        self.deliver()
        self.controller.step()
        self.deliver()
        self.check()

    def deliver(self) -> None:
        core = self.controller.core
        for p in self.net.due("up", self.now_s):
            if core is None:
                continue  # nobody subscribed: gone (states are QoS 0)
            if p.kind == "state":
                core.on_state(p.van_id, p.payload, self.now_s)
            else:
                core.on_connection(p.van_id, p.payload, self.now_s)
        self.controller.flush()
        keep: list[Packet] = []
        for p in self.net.due("down", self.now_s):
            bridge = self.bridges.get(p.van_id)
            if bridge is None:
                continue  # the ghost van: nobody there
            if bridge.core is None:
                keep.append(p)  # persistent session: the broker keeps it for the bridge
                continue
            if p.kind == "order":
                bridge.apply(bridge.core.on_order_payload(p.payload, self.now_s))
            else:
                bridge.apply(bridge.core.instant_commands(p.payload, self.now_s))
                bridge.apply(bridge.core.state_after_command(self.now_s))
        for p in keep:
            p.due_s = self.now_s + TICK_S
            self.net.to_van.append(p)

    # -- invariants, after every tick
    def check(self) -> None:
        core = self.controller.core
        c = self.checks
        for van_id, van in self.vcus.items():
            c.check_estop(van_id)
            c.check_order_held(van_id)
            bridge = self.bridges[van_id]
            if (
                bridge.core is not None
                and van.powered
                and bridge.link_up
                and van_id not in self.wiped
            ):
                lost = {
                    p
                    for p, where in self.ledger.where.items()
                    if where == f"van:{van_id}" and p not in bridge.core.book.parcels_on_board
                }
                if lost and bridge.core.book.order is not None:
                    for p in sorted(lost):
                        c.violate("parcels_lost", f"{van_id}'s book no longer carries {p}")
                        self.ledger.where[p] = "lost"
        if core is None:
            return
        for van_id in self.vcus:
            # the mode `fleet status` shows (ControllerCore.status builds it with _mode)
            v = core._vans.get(van_id)
            if v is None or v.state is None:
                continue
            mode, _ = core._mode(v, self.now_s)
            data_s = self.published[van_id].get(v.state.header.message_id)
            c.check_stale(van_id, mode, data_s)
        for pid, where in self.ledger.where.items():
            rec = core.parcel(pid)
            if rec is not None and rec.status is ParcelStatus.DELIVERED and where != "delivered":
                c.violate("parcels_lost", f"the controller has {pid} delivered; it is {where}")
                self.ledger.where[pid] = "delivered"

    # ------------------------------------------------------------------ the rules
    def note(self, kind: str) -> None:
        self.faults[kind] += 1
        self.checks.last_fault = kind
        self.steps += 1

    def advance(self, seconds: float) -> None:
        self.note("advance")
        self.run(seconds)

    def controller_restart(self, store: str, down_s: float) -> None:
        """``store``: kept, lost (a new empty database) or restored (an older copy)."""
        self.note(f"controller_restart_{store}")
        self.controller.stop()
        self.run(down_s)
        if store == "lost":
            self.db_generation += 1
            self.controller.db = self.dir / f"fleet-{self.db_generation}.db"
        elif store == "restored" and self.backup is not None:
            self.db_generation += 1
            path = self.dir / f"fleet-{self.db_generation}.db"
            _copy_db(self.backup, path)
            self.controller.db = path
        self.controller.start()

    def backup_store(self) -> None:
        self.note("backup_store")
        path = self.dir / f"backup-{self.steps}.db"
        _copy_db(self.controller.db, path)
        self.backup = path

    def bridge_restart(self, van: int, down_s: float, wiped: bool = False) -> None:
        """``wiped``: it comes back without its state dir (no order book, no counters)."""
        van_id = CONNECTED[van % len(CONNECTED)]
        self.note("bridge_restart_wiped" if wiped else "bridge_restart")
        bridge = self.bridges[van_id]
        bridge.crash()
        self.run(down_s)
        if wiped:
            bridge.saved_book, bridge.saved_counters = None, {}
            self.wiped.add(van_id)
        bridge.start()

    def vcu_reboot(self, van: int, off_s: float) -> None:
        van_id = CONNECTED[van % len(CONNECTED)]
        self.note("vcu_reboot")
        if self.vcus[van_id].powered:
            self.vcus[van_id].reboot(off_s)

    def network(self, kind: str, van: int, direction: str, seconds: float, amount: float) -> None:
        van_id = CONNECTED[van % len(CONNECTED)]
        self.note(f"net_{kind}")
        self.net.weather.setdefault((van_id, direction), []).append(
            Weather(kind, self.now_s + seconds, amount)
        )

    def dispatcher(self, action: str, van: int) -> None:
        van_id = CONNECTED[van % len(CONNECTED)]
        core = self.controller.core
        self.note(action)
        if core is None:
            return
        if action == "estop":
            core.instant(InstantActionType.EMERGENCY_STOP, [van_id], self.now_s, reason="chaos")
        elif action == "resume":
            core.instant(InstantActionType.RESUME, [van_id], self.now_s, reason="chaos")
        elif action == "pause":
            core.instant(InstantActionType.PAUSE, [van_id], self.now_s)
        elif action == "cancel":
            core.cancel_vans([van_id], self.now_s)
        self.controller.flush()

    def low_battery(self, van: int, soc_pct: float) -> None:
        van_id = CONNECTED[van % len(CONNECTED)]
        self.note("low_battery")
        v = self.vcus[van_id].vehicle
        v.energy_kwh = SPEC.battery_kwh * soc_pct / 100.0

    def outage(self, van: int, seconds: float) -> None:
        """A van out of reach: its bridge is down for long (the controller re-plans)."""
        van_id = CONNECTED[van % len(CONNECTED)]
        self.note("van_out_of_reach")
        self.bridges[van_id].crash()
        self.run(seconds)
        self.bridges[van_id].start()

    def summary(self) -> dict[str, Any]:
        c = self.checks.counts
        return {
            "steps": self.steps,
            "invariant_violations": sum(c.values()),
            "estop_unobeyed": c["estop_unobeyed"],
            "stale_live_s_max": round(self.checks.stale_live_s_max, 3),
            "parcels_lost": c["parcels_lost"],
            "parcels_duplicated": c["parcels_duplicated"],
            "orders_beyond_battery": c["orders_beyond_battery"],
            "order_lost_unhandled": c["order_lost_unhandled"],
        }


def _copy_db(src: Path, dst: Path) -> None:
    source = sqlite3.connect(src)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


# ---------------------------------------------------------------------------- the rules
#
# One table serves the hypothesis machine (tests/safety/loop_machine.py, each entry a rule
# whose arguments are drawn from these ranges) and the seeded driver of benchmarks/chaos.py.
# A parameter is ("int", lo, hi), ("float", lo, hi) or ("choice", options).

Param = tuple[Any, ...]
VAN: Param = ("int", 0, len(CONNECTED) - 1)
DIRECTION: Param = ("choice", ("down", "up"))


@dataclass(frozen=True)
class Rule:
    name: str
    params: dict[str, Param]
    weight: int = 1  # how often the benchmark's driver picks it, relative to the others

    def apply(self, world: LoopWorld, args: dict[str, Any]) -> None:
        shown = ", ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in args.items()
        )
        world.history.append(f"t={world.now_s - START_S:.2f}s {self.name}({shown})")
        _APPLY[self.name](world, **args)


_APPLY: dict[str, Any] = {
    "advance": lambda w, seconds: w.advance(seconds),
    "controller_restart": lambda w, store, down_s: w.controller_restart(store, down_s),
    "backup_store": lambda w: w.backup_store(),
    "bridge_restart": lambda w, van, down_s: w.bridge_restart(van, down_s),
    "bridge_restart_wiped": lambda w, van, down_s: w.bridge_restart(van, down_s, wiped=True),
    "vcu_reboot": lambda w, van, off_s: w.vcu_reboot(van, off_s),
    "net_loss": lambda w, van, direction, seconds, share: w.network(
        "loss", van, direction, seconds, share
    ),
    "net_duplicate": lambda w, van, direction, seconds, spread_s: w.network(
        "duplicate", van, direction, seconds, spread_s
    ),
    "net_reorder": lambda w, van, direction, seconds, spread_s: w.network(
        "reorder", van, direction, seconds, spread_s
    ),
    "net_delay": lambda w, van, direction, seconds, delay_s: w.network(
        "delay", van, direction, seconds, delay_s
    ),
    "estop": lambda w, van: w.dispatcher("estop", van),
    "resume": lambda w, van: w.dispatcher("resume", van),
    "pause": lambda w, van: w.dispatcher("pause", van),
    "cancel": lambda w, van: w.dispatcher("cancel", van),
    "low_battery": lambda w, van, soc_pct: w.low_battery(van, soc_pct),
    "van_out_of_reach": lambda w, van, seconds: w.outage(van, seconds),
}

RULES: tuple[Rule, ...] = (
    Rule("advance", {"seconds": ("float", 0.5, 15.0)}, weight=12),
    Rule(
        "controller_restart",
        {"store": ("choice", ("kept", "lost", "restored")), "down_s": ("float", 0.0, 5.0)},
    ),
    Rule("backup_store", {}),
    Rule("bridge_restart", {"van": VAN, "down_s": ("float", 0.0, 10.0)}),
    Rule("bridge_restart_wiped", {"van": VAN, "down_s": ("float", 0.0, 10.0)}),
    Rule("vcu_reboot", {"van": VAN, "off_s": ("float", 0.25, 3.0)}),
    Rule(
        "net_loss",
        {
            "van": VAN,
            "direction": DIRECTION,
            "seconds": ("float", 1, 30),
            "share": ("float", 0.1, 1.0),
        },
    ),
    Rule(
        "net_duplicate",
        {
            "van": VAN,
            "direction": DIRECTION,
            "seconds": ("float", 1, 30),
            "spread_s": ("float", 0, 2),
        },
    ),
    Rule(
        "net_reorder",
        {
            "van": VAN,
            "direction": DIRECTION,
            "seconds": ("float", 1, 30),
            "spread_s": ("float", 0, 3),
        },
    ),
    Rule(
        "net_delay",
        {
            "van": VAN,
            "direction": DIRECTION,
            "seconds": ("float", 1, 30),
            "delay_s": ("float", 0.5, 5),
        },
    ),
    Rule("estop", {"van": VAN}, weight=2),
    Rule("resume", {"van": VAN}, weight=2),
    Rule("pause", {"van": VAN}),
    Rule("cancel", {"van": VAN}),
    Rule("low_battery", {"van": VAN, "soc_pct": ("float", 3.0, 40.0)}),
    Rule("van_out_of_reach", {"van": VAN, "seconds": ("float", 20.0, 150.0)}),
)


def draw(rng: random.Random, param: Param) -> Any:
    """A value of ``param`` for the seeded driver."""
    kind = param[0]
    if kind == "int":
        return rng.randint(param[1], param[2])
    if kind == "float":
        return rng.uniform(param[1], param[2])
    return rng.choice(param[1])


@dataclass
class ChaosResult:
    steps: int = 0
    worlds: int = 0
    sim_s: float = 0.0
    applied: Counter[str] = field(default_factory=Counter)  # rule or network effect -> count
    violations: Counter[str] = field(default_factory=Counter)  # invariant -> count
    by_fault: Counter[str] = field(default_factory=Counter)  # the step before a violation
    stale_live_s_max: float = 0.0
    log: list[str] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)  # the controller's, by kind
    delivered: int = 0  # parcels delivered (physically), over all days
    parcels: int = 0
    calm_days: int = 0
    calm_delivered: int = 0  # of which on calm days (6 parcels a day)


CALM_ADVANCE = 40  # on a calm day time passes this many times more often (the same faults)


def run_chaos(
    seed: int,
    steps: int,
    *,
    episode_steps: int = 200,
    calm_every: int = 2,
    on_world: Any = None,
) -> ChaosResult:
    """The rules of :data:`RULES`, picked by weight with arguments drawn from a seeded
    generator, ``steps`` in all; a fresh world (a new day) every ``episode_steps``. Every
    ``calm_every``-th day (0: none) is **calm**: ``advance`` is picked :data:`CALM_ADVANCE`
    times as often, for twice ``episode_steps``, so that the vans get through the day to the doors between faults (on the
    other days a fault comes in most steps and few parcels reach a door)."""
    rng = random.Random(seed)
    result = ChaosResult()
    busy = [r.weight for r in RULES]
    calm = [r.weight * (CALM_ADVANCE if r.name == "advance" else 1) for r in RULES]
    while result.steps < steps:
        world = LoopWorld(rng.randrange(1 << 32))
        result.worlds += 1
        quiet = calm_every > 0 and result.worlds % calm_every == 0
        weights = calm if quiet else busy
        if quiet:
            result.calm_days += 1
        try:
            day_steps = episode_steps * (2 if quiet else 1)  # a calm day runs to its end
            for _ in range(min(day_steps, steps - result.steps)):
                r = rng.choices(RULES, weights)[0]
                r.apply(world, {k: draw(rng, p) for k, p in r.params.items()})
                result.steps += 1
        finally:
            result.sim_s += world.now_s - START_S
            result.applied.update(world.faults)
            result.applied.update({f"  {k} (messages)": n for k, n in world.net.applied.items()})
            result.violations.update(world.checks.counts)
            result.by_fault.update(world.checks.by_fault)
            result.stale_live_s_max = max(result.stale_live_s_max, world.checks.stale_live_s_max)
            result.log += world.checks.log[: max(0, 30 - len(result.log))]
            result.events.update(world.events)
            delivered = sum(1 for w in world.ledger.where.values() if w == "delivered")
            result.delivered += delivered
            if quiet:
                result.calm_delivered += delivered
            result.parcels += 6
            world.close()
        if on_world is not None:
            on_world(result)
    return result
