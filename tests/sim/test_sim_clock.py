"""Simulated time: the fast mode's clock only goes forward; the day's local time converts
to epoch seconds in the site's timezone; the full stack's clock holds still when paused."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from fleet.errors import ConfigError
from fleet.protocol.clock import Clock
from sim.clock import DayTime, format_day_s
from sim.fast.loop import SimClock


def test_simclock_moves_only_forward_when_advanced() -> None:
    clock = SimClock(1000.0)
    assert clock.time() == 1000.0
    clock.advance_to(1030.0)
    clock.advance_to(1030.0)  # an instant with several events
    assert clock.time() == 1030.0


def test_time_never_goes_back() -> None:
    clock = SimClock(10.0)
    clock.advance_to(20.0)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance_to(15.0)


def test_day_time_follows_the_site_timezone() -> None:
    day = DayTime.of(dt.date(2026, 11, 24), "Europe/Lisbon")  # UTC+0 in November
    assert day.epoch_s(8 * 3600) == dt.datetime(2026, 11, 24, 8, tzinfo=dt.UTC).timestamp()
    poa = DayTime.of(dt.date(2026, 11, 24), "America/Sao_Paulo")  # UTC-3
    assert poa.epoch_s(8 * 3600) == dt.datetime(2026, 11, 24, 11, tzinfo=dt.UTC).timestamp()
    assert poa.day_s(poa.epoch_s(1234.5)) == 1234.5
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        DayTime.of(dt.date(2026, 11, 24), "Mars/Olympus")
    assert format_day_s(8 * 3600 + 61) == "08:01:01"


def test_pausable_clock_holds_time_and_sleepers_across_a_pause() -> None:
    from sim.clock import PausableClock

    clock = PausableClock(1000.0, 100.0)  # 100 simulated s per wall s
    assert isinstance(clock, Clock)
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(20.0)  # 0.2 s of wall time, pauses excluded
        woke.append(clock.time())

    async def main() -> None:
        async with asyncio.timeout(5):
            task = asyncio.create_task(sleeper())
            await asyncio.sleep(0.05)
            clock.pause()
            held = clock.time()
            await asyncio.sleep(0.3)  # longer than the sleeper's whole wait
            assert clock.time() == held and not woke
            clock.resume()
            await task

    asyncio.run(main())
    assert woke and 1020.0 <= woke[0] < 1030.0
    assert clock.pauses == 1 and clock.paused_wall_s >= 0.3
