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
from sim.vcu import SimulatedVcu, VcuConfig, VcuFaults, VcuPort, vcu_port
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
