"""The fast mode: a whole day as a discrete-event simulation, in-process, without a broker.

The same controller core as the real service (:class:`fleet.control.core.ControllerCore`)
makes every decision, with a real SQLite store behind it and the same re-planner
(:class:`fleet.control.site_planning.SitePlanning`); the vans are :class:`sim.fast.van.FastVan`
(the bridge's order rules, the vehicle model in closed form). Commands and states pass
between them as objects through the event loop, in order, at the instant they are sent.

Time jumps from one event to the next (:class:`sim.fast.loop.SimClock`): a van arriving, a dwell
ending, a scenario event, orders arriving, the controller's tick. The scenario's events and
late orders are played by :class:`sim.driver.ScenarioDriver`, this run being its backend: its
processes are stepped from the event loop. The core's decisions are handled in the service's
order, with its re-plan settling (:mod:`fleet.control.decisions`). What differs from the full
stack, by design (``docs/simulator.md``): no message latency or loss; the controller ticks
every :data:`FAST_TICK_S` simulated seconds; a re-plan takes no simulated time; vans report
on events only, so the controller's silence detection is off; there is no serial line, so a
serial-corruption event is recorded but changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from pathlib import Path
from typing import Any

from fleet.control.config import ControllerConfig, load_controller_config
from fleet.control.core import (
    CheckedPlan,
    ControllerCore,
    Outgoing,
    ReplanRequest,
    check_plan,
)
from fleet.control.decisions import send_order, settle_replan
from fleet.control.site_planning import SitePlanning, site_roster
from fleet.errors import FleetError
from fleet.model import DepotId, Parcel, ParcelId, Plan, VanId
from fleet.paths import config_dir
from fleet.protocol import (
    Connection,
    ConnectionState,
    InstantActions,
    Order,
    State,
    make_header,
)
from fleet.store import Changes, SqliteStore
from sim.clock import DayTime
from sim.day import PreparedDay, verifier
from sim.driver import Broken, Process, ScenarioDriver, fleet_finished
from sim.errors import SimError
from sim.fast.loop import EventLoop, SimClock
from sim.fast.recorder import TraceRecorder
from sim.fast.van import FastVan
from sim.scenario import ControllerRestart
from sim.trace import (
    Incident,
    Replan,
    SocSample,
    Trace,
)
from sim.world import parcels_due, replan_cause

log = logging.getLogger(__name__)

FAST_TICK_S = 10.0  # the controller's clock tick in the fast mode (simulated seconds)
STORE_COMMIT_S = 60.0  # what the controller decided is written this often (and before a restart)
END_CHECK_S = 300.0  # the day ends at the first of these marks with nothing left to do
KEEP_PATHS_UP_TO_VANS = 300  # above this many vans, driven geometry is not kept (memory)

# progress(simulated seconds after midnight, parcels delivered, vans active)
FastProgress = Callable[[float, int, int], None]


def fast_controller_config(base: ControllerConfig) -> ControllerConfig:
    """The controller's tuning for the fast mode: vans report on events only, so a van
    between two stops is not silent; nothing is lost, so re-sends are rare."""
    return dataclasses.replace(base, stale_after_s=7 * 24 * 3600.0, tick_s=FAST_TICK_S)


class FastRun:
    """One day of a scenario in the fast mode; :meth:`run` returns its trace."""

    def __init__(
        self,
        day: PreparedDay,
        *,
        progress: FastProgress | None = None,
        controller_config: ControllerConfig | None = None,
        store_dir: Path | None = None,
        keep_paths: bool | None = None,
        use_store: bool | None = None,
    ) -> None:
        """``use_store``: keep the controller's decisions in a SQLite store (default: only
        when the scenario restarts the controller, which resumes from it; a thousand vans'
        whole orders, re-written on every update, would otherwise dominate the run)."""
        self.day = day
        sc = day.scenario
        self.scenario = sc
        self.spec = sc.van
        self.progress = progress
        self.daytime = DayTime.of(sc.day, sc.site.timezone)
        self.start_epoch = self.daytime.epoch_s(sc.run.start_s)
        self.end_epoch = self.daytime.epoch_s(sc.run.end_s)
        self.clock = SimClock(self.start_epoch)
        self.loop = EventLoop(self.clock)
        base = controller_config or load_controller_config(config_dir() / "controller.toml")
        self.config = fast_controller_config(base)
        self.roster = site_roster(sc.site)
        self.planning = SitePlanning(
            sc.site,
            sc.van,
            day.net,
            replan_time_limit_s=sc.run.replan_time_limit_s,
            seed=sc.seed,
            sharing=sc.run.sharing,
            # rescue trips: this world moves a broken-down van's load into the rescuer
            # (TraceRecorder.take_over); the full stack cannot yet, and plans via the depot
            transfer=True,
        )
        self._store_dir = store_dir
        self.use_store = (
            use_store
            if use_store is not None
            else any(isinstance(e, ControllerRestart) for e in sc.events)
        )
        self._pending = Changes()
        self._committed_at = self.start_epoch
        self.parcels = {p.id: p for p in day.demand.parcels}
        self.trace = Trace(
            scenario=sc.name,
            mode="fast",
            seed=sc.seed,
            start_s=sc.run.start_s,
            end_s=sc.run.end_s,
            warehouse=sc.site.warehouse.id,
        )
        self.trace.add_parcels(day.demand.info)
        self.keep_paths = (
            keep_paths if keep_paths is not None else len(self.roster) <= KEEP_PATHS_UP_TO_VANS
        )
        self.recorder = TraceRecorder(
            self.trace, self.spec, self.daytime, self.parcels, keep_paths=self.keep_paths
        )
        depot_of = {d.id: d for d in sc.site.depots}
        self.vans: dict[str, FastVan] = {}
        for van_id, (lon, lat) in self.roster.items():
            depot = DepotId(van_id.rpartition("-")[0])
            self.trace.vans[VanId(van_id)] = depot
            self.vans[van_id] = FastVan(
                van_id,
                sc.van,
                lon=lon,
                lat=lat,
                soc_pct=100.0,
                scheduler=self.loop,
                observer=self.recorder,
                publish=self._publisher(van_id),
            )
        self.recorder.vans, self.recorder.now = self.vans, self._now
        for d in depot_of.values():
            self.trace.depots[d.id] = (d.lon, d.lat)
        self.core: ControllerCore | None = None
        self.store: SqliteStore | None = None
        self._unserved: dict[ParcelId, tuple[str, str]] = {}
        self._assigned: dict[str, str] = {}
        self._done = False
        self.driver = ScenarioDriver(self, day, self.trace, self.planning)

    # ---- the run ---------------------------------------------------------------------------------

    def run(self) -> Trace:
        wall0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="fleet-fast-") as tmp:
            if self.use_store:
                store_path = (self._store_dir or Path(tmp)) / "controller.db"
                store_path.unlink(missing_ok=True)
                with SqliteStore(store_path) as store:
                    self.store = store
                    self._start()
                    self.loop.run(self.end_epoch, lambda: self._done)
                    self._flush()
                    self._commit()
                    self.store = None
            else:
                self._start()
                self.loop.run(self.end_epoch, lambda: self._done)
                self._flush()
        end_day_s = self.daytime.day_s(self.clock.time())
        self.trace.wall_s = time.monotonic() - wall0
        self.trace.finish(end_day_s, self._unserved)
        return self.trace

    def _now(self) -> float:
        return self.clock.time()

    def _day_s(self, epoch_s: float) -> float:
        return self.daytime.day_s(epoch_s)

    def _start(self) -> None:
        now = self._now()
        self.core = ControllerCore(
            config=self.config,
            van=self.spec,
            roster=self.roster,
            snapshot=self.store.load() if self.store is not None else None,
            now_s=now,
        )
        self.core.on_link_up(now)
        for van_id, van in self.vans.items():
            self.core.on_connection(van_id, self._connection(van_id, ConnectionState.ONLINE), now)
            # a van reports as soon as it is up (a bridge at 1 Hz; the fast van only on
            # events): the controller counts only a van it has heard from as in service
            self.core.on_state(van_id, van.state(now), now)
            self.trace.soc.append(SocSample(VanId(van_id), self._day_s(now), van.soc_pct))
        known = self.day.demand.known_by(self.scenario.run.start_s)
        checked = check_plan(self.day.plan, known, self.day.plan_document, verifier(self.day))
        self._plan_applied(self.day.plan)
        self.core.dispatch(checked, now)
        self._flush()
        self._schedule_day()

    def _schedule_day(self) -> None:
        self.driver.schedule_day()
        self._tick()
        self.loop.at(self.start_epoch + END_CHECK_S, self._end_check, background=True)

    # ---- the controller --------------------------------------------------------------------------

    def _connection(self, van_id: str, state: ConnectionState) -> Connection:
        return Connection(
            header=make_header(van_id, int(self._now() * 1000), self._now()),
            van_id=van_id,
            connection_state=state,
        )

    def _publisher(self, van_id: str) -> Callable[[State], None]:
        def publish(state: State) -> None:
            self.loop.soon(lambda: self._deliver_state(van_id, state))

        return publish

    def _deliver_state(self, van_id: str, state: State) -> None:
        core = self.core
        if core is None:
            return  # the controller is down: a state (QoS 0) to nobody is gone
        core.on_state(van_id, state, self._now())
        self.trace.counters.states_received += 1
        self._flush()

    def _flush(self) -> None:
        """What the core decided, in the service's order (:mod:`fleet.control.decisions`):
        write it, send it (urgent first), run its re-plans."""
        core = self.core
        if core is None:
            return
        while True:
            out = core.drain()
            if out.changes and self.store is not None:
                _merge(self._pending, out.changes)
            for send in send_order(out.sends):
                self._send(send)
            if not out.replans:
                return
            for request in out.replans:
                self._replan(core, request)

    def _send(self, send: Outgoing) -> None:
        self.trace.counters.commands_sent += 1
        van = self.vans.get(send.van_id)
        if van is None or not van.online:
            return  # nobody there to receive it (the controller re-sends when it is back)
        message = send.message

        def deliver() -> None:
            self.trace.counters.commands_received += 1
            if isinstance(message, Order):
                van.receive_order(message, self._now())
            elif isinstance(message, InstantActions):
                van.receive_instant(message, self._now())

        self.loop.soon(deliver)

    def _replan(self, core: ControllerCore, request: ReplanRequest) -> None:
        """A re-plan takes no simulated time: planned and settled within the flush."""
        now = self._now()
        outcome: CheckedPlan | Exception
        try:
            outcome = self.planning.replan(request)
        except Exception as exc:  # settled as a failed re-plan, as in the service
            outcome = exc
        error = settle_replan(core, request, outcome, now)
        if error is not None or not isinstance(outcome, CheckedPlan):
            self.trace.incidents.append(
                Incident(self._day_s(now), "replan_failed", None, (error or "")[:300])
            )
            return
        moved = self._plan_applied(outcome.plan)
        self.trace.replans.append(
            Replan(self._day_s(now), replan_cause(request.cause), request.cause[:300], moved)
        )

    def _plan_applied(self, plan: Plan) -> int:
        """Note who delivers what and what is left out; returns how many parcels moved van."""
        moved = 0
        for van_id, pid in plan.delivered():
            before = self._assigned.get(pid)
            if before is not None and before != van_id:
                moved += 1
            self._assigned[pid] = van_id
            self._unserved.pop(pid, None)
        for u in plan.unserved:
            self._unserved[u.parcel_id] = (u.reason.value, u.detail)
        return moved

    def _commit(self) -> None:
        if self.store is not None and self._pending:
            self.store.commit(self._pending)
        self._pending = Changes()
        self._committed_at = self._now()

    def _tick(self) -> None:
        core = self.core
        now = self._now()
        if core is not None:
            core.tick(now)
            self._flush()
        if now - self._committed_at >= STORE_COMMIT_S:
            self._commit()
        if self.progress is not None:
            active = sum(1 for v in self.vans.values() if v.move is not None)
            self.progress(self._day_s(now), self.recorder.delivered, active)
        self.loop.at(now + FAST_TICK_S, self._tick, background=True)

    def _end_check(self) -> None:
        if self._quiet():
            self._done = True
            return
        self.loop.at(self._now() + END_CHECK_S, self._end_check, background=True)

    def _quiet(self) -> bool:
        """Nothing left to happen: nothing scheduled but the clock's tick, and every van in
        service has finished its order (or has none). Re-plans run to the end inside the
        event that starts them, so none is ever half done here."""
        core = self.core
        if core is None or self.loop.pending or self.driver.held:
            return False
        return fleet_finished(core, list(self.vans))

    # ---- the scenario driver's backend (sim.driver.Backend) -------------------------------------

    has_serial_line = False  # no serial line: a corruption event is recorded, nothing more

    def now_day_s(self) -> float:
        return self._day_s(self._now())

    def sleep(self, seconds: float) -> Awaitable[None]:
        return _Wake(self._now() + seconds)

    def sleep_until(self, day_s: float) -> Awaitable[None]:
        return _Wake(self.daytime.epoch_s(day_s))

    def spawn(self, at_s: float, process: Process, name: str) -> None:
        self.loop.at(self.daytime.epoch_s(at_s), lambda: self._step(process()))

    def _step(self, process: Coroutine[Any, Any, None]) -> None:
        """Run ``process`` up to its next wait and schedule it to go on from there."""
        try:
            wake = process.send(None)
        except StopIteration:
            return
        if not isinstance(wake, _Wake):
            process.close()
            raise SimError(f"a fast-mode process awaited {wake!r}: only its backend's sleeps")
        self.loop.at(wake.epoch_s, lambda: self._step(process))

    def has_van(self, van_id: str) -> bool:
        return van_id in self.vans

    def busiest_van(self) -> str | None:
        candidates = [v for v in self.vans.values() if not v.fatal]
        if not candidates:
            return None
        busiest = max(
            candidates, key=lambda v: (len(v.parcels_on_board), v.move is not None, v.van_id)
        )
        return busiest.van_id

    def broken(self, van_id: str) -> bool:
        return self.vans[van_id].fatal

    def break_down(self, van_id: str) -> Broken:
        van = self.vans[van_id]
        now = self._now()
        lon, lat, _ = van.position_at(now)
        due = set(van.parcels_on_board) | parcels_due(van.order, van.finished_nodes)
        van.break_down(now)
        return Broken(lon, lat, frozenset(due))

    def parcels_aboard(self, van_id: str) -> Sequence[str]:
        return self.vans[van_id].parcels_on_board

    def cut_link(self, van_id: str) -> None:
        now = self._now()
        self.vans[van_id].set_online(False, now)
        if self.core is not None:
            broken = self._connection(van_id, ConnectionState.CONNECTION_BROKEN)
            self.core.on_connection(van_id, broken, now)
            self._flush()

    def restore_link(self, van_id: str) -> None:
        t = self._now()
        if self.core is not None:
            self.core.on_connection(van_id, self._connection(van_id, ConnectionState.ONLINE), t)
        self.vans[van_id].set_online(True, t)
        self._flush()

    def corrupt_serial(self, van_id: str, frame_error_share: float) -> bool:
        return False

    def clean_serial(self, van_id: str) -> tuple[int, int]:
        return 0, 0

    async def stop_controller(self) -> None:
        self._flush()
        self._commit()
        self.core = None

    async def start_controller(self) -> None:
        t = self._now()
        assert self.store is not None
        core = ControllerCore(
            config=self.config,
            van=self.spec,
            roster=self.roster,
            snapshot=self.store.load(),
            now_s=t,
        )
        self.core = core
        # retained connection messages arrive on subscribing
        for van_id, van in self.vans.items():
            state = ConnectionState.ONLINE if van.online else ConnectionState.CONNECTION_BROKEN
            core.on_connection(van_id, self._connection(van_id, state), t)
            if van.online:  # its next periodic state (a bridge's comes within a second)
                core.on_state(van_id, van.state(t), t)
        core.on_link_up(t)
        self._flush()

    async def request_replan(self, reason: str) -> str | None:
        core = self.core
        if core is None:
            return None  # the controller is down: it re-plans what is due when it is back
        refused: str | None = None
        try:
            core.request_replan(reason, self._now())
        except FleetError as exc:
            refused = str(exc)
        self._flush()
        return refused

    async def hand_in(self, parcels: list[Parcel]) -> bool:
        core = self.core
        if core is None:
            return False
        core.add_parcels(parcels, self._now())
        self._flush()
        return True


class _Wake:
    """What a process of the fast mode awaits: the loop resumes it at ``epoch_s``."""

    __slots__ = ("epoch_s",)

    def __init__(self, epoch_s: float) -> None:
        self.epoch_s = epoch_s

    def __await__(self) -> Generator[_Wake, None, None]:
        yield self


def _merge(into: Changes, more: Changes) -> None:
    """Fold ``more`` into ``into`` as if both had been written one after the other."""
    into.plans.extend(more.plans)
    into.parcels.update(more.parcels)
    into.vans.update(more.vans)
    into.van_states.update(more.van_states)
    into.events.extend(more.events)
    into.orders_sent.extend(more.orders_sent)


def run_fast(day: PreparedDay, *, progress: FastProgress | None = None) -> Trace:
    """Run ``day`` in the fast mode and return its trace."""
    return FastRun(day, progress=progress).run()
