"""Clocks: anything that waits or stamps takes one, so simulated and wall time are interchangeable.

:class:`WallClock` is real time. :class:`ScaledClock` runs ``factor`` times faster than the
wall from a chosen start instant: a process given a ScaledClock behaves exactly as with the
wall clock, only sooner. Every part of a simulation shares one clock object (or clocks built
from the same ``start_epoch_s``/``factor``/``wall_anchor_s``), so their times agree.

Timeouts: ``asyncio.timeout`` counts wall seconds; convert with :meth:`Clock.to_wall_s`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Time as seen by a process: UTC epoch seconds, a monotonic reading, and sleeping."""

    @property
    def factor(self) -> float:
        """Simulated seconds per wall second (1.0 for the wall clock)."""
        ...

    def time(self) -> float:
        """Seconds since the UNIX epoch, UTC."""
        ...

    def monotonic(self) -> float:
        """A never-decreasing reading in (simulated) seconds, for intervals."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def to_wall_s(self, seconds: float) -> float:
        """How many wall seconds ``seconds`` of this clock's time take."""
        ...


class WallClock:
    """Real time."""

    factor = 1.0

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def to_wall_s(self, seconds: float) -> float:
        return seconds


class ScaledClock:
    """Time that starts at ``start_epoch_s`` and runs ``factor`` times faster than the wall.

    ``wall_anchor_s`` is the wall-clock (``time.time()``) instant that corresponds to
    ``start_epoch_s``; pass the same anchor to clocks in other processes so they agree.
    """

    def __init__(
        self, start_epoch_s: float, factor: float, wall_anchor_s: float | None = None
    ) -> None:
        if not factor > 0:
            raise ValueError(f"clock factor must be > 0, got {factor!r}")
        self._start = start_epoch_s
        self._factor = factor
        self._anchor = time.time() if wall_anchor_s is None else wall_anchor_s

    @property
    def factor(self) -> float:
        return self._factor

    @property
    def start_epoch_s(self) -> float:
        return self._start

    @property
    def wall_anchor_s(self) -> float:
        return self._anchor

    def time(self) -> float:
        return self._start + (time.time() - self._anchor) * self._factor

    def monotonic(self) -> float:
        return self.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._factor)

    def to_wall_s(self, seconds: float) -> float:
        return seconds / self._factor
