"""The full stack: every part of the real system, at accelerated time, in one process.

* an MQTT broker (the embedded amqtt one, or ``--broker mqtt://…`` e.g. Mosquitto);
* the real controller service (:class:`fleet.control.service.ControllerService`) with a SQLite
  store and the site's re-planner;
* per van, a simulated VCU (:class:`sim.vcu.SimulatedVcu` stepping :class:`sim.vehicle.Vehicle`)
  on a pseudo-terminal, and the real firmware bridge
  (:class:`firmware_bridge.bridge.BridgeService`) on the other end of it, connected to the
  broker through a link the simulator can cut;
* the simulator as a dispatcher (:class:`fleet.control.client.ControllerClient`: it dispatches
  the morning plan and hands in the orders that arrive during the day), as an
  :class:`~sim.full.observer.Observer` on the broker (the trace), and as the world: the scenario's
  events are played by :class:`sim.driver.ScenarioDriver`, this run being its backend.

Every part shares one clock (:class:`sim.clock.PausableClock`, a scaled clock held still
while the controller plans: planning's wall time is no part of the simulated day). Timers
that guard against *wall-clock* latency (link acknowledgements and heartbeats, the VCU's tick
and telemetry, the controller's tick and re-sends, a bridge's state period) are stretched
with the clock factor (:class:`Timing`), because a process does not answer faster when the
simulated clock runs faster; ``docs/simulator.md`` lists each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from firmware_bridge import wire
from fleet.control.client import ControllerClient
from fleet.control.config import ControllerConfig, load_controller_config
from fleet.control.embedded_broker import EmbeddedBroker
from fleet.control.keys import MasterKey
from fleet.control.service import ControllerService
from fleet.control.site_planning import SitePlanning, site_roster
from fleet.errors import ControlError, FleetError
from fleet.model import DepotId, Parcel, ParcelId, VanId
from fleet.mqtt import BrokerAddress, BrokerError, MqttLink
from fleet.paths import config_dir
from fleet.planning.orders import write_orders
from fleet.planning.plan_io import plan_to_json
from fleet.protocol import (
    DecodeError,
    InstantActions,
    Order,
    State,
    Topics,
    VanTopic,
    decode,
    parse_timestamp,
)
from fleet.protocol.control_api import AddParcelsBody, DispatchBody, Event, ReplanBody
from fleet.store import SqliteStore
from sim.clock import DayTime, PausableClock
from sim.day import PreparedDay
from sim.driver import Broken, Process, ScenarioDriver, fleet_finished
from sim.errors import SimError, WorldError
from sim.full.observer import Observer
from sim.full.timing import Timing
from sim.full.vans import SimVan, VanKit, wait_ready
from sim.scenario import BUSIEST_VAN, LinkLoss, SerialCorruption
from sim.trace import Incident, SocSample, Trace
from sim.world import parcels_due

log = logging.getLogger(__name__)

END_CHECK_S = 300.0  # as in the fast mode: the day ends on this grid once nothing is left
FRAME_BYTES = 50  # a typical serial frame, to turn a frame error share into a byte error rate
KEEP_PATHS_UP_TO_VANS = 300

FullProgress = Callable[[float, int, int], None]


@dataclass(frozen=True, slots=True)
class StackInfo:
    """What a companion of the run (``fleet demo --console``) needs to join the stack."""

    address: BrokerAddress
    topics: Topics
    clock: PausableClock
    controller: ControllerConfig
    day: PreparedDay


# entered once the broker, the controller and the vans are up, before the day is dispatched
Companion = Callable[[StackInfo], contextlib.AbstractAsyncContextManager[object]]


def _orders_csv(parcels: Sequence[Parcel], work_dir: Path, name: str) -> str:
    path = work_dir / name
    write_orders(parcels, path)
    return path.read_text(encoding="utf-8")


class FullRun:
    """One day of a scenario in the full stack; :meth:`run` returns its trace."""

    def __init__(
        self,
        day: PreparedDay,
        *,
        speedup: float | None = None,
        broker_url: str | None = None,
        progress: FullProgress | None = None,
        work_dir: Path | None = None,
        keep_paths: bool | None = None,
        lead_wall_s: float | None = None,
        companion: Companion | None = None,
    ) -> None:
        self.day = day
        sc = day.scenario
        self.scenario = sc
        self.spec = sc.van
        self.factor = speedup if speedup is not None else sc.run.speedup
        if not self.factor > 0:
            raise SimError(f"speed-up must be > 0, got {self.factor}")
        self.timing = Timing(self.factor, sc.run.state_period_s)
        self.broker_url = broker_url
        self.companion = companion
        self.progress = progress
        self.work_dir = work_dir
        self.daytime = DayTime.of(sc.day, sc.site.timezone)
        self.roster = site_roster(sc.site)
        self.lead_wall_s = lead_wall_s if lead_wall_s is not None else 3.0 + 0.05 * len(self.roster)
        self.parcels = {p.id: p for p in day.demand.parcels}
        self.trace = Trace(
            scenario=sc.name,
            mode="full",
            seed=sc.seed,
            start_s=sc.run.start_s,
            end_s=sc.run.end_s,
            warehouse=sc.site.warehouse.id,
        )
        self.trace.add_parcels(day.demand.info)
        for van_id in self.roster:
            self.trace.vans[VanId(van_id)] = DepotId(van_id.rpartition("-")[0])
        for d in sc.site.depots:
            self.trace.depots[d.id] = (d.lon, d.lat)
        keep = keep_paths if keep_paths is not None else len(self.roster) <= KEEP_PATHS_UP_TO_VANS
        self.planning = SitePlanning(
            sc.site,
            sc.van,
            day.net,
            replan_time_limit_s=sc.run.replan_time_limit_s,
            seed=sc.seed,
            sharing=sc.run.sharing,
            # one search in the controller's worker thread: a process pool started from this
            # busy threaded process hung (no worker ever started) in benchmarks/disruption.py
            workers=1,
        )
        self.topics = Topics(f"sim-{uuid.uuid4().hex[:10]}/")
        self.master = MasterKey(secrets.token_bytes(32), 1)
        self.vans: dict[str, SimVan] = {}
        self.service: ControllerService | None = None
        self._service_task: asyncio.Task[None] | None = None
        self._store: SqliteStore | None = None
        self._pending = 0  # scenario events and order batches still to come or under way
        self._client: ControllerClient | None = None
        self._observer = Observer(
            self.trace, self.daytime, self.parcels, self.spec, keep_paths=keep
        )
        self.clock: PausableClock | None = None
        self._dispatching = False
        self._day_tasks: list[asyncio.Task[None]] = []
        self._vans_stopped = False
        self.state_lag_s: list[float] = []  # simulated s from a state's stamp to the observer
        self.day_wall_s = 0.0  # wall time from the dispatch to the end of the day
        self._end_day_s = float(sc.run.end_s)
        self._unserved_at_dispatch: dict[ParcelId, tuple[str, str]] = {}
        self._work: Path | None = None
        self._address: BrokerAddress | None = None
        self._controller_config: ControllerConfig | None = None
        self._frames_before: dict[str, tuple[int, int]] = {}  # serial stats when corrupted
        self.driver = ScenarioDriver(self, day, self.trace, self.planning)

    # ---- lifetime ------------------------------------------------------------------------------

    def run(self) -> Trace:
        wall0 = time.monotonic()
        controller_base = load_controller_config(config_dir() / "controller.toml")
        with tempfile.TemporaryDirectory(prefix="fleet-full-") as tmp:
            work = self.work_dir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            asyncio.run(self._run(work, controller_base))
        self.trace.wall_s = time.monotonic() - wall0
        return self.trace

    def _epoch(self, day_s: float) -> float:
        return self.daytime.epoch_s(day_s)

    def _now_day_s(self) -> float:
        assert self.clock is not None
        return self.daytime.day_s(self.clock.time())

    async def _sleep_until(self, day_s: float) -> None:
        assert self.clock is not None
        left = self._epoch(day_s) - self.clock.time()
        if left > 0:
            await self.clock.sleep(left)

    async def _run(self, work: Path, controller_base: ControllerConfig) -> None:
        sc = self.scenario
        start_epoch = self._epoch(sc.run.start_s)
        self.clock = PausableClock(start_epoch - self.lead_wall_s * self.factor, self.factor)
        async with contextlib.AsyncExitStack() as stack:
            broker: EmbeddedBroker | None = None
            if self.broker_url is None:
                broker = EmbeddedBroker("127.0.0.1", 0)
                await broker.start()
                stack.push_async_callback(broker.stop)
                url = broker.url
            else:
                url = self.broker_url
            address = BrokerAddress.parse(url)
            observer_link = MqttLink(
                address, client_id=f"sim-observer-{uuid.uuid4().hex[:8]}", max_pending=1_000_000
            )
            await stack.enter_async_context(observer_link)
            for kind in (VanTopic.STATE, VanTopic.ORDER, VanTopic.INSTANT):
                await observer_link.subscribe(self.topics.all_vans(kind), qos=1)
            await observer_link.subscribe(self.topics.controller_events, qos=1)
            reader = asyncio.create_task(self._observe(observer_link), name="observer")
            stack.push_async_callback(_cancel, reader)
            self._work, self._address = work, address
            self._controller_config = replace(
                self.timing.controller(controller_base), name=self._client_id("controller")
            )
            await self._start_controller()
            stack.push_async_callback(self._stop_controller)
            await self._start_vans(address, work)
            stack.push_async_callback(self._stop_vans)
            client = ControllerClient(address, topics=self.topics, clock=self.clock, timeout_s=300)
            self._client = await stack.enter_async_context(client)
            if self.companion is not None:
                info = StackInfo(
                    address,
                    self.topics,
                    self.clock,
                    self.timing.controller(controller_base),
                    self.day,
                )
                await stack.enter_async_context(self.companion(info))
            await wait_ready(self.vans.values())
            late = self.clock.time() - start_epoch
            if late > 0:
                log.warning("the fleet came up %.0f simulated s after the day's start", late)
                self.trace.incidents.append(
                    Incident(
                        self._now_day_s(),
                        "late_start",
                        None,
                        f"setup took longer than the lead; dispatched {late:.0f} s late",
                    )
                )
            await self._sleep_until(sc.run.start_s)
            for van_id in self.roster:
                self.trace.soc.append(SocSample(VanId(van_id), self._now_day_s(), 100.0))
            await self._dispatch(work)
            log.info("day dispatched at %s", self._now_day_s())
            self.driver.schedule_day()
            day_wall0 = time.monotonic()
            try:
                await self._until_day_ends()
                self.day_wall_s = time.monotonic() - day_wall0
            finally:
                for task in self._day_tasks:
                    await _cancel(task)
            log.info("day over at %.0f; stopping the fleet", self._now_day_s())
            await self._stop_vans()
            await self._drain_observer()
            self._count_messages()
            unserved = self._unserved()  # while the controller's records are still at hand
        self._observer.finish()
        self.trace.finish(self._end_day_s, unserved)

    # ---- the parts ---------------------------------------------------------------------------

    def _client_id(self, part: str) -> str:
        """An MQTT client id of this run: two runs on one broker must not take over each
        other's sessions (the broker drops the older client of an id)."""
        return f"{self.topics.prefix.rstrip('/')}-{part}"

    async def _start_controller(self) -> None:
        """The controller service on the run's store: at the start of the day, and again
        after a restart (it resumes from what its predecessor wrote)."""
        assert self.clock is not None and self._work is not None
        assert self._address is not None and self._controller_config is not None
        self._store = SqliteStore(self._work / "controller.db")
        self.service = ControllerService(
            address=self._address,
            store=self._store,
            config=self._controller_config,
            van=self.spec,
            roster=self.roster,
            clock=self.clock,
            master_key=self.master,
            planning=self.planning,
            topics=self.topics,
        )
        self._service_task = asyncio.create_task(self.service.run(), name="controller")
        async with asyncio.timeout(30):
            await self.service.ready.wait()

    async def _stop_controller(self) -> None:
        log.debug("stopping the controller")
        if self.service is not None:
            self.service.stop()
        if self._service_task is not None:
            done, _ = await asyncio.wait({self._service_task}, timeout=10)
            if not done:
                log.warning("the controller did not stop within 10 s; cancelling it")
                await _cancel(self._service_task)
        self.service, self._service_task = None, None
        if self._store is not None:
            self._store.close()
            self._store = None

    def _needs_link(self, van_id: str) -> bool:
        return any(
            isinstance(e, LinkLoss) and e.van in (van_id, BUSIEST_VAN) for e in self.scenario.events
        )

    def _needs_noise(self, van_id: str) -> bool:
        return any(
            isinstance(e, SerialCorruption) and e.van in (van_id, BUSIEST_VAN)
            for e in self.scenario.events
        )

    async def _drain_observer(self, limit_wall_s: float = 5.0) -> None:
        """Wait until every state the bridges published has reached the observer (or the
        limit passes: what is still missing then counts as lost)."""
        published = sum(v.bridge.states_published for v in self.vans.values() if v.bridge)
        deadline = time.monotonic() + limit_wall_s
        while self._observer.states_seen < published and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _start_vans(self, address: BrokerAddress, work: Path) -> None:
        assert self.clock is not None
        kit = VanKit(
            spec=self.spec,
            clock=self.clock,
            timing=self.timing,
            address=address,
            master=self.master,
            topics=self.topics,
            work=work,
            seed=self.scenario.seed,
        )
        for i, (van_id, (lon, lat)) in enumerate(self.roster.items()):
            self.vans[van_id] = await kit.start(
                i,
                van_id,
                lon,
                lat,
                client_id=self._client_id(van_id),
                noisy=self._needs_noise(van_id),
                cuttable=self._needs_link(van_id),
            )

    async def _stop_vans(self) -> None:
        if self._vans_stopped:
            return
        self._vans_stopped = True
        if self.clock is not None:
            self.clock.resume()  # nothing may wait on a held clock to finish
        await asyncio.gather(*(v.stop() for v in self.vans.values()))
        log.debug("vans stopped")

    # ---- the dispatcher ------------------------------------------------------------------------

    async def _dispatch(self, work: Path) -> None:
        assert self._client is not None
        known = self.day.demand.known_by(self.scenario.run.start_s)
        body = DispatchBody(
            plan=plan_to_json(self.day.plan),  # type: ignore[arg-type]
            orders_csv=_orders_csv(known, work, "orders.csv"),
            orders_name="orders.csv",
        )
        self._note_plan_unserved()
        self._dispatching = True  # the controller verifies the plan: hold the day meanwhile
        self._hold_time()
        try:
            await self._client.request(body, timeout_s=600)
        except (ControlError, BrokerError) as exc:
            raise WorldError(f"the controller refused the day's plan: {exc}") from exc
        finally:
            self._dispatching = False
            self._hold_time()

    def _hold_time(self) -> None:
        """Simulated time stands still while the controller plans (dispatch, re-plans):
        its wall time is no part of the simulated day (as in the fast mode)."""
        assert self.clock is not None
        if self._dispatching or self._observer.replans_open:
            self.clock.pause()
        else:
            self.clock.resume()

    def _note_plan_unserved(self) -> None:
        self._unserved_at_dispatch = {
            u.parcel_id: (u.reason.value, u.detail) for u in self.day.plan.unserved
        }

    def _unserved(self) -> dict[ParcelId, tuple[str, str]]:
        """Why undelivered parcels were left out: the controller's own record of each."""
        out: dict[ParcelId, tuple[str, str]] = dict(self._unserved_at_dispatch)
        core = self.service.core if self.service is not None else None
        if core is None:
            return out
        for pid in self.parcels:
            rec = core.parcel(pid)
            # left out for good, or (a line haul still brought it) left for a later re-plan
            if rec is not None and (
                rec.status.value == "unserved" or rec.detail.startswith("re-plan: ")
            ):
                detail = rec.detail.removeprefix("re-plan: ")
                reason = detail.split(":", 1)[0] or "unserved"
                out[pid] = (reason, detail)
        return out

    # ---- the day -------------------------------------------------------------------------------

    async def _at(self, day_s: float, process: Process) -> None:
        try:
            await self._sleep_until(day_s)
            await process()
        finally:
            self._pending -= 1

    async def _until_day_ends(self) -> None:
        assert self.clock is not None
        sc = self.scenario
        next_check = sc.run.start_s + END_CHECK_S
        poll_wall_s = min(0.5, END_CHECK_S / self.factor / 4)
        while True:
            await asyncio.sleep(poll_wall_s)
            now = self._now_day_s()
            if self.progress is not None:
                active = sum(
                    1 for v in self._observer.vans.values() if v.last is not None and v.last.driving
                )
                self.progress(now, len(self.trace.delivered), active)
            if now >= sc.run.end_s:
                self._end_day_s = float(sc.run.end_s)
                return
            if now >= next_check:
                if self._quiet():
                    self._end_day_s = next_check
                    return
                while next_check <= now:  # the day ends on the first mark after it is quiet
                    next_check += END_CHECK_S

    def _quiet(self) -> bool:
        service = self.service
        if service is None or self._pending or self.driver.held:
            return False
        if self._observer.replans_open:
            return False
        return fleet_finished(service.core, list(self.vans))

    # ---- the observer --------------------------------------------------------------------------

    async def _observe(self, link: MqttLink) -> None:
        topics = self.topics
        root = f"{topics.root}/vans/"
        while True:
            try:
                batch = await link.receive(5000)
            except BrokerError:
                return
            for topic, payload in batch:
                try:
                    if topic == topics.controller_events:
                        self._observer.on_event(decode(Event, payload, topic=topic))
                        self._hold_time()
                        continue
                    if not topic.startswith(root) or not payload:
                        continue
                    van_id, kind = topics.parse_van(topic)
                    if kind is VanTopic.STATE:
                        state = decode(State, payload, topic=topic)
                        self._observer.on_state(state)
                        if self.clock is not None and not self.clock.paused:
                            lag = self.clock.time() - parse_timestamp(state.header.timestamp)
                            self.state_lag_s.append(lag)
                    elif kind is VanTopic.ORDER:
                        order = decode(Order, payload, topic=topic)
                        self._observer.on_command(van_id, "order", order.header.message_id)
                        self._observer.on_order(order)
                    elif kind is VanTopic.INSTANT:
                        msg = decode(InstantActions, payload, topic=topic)
                        self._observer.on_command(van_id, "instant", msg.header.message_id)
                except (DecodeError, FleetError) as exc:
                    log.warning("observer: cannot read %s: %s", topic, exc)

    def _count_messages(self) -> None:
        c = self.trace.counters
        seen: dict[str, int] = {}
        for van_id, _kind, _mid in self._observer.commands_seen:
            seen[van_id] = seen.get(van_id, 0) + 1
        lost = 0
        published = 0
        for van in self.vans.values():
            if van.bridge is None:
                continue
            core = van.bridge.core
            processed = core.accepted + core.refused
            c.commands_received += processed
            missing = max(0, seen.get(van.van_id, 0) - processed)
            if missing:
                c.lost_by_van[van.van_id] = missing
            lost += missing
            published += van.bridge.states_published
        c.commands_sent = len(self._observer.commands_seen)
        c.states_received = self._observer.states_seen
        c.messages_lost = lost + max(0, published - self._observer.states_seen)
        log.info(
            "messages: %d commands seen, %d handled by bridges; %d states published, %d seen",
            c.commands_sent,
            c.commands_received,
            published,
            self._observer.states_seen,
        )

    # ---- the scenario driver's backend (sim.driver.Backend) -----------------------------------

    has_serial_line = True

    def now_day_s(self) -> float:
        return self._now_day_s()

    def sleep(self, seconds: float) -> Awaitable[None]:
        assert self.clock is not None
        return self.clock.sleep(seconds)

    def sleep_until(self, day_s: float) -> Awaitable[None]:
        return self._sleep_until(day_s)

    def spawn(self, at_s: float, process: Process, name: str) -> None:
        self._pending += 1
        self._day_tasks.append(asyncio.create_task(self._at(at_s, process), name=name))

    def has_van(self, van_id: str) -> bool:
        return van_id in self.vans

    def busiest_van(self) -> str | None:
        alive = [v.van_id for v in self.vans.values() if not v.vcu.vehicle.fatal]
        return self._observer.busiest(alive)

    def broken(self, van_id: str) -> bool:
        return self.vans[van_id].vcu.vehicle.fatal

    def break_down(self, van_id: str) -> Broken:
        van = self.vans[van_id]
        vehicle = van.vcu.vehicle
        view = self._observer.view(van_id)
        order = view.orders.get(view.order_id or "")
        reached = view.reached_seq if view.reached_seq is not None else -1
        done = {n.sequence_id for n in order.nodes if n.sequence_id < reached} if order else set()
        due = set(view.aboard) | parcels_due(order, done)
        broken = Broken(vehicle.lon, vehicle.lat, frozenset(due))
        vehicle.set_fatal()
        van.vcu.fault_bits |= wire.FaultBit.FATAL
        van.vcu.send_telemetry()
        return broken

    def parcels_aboard(self, van_id: str) -> Sequence[str]:
        return list(self._observer.view(van_id).aboard)

    def cut_link(self, van_id: str) -> None:
        link = self.vans[van_id].link
        if link is None:
            raise WorldError(f"van {van_id} has no link the simulator can cut")
        link.cut()

    def restore_link(self, van_id: str) -> None:
        link = self.vans[van_id].link
        if link is not None:
            link.restore()

    def corrupt_serial(self, van_id: str, frame_error_share: float) -> bool:
        van = self.vans[van_id]
        vcu = van.vcu
        if vcu.tx_noise is None or vcu.rx_noise is None:
            return False
        per_byte = 1.0 - (1.0 - frame_error_share) ** (1.0 / FRAME_BYTES)
        self._frames_before[van_id] = van.bad_frames()
        vcu.tx_noise.corrupt = vcu.rx_noise.corrupt = per_byte
        return True

    def clean_serial(self, van_id: str) -> tuple[int, int]:
        van = self.vans[van_id]
        vcu = van.vcu
        if vcu.tx_noise is not None and vcu.rx_noise is not None:
            vcu.tx_noise.corrupt = vcu.rx_noise.corrupt = 0.0
        before = self._frames_before.pop(van_id, (0, 0))
        bad, retries = (a - b for a, b in zip(van.bad_frames(), before, strict=True))
        return bad, retries

    async def stop_controller(self) -> None:
        await self._stop_controller()

    async def start_controller(self) -> None:
        await self._start_controller()

    async def request_replan(self, reason: str) -> str | None:
        """Through the controller's control API, as `fleet replan` does."""
        if self._client is None:
            return None
        try:
            await self._client.request(ReplanBody(reason=reason), timeout_s=120)
        except (ControlError, BrokerError) as exc:
            return str(exc)
        return None

    async def hand_in(self, parcels: list[Parcel]) -> bool:
        assert self._client is not None and self._work is not None
        name = f"late-{len(parcels)}-{int(self._now_day_s())}.csv"
        body = AddParcelsBody(orders_csv=_orders_csv(parcels, self._work, name), orders_name=name)
        try:
            await self._client.request(body, timeout_s=120)
        except (ControlError, BrokerError) as exc:
            log.warning("orders not handed in (%s); trying again after the next restart", exc)
            return False
        return True


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def run_full(
    day: PreparedDay,
    *,
    speedup: float | None = None,
    broker_url: str | None = None,
    progress: FullProgress | None = None,
) -> Trace:
    """Run ``day`` in the full stack and return its trace."""
    return FullRun(day, speedup=speedup, broker_url=broker_url, progress=progress).run()
