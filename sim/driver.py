"""The scenario driver: what a simulated day does to the world, once for both modes.

A scenario's day is the same story in either mode: the orders that arrive during the day are
handed in, and the scenario's events happen at their times (a van breaks down and is
recovered, a van's link is cut and restored, a van's serial line is corrupted for a while,
the controller restarts, roads close and reopen). :class:`ScenarioDriver` tells that story
and writes what it did into the trace; a mode is a :class:`Backend` that carries out each
step in its own world: the fast mode (:mod:`sim.fast`) on in-process vans and a controller
core, the full stack (:mod:`sim.full`) on simulated VCUs, real bridges, a broker and the
controller service.

Each event and each batch of orders is a *process*: a coroutine that waits only on the
backend's :meth:`Backend.sleep` and :meth:`Backend.sleep_until`. The full stack runs it as
an asyncio task on its scaled clock; the fast mode steps it from its discrete-event loop
(it awaits nothing else, so no asyncio loop is involved).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleet.control.core import ControllerCore
from fleet.control.site_planning import SitePlanning
from fleet.model import DepotId, Parcel, ParcelId, VanId
from sim.day import PreparedDay
from sim.scenario import (
    BUSIEST_VAN,
    Breakdown,
    ControllerRestart,
    Event,
    LinkLoss,
    RoadClosure,
    SerialCorruption,
)
from sim.trace import BreakdownRecord, ClosureRecord, Incident, Trace, Unloaded
from sim.world import AppliedClosure, apply_closures, check_depots_reachable, closure_reason

log = logging.getLogger(__name__)

# a process: made when it starts, so that one never started is never left un-awaited
Process = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Broken:
    """A van the moment it broke down: where it stood and the parcels it was responsible for
    (aboard, or due to be loaded on the rest of its order)."""

    lon: float
    lat: float
    due: frozenset[str]


class Backend(Protocol):
    """One mode's simulated world, as the driver acts on it. Times are seconds after local
    midnight of the scenario's day."""

    @property
    def has_serial_line(self) -> bool:
        """Whether a van talks to its VCU over a serial line that can be corrupted."""
        ...

    def now_day_s(self) -> float: ...

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Wait ``seconds`` of simulated time (inside a process)."""
        ...

    def sleep_until(self, day_s: float) -> Awaitable[None]:
        """Wait until ``day_s`` (at once if it has passed)."""
        ...

    def spawn(self, at_s: float, process: Process, name: str) -> None:
        """Start ``process`` at ``at_s``; the day is not over while it runs."""
        ...

    def has_van(self, van_id: str) -> bool: ...

    def busiest_van(self) -> str | None:
        """The van an event naming ``busiest`` hits now: of those not broken down, the one
        with the most parcels aboard (``None`` if every van is broken)."""
        ...

    def broken(self, van_id: str) -> bool: ...

    def break_down(self, van_id: str) -> Broken:
        """A fatal vehicle fault, for good; says where and with what the van stopped."""
        ...

    def parcels_aboard(self, van_id: str) -> Sequence[str]: ...

    def cut_link(self, van_id: str) -> None:
        """The van's link to the broker goes down (the controller learns it as from the
        broker's last will)."""
        ...

    def restore_link(self, van_id: str) -> None: ...

    def corrupt_serial(self, van_id: str, frame_error_share: float) -> bool:
        """Damage this share of the frames on the van's serial line from now on; ``False``
        when the van has no line that can be corrupted."""
        ...

    def clean_serial(self, van_id: str) -> tuple[int, int]:
        """Stop damaging frames; how many frames were damaged (caught by the CRC) and how
        many resent since :meth:`corrupt_serial`."""
        ...

    async def stop_controller(self) -> None:
        """The controller goes down, having written everything it decided."""
        ...

    async def start_controller(self) -> None:
        """A new controller starts from the store and resumes the fleet."""
        ...

    async def request_replan(self, reason: str) -> str | None:
        """Ask the controller for a re-plan as a dispatcher would (``fleet replan``); the
        controller's refusal, if any (nothing when the controller is down)."""
        ...

    async def hand_in(self, parcels: list[Parcel]) -> bool:
        """Hand orders to the controller as a dispatcher would; ``False`` if it could not
        take them (the controller is down)."""
        ...


class ScenarioDriver:
    """Plays a prepared day's orders and events on a :class:`Backend` and records them."""

    def __init__(
        self, backend: Backend, day: PreparedDay, trace: Trace, planning: SitePlanning
    ) -> None:
        self.backend = backend
        self.day = day
        self.scenario = day.scenario
        self.trace = trace
        self.planning = planning
        self.held: list[Parcel] = []  # orders the controller could not take yet
        self._closures: list[RoadClosure] = []

    def schedule_day(self) -> None:
        """Every scenario event at its time, every batch of late orders at its slot."""
        sc = self.scenario
        for ev in sc.events_by_time():
            self.backend.spawn(ev.at_s, self._event_process(ev), ev.kind)
        for slot, parcels in self.day.demand.hand_ins(sc.run.start_s, sc.run.order_batch_s):
            self.backend.spawn(slot, self._orders_process(list(parcels)), "orders")

    def _incident(
        self, kind: str, van_id: str | None, detail: str, t_s: float | None = None
    ) -> None:
        t = self.backend.now_day_s() if t_s is None else t_s
        self.trace.incidents.append(
            Incident(t, kind, VanId(van_id) if van_id is not None else None, detail)
        )

    # ---- orders ------------------------------------------------------------------------------

    def _orders_process(self, parcels: list[Parcel]) -> Process:
        async def run() -> None:
            await self._hand_in(parcels)

        return run

    async def _hand_in(self, parcels: list[Parcel]) -> None:
        if not await self.backend.hand_in(parcels):
            self.held.extend(parcels)  # handed in when the controller is back

    # ---- events ------------------------------------------------------------------------------

    def _event_process(self, ev: Event) -> Process:
        async def run() -> None:
            if isinstance(ev, Breakdown):
                await self.breakdown(ev)
            elif isinstance(ev, LinkLoss):
                await self.link_loss(ev)
            elif isinstance(ev, SerialCorruption):
                await self.serial_corruption(ev)
            elif isinstance(ev, ControllerRestart):
                await self.controller_restart(ev)
            else:
                await self.closure(ev)

        return run

    def pick(self, name: str) -> str | None:
        """The van an event names, or the busiest one now."""
        if name == BUSIEST_VAN:
            return self.backend.busiest_van()
        return name if self.backend.has_van(name) else None

    async def breakdown(self, ev: Breakdown) -> None:
        b = self.backend
        van_id = self.pick(ev.van)
        if van_id is None or b.broken(van_id):
            return
        t = b.now_day_s()
        broken = b.break_down(van_id)
        self.trace.breakdowns.append(
            BreakdownRecord(
                t,
                VanId(van_id),
                broken.lon,
                broken.lat,
                tuple(ParcelId(p) for p in sorted(broken.due)),
            )
        )
        await b.sleep(ev.recovery_s)
        home = DepotId(van_id.rpartition("-")[0])
        t = b.now_day_s()
        aboard = list(b.parcels_aboard(van_id))
        for p in aboard:
            self.trace.unloaded.append(
                Unloaded(t, VanId(van_id), ParcelId(p), home, "recovered after breakdown")
            )
        self._incident("recovery", van_id, f"{len(aboard)} parcels back at {home}", t)

    async def link_loss(self, ev: LinkLoss) -> None:
        b = self.backend
        van_id = self.pick(ev.van)
        if van_id is None:
            return
        self._incident("link_loss", van_id, f"MQTT link down {ev.duration_s} s")
        b.cut_link(van_id)
        await b.sleep(ev.duration_s)
        self._incident("link_restored", van_id, "MQTT link up")
        b.restore_link(van_id)

    async def serial_corruption(self, ev: SerialCorruption) -> None:
        b = self.backend
        van_id = self.pick(ev.van)
        if not b.has_serial_line:
            self._incident(
                "serial_corruption",
                van_id,
                f"{ev.frame_error_share:.0%} of frames for {ev.duration_s} s "
                "(fast mode: no serial line, no effect)",
            )
            return
        if van_id is None or not b.corrupt_serial(van_id, ev.frame_error_share):
            return
        self._incident(
            "serial_corruption",
            van_id,
            f"{ev.frame_error_share:.0%} of frames damaged for {ev.duration_s} s",
        )
        await b.sleep(ev.duration_s)
        bad, retries = b.clean_serial(van_id)
        self.trace.counters.serial_frames_corrupted += bad
        self.trace.counters.serial_retries += retries
        self._incident(
            "serial_clean", van_id, f"{bad} damaged frames caught by CRC, {retries} frames resent"
        )

    async def controller_restart(self, ev: ControllerRestart) -> None:
        b = self.backend
        t = b.now_day_s()
        await b.stop_controller()
        self._incident("controller_restart", None, f"down for {ev.down_s} s", t)
        await b.sleep(ev.down_s)
        await b.start_controller()
        held, self.held = self.held, []
        if held:
            await self._hand_in(held)

    async def closure(self, ev: RoadClosure) -> None:
        b = self.backend
        self._closures.append(ev)
        applied = self._apply_closures()
        self.trace.closures.append(
            ClosureRecord(b.now_day_s(), ev.until_s, applied.lines, applied.polygon)
        )
        await self.request_replan(closure_reason(ev, applied))
        if ev.until_s is None:
            return
        await b.sleep_until(ev.until_s)
        self._closures.remove(ev)
        self._apply_closures()
        self._incident("road_reopened", None, "closure lifted")
        # the dispatcher re-plans: a van the closure cut off can go on, roads are shorter
        await self.request_replan(f"road closure lifted ({closure_reason(ev, applied)})")

    async def request_replan(self, reason: str) -> None:
        """Ask the controller for a re-plan, as `fleet replan --reason` does."""
        refused = await self.backend.request_replan(reason)
        if refused is not None:
            log.warning("re-plan for %s not requested: %s", reason, refused)
            self._incident("replan_refused", None, refused[:300])

    def _apply_closures(self) -> AppliedClosure:
        """The re-planner plans on the network without every road closed now."""
        where = f"{self.scenario.file}: [events] road_closure"
        applied = apply_closures(self.day.net, self._closures, where)
        check_depots_reachable(applied.net, where)
        self.planning.net = applied.net
        return applied


def fleet_finished(core: ControllerCore, van_ids: Sequence[str]) -> bool:
    """Every van in service has finished (or cancelled) its order, or has none."""
    for van_id in van_ids:
        rec = core.van_record(van_id)
        if rec is None or rec.order is None or not rec.in_service:
            continue
        if not (rec.finished or rec.cancelled):
            return False
    return True
