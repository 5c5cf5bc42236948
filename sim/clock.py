"""Simulated time: as fast as possible (fast mode) or a fixed factor of the wall (full stack).

Each mode shares one clock object among all its parts, so every stamp and every wait
agrees on what time it is:

* The fast mode's time is :class:`sim.fast.loop.SimClock`, advanced by its discrete-event
  loop; nothing waits on the wall.
* The full stack uses :class:`PausableClock`: :class:`fleet.protocol.clock.ScaledClock`'s
  semantics (a fixed factor of the wall), held still while the controller plans.

Simulated times inside the simulator are seconds after local midnight of the scenario's day
(``t_s``); clocks speak UTC epoch seconds; :class:`DayTime` converts between them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fleet.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DayTime:
    """Converts seconds after local midnight of ``day`` in ``timezone`` to UTC epoch seconds."""

    day: dt.date
    timezone: str
    midnight_epoch_s: float

    @classmethod
    def of(cls, day: dt.date, timezone: str) -> DayTime:
        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"unknown IANA timezone {timezone!r}") from exc
        midnight = dt.datetime.combine(day, dt.time(0, 0), tzinfo=tz)
        return cls(day=day, timezone=timezone, midnight_epoch_s=midnight.timestamp())

    def epoch_s(self, t_s: float) -> float:
        return self.midnight_epoch_s + t_s

    def day_s(self, epoch_s: float) -> float:
        return epoch_s - self.midnight_epoch_s


def format_day_s(t_s: float) -> str:
    """``HH:MM:SS`` of seconds after midnight (may pass 24:00 on a long run)."""
    total = max(0, round(t_s))
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


class PausableClock:
    """A :class:`~fleet.protocol.clock.ScaledClock` that can be held still.

    The full stack holds simulated time while the controller re-plans (or verifies the day's
    plan): planning takes wall time that has nothing to do with the simulated day, so that
    wall time must not become simulated hours at a high speed-up. A coroutine sleeping
    across a pause wakes when the time it waits for is reached, pauses excluded.
    """

    def __init__(
        self, start_epoch_s: float, factor: float, wall_anchor_s: float | None = None
    ) -> None:
        if not factor > 0:
            raise ValueError(f"clock factor must be > 0, got {factor!r}")
        self._start = start_epoch_s
        self._factor = factor
        self._anchor = time.time() if wall_anchor_s is None else wall_anchor_s
        self._paused_wall_s = 0.0  # wall seconds spent in finished pauses
        self._pause_began: float | None = None
        self._resumed: asyncio.Event | None = None
        self.pauses = 0

    @property
    def factor(self) -> float:
        return self._factor

    @property
    def paused(self) -> bool:
        return self._pause_began is not None

    @property
    def paused_wall_s(self) -> float:
        """Wall seconds the clock has stood still so far."""
        now = time.time()
        current = now - self._pause_began if self._pause_began is not None else 0.0
        return self._paused_wall_s + current

    def time(self) -> float:
        wall = time.time() if self._pause_began is None else self._pause_began
        return self._start + (wall - self._anchor - self._paused_wall_s) * self._factor

    def monotonic(self) -> float:
        return self.time()

    def to_wall_s(self, seconds: float) -> float:
        return seconds / self._factor

    def _event(self) -> asyncio.Event:
        if self._resumed is None:
            self._resumed = asyncio.Event()
            if self._pause_began is None:
                self._resumed.set()
        return self._resumed

    async def sleep(self, seconds: float) -> None:
        target = self.time() + max(0.0, seconds)
        while True:
            if self._pause_began is not None:
                await self._event().wait()
                continue
            left = target - self.time()
            if left <= 0:
                return
            await asyncio.sleep(left / self._factor)

    def pause(self) -> None:
        if self._pause_began is None:
            self._pause_began = time.time()
            self.pauses += 1
            self._event().clear()

    def resume(self) -> None:
        if self._pause_began is not None:
            self._paused_wall_s += time.time() - self._pause_began
            self._pause_began = None
            self._event().set()
