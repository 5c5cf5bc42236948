"""The full stack's timers: every guard against wall-clock latency, stretched with the clock.

A process does not answer faster when the simulated clock runs faster, so a timer that
allows for wall-clock latency (link acknowledgements and heartbeats, the VCU's tick and
telemetry, the controller's tick and re-sends, a bridge's state period) is stretched with
the clock factor; ``docs/simulator.md`` lists each one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from firmware_bridge import wire
from firmware_bridge.bridge.config import (
    DEFAULT_TELEMETRY_STALE_S,
    DEFAULT_TICK_S,
    DEFAULT_VCU_GRACE_S,
)
from firmware_bridge.link import LinkConfig
from fleet.control.config import ControllerConfig
from sim.vcu import VcuConfig

WALL_SLACK = 2.0  # wall-clock allowances are twice what a lightly loaded machine needs
VCU_WALL_TICK_S = 0.05  # the VCU steps its vehicle this often (wall seconds)
TELEMETRY_WALL_HZ = 2.0  # periodic VCU telemetry (events are reported at once anyway)
CONTROLLER_WALL_TICK_S = 0.1
MAX_HEARTBEAT_S = 60.0
MAX_VCU_TICK_S = 10.0  # an arrival is noticed within one VCU tick: keep that short
# A state on its way from a bridge through the broker to the controller may take this long of
# wall time on a loaded machine (other processes, a verifier run): the controller's silence
# bound must cover it, or vans are taken for stale (and out of re-plans) for a busy moment.
STATE_WALL_LATENCY_S = 1.0


@dataclass(frozen=True, slots=True)
class Timing:
    """Every timer of the full stack, in simulated seconds, for a clock ``factor``."""

    factor: float
    state_period_s: float  # a bridge's periodic state (the scenario's state_period_s)

    def stretch(self, base_s: float) -> float:
        """``base_s`` of wall time as it must be in clock seconds (never shorter than base)."""
        return max(base_s, base_s * self.factor * WALL_SLACK)

    def link(self, role: wire.Role) -> LinkConfig:
        d = LinkConfig(role)
        return replace(
            d,
            # the heartbeat travels in HELLO as whole milliseconds in 16 bits
            heartbeat_s=min(MAX_HEARTBEAT_S, self.stretch(d.heartbeat_s)),
            peer_timeout_s=self.stretch(d.peer_timeout_s),
            ack_timeout_s=self.stretch(d.ack_timeout_s),
            hello_interval_s=self.stretch(d.hello_interval_s),
            estop_retry_s=self.stretch(d.estop_retry_s),
            line_baud=0,
        )

    def vcu(self) -> VcuConfig:
        return VcuConfig(
            baud=0,
            telemetry_hz=min(10.0, TELEMETRY_WALL_HZ / self.factor),
            tick_s=min(MAX_VCU_TICK_S, max(0.02, VCU_WALL_TICK_S * self.factor)),
            link=self.link(wire.Role.VCU),
        )

    @property
    def bridge_tick_s(self) -> float:
        return min(self.state_period_s / 2, self.stretch(DEFAULT_TICK_S))

    @property
    def vcu_grace_s(self) -> float:
        """How long a bridge keeps a lost VCU link a warning, in clock seconds."""
        return self.stretch(DEFAULT_VCU_GRACE_S)

    @property
    def telemetry_stale_s(self) -> float:
        """When a bridge reports the VCU's telemetry stale: three of its periods, in clock
        seconds (the VCU reports at a wall-clock rate, ``TELEMETRY_WALL_HZ``)."""
        return max(DEFAULT_TELEMETRY_STALE_S, 3.0 / self.vcu().telemetry_hz)

    @property
    def command_max_age_s(self) -> float:
        return max(60.0, 30.0 * self.factor)

    def controller(self, base: ControllerConfig) -> ControllerConfig:
        return replace(
            base,
            tick_s=max(base.tick_s, CONTROLLER_WALL_TICK_S * self.factor),
            stale_after_s=max(
                base.stale_after_s,
                3 * self.state_period_s + self.stretch(STATE_WALL_LATENCY_S),
            ),
            resend_first_s=self.stretch(base.resend_first_s / 2),
            resend_max_s=max(base.resend_max_s, self.stretch(base.resend_max_s / 3)),
            resend_give_up_s=max(base.resend_give_up_s, self.stretch(base.resend_give_up_s / 5)),
            estop_resend_s=self.stretch(base.estop_resend_s / 2),
            flush_interval_s=self.stretch(base.flush_interval_s / 4),
        )
