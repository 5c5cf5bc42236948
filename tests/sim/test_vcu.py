"""The simulated VCU over real pseudo-terminals and sockets, with a bridge-side link."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge import wire
from firmware_bridge.link import (
    LinkConfig,
    LinkDown,
    LinkEvent,
    LinkUp,
    Received,
    SerialLink,
    url_opener,
)
from fleet.model import VanSpec, load_van_spec
from fleet.protocol.clock import Clock, ScaledClock
from sim.vcu import SimulatedVcu, VcuConfig, VcuFaults, VcuMemory, VcuPort, vcu_port
from sim.vehicle import Vehicle

REPO = Path(__file__).resolve().parents[2]
LON0, LAT0 = -8.6100, 41.1500
M_PER_DEG = math.radians(1.0) * 6_371_008.8
FACTOR = 4.0  # simulated seconds per wall second in these tests
# link timing in simulated seconds, generous for a loaded CI machine
LINK = dict(heartbeat_s=0.5, peer_timeout_s=4.0, ack_timeout_s=0.2, hello_interval_s=0.4)


@pytest.fixture(scope="module")
def spec() -> VanSpec:
    return load_van_spec(REPO / "configs" / "van.toml")


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop (each body has its own timeout too)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


def north(m: float) -> tuple[int, int]:
    return (wire.to_e7(LON0), wire.to_e7(LAT0 + m / M_PER_DEG))


class BenchBridge:
    """The bridge's end of the line, reduced to the link: records what the VCU says."""

    def __init__(self, url: str, clock: Clock, line_baud: int = 115200) -> None:
        self.telemetry: list[wire.Telemetry] = []
        self.faults: list[wire.FaultReport] = []
        self.events: list[LinkEvent] = []
        self.changed = asyncio.Event()
        self.link = SerialLink(
            url_opener(url),
            config=LinkConfig(wire.Role.BRIDGE, **dict(LINK, line_baud=line_baud)),
            clock=clock,
            on_event=self._on_event,
            baud=line_baud,
            name="bench-bridge",
        )

    def _on_event(self, event: LinkEvent) -> None:
        self.events.append(event)
        if isinstance(event, Received):
            if isinstance(event.message, wire.Telemetry):
                self.telemetry.append(event.message)
            elif isinstance(event.message, wire.FaultReport):
                self.faults.append(event.message)
        self.changed.set()

    async def until(self, what: Callable[[], bool], timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not what():
                self.changed.clear()
                await self.changed.wait()

    @property
    def last(self) -> wire.Telemetry:
        return self.telemetry[-1]


@asynccontextmanager
async def vcu_and_bridge(
    spec: VanSpec,
    *,
    serial: str = "pty",
    faults: VcuFaults | None = None,
    baud: int = 115200,
    soc_pct: float = 100.0,
    memory: VcuMemory | None = None,
) -> AsyncIterator[tuple[SimulatedVcu, BenchBridge, VcuPort]]:
    clock = ScaledClock(0.0, FACTOR)
    link = dict(LINK, line_baud=baud)
    port = vcu_port(serial)
    vcu = SimulatedVcu(
        port,
        Vehicle(spec, lon=LON0, lat=LAT0, soc_pct=soc_pct),
        clock=clock,
        config=VcuConfig(baud=baud, link=LinkConfig(wire.Role.VCU, **link)),
        faults=faults,
        memory=memory,
    )
    task = asyncio.create_task(vcu.run())
    assert port.path is not None
    bridge = BenchBridge(port.path, clock, line_baud=baud)
    try:
        async with bridge.link:
            await bridge.until(lambda: bridge.link.up and bool(bridge.telemetry))
            yield vcu, bridge, port
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        port.close()


def segment(
    mission: int, first: int, metres: list[float], *, stop: bool = False
) -> wire.DriveSegment:
    return wire.DriveSegment(mission, first, 1200, 0, stop, tuple(north(m) for m in metres))


@aio
async def test_a_segment_over_a_pty_is_driven_to_its_end_and_the_van_stops_there(
    spec: VanSpec,
) -> None:
    async with asyncio.timeout(60), vcu_and_bridge(spec) as (vcu, bridge, _):
        await bridge.link.deliver(segment(5, 0, [0.0, 10.0, 25.0]))
        await bridge.link.deliver(segment(5, 3, [40.0]))
        await bridge.until(
            lambda: bridge.last.last_wp == 3 and bridge.last.drive_state is wire.DriveState.HOLDING
        )
        t = bridge.last
        assert t.speed_cmps == 0 and t.mission_id == 5 and t.wp_queued == 4
        assert abs(t.lat_e7 - north(40.0)[1]) <= 1
        assert 39 <= t.odometer_m <= 41
        assert t.soc_cpct < 10000
        assert vcu.applied_segments == [(5, 0), (5, 3)]


@aio
async def test_a_duplicate_segment_is_ignored_and_a_gap_is_reported(spec: VanSpec) -> None:
    async with asyncio.timeout(60), vcu_and_bridge(spec) as (vcu, bridge, _):
        await bridge.link.deliver(segment(1, 0, [0.0, 5.0]))
        await bridge.link.deliver(segment(1, 0, [0.0, 5.0]))
        await bridge.link.deliver(segment(1, 7, [30.0]))
        await bridge.until(lambda: bool(bridge.faults))
        assert vcu.applied_segments == [(1, 0)] and vcu.duplicates_ignored == 1
        assert bridge.faults[0].code is wire.FaultCode.SEGMENT_GAP and bridge.faults[0].arg == 2


@aio
async def test_an_emergency_stop_overtakes_a_queue_of_segments_on_a_paced_line(
    spec: VanSpec,
) -> None:
    async with asyncio.timeout(60), vcu_and_bridge(spec, baud=9600) as (vcu, bridge, _):
        # 40 full segments: about 10 kB, over a second of line time even at 4 x 9600 baud
        for k in range(40):
            first = k * wire.MAX_WAYPOINTS
            pts = [float(first + i) for i in range(wire.MAX_WAYPOINTS)]
            bridge.link.send(segment(2, first, pts))
        estop_id = bridge.link.emergency_stop()
        await bridge.until(lambda: bridge.last.estop_id == estop_id)
        assert vcu.estops_received == [estop_id]
        assert len(vcu.applied_segments) < 40  # it did not wait for the queue
        assert bridge.last.drive_state is wire.DriveState.ESTOPPED
        # RESUME naming an older e-stop must not release it
        await bridge.link.deliver(wire.Resume(0))
        await asyncio.sleep(0.1)
        assert vcu.vehicle.estopped
        await bridge.link.deliver(wire.Resume(estop_id))
        await bridge.until(lambda: bridge.last.drive_state is not wire.DriveState.ESTOPPED)


@aio
async def test_the_vcu_listens_on_socket_urls_and_takes_a_reconnecting_bridge(
    spec: VanSpec,
) -> None:
    async with (
        asyncio.timeout(60),
        vcu_and_bridge(spec, serial="socket://127.0.0.1:0") as (
            vcu,
            bridge,
            port,
        ),
    ):
        await bridge.link.deliver(segment(3, 0, [0.0, 5.0]))
        # the bridge's side of the line goes away and comes back: a new session, same VCU
        assert port.path is not None
        second = BenchBridge(port.path, vcu.clock)
        await bridge.link.close()
        async with second.link:
            await second.until(lambda: second.link.up and bool(second.telemetry))
            await second.link.deliver(segment(3, 2, [10.0]))
            await second.until(lambda: second.last.wp_queued == 3)
        assert vcu.applied_segments == [(3, 0), (3, 2)]


@aio
async def test_with_one_percent_of_bytes_corrupted_every_segment_is_applied_once(
    spec: VanSpec,
) -> None:
    faults = VcuFaults(corrupt=0.01, seed=7)
    async with asyncio.timeout(90), vcu_and_bridge(spec, faults=faults) as (vcu, bridge, _):
        for k in range(30):
            await bridge.link.deliver(segment(4, k * 2, [k * 2.0, k * 2.0 + 1.0]))
        await bridge.until(lambda: bridge.last.wp_queued == 60)
        assert vcu.applied_segments == [(4, k * 2) for k in range(30)]
        assert vcu.rx_noise is not None and vcu.rx_noise.corrupted > 0
        assert bridge.link.core.stats.bad_frames > 0


@aio
async def test_a_rebooting_vcu_forgets_its_mission_and_the_bridge_sees_a_new_session(
    spec: VanSpec,
) -> None:
    faults = VcuFaults(reboot_at_s=3.0)
    async with asyncio.timeout(60), vcu_and_bridge(spec, faults=faults) as (vcu, bridge, _):
        await bridge.link.deliver(segment(6, 0, [0.0, 200.0]))
        await bridge.until(
            lambda: any(isinstance(e, LinkUp) and e.peer_restarted for e in bridge.events)
        )
        await bridge.until(lambda: bridge.last.mission_id == 0)
        assert vcu.boots == 2


@aio
async def test_a_stalled_vcu_is_lost_then_found_again_in_the_same_session(spec: VanSpec) -> None:
    faults = VcuFaults(stall_at_s=2.0, stall_s=8.0)
    async with asyncio.timeout(60), vcu_and_bridge(spec, faults=faults) as (_vcu, bridge, _):
        await bridge.until(lambda: any(isinstance(e, LinkDown) for e in bridge.events))
        await bridge.until(lambda: bridge.link.up)
        ups = [e for e in bridge.events if isinstance(e, LinkUp)]
        assert not ups[-1].peer_restarted
        await bridge.until(
            lambda: any(f.code is wire.FaultCode.LINK_RESTORED for f in bridge.faults)
        )


@aio
async def test_a_fatal_fault_is_reported_and_segments_are_refused(spec: VanSpec) -> None:
    faults = VcuFaults(fatal_at_s=1.0)
    async with asyncio.timeout(60), vcu_and_bridge(spec, faults=faults) as (_vcu, bridge, _):
        await bridge.until(lambda: any(f.code is wire.FaultCode.FATAL for f in bridge.faults))
        assert bridge.faults[-1].severity is wire.Severity.FATAL
        await bridge.link.deliver(segment(8, 0, [0.0, 5.0]))
        await bridge.until(
            lambda: any(f.code is wire.FaultCode.SEGMENT_REFUSED for f in bridge.faults)
        )
        assert bridge.last.drive_state is wire.DriveState.FAULT
        assert bridge.last.fault_bits & wire.FaultBit.FATAL


def test_fault_shares_are_checked() -> None:
    with pytest.raises(ValueError, match="corrupt"):
        VcuFaults(corrupt=1.5)
    _ = dataclasses.replace(VcuFaults(), drop=0.5)


@aio
async def test_a_charge_raises_the_soc_at_the_vans_charging_power_and_ends_at_its_target(
    spec: VanSpec,
) -> None:
    async with asyncio.timeout(60), vcu_and_bridge(spec, soc_pct=50.0) as (vcu, bridge, _):
        charging = wire.FaultBit.CHARGING
        await bridge.link.deliver(wire.Charge(target_cpct=5050, max_power_hw=0))
        await bridge.until(lambda: bool(bridge.last.fault_bits & charging))
        assert vcu.vehicle.charging
        await bridge.until(lambda: not bridge.last.fault_bits & charging)
        seen = bridge.telemetry
        on = next(i for i, t in enumerate(seen) if t.fault_bits & charging)
        off = next(i for i in range(on, len(seen)) if not seen[i].fault_bits & charging)
        assert seen[off].soc_cpct == 5050
        # 0.5 % of the battery at the van's charging power (configs/van.toml), in VCU time
        hours = (seen[off].uptime_ms - seen[on - 1].uptime_ms) / 3_600_000
        kwh = 0.005 * spec.battery_kwh
        assert kwh / hours == pytest.approx(spec.charging_power_kw, rel=0.1)
        rising = [t.soc_cpct for t in seen[on:off]]
        assert rising == sorted(rising) and rising[-1] > rising[0]
        # a target at or below the charge ends at once, nothing refused
        await bridge.link.deliver(wire.Charge(target_cpct=4000, max_power_hw=0))
        assert not vcu.vehicle.charging and not bridge.faults


@aio
async def test_a_charge_is_refused_while_driving_and_a_charging_van_does_not_drive_off(
    spec: VanSpec,
) -> None:
    async with asyncio.timeout(60), vcu_and_bridge(spec, soc_pct=50.0) as (vcu, bridge, _):
        await bridge.link.deliver(segment(1, 0, [0.0, 60.0]))
        await bridge.until(lambda: bridge.last.speed_cmps > 0)
        await bridge.link.deliver(wire.Charge(target_cpct=9000, max_power_hw=0))
        await bridge.until(lambda: bool(bridge.faults))
        assert bridge.faults[0].code is wire.FaultCode.CHARGE_REFUSED
        await bridge.until(lambda: bridge.last.drive_state is wire.DriveState.HOLDING)
        # standing at the end: plugged in, a new segment waits until the charge is over
        await bridge.link.deliver(wire.Charge(target_cpct=5010, max_power_hw=20 * 10))
        await bridge.link.deliver(segment(1, 2, [90.0]))
        await bridge.until(lambda: bool(bridge.last.fault_bits & wire.FaultBit.CHARGING))
        assert bridge.last.speed_cmps == 0
        await bridge.until(lambda: bridge.last.last_wp == 2, 40)
        assert not vcu.vehicle.charging and bridge.last.soc_cpct < 5010  # drove off after


# ---- the e-stop latch survives a reset (issue 14 item 2, contract C6) ------------------------


def _latched(t: wire.Telemetry, estop_id: int) -> bool:
    return (
        bool(t.fault_bits & wire.FaultBit.ESTOP_LATCHED)
        and t.drive_state is wire.DriveState.ESTOPPED
        and t.estop_id == estop_id
    )


@aio
async def test_an_estop_latch_survives_a_vcu_reboot_until_a_resume_names_its_id(
    spec: VanSpec,
) -> None:
    async with asyncio.timeout(60), vcu_and_bridge(spec) as (vcu, bridge, _):
        await bridge.link.deliver(segment(3, 0, [0.0, 300.0]))
        await bridge.until(lambda: bridge.last.speed_cmps > 0)
        estop_id = bridge.link.emergency_stop()
        await bridge.until(lambda: _latched(bridge.last, estop_id))
        vcu.request_reboot()
        await bridge.until(
            lambda: any(isinstance(e, LinkUp) and e.peer_restarted for e in bridge.events)
        )
        boot = len(bridge.telemetry)
        await bridge.until(lambda: len(bridge.telemetry) > boot)
        after = bridge.telemetry[boot]  # the first TELEMETRY of the new boot
        assert vcu.boots == 2 and after.mission_id == 0
        assert _latched(after, estop_id)
        # a RESUME naming another id (queued before the e-stop) leaves the latch alone
        await bridge.link.deliver(wire.Resume(estop_id + 1))
        await bridge.link.deliver(wire.Door(open=False))  # a round trip after the resume
        await bridge.until(lambda: len(bridge.telemetry) > boot + 3)
        assert _latched(bridge.last, estop_id) and vcu.vehicle.estopped
        await bridge.link.deliver(wire.Resume(estop_id))
        await bridge.until(lambda: not bridge.last.fault_bits & wire.FaultBit.ESTOP_LATCHED)
        assert bridge.last.drive_state is wire.DriveState.IDLE
        assert not vcu.memory.estop_latched


def test_the_latch_in_a_memory_file_survives_a_power_cycle_and_a_bad_file_means_latched(
    tmp_path: Path,
) -> None:
    nvm = tmp_path / "vcu-nvm.json"
    VcuMemory(nvm).latch(41)
    again = VcuMemory(nvm)  # a new process on the same file
    assert (again.estop_latched, again.estop_id) == (True, 41)
    again.release()
    assert not VcuMemory(nvm).estop_latched and VcuMemory(nvm).estop_id == 41
    nvm.write_text("{not json")
    broken = VcuMemory(nvm)
    assert broken.estop_latched and broken.estop_id == 0  # when in doubt, stay stopped
    assert list(tmp_path.iterdir()) == [nvm]  # no temp file left behind


@aio
async def test_a_vcu_started_on_a_latched_memory_file_boots_estopped(
    spec: VanSpec, tmp_path: Path
) -> None:
    nvm = tmp_path / "vcu-nvm.json"
    VcuMemory(nvm).latch(9)
    async with (
        asyncio.timeout(60),
        vcu_and_bridge(spec, memory=VcuMemory(nvm)) as (
            vcu,
            bridge,
            _,
        ),
    ):
        assert _latched(bridge.telemetry[0], 9)
        await bridge.link.deliver(segment(2, 0, [0.0, 50.0]))
        await bridge.link.deliver(wire.Door(open=False))
        assert vcu.vehicle.speed_mps == 0.0 and _latched(bridge.last, 9)
        await bridge.link.deliver(wire.Resume(9))
        await bridge.until(lambda: bridge.last.speed_cmps > 0)  # drives the held segment


# ---- driving without the bridge is bounded (issue 14 item 12, contract C8) -------------------


async def _until_vcu(what: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait for a state of the VCU itself (a silent bridge hears nothing meanwhile)."""
    async with asyncio.timeout(timeout_s):
        while not what():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("cap_cmps", "bound"),
    [(300, "time"), (1400, "distance")],  # 5 s at 3 m/s is 15 m; 50 m at 14 m/s is 3.6 s
)
@aio
async def test_a_vcu_that_loses_its_bridge_stops_within_the_bound_and_holds_until_resumed(
    spec: VanSpec, cap_cmps: int, bound: str
) -> None:
    async with asyncio.timeout(90), vcu_and_bridge(spec) as (vcu, bridge, _):
        route = tuple(north(m) for m in (0.0, 400.0, 800.0, 1200.0, 2000.0))
        await bridge.link.deliver(wire.DriveSegment(5, 0, cap_cmps, 0, True, route))
        await bridge.until(lambda: bridge.last.speed_cmps >= cap_cmps - 5, 60)
        v = vcu.vehicle
        bridge.link.stall(25.0)  # the bridge goes silent (simulated seconds)
        await _until_vcu(lambda: vcu.telemetry().fault_bits & wire.FaultBit.LINK_LOST != 0)
        lost_at, lost_odo, speed = vcu.clock.monotonic(), v.odometer_m, v.speed_mps
        await _until_vcu(lambda: v.held and v.speed_mps == 0.0)
        stopped_s, driven_m = vcu.clock.monotonic() - lost_at, v.odometer_m - lost_odo
        assert vcu.last_link_loss_stop is not None
        ordered_s, ordered_m = vcu.last_link_loss_stop
        if bound == "time":
            assert ordered_s == pytest.approx(wire.LINK_LOSS_DRIVE_S, abs=0.3)
            assert ordered_m < wire.LINK_LOSS_DRIVE_M
        else:
            assert ordered_m == pytest.approx(wire.LINK_LOSS_DRIVE_M, abs=2.0)
            assert ordered_s < wire.LINK_LOSS_DRIVE_S
        braking_m = speed**2 / (2 * v.service_decel_mps2)
        assert driven_m <= ordered_m + braking_m + 1.0
        assert stopped_s <= ordered_s + speed / v.service_decel_mps2 + 0.5
        t = vcu.telemetry()
        assert t.drive_state is wire.DriveState.HOLDING and t.fault_bits & wire.FaultBit.LINK_LOST
        # the bridge comes back: the link is restored, the van keeps holding ...
        await bridge.until(
            lambda: any(f.code is wire.FaultCode.LINK_RESTORED for f in bridge.faults), 60
        )
        held_at = len(bridge.telemetry)
        await bridge.until(lambda: len(bridge.telemetry) >= held_at + 10)
        assert all(
            x.speed_cmps == 0 and x.drive_state is wire.DriveState.HOLDING
            for x in bridge.telemetry[held_at:]
        )
        assert not bridge.last.fault_bits & wire.FaultBit.LINK_LOST
        # ... until a RESUME: then it drives on along the mission it kept
        await bridge.link.deliver(wire.Resume(0))
        await bridge.until(lambda: bridge.last.speed_cmps > 0)
        assert bridge.last.drive_state is wire.DriveState.DRIVING and bridge.last.mission_id == 5


@aio
async def test_a_link_back_within_the_bound_lets_the_van_drive_on(spec: VanSpec) -> None:
    async with asyncio.timeout(60), vcu_and_bridge(spec) as (vcu, bridge, _):
        route = tuple(north(m) for m in (0.0, 1000.0, 2000.0))
        await bridge.link.deliver(wire.DriveSegment(6, 0, 300, 0, True, route))
        await bridge.until(lambda: bridge.last.speed_cmps >= 295, 60)
        bridge.link.stall(6.0)  # the VCU notices after 4 s, the link is back 2 s later
        await bridge.until(
            lambda: any(f.code is wire.FaultCode.LINK_RESTORED for f in bridge.faults), 60
        )
        assert vcu.link_loss_stops == 0 and not vcu.vehicle.held
        assert bridge.last.drive_state is wire.DriveState.DRIVING
