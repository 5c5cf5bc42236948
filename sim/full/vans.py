"""The full stack's vans: per van a simulated VCU on a pseudo-terminal and the real firmware
bridge on the other end of it, connected to the broker directly or through a link the
simulator can cut."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge import wire
from firmware_bridge.bridge import BridgeService, BridgeSettings, VanProfile
from fleet.control.keys import MasterKey
from fleet.model import VanSpec
from fleet.mqtt import BrokerAddress
from fleet.protocol import Topics, derive_van_key
from sim.clock import PausableClock
from sim.errors import WorldError
from sim.full.netlink import CuttableLink
from sim.full.timing import Timing
from sim.vcu import SimulatedVcu, VcuFaults, VcuPort, vcu_port
from sim.vehicle import Vehicle

log = logging.getLogger(__name__)

STOP_WALL_S = 5.0  # a part still running this long after being asked to stop is left behind


@dataclass
class SimVan:
    van_id: str
    port: VcuPort
    vcu: SimulatedVcu
    bridge: BridgeService | None = None
    link: CuttableLink | None = None
    task: asyncio.Task[None] | None = None

    def bad_frames(self) -> tuple[int, int]:
        """Frames damaged (caught by the CRC) and frames resent so far, both ends."""
        bad = retries = 0
        links = [self.vcu.link]
        if self.bridge is not None:
            links.append(self.bridge.link)
        for link in links:
            stats = link.core.stats
            bad += stats.bad_frames
            retries += stats.retransmits
        return bad, retries

    async def stop(self) -> None:
        if self.bridge is not None:
            stopping = asyncio.ensure_future(self.bridge.__aexit__(None, None, None))
            done, _ = await asyncio.wait({stopping}, timeout=STOP_WALL_S)
            if not done:
                log.warning("van %s: the bridge did not stop within %g s", self.van_id, STOP_WALL_S)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.port.close()
        if self.link is not None:
            await self.link.close()


@dataclass(frozen=True, slots=True)
class VanKit:
    """What every van of a run shares: the van type, the clock and timers, the broker, the
    keys, the topics and the run's directory."""

    spec: VanSpec
    clock: PausableClock
    timing: Timing
    address: BrokerAddress
    master: MasterKey
    topics: Topics
    work: Path
    seed: int

    async def start(
        self,
        i: int,
        van_id: str,
        lon: float,
        lat: float,
        *,
        client_id: str,
        noisy: bool,
        cuttable: bool,
    ) -> SimVan:
        """Van number ``i`` at ``lon, lat``: its VCU running, its bridge started. ``noisy``:
        its serial line can be corrupted; ``cuttable``: its link to the broker can be cut."""
        t, spec, address = self.timing, self.spec, self.address
        port = vcu_port("pty")
        vcu = SimulatedVcu(
            port,
            Vehicle(spec, lon=lon, lat=lat),
            clock=self.clock,
            config=t.vcu(),
            faults=VcuFaults(corrupt=1e-12, seed=self.seed * 1000 + i) if noisy else None,
        )
        van = SimVan(van_id, port, vcu)
        van.task = asyncio.create_task(vcu.run(), name=f"vcu {van_id}")
        host, mqtt_port = address.host, address.port
        if cuttable:
            van.link = CuttableLink(address.host, address.port, van_id)
            await van.link.start()
            host, mqtt_port = "127.0.0.1", van.link.port
        assert port.path is not None
        settings = BridgeSettings(
            van_id=van_id,
            serial_url=port.path,
            broker=BrokerAddress(
                host=host, port=mqtt_port, username=address.username, password=address.password
            ),
            keys=(derive_van_key(self.master.secret, van_id, generation=self.master.generation),),
            state_dir=self.work / "vans" / van_id,
            topic_prefix=self.topics.prefix,
            client_id=client_id,
            baud=0,
            link=t.link(wire.Role.BRIDGE),
            max_command_age_s=t.command_max_age_s,
            reconnect_s=t.stretch(0.5),
            state_period_s=t.state_period_s,
            tick_s=t.bridge_tick_s,
            vcu_grace_s=t.vcu_grace_s,
            telemetry_stale_s=t.telemetry_stale_s,
            profile=VanProfile(
                top_speed_mps=spec.top_speed_mps,
                payload_kg=spec.payload_kg,
                cargo_volume_m3=spec.cargo_volume_m3,
                battery_kwh=spec.battery_kwh,
                range_m=spec.range_km * 1000.0,
            ),
        )
        van.bridge = BridgeService(settings, self.clock)
        await van.bridge.__aenter__()
        if noisy and vcu.tx_noise is not None and vcu.rx_noise is not None:
            vcu.tx_noise.corrupt = vcu.rx_noise.corrupt = 0.0
        return van


async def wait_ready(vans: Iterable[SimVan]) -> None:
    """Every bridge connected and talking to its VCU."""
    vans = list(vans)
    try:
        async with asyncio.timeout(60 + 0.5 * len(vans)):
            for van in vans:
                assert van.bridge is not None
                await van.bridge.connected.wait()
                await van.vcu.link_up.wait()
    except TimeoutError as exc:
        down = [
            v.van_id
            for v in vans
            if v.bridge is None or not v.bridge.connected.is_set() or not v.vcu.link_up.is_set()
        ]
        raise WorldError(
            f"{len(down)} van(s) never came up (bridge ↔ broker ↔ VCU): {', '.join(down[:8])}"
        ) from exc
