"""The fault scenarios, and one run of a scenario measured end to end.

Each scenario starts the stack, dispatches the day's plan through the dispatcher's login,
injects its failure at a moment that matters, emergency-stops one van mid-route through the
dispatcher (timing it to the VCU), waits for the day to finish, stops everything and reads
the outcome from the controller's store and the VCUs' and bridges' event files:

* **parcels lost**: not delivered at the end (in these scenarios every parcel can be);
* **parcels duplicated**: delivered more than once (``parcel_delivered`` events);
* **orders applied twice**: an order update a bridge started twice, or a drive segment a
  VCU executed twice;
* **vans in an unknown state**: once every parcel is accounted for, a van that does not come
  to rest in a known mode — ``idle``, ``at_stop`` or ``charging``; ``error`` for the van
  that broke down (``unknown``, ``stale``, ``offline``, still driving or paused count);
* **e-stop latency**: dispatcher request → VCU latched, wall seconds;
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

from fleet.protocol.control_api import Event, VanMode
from tests.faults.stack import Stack, read_events
from tests.faults.world import World

LINE_HAUL, LAST_MILE, SPARE = "WH-F-01", "ST-CENTRO-01", "ST-CENTRO-02"
LINK_LOSS_SIM_S = 60.0
DAY_TIMEOUT_S = 45.0  # wall; a day takes about 12 s at x60
KNOWN_FINAL_MODES = {VanMode.IDLE, VanMode.AT_STOP, VanMode.CHARGING}


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
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.stalled
            or self.estop_latency_s is None
            or self.lost
            or self.duplicated
            or self.orders_applied_twice
            or self.unknown_vans
        )


def _delivered_by(van_id: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "parcel_delivered" and e.van_id == van_id


def _loaded_by(van_id: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "parcel_loaded" and e.van_id == van_id


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
    parcels are recovered to the station and the spare van delivers them. Recovered: the
    re-plan applied."""
    assert stack.observer is not None
    await stack.observer.wait_for(_delivered_by(LAST_MILE))
    stack.vans[LAST_MILE].vcu.signal(signal.SIGUSR2)
    started = time.monotonic()
    await stack.observer.wait_for(lambda e: e.kind == "replan_applied")
    return time.monotonic() - started


SCENARIOS: dict[str, Callable[[Stack], Awaitable[float | None]]] = {
    "no_fault": no_fault,
    "broker_restart": broker_restart,
    "controller_restart": controller_restart,
    "link_loss_60s": link_loss,
    "serial_corruption_1pct": serial_corruption,
    "vcu_reboot": vcu_reboot,
    "breakdown_replan": breakdown,
}
EXPECTED_MODES: dict[str, dict[str, set[VanMode]]] = {
    "breakdown_replan": {LAST_MILE: {VanMode.ERROR}},
}


async def _probe_estop(stack: Stack, scenario: str) -> float | None:
    """Emergency-stop a van mid-route: the spare after a breakdown, else the last-mile van.
    None if that van never got going (the day stalled before: counted below)."""
    assert stack.observer is not None
    van = SPARE if scenario == "breakdown_replan" else LAST_MILE
    try:
        await stack.observer.wait_for(_loaded_by(van), timeout_s=DAY_TIMEOUT_S)
    except TimeoutError:
        return None
    return await stack.estop_probe(van)


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
            estop = await _probe_estop(stack, scenario)
        else:
            await stack.dispatch()
            stack.mark("dispatched")
            faults = asyncio.create_task(inject(stack), name=scenario)
            estop = await _probe_estop(stack, scenario)
            try:
                async with asyncio.timeout(DAY_TIMEOUT_S):
                    recovery = await faults
            except TimeoutError:  # its trigger never came: the day stalled before it
                recovery = None
        stack.mark("e-stop probed")
        stalled = estop is None  # the van never got going: the day has stalled already
        if not stalled:
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
    return RunResult(
        scenario=scenario,
        seed=seed,
        parcels=len(world.parcel_ids),
        delivered=len(delivered),
        lost=[p for p in world.parcel_ids if p not in delivered],
        duplicated=sorted(p for p, n in delivered.items() if n > 1),
        orders_applied_twice=applied_twice,
        unknown_vans=unknown,
        estop_latency_s=estop,
        recovery_s=recovery,
        wall_s=time.monotonic() - started,
        stalled=stalled,
        notes={
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
