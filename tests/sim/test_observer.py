"""The full stack holds its clock while a re-plan is open: a re-plan is open from its start
until it is applied, failed or dropped, and none survives a controller restart (else the
clock would stand still for good)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fleet.model import load_van_spec
from fleet.protocol import format_timestamp, make_header
from fleet.protocol.control_api import Event
from sim.clock import DayTime
from sim.full.observer import Observer
from sim.trace import Trace

DAY = DayTime.of(dt.date(2026, 11, 24), "Europe/Lisbon")


def _event(n: int, kind: str, detail: str = "") -> Event:
    t = DAY.epoch_s(8 * 3600 + n)
    return Event(
        header=make_header("controller", n, t),
        event_id=n,
        time=format_timestamp(t),
        kind=kind,
        detail=detail,
    )


def _observer(configs_dir: Path) -> Observer:
    trace = Trace(scenario="t", mode="full", seed=1, start_s=0.0, end_s=86400.0)
    return Observer(trace, DAY, {}, load_van_spec(configs_dir / "van.toml"), keep_paths=False)


def test_a_replan_is_open_until_applied_failed_or_dropped(configs_dir: Path) -> None:
    obs = _observer(configs_dir)
    for n, closing in enumerate(("replan_applied", "replan_failed", "replan_dropped")):
        obs.on_event(_event(2 * n + 1, "replan_started", "breakdown: 3 parcels"))
        assert obs.replans_open == 1
        obs.on_event(_event(2 * n + 2, closing))
        assert obs.replans_open == 0


def test_a_restarted_controller_has_no_replan_open(configs_dir: Path) -> None:
    obs = _observer(configs_dir)
    obs.on_event(_event(1, "replan_started", "breakdown: 3 parcels"))
    obs.on_event(_event(2, "controller_started", "10 vans, 40 parcels restored"))
    assert obs.replans_open == 0
