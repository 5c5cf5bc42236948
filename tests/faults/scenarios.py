"""The fault scenarios, and one run of a scenario measured end to end.

Each scenario starts the stack, dispatches the day's plan through the dispatcher's login,
injects its failure at a moment that matters, emergency-stops one van mid-route through the
dispatcher (timing it to the VCU), waits for the day to finish, stops everything and reads
the outcome from the controller's store and the VCUs' and bridges' event files:

* **parcels lost**: not delivered at the end (in these scenarios every parcel can be) — as
  the controller's store says, or, where the controller lost its store, as the vans say
  (their bridges' account of every node they finished);
* **parcels duplicated**: delivered more than once — in the store (``parcel_delivered``
  events) or by the vans' own account (a node finished twice after a bridge restart);
* **orders applied twice**: an order update a bridge started twice, or a drive segment a
  VCU executed twice;
* **vans in an unknown state**: once every parcel is accounted for, a van that does not come
  to rest in a known mode — ``idle``, ``at_stop`` or ``charging``; ``error`` for the van
  that broke down (``unknown``, ``stale``, ``offline``, still driving or paused count);
* **e-stop latency**: dispatcher request → VCU latched, wall seconds; **e-stop obeyed**: it
  latched within 30 s (and, across a VCU reboot, the van did not move until resumed);
* **recovery**: wall seconds from the fault to the system being whole again (defined per
  scenario below).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.protocol.control_api import Event, StatusResult, VanMode
from tests.faults.stack import Stack, read_events
from tests.faults.world import World

LINE_HAUL, LAST_MILE, SPARE = "WH-F-01", "ST-CENTRO-01", "ST-CENTRO-02"
LINK_LOSS_SIM_S = 60.0
DAY_TIMEOUT_S = 45.0  # wall; a day takes about 12 s at x60
LATCH_HOLD_WALL_S = 5.0  # how long a van latched across its VCU's reboot is watched standing
QUIET_WALL_S = 3.0  # no van finished a stop this long: the day is over (the lost store)
KNOWN_FINAL_MODES = {VanMode.IDLE, VanMode.AT_STOP, VanMode.CHARGING}
# modes a van may show while its e-stop is latched: stale while its VCU reboots (the data
# is not live then), never driving, paused, idle or at a stop
LATCHED_MODES = {VanMode.ESTOPPED, VanMode.ESTOP_SENT, VanMode.STALE}


@dataclass
class RunResult:
    scenario: str
    seed: int
    parcels: int
    delivered: int
    lost: list[str]
    duplicated: list[str]
    orders_applied_twice: int
    unknown_vans: list[str]
    estop_latency_s: float | None  # None: the van to stop never started its route
    recovery_s: float | None
    wall_s: float
    stalled: bool = False  # the day did not finish within DAY_TIMEOUT_S
    # the e-stop latched on the VCU (and stayed, across a reboot, until resumed); None: the
    # van to stop never got going, so it was not tried
    estop_obeyed: bool | None = None
    final_modes: dict[str, str] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.stalled
            or self.estop_latency_s is None
            or not self.estop_obeyed
            or self.lost
            or self.duplicated
            or self.orders_applied_twice
            or self.unknown_vans
        )


def _delivered_by(van_id: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "parcel_delivered" and e.van_id == van_id


def _loaded_by(van_id: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "parcel_loaded" and e.van_id == van_id


async def _next_delivery(stack: Stack, van_id: str) -> None:
    """Until ``van_id`` delivers a parcel after the ones the controller has reported so far."""
    assert stack.observer is not None
    events = stack.observer.events
    delivered = sum(1 for e in events if _delivered_by(van_id)(e))
    await stack.observer.wait_for(
        lambda e: (
            _delivered_by(van_id)(e)
            and sum(1 for x in events if _delivered_by(van_id)(x)) > delivered
        )
    )


async def _probe(stack: Stack, van_id: str, *, resume: bool = True) -> None:
    """Emergency-stop ``van_id`` through the dispatcher; its latency and whether it was
    obeyed go to ``stack.measured``."""
    try:
        stack.measured["estop_latency_s"] = await stack.estop_probe(van_id, resume=resume)
        stack.measured["estop_obeyed"] = True
    except TimeoutError:
        stack.measured["estop_obeyed"] = False


# -- the scenarios: inject, and say how long recovery took (wall seconds) --------------------
async def broker_restart(stack: Stack) -> float:
    """The broker dies (SIGKILL) right after the dispatch is accepted, while orders are
    going out, and comes back 0.3 s later. Recovered: every van heard again."""
    assert stack.broker is not None
    await stack.broker.kill()
    died_sim = stack.sim_now()
    started = time.monotonic()
    await asyncio.sleep(0.3)  # the outage itself
    await stack.start_broker()
    await stack.wait_vans_fresh(died_sim, sorted(stack.vans))
    return time.monotonic() - started


async def controller_restart(stack: Stack) -> float:
    """The controller is killed (SIGKILL) once the line-haul van has loaded and is driving,
    and restarted 0.5 s later from its store. Recovered: controller serving, every van heard."""
    assert stack.observer is not None and stack.controller is not None
    await stack.observer.wait_for(_loaded_by(LINE_HAUL))
    await stack.controller.kill()
    died_sim = stack.sim_now()
    started = time.monotonic()
    await asyncio.sleep(0.5)
    await stack.controller.start()
    await stack.wait_vans_fresh(died_sim, sorted(stack.vans))
    return time.monotonic() - started


async def link_loss(stack: Stack) -> float:
    """The last-mile van's cellular link is cut for 60 s (simulated) after its first delivery:
    it finishes its released stops and holds; its states wait in the spool. Recovered: the
    controller hears it again after the link is back."""
    assert stack.observer is not None
    await stack.observer.wait_for(_delivered_by(LAST_MILE))
    link = stack.vans[LAST_MILE].link
    assert link is not None
    link.block()
    await asyncio.sleep(LINK_LOSS_SIM_S / stack.factor)
    link.unblock()
    back_sim = stack.sim_now()
    started = time.monotonic()
    await stack.wait_vans_fresh(back_sim, [LAST_MILE])
    return time.monotonic() - started


async def no_fault(stack: Stack) -> None:
    """Nothing goes wrong: the control run every other scenario is compared with."""


async def serial_corruption(stack: Stack) -> None:
    """1 % of the bytes on every serial line are corrupted, each way, all day (set when the
    VCUs start). Nothing to recover from: the link layer resends what the CRC refuses."""


async def vcu_reboot(stack: Stack) -> float:
    """The last-mile van's VCU reboots (firmware restart: mission and link session lost, the
    van stands where it is) after its first delivery. Recovered: its next delivery."""
    assert stack.observer is not None
    await stack.observer.wait_for(_delivered_by(LAST_MILE))
    delivered = sum(1 for e in stack.observer.events if _delivered_by(LAST_MILE)(e))
    stack.vans[LAST_MILE].vcu.signal(signal.SIGUSR1)
    started = time.monotonic()

    def next_delivery(e: Event) -> bool:
        n = sum(1 for x in stack.observer.events if _delivered_by(LAST_MILE)(x))  # type: ignore[union-attr]
        return _delivered_by(LAST_MILE)(e) and n > delivered

    await stack.observer.wait_for(next_delivery)
    return time.monotonic() - started


async def breakdown(stack: Stack) -> float:
    """The last-mile van breaks down (a fatal VCU fault) after its first delivery, with the
    rest of its parcels aboard. The controller takes it out of service and re-plans; its
    parcels are recovered to the station and another van (the station's spare, or with
    whole-fleet sharing any van with time, the warehouse van too) delivers them. Recovered:
    the re-plan applied."""
    assert stack.observer is not None
    await stack.observer.wait_for(_delivered_by(LAST_MILE))
    stack.vans[LAST_MILE].vcu.signal(signal.SIGUSR2)
    started = time.monotonic()
    await stack.observer.wait_for(lambda e: e.kind == "replan_applied")
    return time.monotonic() - started


async def _restart_controller_on(stack: Stack, db: Path | None) -> float:
    """SIGKILL the controller once the last-mile van has loaded and drives; start it again
    0.5 s later on store ``db`` (None: the same one). Wall seconds until it serves and has
    heard every van."""
    assert stack.observer is not None and stack.controller is not None
    await stack.observer.wait_for(_loaded_by(LAST_MILE))
    await stack.controller.kill()
    died_sim = stack.sim_now()
    started = time.monotonic()
    await asyncio.sleep(0.5)
    if db is not None:
        stack.use_db(db)
    await stack.controller.start()
    await stack.wait_vans_fresh(died_sim, sorted(stack.vans))
    return time.monotonic() - started


async def controller_restart_lost_store(stack: Stack) -> float:
    """The controller is killed once the last-mile van has loaded and drives, and started
    0.5 s later on a new, empty store with the same key (its disk was lost): it knows no
    order and no parcel, and would number its commands from scratch if it numbered them from
    its store. Its emergency stop, sent after the restart, must be obeyed (issue 14 item 1).
    The vans finish what they hold (their released bases) and hold there: what lies beyond
    is lost with the store (see ``docs/safety.md``). Recovered: controller serving, every
    van heard."""
    recovery = await _restart_controller_on(stack, stack.workdir / "fleet-new.db")
    await _probe(stack, LAST_MILE)
    return recovery


async def controller_restart_old_store(stack: Stack) -> float:
    """A copy of the controller's store is taken (``sqlite3 .backup``) right after the
    dispatch, before the last-mile van's order could go out (its parcels were not at the
    station yet); the controller is killed after that van's second delivery (the line haul
    has finished, the last-mile order has been sent and updated since) and started 0.5 s
    later on the copy: it believes it never sent the last-mile order, and older updates and
    parcel statuses than the vans hold. Its e-stop must be obeyed and the day must finish.
    Recovered: controller serving, every van heard."""
    assert stack.observer is not None and stack.controller is not None
    backup = stack.workdir / "fleet-backup.db"
    stack.backup_db(backup)
    stack.mark("store copied")
    await stack.observer.wait_for(_delivered_by(LAST_MILE))
    await _next_delivery(stack, LAST_MILE)
    await stack.controller.kill()
    died_sim = stack.sim_now()
    started = time.monotonic()
    await asyncio.sleep(0.5)
    stack.use_db(backup)
    await stack.controller.start()
    await stack.wait_vans_fresh(died_sim, sorted(stack.vans))
    recovery = time.monotonic() - started
    await _probe(stack, LAST_MILE)
    return recovery


async def _bridge_restart(stack: Stack, *, kill: bool) -> float:
    """The last-mile van's bridge is stopped (SIGTERM) or killed (SIGKILL) after the van's
    first delivery, parcels aboard, mid-order, and started again 0.5 s later with the same
    ``--state-dir``: it restores its order book (order, progress, parcels) and the van
    finishes its day without a recovery order. Recovered: the van's next delivery."""
    assert stack.observer is not None
    await stack.observer.wait_for(_delivered_by(LAST_MILE))
    next_delivery = asyncio.create_task(_next_delivery(stack, LAST_MILE))
    bridge = stack.vans[LAST_MILE].bridge
    started = time.monotonic()
    if kill:
        await bridge.kill()
    else:
        await bridge.stop()
    await asyncio.sleep(0.5)
    await bridge.start()
    await next_delivery
    return time.monotonic() - started


async def bridge_sigterm(stack: Stack) -> float:
    """The last-mile bridge stopped (SIGTERM) mid-order and started again (see
    :func:`_bridge_restart`)."""
    return await _bridge_restart(stack, kill=False)


async def bridge_sigkill(stack: Stack) -> float:
    """The last-mile bridge killed (SIGKILL) mid-order and started again (see
    :func:`_bridge_restart`)."""
    return await _bridge_restart(stack, kill=True)


async def _standstill(stack: Stack, van_id: str, timeout_s: float = 10.0) -> None:
    """Until the controller reports ``van_id`` standing (speed 0, e-stopped)."""
    async with asyncio.timeout(timeout_s):
        while True:
            status = await stack.status()
            van = next(v for v in status.vans if v.van_id == van_id)
            if van.speed_mps == 0.0 and van.mode is VanMode.ESTOPPED:
                return
            await asyncio.sleep(0.05)  # the controller pushes no state: asked for


async def vcu_reboot_estop_latched(stack: Stack) -> float:
    """The last-mile van is emergency-stopped through the dispatcher after its first
    delivery; once it stands, its VCU reboots (mission and session lost, the latch kept in
    its non-volatile memory). For 5 s of wall time (300 s simulated) the van must not move
    and the controller must never show it driving, paused or at rest; then the dispatcher
    resumes it and it finishes its day. Recovered: its next delivery after the resume."""
    assert stack.observer is not None
    await stack.observer.wait_for(_delivered_by(LAST_MILE))
    await _probe(stack, LAST_MILE, resume=False)
    if not stack.measured["estop_obeyed"]:
        return 0.0  # never latched: nothing to reboot across
    await _standstill(stack, LAST_MILE)  # braked (the distance moved is counted from here)
    stack.vans[LAST_MILE].vcu.signal(signal.SIGUSR1)
    stack.mark("VCU rebooted, e-stop latched")
    modes: set[str] = set()
    deadline = time.monotonic() + LATCH_HOLD_WALL_S
    while time.monotonic() < deadline:
        status = await stack.status()
        modes |= {v.mode.value for v in status.vans if v.van_id == LAST_MILE}
        await asyncio.sleep(0.2)  # the controller pushes no mode: asked for, as the CLI does
    stack.measured["modes_while_latched"] = sorted(modes)
    next_delivery = asyncio.create_task(_next_delivery(stack, LAST_MILE))
    await stack.resume(LAST_MILE)
    started = time.monotonic()
    await next_delivery
    return time.monotonic() - started


SCENARIOS: dict[str, Callable[[Stack], Awaitable[float | None]]] = {
    "no_fault": no_fault,
    "broker_restart": broker_restart,
    "controller_restart": controller_restart,
    "link_loss_60s": link_loss,
    "serial_corruption_1pct": serial_corruption,
    "vcu_reboot": vcu_reboot,
    "breakdown_replan": breakdown,
    "controller_restart_lost_store": controller_restart_lost_store,
    "controller_restart_old_store": controller_restart_old_store,
    "bridge_sigterm": bridge_sigterm,
    "bridge_sigkill": bridge_sigkill,
    "vcu_reboot_estop_latched": vcu_reboot_estop_latched,
}
# scenarios that send their own e-stop (after the restart, or before the reboot)
OWN_ESTOP = {"controller_restart_lost_store", "controller_restart_old_store",
             "vcu_reboot_estop_latched"}  # fmt: skip
# scenarios after which the controller's store does not know the day: the vans' account
# is the only one (and the day is over when they stop finishing stops)
STORE_LOST = {"controller_restart_lost_store"}
EXPECTED_MODES: dict[str, dict[str, set[VanMode]]] = {
    "breakdown_replan": {LAST_MILE: {VanMode.ERROR}},
}


async def _probe_estop(stack: Stack, scenario: str) -> None:
    """Emergency-stop a van mid-route: the spare after a breakdown, else the last-mile van.
    Not tried if that van never got going (the day stalled before: counted below)."""
    assert stack.observer is not None
    van = LAST_MILE
    try:
        if scenario == "breakdown_replan":
            # whichever van the re-plan sends for the broken van's parcels (the station's
            # spare, or with whole-fleet sharing the warehouse van): the first to load after it
            applied = await stack.observer.wait_for(
                lambda e: e.kind == "replan_applied", timeout_s=DAY_TIMEOUT_S
            )
            rescuer = await stack.observer.wait_for(
                lambda e: (
                    e.kind == "parcel_loaded"
                    and e.van_id not in (None, LAST_MILE)
                    and e.event_id > applied.event_id
                ),
                timeout_s=DAY_TIMEOUT_S,
            )
            assert rescuer.van_id is not None
            van = rescuer.van_id
        else:
            await stack.observer.wait_for(_loaded_by(van), timeout_s=DAY_TIMEOUT_S)
    except TimeoutError:
        return
    await _probe(stack, van)


async def _wait_vans_quiet(stack: Stack, timeout_s: float) -> StatusResult:
    """Until no van has finished a stop (by its bridge's account) for ``QUIET_WALL_S`` and
    every van stands in a settled mode: the end of a day the controller no longer knows."""
    settled = KNOWN_FINAL_MODES | {VanMode.ERROR}
    deadline = time.monotonic() + timeout_s
    seen, since = -1, time.monotonic()
    while True:
        finished = sum(
            1 for v in stack.vans.values() for e in read_events(v.bridge_events)
            if e["ev"] == "node_finished"
        )  # fmt: skip
        if finished != seen:
            seen, since = finished, time.monotonic()
        status = await stack.status()
        quiet = time.monotonic() - since >= QUIET_WALL_S
        if (quiet and all(v.mode in settled for v in status.vans)) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.2)  # other processes' files and the controller's answers


def _latch_held(vcu_events: list[dict[str, Any]]) -> tuple[bool, float | None]:
    """Across the VCU's reboot: was the latch kept, and how far (m) did the van move from
    the reboot until the latch was released (None: not released)."""
    reboot = next((e for e in vcu_events if e["ev"] == "reboot"), None)
    if reboot is None:
        return False, None
    after = vcu_events[vcu_events.index(reboot) + 1 :]
    release = next((e for e in after if e["ev"] == "latch" and not e["latched"]), None)
    if release is None:
        return bool(reboot["latched"]), None
    return bool(reboot["latched"]), float(release["odometer_m"]) - float(reboot["odometer_m"])


async def run_scenario(
    world: World, scenario: str, workdir: Path, *, factor: float, seed: int = 0
) -> RunResult:
    inject = SCENARIOS[scenario]
    corrupt = 0.01 if scenario == "serial_corruption_1pct" else 0.0
    started = time.monotonic()
    cuttable = frozenset({LAST_MILE}) if scenario == "link_loss_60s" else frozenset()
    async with Stack(
        world, workdir, factor=factor, corrupt=corrupt, seed=seed, cuttable=cuttable
    ) as stack:
        if scenario == "broker_restart":
            await stack.dispatch()  # the reply is in: orders are going out right now
            recovery = await inject(stack)
            await _probe_estop(stack, scenario)
        else:
            await stack.dispatch()
            stack.mark("dispatched")
            faults = asyncio.create_task(inject(stack), name=scenario)
            if scenario not in OWN_ESTOP:
                await _probe_estop(stack, scenario)
            try:
                async with asyncio.timeout(DAY_TIMEOUT_S):
                    recovery = await faults
            except TimeoutError:  # its trigger never came: the day stalled before it
                recovery = None
        stack.mark("e-stop probed")
        estop_obeyed: bool | None = stack.measured.get("estop_obeyed")
        estop: float | None = stack.measured.get("estop_latency_s")
        stalled = estop_obeyed is None  # the van never got going: the day has stalled already
        if not stalled and scenario in STORE_LOST:
            status = await _wait_vans_quiet(stack, timeout_s=DAY_TIMEOUT_S)
            stack.mark("no van finishes a stop any more")
        elif not stalled:
            try:
                await stack.wait_day_done(timeout_s=DAY_TIMEOUT_S)
                stack.mark("every parcel delivered or accounted for")
                status = await stack.wait_vans_settled(timeout_s=60.0)
                stack.mark("every van at rest")
            except TimeoutError:
                stalled = True
        if stalled:  # count what the day left undone
            status = await stack.status()
            stack.mark("stalled")
        assert stack.controller is not None
        await stack.controller.stop()
        events = stack.store_events()
        vcu_events = {v: read_events(van.vcu_events) for v, van in stack.vans.items()}
        bridge_events = {v: read_events(van.bridge_events) for v, van in stack.vans.items()}
        modes = stack.final_modes(status)
    await stack.close()
    for v in stack.vans:  # the VCUs write their summary when stopped
        vcu_events[v] = read_events(stack.vans[v].vcu_events)

    delivered = Counter(e.parcel_id for e in events if e.kind == "parcel_delivered")
    # the vans' own account: every parcel each bridge handed over at a node it finished
    handed = Counter(
        p
        for v in stack.vans
        for e in bridge_events[v]
        if e["ev"] == "node_finished"
        for p in e["delivered"]
    )
    aboard: set[str] = set()  # by the vans' account, at the end
    for v in stack.vans:
        on_van: set[str] = set()
        for e in bridge_events[v]:
            if e["ev"] == "node_finished":
                on_van = (on_van | set(e["loaded"])) - set(e["delivered"]) - set(e["unloaded"])
        aboard |= on_van
    applied_twice = 0
    for v in stack.vans:
        segments = Counter(
            (e["mission_id"], e["first_wp"]) for e in vcu_events[v] if e["ev"] == "segment"
        )
        updates = Counter(
            (e["order_id"], e["update_id"]) for e in bridge_events[v] if e["ev"] == "order_applied"
        )
        applied_twice += sum(n - 1 for n in segments.values() if n > 1)
        applied_twice += sum(n - 1 for n in updates.values() if n > 1)
    expected = EXPECTED_MODES.get(scenario, {})
    unknown = [
        v for v in sorted(stack.vans) if modes.get(v) not in expected.get(v, KNOWN_FINAL_MODES)
    ]
    summaries = {
        v: next((e for e in evs if e["ev"] == "summary"), {}) for v, evs in vcu_events.items()
    }
    known = handed if scenario in STORE_LOST else delivered
    notes: dict[str, object] = {}
    if scenario == "vcu_reboot_estop_latched" and estop_obeyed:
        kept, moved_m = _latch_held(vcu_events[LAST_MILE])
        seen = set(stack.measured.get("modes_while_latched", ()))
        bad_modes = seen - {m.value for m in LATCHED_MODES}
        notes.update(
            latch_kept=kept, moved_while_latched_m=moved_m, modes_while_latched=sorted(seen)
        )
        estop_obeyed = kept and moved_m is not None and moved_m <= 0.01 and not bad_modes
    return RunResult(
        scenario=scenario,
        seed=seed,
        parcels=len(world.parcel_ids),
        delivered=len(known),
        lost=[p for p in world.parcel_ids if p not in known],
        duplicated=sorted(
            {p for p, n in delivered.items() if n > 1} | {p for p, n in handed.items() if n > 1}
        ),
        orders_applied_twice=applied_twice,
        unknown_vans=unknown,
        estop_latency_s=estop,
        recovery_s=recovery,
        wall_s=time.monotonic() - started,
        stalled=stalled,
        estop_obeyed=estop_obeyed,
        final_modes={v: m.value for v, m in modes.items()},
        notes={
            **notes,
            "delivered_in_store": len(delivered),
            "delivered_by_vans": len(handed),
            "aboard_at_end": sorted(aboard),
            "recovery_orders": sum(1 for e in events if e.kind == "order_recovered"),
            "orders_unknown": sum(1 for e in events if e.kind == "order_unknown"),
            "orders_refused": sum(
                1 for e in events if e.kind in ("order_refused", "order_rejected")
            ),
            "modes": {v: m.value for v, m in modes.items()},
            "parcels_by_status": dict(status.parcels_by_status),
            "bytes_corrupted": sum(int(s.get("corrupted", 0)) for s in summaries.values()),
            "vcu_boots": {v: s.get("boots") for v, s in summaries.items()},
            "replans": sum(1 for e in events if e.kind == "replan_applied"),
            "controller_starts": sum(1 for e in events if e.kind == "controller_started"),
            "delivered_by": dict(Counter(e.van_id for e in events if e.kind == "parcel_delivered")),
            "timeline": stack.timeline,
        },
    )
