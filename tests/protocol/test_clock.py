from __future__ import annotations

import asyncio
import time

import pytest

from fleet.protocol.clock import Clock, ScaledClock, WallClock


def test_scaled_clock_runs_factor_times_faster() -> None:
    anchor = time.time()
    clock = ScaledClock(start_epoch_s=1_000_000.0, factor=60.0, wall_anchor_s=anchor - 2.0)
    assert clock.time() == pytest.approx(1_000_000.0 + 120.0, abs=1.0)
    assert clock.to_wall_s(60.0) == pytest.approx(1.0)


def test_clocks_built_from_one_anchor_agree() -> None:
    a = ScaledClock(5000.0, 100.0)
    b = ScaledClock(a.start_epoch_s, a.factor, a.wall_anchor_s)
    assert abs(a.time() - b.time()) < 0.5


def test_scaled_sleep_takes_scaled_wall_time() -> None:
    clock = ScaledClock(0.0, 1000.0)

    async def run() -> float:
        t0 = clock.time()
        await clock.sleep(50.0)
        return clock.time() - t0

    elapsed = asyncio.run(asyncio.wait_for(run(), timeout=5))
    assert elapsed >= 50.0


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(WallClock(), Clock)
    assert isinstance(ScaledClock(0.0, 2.0), Clock)


def test_factor_must_be_positive() -> None:
    with pytest.raises(ValueError, match="factor"):
        ScaledClock(0.0, 0.0)
