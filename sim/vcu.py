"""A simulated vehicle control unit that speaks the serial protocol of ``docs/serial.md``.

It drives a :class:`sim.vehicle.Vehicle` along the segments a bridge sends, reports telemetry
at 10 Hz and on every event, answers stop / emergency stop / resume / door / charge (at the
van's ``charging_power_kw``, standing still; ``charging`` in the fault bits), reports faults,
and can misbehave on purpose (:class:`VcuFaults`): drop or corrupt a share of the line's
bytes, stall, raise a fatal fault, reboot. Its line is paced at ``baud`` (default 115200, the
rate of real VCU serial interfaces; 0 turns pacing off) so bandwidth problems show in tests.

What every VCU must do (``docs/serial.md``, "Obligations of a VCU") and this one does:

* the e-stop latch and its id live in non-volatile memory (:class:`VcuMemory`, a file with
  ``--nvm``): a reboot comes back ESTOPPED with ESTOP_LATCHED until a RESUME names that id;
* after the bridge is lost it drives on for at most ``link_loss_drive_s`` (5 s) and
  ``link_loss_drive_m`` (50 m), then makes a minimal-risk stop at the next safe place and
  holds (HOLDING, LINK_LOST) — after the link is back too, until a RESUME.

:meth:`SimulatedVcu.request_reboot` reboots the firmware in place (``fleet-sim vcu``: on
SIGUSR1): a new link session, the mission forgotten, the memory kept.

Where it listens (``serial`` argument of :func:`vcu_port`):

* ``pty`` — a new pseudo-terminal pair; the bridge opens the printed ``/dev/pts/N`` path;
* ``socket://HOST:PORT`` — the VCU *listens* there (the serial device end of the line),
  and a bridge given the same URL connects to it; one bridge at a time;
* anything else — a pyserial URL or device the VCU opens as a client (``/dev/ttyUSB1``, …).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from firmware_bridge import wire
from firmware_bridge.errors import PortError
from firmware_bridge.link import (
    LinkConfig,
    LinkDown,
    LinkEvent,
    LinkUp,
    Listener,
    PtyPair,
    Received,
    SerialLink,
    Transport,
    url_opener,
)
from firmware_bridge.link.serial_link import Opener
from fleet.model import VanSpec
from fleet.protocol.clock import Clock
from sim.vehicle import EventKind, Vehicle, VehicleEvent

log = logging.getLogger(__name__)

DEFAULT_BAUD = 115_200


@dataclass(frozen=True, slots=True)
class VcuFaults:
    """Misbehaviour switched on by the test or the engineer. Times are VCU uptime seconds."""

    corrupt: float = 0.0  # share of bytes flipped, each direction
    drop: float = 0.0  # share of bytes lost, each direction
    stall_at_s: float | None = None
    stall_s: float = 10.0
    fatal_at_s: float | None = None
    reboot_at_s: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("corrupt", "drop"):
            share = getattr(self, name)
            if not 0.0 <= share < 1.0:
                raise ValueError(f"fault share {name}={share}: expected 0 ≤ share < 1")


@dataclass(frozen=True, slots=True)
class VcuConfig:
    baud: int = DEFAULT_BAUD
    telemetry_hz: float = 10.0
    tick_s: float = 0.02
    link: LinkConfig = field(default_factory=lambda: LinkConfig(wire.Role.VCU))
    link_loss_drive_s: float = wire.LINK_LOSS_DRIVE_S
    link_loss_drive_m: float = wire.LINK_LOSS_DRIVE_M


class VcuMemory:
    """The VCU's non-volatile memory: the e-stop latch and its id, kept across reboots.

    Without a ``path`` it lives in this object (it survives :meth:`SimulatedVcu.request_reboot`,
    not the end of the process); with one, in a small JSON file written crash-safely (temp
    file, fsync, rename, fsync of the directory) at every change, so a power cycle — a new
    process on the same file — keeps it too. A file that cannot be read is taken as a latch
    (id 0) and said so in the log: when in doubt, the van stays stopped.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.estop_latched = False
        self.estop_id = 0
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                latched, estop_id = data["estop_latched"], data["estop_id"]
                if not isinstance(latched, bool) or not isinstance(estop_id, int):
                    raise ValueError("estop_latched must be a boolean, estop_id an integer")
                if not 0 <= estop_id <= 0xFFFF:
                    raise ValueError(f"estop_id {estop_id} outside 0..65535")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("vcu: non-volatile memory %s unreadable (%s): e-stop latched", path, exc)
                self.estop_latched, self.estop_id = True, 0
            else:
                self.estop_latched, self.estop_id = latched, estop_id

    def latch(self, estop_id: int) -> None:
        self.estop_latched, self.estop_id = True, estop_id
        self._save()

    def release(self) -> None:
        self.estop_latched = False
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        data = json.dumps({"estop_latched": self.estop_latched, "estop_id": self.estop_id})
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class ByteNoise:
    """Drops and corrupts bytes with the given shares (seeded, so runs repeat)."""

    def __init__(self, drop: float, corrupt: float, rng: random.Random) -> None:
        self.drop = drop
        self.corrupt = corrupt
        self.rng = rng
        self.dropped = 0
        self.corrupted = 0

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        rnd = self.rng.random
        for byte in data:
            r = rnd()
            if r < self.drop:
                self.dropped += 1
                continue
            if r < self.drop + self.corrupt:
                self.corrupted += 1
                byte ^= self.rng.randrange(1, 256)
            out.append(byte)
        return bytes(out)


@dataclass
class VcuPort:
    """How the VCU reaches its line; ``close()`` releases a pty or a listening socket."""

    opener: Opener
    description: str
    close: Callable[[], None]
    path: str | None = None  # the pty slave path a bridge should open


def vcu_port(serial: str) -> VcuPort:
    """Build the VCU's end of the line from ``pty``, ``socket://HOST:PORT`` or a pyserial URL."""
    if serial == "pty":
        pair = PtyPair()

        async def open_pty() -> Transport:
            return pair.transport()

        return VcuPort(open_pty, f"pseudo-terminal {pair.slave_path}", pair.close, pair.slave_path)
    if serial.startswith("socket://"):
        parts = urlsplit(serial)
        if not parts.hostname or parts.port is None:
            raise PortError(f"{serial!r}: expected socket://HOST:PORT")
        listener = Listener(parts.hostname, parts.port)
        return VcuPort(
            listener.accept,
            f"listening on socket://{listener.host}:{listener.port}",
            listener.close,
            f"socket://{listener.host}:{listener.port}",
        )
    return VcuPort(url_opener(serial), f"serial {serial}", lambda: None)


class SimulatedVcu:
    """The VCU's firmware: mission bookkeeping, command handling, telemetry, faults."""

    def __init__(
        self,
        port: VcuPort,
        vehicle: Vehicle,
        *,
        clock: Clock,
        config: VcuConfig | None = None,
        faults: VcuFaults | None = None,
        on_estop: Callable[[int], None] | None = None,
        memory: VcuMemory | None = None,
    ) -> None:
        self.port = port
        self.vehicle = vehicle
        self.clock = clock
        self.config = config or VcuConfig()
        self.faults = faults or VcuFaults()
        self.on_estop = on_estop
        self.memory = memory or VcuMemory()
        rng = random.Random(self.faults.seed)
        noisy = self.faults.drop > 0 or self.faults.corrupt > 0
        self.tx_noise = ByteNoise(self.faults.drop, self.faults.corrupt, rng) if noisy else None
        self.rx_noise = ByteNoise(self.faults.drop, self.faults.corrupt, rng) if noisy else None
        self.mission_id = 0
        self.wp_queued = 0
        self.estop_id = 0
        self.fault_bits = 0
        self.boots = 0
        # what was applied, for tests that check nothing is applied twice
        self.applied_segments: list[tuple[int, int]] = []
        self.duplicates_ignored = 0
        self.estops_received: list[int] = []
        self._link: SerialLink | None = None
        self._boot_at = 0.0
        self._link_lost_at: float | None = None  # since when the bridge is lost
        self._link_lost_odometer_m = 0.0  # the odometer then
        self.link_loss_stops = 0  # minimal-risk stops made after losing the bridge
        self._safe_stop_ordered = False  # one is ordered and not yet released by a RESUME
        self.last_link_loss_stop: tuple[float, float] | None = None  # (s, m) without a bridge
        self._done_faults: set[str] = set()
        self._reboot_requested = False
        self.link_up = asyncio.Event()

    # ---- lifetime ------------------------------------------------------------------------

    @property
    def uptime_s(self) -> float:
        return self.clock.monotonic() - self._boot_at

    @property
    def link(self) -> SerialLink:
        assert self._link is not None, "the VCU is not running"
        return self._link

    async def run(self) -> None:
        """Run until cancelled; a scheduled reboot restarts the firmware in place."""
        while True:
            rebooted = await self._boot()
            if not rebooted:
                return

    def request_reboot(self) -> None:
        """Reboot the firmware at its next tick (as a reset button would): a new link
        session, the mission forgotten, the non-volatile memory (e-stop latch) kept."""
        self._reboot_requested = True

    async def _boot(self) -> bool:
        self.power_on()
        link = SerialLink(
            self.port.opener,
            config=self.config.link,
            clock=self.clock,
            on_event=self._on_link_event,
            baud=self.config.baud,
            tx_filter=self.tx_noise,
            rx_filter=self.rx_noise,
            reopen_s=0.2,
            name="vcu",
        )
        self._link = link
        async with link:
            return await self._tick_loop()

    def power_on(self) -> None:
        """The firmware's start, without I/O (the link is the caller's): the mission
        forgotten, the drive cut, the e-stop latch taken from the non-volatile memory."""
        self.boots += 1
        self._boot_at = self.clock.monotonic()
        self.mission_id = 0
        self.wp_queued = 0
        self.fault_bits = 0
        self._link_lost_at = None
        self._safe_stop_ordered = False
        self.link_up.clear()
        v = self.vehicle
        v.clear_route()
        v.resume()
        v.release_hold()
        v.speed_mps = 0.0  # a reboot cuts the drive
        # the e-stop latch is in non-volatile memory: it survives the reboot
        self.estop_id = self.memory.estop_id
        if self.memory.estop_latched:
            v.emergency_stop()
            log.warning("vcu: boot with e-stop %d latched (non-volatile memory)", self.estop_id)
        else:
            v.release_estop()

    async def _tick_loop(self) -> bool:
        cfg = self.config
        last = self.clock.monotonic()
        next_telemetry = last
        period = 1.0 / cfg.telemetry_hz
        while True:
            await self.clock.sleep(cfg.tick_s)
            now = self.clock.monotonic()
            if self._scheduled_faults():
                return True  # reboot
            eventful = self.step_firmware(now, max(0.0, now - last))
            last = now
            if eventful or now >= next_telemetry:
                self.send_telemetry()
            if now >= next_telemetry:
                # on a fixed schedule (late ticks do not stretch the period): at least
                # telemetry_hz, as every VCU must keep; events add frames in between
                next_telemetry = max(next_telemetry + period, now + period / 2)

    def step_firmware(self, now: float, dt_s: float) -> bool:
        """One tick of the firmware, without I/O: the vehicle moves ``dt_s``, its events are
        reported, the bound on driving without the bridge is checked. True when telemetry
        should go out now."""
        eventful = self._on_vehicle_events(self.vehicle.step(dt_s))
        eventful |= self._check_link_loss(now)
        return eventful

    def _check_link_loss(self, now: float) -> bool:
        """The bound on driving without the bridge: past it, a minimal-risk stop at the next
        safe place, held until a RESUME; True when that stop was ordered now."""
        if self._link_lost_at is None or self._safe_stop_ordered:
            return False
        cfg = self.config
        lost_s = now - self._link_lost_at
        driven_m = self.vehicle.odometer_m - self._link_lost_odometer_m
        if lost_s < cfg.link_loss_drive_s and driven_m < cfg.link_loss_drive_m:
            return False
        self._safe_stop_ordered = True
        self.link_loss_stops += 1
        self.last_link_loss_stop = (lost_s, driven_m)
        stop_wp = self.vehicle.stop_at_next_safe_place()
        log.warning(
            "vcu: no bridge for %.1f s and %.0f m: minimal-risk stop %s, holding until a RESUME",
            lost_s,
            driven_m,
            "here" if stop_wp is None else f"at the mission's stop point {stop_wp}",
        )
        return True

    def _scheduled_faults(self) -> bool:
        if self._reboot_requested:
            self._reboot_requested = False
            log.warning("vcu: rebooting (requested)")
            return True
        f = self.faults
        up = self.uptime_s
        if f.stall_at_s is not None and up >= f.stall_at_s and "stall" not in self._done_faults:
            self._done_faults.add("stall")
            log.warning("vcu: stalling for %.1f s (fault injection)", f.stall_s)
            self.link.stall(f.stall_s)
        if f.fatal_at_s is not None and up >= f.fatal_at_s and "fatal" not in self._done_faults:
            self._done_faults.add("fatal")
            log.warning("vcu: fatal fault (fault injection)")
            self.vehicle.set_fatal()
            self.fault_bits |= wire.FaultBit.FATAL
            self._report(wire.FaultCode.FATAL, wire.Severity.FATAL, 0xF00D)
        if f.reboot_at_s is not None and up >= f.reboot_at_s and "reboot" not in self._done_faults:
            self._done_faults.add("reboot")
            log.warning("vcu: rebooting (fault injection)")
            return True
        return False

    # ---- telemetry ---------------------------------------------------------------------

    def telemetry(self) -> wire.Telemetry:
        v = self.vehicle
        bits = self.fault_bits
        if v.soc_pct < 10.0:
            bits |= wire.FaultBit.BATTERY_LOW
        if v.battery_empty:
            bits |= wire.FaultBit.BATTERY_EMPTY
        if v.estopped:
            bits |= wire.FaultBit.ESTOP_LATCHED
        if v.charging:
            bits |= wire.FaultBit.CHARGING
        return wire.Telemetry(
            uptime_ms=int(self.uptime_s * 1000) & 0xFFFF_FFFF,
            lon_e7=wire.to_e7(v.lon),
            lat_e7=wire.to_e7(v.lat),
            heading_cdeg=round(v.heading_deg * 100) % 36000,
            speed_cmps=min(0xFFFF, round(v.speed_mps * 100)),
            soc_cpct=min(10000, max(0, round(v.soc_pct * 100))),
            range_m=round(v.remaining_range_km * 1000),
            odometer_m=round(v.odometer_m) & 0xFFFF_FFFF,
            mission_id=self.mission_id,
            last_wp=wire.WP_NONE if v.last_wp is None else v.last_wp,
            wp_queued=self.wp_queued,
            drive_state=v.state,
            door=v.door,
            fault_bits=bits,
            estop_id=self.estop_id,
        )

    def send_telemetry(self) -> None:
        if self._link is not None:
            self._link.send_now(self.telemetry())

    def _report(self, code: wire.FaultCode, severity: wire.Severity, arg: int) -> None:
        try:
            self.link.send(wire.FaultReport(code, severity, self.fault_bits, arg & 0xFFFF_FFFF))
        except Exception:
            log.exception("vcu: cannot queue fault report %s", code.name)

    def _on_vehicle_events(self, events: list[VehicleEvent]) -> bool:
        """Handle what the vehicle reported; True when telemetry should go out now."""
        for event in events:
            if event.kind is EventKind.BATTERY_EMPTY:
                odo = round(self.vehicle.odometer_m)
                self._report(wire.FaultCode.BATTERY_EMPTY, wire.Severity.ERROR, odo)
        return bool(events)

    # ---- commands ------------------------------------------------------------------------

    def _on_link_event(self, event: LinkEvent) -> None:
        if isinstance(event, Received):
            self._on_message(event.message)
        elif isinstance(event, LinkUp):
            self.link_up.set()
            if self._link_lost_at is not None:
                lost_ms = round((self.clock.monotonic() - self._link_lost_at) * 1000)
                self._link_lost_at = None
                self.fault_bits &= ~wire.FaultBit.LINK_LOST
                self._report(wire.FaultCode.LINK_RESTORED, wire.Severity.INFO, lost_ms)
            self.send_telemetry()
        elif isinstance(event, LinkDown):
            self.link_up.clear()
            if self._link_lost_at is None:
                # the bridge is gone: drive on within the bound (_check_link_loss), then a
                # minimal-risk stop at the next safe place
                log.warning("vcu: link down: %s", event.reason)
                self._link_lost_at = self.clock.monotonic()
                self._link_lost_odometer_m = self.vehicle.odometer_m
                self.fault_bits |= wire.FaultBit.LINK_LOST
                silent_ms = round(self.config.link.peer_timeout_s * 1000)
                self._report(wire.FaultCode.LINK_LOST, wire.Severity.WARNING, silent_ms)
                self.send_telemetry()

    def _on_message(self, msg: wire.Message) -> None:
        v = self.vehicle
        if isinstance(msg, wire.EmergencyStop):
            v.emergency_stop()
            self.estop_id = msg.estop_id
            self.estops_received.append(msg.estop_id)
            if self.on_estop is not None:
                self.on_estop(msg.estop_id)
            self.memory.latch(msg.estop_id)  # non-volatile: survives a reboot
        elif isinstance(msg, wire.DriveSegment):
            self._on_segment(msg)
        elif isinstance(msg, wire.Stop):
            if msg.mode is wire.StopMode.HOLD:
                v.pause()
            else:
                v.clear_route()
                self.mission_id = 0
                self.wp_queued = 0
        elif isinstance(msg, wire.Resume):
            if v.estopped:
                if msg.estop_id != self.estop_id:
                    log.warning(
                        "vcu: RESUME names e-stop %d but %d is latched: ignored",
                        msg.estop_id,
                        self.estop_id,
                    )
                    return
                v.release_estop()
                self.memory.release()
            v.resume()
            v.release_hold()  # a minimal-risk stop after a link loss ends here too
            self._safe_stop_ordered = False
        elif isinstance(msg, wire.Charge):
            # the bridge sends CHARGE only where the order's charge action is (a depot's
            # charger); the VCU charges only standing still
            power_kw = msg.max_power_hw / 10.0 if msg.max_power_hw else v.spec.charging_power_kw
            if not v.start_charging(msg.target_cpct / 100.0, power_kw):
                self._report(wire.FaultCode.CHARGE_REFUSED, wire.Severity.WARNING, v.state)
        elif isinstance(msg, wire.Door):
            ok = v.open_door() if msg.open else v.close_door()
            if ok:
                self.fault_bits &= ~wire.FaultBit.DOOR_BLOCKED
            else:
                self.fault_bits |= wire.FaultBit.DOOR_BLOCKED
                speed = round(v.speed_mps * 100)
                self._report(wire.FaultCode.DOOR_REFUSED, wire.Severity.WARNING, speed)
        self.send_telemetry()

    def _on_segment(self, seg: wire.DriveSegment) -> None:
        v = self.vehicle
        if v.fatal or v.battery_empty:
            self.fault_bits |= wire.FaultBit.SEGMENT_REJECTED
            self._report(wire.FaultCode.SEGMENT_REFUSED, wire.Severity.ERROR, v.state)
            return
        if seg.mission_id != self.mission_id:
            if seg.first_wp != 0:
                self.fault_bits |= wire.FaultBit.SEGMENT_REJECTED
                self._report(wire.FaultCode.SEGMENT_MISSION, wire.Severity.WARNING, seg.mission_id)
                return
            v.clear_route()
            self.mission_id = seg.mission_id
            self.wp_queued = 0
        if seg.first_wp < self.wp_queued:
            self.duplicates_ignored += 1
            return
        if seg.first_wp > self.wp_queued:
            self.fault_bits |= wire.FaultBit.SEGMENT_REJECTED
            self._report(wire.FaultCode.SEGMENT_GAP, wire.Severity.WARNING, self.wp_queued)
            return
        self.fault_bits &= ~wire.FaultBit.SEGMENT_REJECTED
        v.append(
            [(wire.from_e7(lon), wire.from_e7(lat)) for lon, lat in seg.waypoints],
            first_index=seg.first_wp,
            speed_cap_mps=seg.speed_cap_cmps / 100.0,
            stop_at_end=seg.stop_at_end,
            dwell_s=float(seg.dwell_s),
        )
        self.wp_queued += len(seg.waypoints)
        self.applied_segments.append((seg.mission_id, seg.first_wp))


def make_vehicle(spec: VanSpec, lon: float, lat: float, soc_pct: float = 100.0) -> Vehicle:
    return Vehicle(spec, lon=lon, lat=lat, soc_pct=soc_pct)
