"""The fast mode: a whole day as a discrete-event simulation, in-process, without a broker.

The same controller core as the real service (:class:`fleet.control.core.ControllerCore`)
makes every decision, with a real SQLite store behind it and the same re-planner
(:class:`fleet.control.site_planning.SitePlanning`); the vans are :class:`sim.fastvan.FastVan`
(the bridge's order rules, the vehicle model in closed form). Commands and states pass
between them as objects through the event loop, in order, at the instant they are sent.

Time jumps from one event to the next (:class:`sim.clock.SimClock`): a van arriving, a dwell
ending, a scenario event, orders arriving, the controller's tick. What differs from the full
stack, by design (``docs/simulator.md``): no message latency or loss; the controller ticks
every :data:`FAST_TICK_S` simulated seconds; a re-plan takes no simulated time; vans report
on events only, so the controller's silence detection is off; there is no serial line, so a
serial-corruption event is recorded but changes nothing.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.control.config import ControllerConfig, load_controller_config
from fleet.control.core import ControllerCore, Outgoing, ReplanRequest, check_plan
from fleet.control.site_planning import SitePlanning, site_roster
from fleet.errors import FleetError
from fleet.model import DepotId, Parcel, ParcelId, Plan, VanId
from fleet.paths import config_dir
from fleet.protocol import (
    Connection,
    ConnectionState,
    InstantActions,
    NodeActionType,
    Order,
    State,
    StopKind,
    make_header,
)
from fleet.store import Changes, SqliteStore
from sim.clock import DayTime, SimClock
from sim.day import PreparedDay, verifier
from sim.fastvan import FastVan
from sim.motion import Leg
from sim.scenario import (
    BUSIEST_VAN,
    Breakdown,
    ControllerRestart,
    Event,
    LinkLoss,
    RoadClosure,
    SerialCorruption,
)
from sim.trace import (
    BreakdownRecord,
    Charged,
    ClosureRecord,
    Delivered,
    Departure,
    Drive,
    Incident,
    Loaded,
    Replan,
    SocSample,
    Trace,
    Unloaded,
)
from sim.vehicle import distance_m
from sim.world import (
    CHARGE_NOTICE_PCT,
    AppliedClosure,
    apply_closures,
    check_depots_reachable,
    closure_reason,
    parcels_due,
    replan_cause,
)

log = logging.getLogger(__name__)

# a rescue trip's transfer: the rescuer stops at the road node nearest the broken-down van,
# which may stand this far from it along a road
TRANSFER_REACH_M = 250.0

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


class EventLoop:
    """A heap of (time, order, action); time is the shared :class:`SimClock`.

    ``background`` events (the controller's tick, the end-of-day check) repeat forever and
    do not count as something still to happen: :attr:`pending` counts only the others.
    """

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._live: dict[int, bool] = {}  # scheduled, not run or cancelled → background?
        self.pending = 0
        self.events_run = 0

    def at(
        self, time_s: float, action: Callable[[], None], *, background: bool = False
    ) -> Callable[[], None]:
        n = next(self._seq)
        heapq.heappush(self._heap, (max(time_s, self.clock.time()), n, action))
        self._live[n] = background
        if not background:
            self.pending += 1

        def cancel() -> None:
            if self._live.pop(n, True) is False:
                self.pending -= 1

        return cancel

    def soon(self, action: Callable[[], None]) -> None:
        """Run ``action`` at the current instant, after what is already due now."""
        self.at(self.clock.time(), action)

    def run(self, until_s: float, stop: Callable[[], bool]) -> None:
        heap, live, clock = self._heap, self._live, self.clock
        while heap and heap[0][0] <= until_s:
            t, n, action = heapq.heappop(heap)
            background = live.pop(n, None)
            if background is None:
                continue  # cancelled
            if not background:
                self.pending -= 1
            if t > clock.time():
                clock.advance_to(t)
            action()
            self.events_run += 1
            if stop():
                return
        clock.advance_to(max(clock.time(), until_s))


@dataclass
class _Arrival:
    node_index: int
    t_s: float


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
            # (take_over); the full stack cannot yet, and plans via the depot
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
                observer=self,
                publish=self._publisher(van_id),
            )
        for d in depot_of.values():
            self.trace.depots[d.id] = (d.lon, d.lat)
        self.core: ControllerCore | None = None
        self.store: SqliteStore | None = None
        self._arrivals: dict[str, _Arrival] = {}
        self._unserved: dict[ParcelId, tuple[str, str]] = {}
        self._assigned: dict[str, str] = {}
        self._delivered = 0
        self._closures: list[RoadClosure] = []
        self._held_orders: list[Parcel] = []
        self._done = False
        self._soc_seen: dict[str, float] = {}  # each van's state of charge last recorded

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
        sc = self.scenario
        for ev in sc.events_by_time():
            self.loop.at(self.daytime.epoch_s(ev.at_s), self._event_runner(ev))
        for slot, parcels in self.day.demand.hand_ins(sc.run.start_s, sc.run.order_batch_s):
            self.loop.at(self.daytime.epoch_s(slot), self._order_runner(parcels))
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
        """What the core decided: write it, send it (urgent first), run its re-plans."""
        core = self.core
        if core is None:
            return
        while True:
            out = core.drain()
            if out.changes and self.store is not None:
                _merge(self._pending, out.changes)
            for send in sorted(out.sends, key=lambda s: not s.urgent):
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
        now = self._now()
        try:
            checked = self.planning.replan(request)
        except Exception as exc:  # as the service: a failed or crashed re-plan is an event
            if not isinstance(exc, FleetError):
                log.exception("re-plan %s crashed", request.replan_id)
            error = str(exc) if isinstance(exc, FleetError) else f"the planner crashed: {exc!r}"
            log.warning("re-plan %s failed: %s", request.replan_id, error)
            core.replan_failed(request.replan_id, error, now)
            self.trace.incidents.append(
                Incident(self._day_s(now), "replan_failed", None, error[:300])
            )
            return
        moved = self._plan_applied(checked.plan)
        self.trace.replans.append(
            Replan(self._day_s(now), replan_cause(request.cause), request.cause[:300], moved)
        )
        core.replan_done(checked, now)

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
            self.progress(self._day_s(now), self._delivered, active)
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
        if core is None or self.loop.pending or self._held_orders:
            return False
        for van_id in self.vans:
            rec = core.van_record(van_id)
            if rec is None or rec.order is None or not rec.in_service:
                continue
            if not (rec.finished or rec.cancelled):
                return False
        return True

    # ---- what the vans tell the world (VanObserver) ----------------------------------------------

    def drove(self, van: FastVan, t0_s: float, t1_s: float, leg: Leg, dist_m: float) -> None:
        if dist_m <= 0.0:
            return
        vid = VanId(van.van_id)
        path = leg.path_until(t1_s - t0_s) if self.keep_paths else ()
        self.trace.drives.append(
            Drive(
                vid,
                self._day_s(t0_s),
                self._day_s(t1_s),
                dist_m,
                dist_m * self.spec.energy_per_m_kwh,
                len(van.parcels_on_board),
                path,
            )
        )
        self.trace.soc.append(SocSample(vid, self._day_s(t1_s), van.soc_pct))
        self._soc_seen[van.van_id] = van.soc_pct

    def node_reached(self, van: FastVan, t_s: float, order: Order, node_index: int) -> None:
        self._arrivals[van.van_id] = _Arrival(node_index, t_s)

    def node_done(
        self,
        van: FastVan,
        t_s: float,
        order: Order,
        node_index: int,
        loaded: tuple[str, ...],
        unloaded: tuple[str, ...],
    ) -> None:
        vid = VanId(van.van_id)
        node = order.nodes[node_index]
        arrival = self._arrivals.get(van.van_id)
        t_arr = arrival.t_s if arrival is not None and arrival.node_index == node_index else t_s
        delivers = {
            p for a in node.actions if a.action_type is NodeActionType.DELIVER for p in a.parcel_ids
        }
        transfer = node.kind is StopKind.TRANSFER
        depot = DepotId(node.ref) if node.ref and not transfer else None
        from_van = VanId(node.ref) if transfer else None
        for p in unloaded:
            pid = ParcelId(p)
            if p in delivers:
                self.trace.delivered.append(Delivered(self._day_s(t_arr), vid, pid))
                self._delivered += 1
            else:
                self.trace.unloaded.append(
                    Unloaded(self._day_s(t_s), vid, pid, depot, "unloaded at its station")
                )
        for p in loaded:
            self.trace.loaded.append(
                Loaded(self._day_s(t_s), vid, ParcelId(p), depot, from_van=from_van)
            )
        self._note_charge(van, t_s)
        if loaded:
            aboard = [self.parcels[ParcelId(p)] for p in van.parcels_on_board]
            self.trace.departures.append(
                Departure(
                    vid,
                    self._day_s(t_s),
                    sum(p.weight_kg for p in aboard),
                    sum(p.volume_m3 for p in aboard),
                    len(aboard),
                )
            )

    def take_over(self, van: FastVan, from_van: str, parcel_ids: tuple[str, ...]) -> set[str]:
        """A rescue trip's transfer: what ``from_van`` (standing beside ``van``) still has
        aboard of ``parcel_ids`` moves across; nothing if it is not within reach."""
        other = self.vans.get(from_van)
        if other is None or other is van:
            return set()
        now = self._now()
        lon, lat, _ = other.position_at(now)
        here_lon, here_lat, _ = van.position_at(now)
        if distance_m(lon, lat, here_lon, here_lat) > TRANSFER_REACH_M:
            return set()
        return set(other.book.hand_over(parcel_ids))

    def _note_charge(self, van: FastVan, t_s: float) -> None:
        """A van whose charge rose at a stop charged there (a ``charge`` action)."""
        vid = VanId(van.van_id)
        soc = van.soc_pct
        before = self._soc_seen.get(van.van_id)
        self._soc_seen[van.van_id] = soc
        if before is not None and soc > before + CHARGE_NOTICE_PCT:
            kwh = (soc - before) / 100.0 * self.spec.battery_kwh
            self.trace.charged.append(Charged(vid, self._day_s(t_s), kwh))
            self.trace.soc.append(SocSample(vid, self._day_s(t_s), soc))

    def stopped(self, van: FastVan, t_s: float, why: str) -> None:
        if why == "battery empty":
            self.trace.incidents.append(
                Incident(self._day_s(t_s), "battery_empty", VanId(van.van_id), "ran out of charge")
            )

    # ---- scenario events -------------------------------------------------------------------------

    def _event_runner(self, ev: Event) -> Callable[[], None]:
        def run() -> None:
            if isinstance(ev, Breakdown):
                self._breakdown(ev)
            elif isinstance(ev, LinkLoss):
                self._link_loss(ev)
            elif isinstance(ev, SerialCorruption):
                self._serial_corruption(ev)
            elif isinstance(ev, ControllerRestart):
                self._controller_restart(ev)
            else:
                self._closure(ev)

        return run

    def _pick(self, name: str) -> FastVan | None:
        if name != BUSIEST_VAN:
            return self.vans.get(name)
        candidates = [v for v in self.vans.values() if not v.fatal]
        if not candidates:
            return None
        return max(
            candidates, key=lambda v: (len(v.parcels_on_board), v.move is not None, v.van_id)
        )

    def _breakdown(self, ev: Breakdown) -> None:
        van = self._pick(ev.van)
        now = self._now()
        if van is None or van.fatal:
            return
        lon, lat, _ = van.position_at(now)
        due = set(van.parcels_on_board) | parcels_due(van.order, van.finished_nodes)
        self.trace.breakdowns.append(
            BreakdownRecord(
                self._day_s(now),
                VanId(van.van_id),
                lon,
                lat,
                tuple(ParcelId(p) for p in sorted(due)),
            )
        )
        van.break_down(now)
        home = DepotId(van.van_id.rpartition("-")[0])

        def recovered() -> None:
            t = self._day_s(self._now())
            for p in van.parcels_on_board:
                self.trace.unloaded.append(
                    Unloaded(t, VanId(van.van_id), ParcelId(p), home, "recovered after breakdown")
                )
            self.trace.incidents.append(
                Incident(
                    t,
                    "recovery",
                    VanId(van.van_id),
                    f"{len(van.parcels_on_board)} parcels back at {home}",
                )
            )

        self.loop.at(now + ev.recovery_s, recovered)

    def _link_loss(self, ev: LinkLoss) -> None:
        van = self._pick(ev.van)
        if van is None:
            return
        now = self._now()
        van.set_online(False, now)
        self.trace.incidents.append(
            Incident(
                self._day_s(now),
                "link_loss",
                VanId(van.van_id),
                f"MQTT link down {ev.duration_s} s",
            )
        )
        if self.core is not None:
            self.core.on_connection(
                van.van_id, self._connection(van.van_id, ConnectionState.CONNECTION_BROKEN), now
            )
            self._flush()

        def back() -> None:
            t = self._now()
            if self.core is not None:
                self.core.on_connection(
                    van.van_id, self._connection(van.van_id, ConnectionState.ONLINE), t
                )
            van.set_online(True, t)
            self.trace.incidents.append(
                Incident(self._day_s(t), "link_restored", VanId(van.van_id), "MQTT link up")
            )
            self._flush()

        self.loop.at(now + ev.duration_s, back)

    def _serial_corruption(self, ev: SerialCorruption) -> None:
        van = self._pick(ev.van)
        self.trace.incidents.append(
            Incident(
                self._day_s(self._now()),
                "serial_corruption",
                VanId(van.van_id) if van else None,
                f"{ev.frame_error_share:.0%} of frames for {ev.duration_s} s "
                "(fast mode: no serial line, no effect)",
            )
        )

    def _controller_restart(self, ev: ControllerRestart) -> None:
        now = self._now()
        self._flush()
        self._commit()
        self.core = None
        self.trace.incidents.append(
            Incident(self._day_s(now), "controller_restart", None, f"down for {ev.down_s} s")
        )

        def back() -> None:
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
            held, self._held_orders = self._held_orders, []
            self._flush()
            if held:
                self._add_orders(held)

        self.loop.at(now + ev.down_s, back)

    def _closure(self, ev: RoadClosure) -> None:
        now = self._now()
        self._closures.append(ev)
        applied = self._apply_closures()
        self.trace.closures.append(
            ClosureRecord(self._day_s(now), ev.until_s, applied.lines, applied.polygon)
        )
        self._request_replan(closure_reason(ev, applied))
        if ev.until_s is not None:

            def reopen() -> None:
                self._closures.remove(ev)
                self._apply_closures()
                self.trace.incidents.append(
                    Incident(self._day_s(self._now()), "road_reopened", None, "closure lifted")
                )
                # the dispatcher re-plans: a van the closure cut off can go on, roads are shorter
                self._request_replan(f"road closure lifted ({closure_reason(ev, applied)})")

            self.loop.at(self.daytime.epoch_s(ev.until_s), reopen)

    def _request_replan(self, reason: str) -> None:
        """Ask the controller for a re-plan, as `fleet replan --reason` does."""
        core = self.core
        if core is None:
            return  # the controller is down: it re-plans what is due when it is back
        try:
            core.request_replan(reason, self._now())
        except FleetError as exc:
            self.trace.incidents.append(
                Incident(self._day_s(self._now()), "replan_refused", None, str(exc)[:300])
            )
        self._flush()

    def _apply_closures(self) -> AppliedClosure:
        where = f"{self.scenario.file}: [events] road_closure"
        applied = apply_closures(self.day.net, self._closures, where)
        check_depots_reachable(applied.net, where)
        self.planning.net = applied.net
        return applied

    def _order_runner(self, parcels: Sequence[Parcel]) -> Callable[[], None]:
        def run() -> None:
            self._add_orders(list(parcels))

        return run

    def _add_orders(self, parcels: list[Parcel]) -> None:
        core = self.core
        if core is None:
            self._held_orders.extend(parcels)  # handed in when the controller is back
            return
        core.add_parcels(parcels, self._now())
        self._flush()


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
