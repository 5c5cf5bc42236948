"""The scenario driver plays each event the same way over any backend: it acts on the world
in order, waits only through the backend, records what it did, and keeps orders the
controller could not take until a new controller is up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

from fleet.model import Parcel
from sim.driver import Broken, Process, ScenarioDriver
from sim.scenario import BUSIEST_VAN, Breakdown, ControllerRestart, LinkLoss, SerialCorruption
from sim.trace import Trace


class World:
    """A backend as a list of what was done to it, in simulated time that moves only when
    a process sleeps (a test double: plain code, no mocks)."""

    def __init__(self, *, serial: bool) -> None:
        self.t_s = 0.0
        self.log: list[str] = []
        self.controller_up = True
        self.handed_in: list[str] = []
        self.serial = serial

    @property
    def has_serial_line(self) -> bool:
        return self.serial

    def now_day_s(self) -> float:
        return self.t_s

    async def sleep(self, seconds: float) -> None:
        self.t_s += seconds

    async def sleep_until(self, day_s: float) -> None:
        self.t_s = max(self.t_s, day_s)

    def spawn(self, at_s: float, process: Process, name: str) -> None:
        raise AssertionError("not used here")

    def has_van(self, van_id: str) -> bool:
        return van_id in ("W-01", "ST-A-01")

    def busiest_van(self) -> str | None:
        return "ST-A-01"

    def broken(self, van_id: str) -> bool:
        return False

    def break_down(self, van_id: str) -> Broken:
        self.log.append(f"break {van_id}")
        return Broken(-8.6, 41.1, frozenset({"P2", "P1"}))

    def parcels_aboard(self, van_id: str) -> Sequence[str]:
        return ["P1"]

    def cut_link(self, van_id: str) -> None:
        self.log.append(f"cut {van_id} at {self.t_s:g}")

    def restore_link(self, van_id: str) -> None:
        self.log.append(f"restore {van_id} at {self.t_s:g}")

    def corrupt_serial(self, van_id: str, frame_error_share: float) -> bool:
        self.log.append(f"corrupt {van_id} {frame_error_share:g}")
        return True

    def clean_serial(self, van_id: str) -> tuple[int, int]:
        self.log.append(f"clean {van_id}")
        return 7, 9

    async def stop_controller(self) -> None:
        self.controller_up = False
        self.log.append(f"stop at {self.t_s:g}")

    async def start_controller(self) -> None:
        self.controller_up = True
        self.log.append(f"start at {self.t_s:g}")

    async def request_replan(self, reason: str) -> str | None:
        return None

    async def hand_in(self, parcels: list[Parcel]) -> bool:
        if not self.controller_up:
            return False
        self.handed_in += [p.id for p in parcels]
        return True


def _driver(world: World) -> tuple[ScenarioDriver, Trace]:
    trace = Trace(scenario="t", mode="test", seed=1, start_s=0.0, end_s=3600.0)
    day = SimpleNamespace(scenario=SimpleNamespace(file="t.toml"))
    return ScenarioDriver(world, cast(Any, day), trace, cast(Any, None)), trace


def _parcel(pid: str) -> Parcel:
    return cast(Parcel, SimpleNamespace(id=pid))


def test_a_link_loss_is_recorded_then_cut_then_restored_after_its_duration() -> None:
    world = World(serial=True)
    driver, trace = _driver(world)
    asyncio.run(driver.link_loss(LinkLoss(at_s=0, van=BUSIEST_VAN, duration_s=900)))
    assert world.log == ["cut ST-A-01 at 0", "restore ST-A-01 at 900"]
    assert [(i.kind, i.t_s, i.van) for i in trace.incidents] == [
        ("link_loss", 0.0, "ST-A-01"),
        ("link_restored", 900.0, "ST-A-01"),
    ]


def test_an_event_naming_a_van_that_does_not_exist_does_nothing() -> None:
    world = World(serial=True)
    driver, trace = _driver(world)
    asyncio.run(driver.link_loss(LinkLoss(at_s=0, van="NOPE-01", duration_s=900)))
    asyncio.run(driver.breakdown(Breakdown(at_s=0, van="NOPE-01", recovery_s=60)))
    assert world.log == [] and trace.incidents == [] and trace.breakdowns == []


def test_a_breakdown_records_the_parcels_due_and_recovers_those_aboard() -> None:
    world = World(serial=True)
    driver, trace = _driver(world)
    asyncio.run(driver.breakdown(Breakdown(at_s=0, van="ST-A-01", recovery_s=1800)))
    (b,) = trace.breakdowns
    assert (b.van, b.parcels, b.t_s) == ("ST-A-01", ("P1", "P2"), 0.0)
    assert [(u.parcel, u.depot, u.t_s) for u in trace.unloaded] == [("P1", "ST-A", 1800.0)]
    assert trace.incidents[-1].detail == "1 parcels back at ST-A"


def test_serial_corruption_counts_the_damage_where_there_is_a_line() -> None:
    world = World(serial=True)
    driver, trace = _driver(world)
    ev = SerialCorruption(at_s=0, van="W-01", duration_s=60, frame_error_share=0.1)
    asyncio.run(driver.serial_corruption(ev))
    assert world.log == ["corrupt W-01 0.1", "clean W-01"]
    assert (trace.counters.serial_frames_corrupted, trace.counters.serial_retries) == (7, 9)
    assert [i.kind for i in trace.incidents] == ["serial_corruption", "serial_clean"]

    world = World(serial=False)
    driver, trace = _driver(world)
    asyncio.run(driver.serial_corruption(ev))
    assert world.log == []
    (only,) = trace.incidents
    assert "no serial line, no effect" in only.detail


def test_orders_the_controller_could_not_take_go_in_once_it_is_back() -> None:
    world = World(serial=True)
    driver, trace = _driver(world)

    async def day() -> None:
        world.controller_up = False
        await driver._hand_in([_parcel("L1")])  # while the controller is down
        world.controller_up = True
        await driver.controller_restart(ControllerRestart(at_s=0, down_s=60))

    asyncio.run(day())
    assert world.log == ["stop at 0", "start at 60"]
    assert world.handed_in == ["L1"] and driver.held == []
    (i,) = trace.incidents
    assert (i.kind, i.t_s) == ("controller_restart", 0.0)
