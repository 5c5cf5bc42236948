"""How fast the simulator runs a day: simulated seconds per wall second.

* **fast mode, 1,000 vans** (target ≥ 100× real time): the normal Porto day with the fleet
  resized to 1,000 vans and 20 parcels a van, all known in the morning (no re-plans: a
  re-plan of 20,000 parcels is the planner's cost, measured by its own benchmark), run to
  the end of the day. The figure is simulated seconds over the wall time of the run itself;
  preparing the day (road network, parcels, the morning plan, its verification) is reported
  beside it.
* **full stack, 100 vans** (target ≥ 10× real time, no message lost): the normal Porto day
  with 100 vans and 20 parcels a van, every van a simulated VCU behind a real firmware
  bridge on a pseudo-terminal, the embedded broker (or ``--broker``), the real controller,
  at a clock factor of ``--full-speedup`` for ``--full-hours`` simulated hours from the
  start of the day. The figure is simulated seconds over the wall time from the dispatch to
  the end (the clock stands still while the controller plans, which counts against it),
  *if the run kept up*: the 99th percentile of the state lag (from a state's stamp to the
  observer on the broker) within ``KEEP_UP_WALL_S`` of wall time and no message lost.
  A run that falls behind scores 0: a scaled clock always advances, so only the lag shows
  that the parts could not follow it.

Usage::

    python benchmarks/sim_speed.py                       # both, default sizes
    python benchmarks/sim_speed.py --fast-vans 200 --full-vans 20 --full-hours 0.5

Prints a table, then one JSON line with ``fast_1000_speedup``, ``full_100_speedup``, ``lost``
(and the measured details). Figures are for the machine it runs on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sim.day import PreparedDay, prepare_day  # noqa: E402
from sim.fast import FastRun  # noqa: E402
from sim.full import FullRun  # noqa: E402
from sim.kpi import compute_kpis  # noqa: E402
from sim.scenario import Scenario, load_scenario  # noqa: E402

SCENARIO = REPO / "configs" / "scenarios" / "normal.toml"
KEEP_UP_WALL_S = 1.0


def _scenario(vans: int, parcels_per_van: int, plan_s: float, hours: float | None) -> Scenario:
    sc = load_scenario(SCENARIO).with_overrides(vans=vans, parcels=vans * parcels_per_van)
    run = dataclasses.replace(sc.run, plan_time_limit_s=plan_s)
    if hours is not None:
        run = dataclasses.replace(run, end_s=int(sc.run.start_s + hours * 3600))
    demand = dataclasses.replace(sc.demand, late_share=0.0)
    return dataclasses.replace(sc, run=run, demand=demand, events=())


def _prepare(sc: Scenario) -> tuple[PreparedDay, float]:
    t0 = time.monotonic()
    day = prepare_day(sc)
    return day, time.monotonic() - t0


def bench_fast(vans: int, per_van: int, plan_s: float) -> dict[str, float]:
    sc = _scenario(vans, per_van, plan_s, None)
    day, prep_s = _prepare(sc)
    run = FastRun(day)
    t0 = time.monotonic()
    trace = run.run()
    wall = time.monotonic() - t0
    k = compute_kpis(trace, sc.van)
    sim_s = trace.end_s - trace.start_s
    return {
        "vans": float(vans),
        "parcels": float(k.parcels),
        "delivered": float(k.delivered),
        "prepare_s": round(prep_s, 1),
        "plan_s": round(day.plan_wall_s, 1),
        "sim_s": sim_s,
        "wall_s": round(wall, 2),
        "speedup": round(sim_s / wall, 1),
        "events": float(run.loop.events_run),
        "states": float(trace.counters.states_received),
    }


def bench_full(
    vans: int, per_van: int, plan_s: float, speedup: float, hours: float, broker: str | None
) -> dict[str, float]:
    sc = _scenario(vans, per_van, plan_s, hours)
    day, prep_s = _prepare(sc)
    run = FullRun(day, speedup=speedup, broker_url=broker)
    trace = run.run()
    k = compute_kpis(trace, sc.van)
    sim_s = trace.end_s - trace.start_s
    lags = sorted(run.state_lag_s) or [0.0]
    p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
    c = trace.counters
    achieved = sim_s / run.day_wall_s if run.day_wall_s else 0.0
    kept_up = p99 / speedup <= KEEP_UP_WALL_S and c.messages_lost == 0
    return {
        "vans": float(vans),
        "parcels": float(k.parcels),
        "delivered": float(k.delivered),
        "prepare_s": round(prep_s, 1),
        "clock_factor": speedup,
        "sim_s": sim_s,
        "day_wall_s": round(run.day_wall_s, 1),
        "run_wall_s": round(trace.wall_s, 1),
        "achieved": round(achieved, 1),
        "kept_up": float(kept_up),
        "speedup": round(achieved, 1) if kept_up else 0.0,
        "state_lag_p99_wall_s": round(p99 / speedup, 2),
        "paused_wall_s": round(run.clock.paused_wall_s, 1) if run.clock else 0.0,
        "state_lag_p50_s": round(statistics.median(lags), 2),
        "state_lag_p99_s": round(p99, 2),
        "state_lag_max_s": round(lags[-1], 2),
        "commands": float(c.commands_sent),
        "commands_handled": float(c.commands_received),
        "states": float(c.states_received),
        "lost": float(c.messages_lost),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--fast-vans", type=int, default=1000)
    ap.add_argument("--full-vans", type=int, default=100)
    ap.add_argument("--parcels-per-van", type=int, default=20)
    ap.add_argument("--fast-plan-time", type=float, default=60.0, help="planner budget (s)")
    ap.add_argument("--full-plan-time", type=float, default=20.0, help="planner budget (s)")
    ap.add_argument("--full-speedup", type=float, default=15.0, help="the clock factor")
    ap.add_argument("--full-hours", type=float, default=0.5, help="simulated hours")
    ap.add_argument(
        "--broker", default=None, help="full stack: mqtt://HOST:PORT (default embedded)"
    )
    ap.add_argument("--skip-fast", action="store_true")
    ap.add_argument("--skip-full", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("amqtt", "transitions", "firmware_bridge", "sim.vcu", "mqtt"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    fast = (
        {}
        if args.skip_fast
        else bench_fast(args.fast_vans, args.parcels_per_van, args.fast_plan_time)
    )
    full = (
        {}
        if args.skip_full
        else bench_full(
            args.full_vans,
            args.parcels_per_van,
            args.full_plan_time,
            args.full_speedup,
            args.full_hours,
            args.broker,
        )
    )
    print(f"machine: {os.cpu_count()} cores; figures are provisional on a shared machine")
    print(f"{'':28}{'fast mode':>14}{'full stack':>14}")
    keys = sorted(set(fast) | set(full))
    for key in keys:
        a = fast.get(key, "")
        b = full.get(key, "")
        print(f"{key:28}{a!s:>14}{b!s:>14}")
    result = {
        "fast_1000_speedup": fast.get("speedup"),
        "full_100_speedup": full.get("speedup"),
        "lost": int(full["lost"]) if full else None,
        "fast_vans": args.fast_vans,
        "full_vans": args.full_vans,
        "full_clock_factor": args.full_speedup,
        "full_state_lag_p99_wall_s": full.get("state_lag_p99_wall_s"),
        "full_kept_up": bool(full.get("kept_up")) if full else None,
        "targets": {"fast_1000_speedup": 100, "full_100_speedup": 10, "lost": 0},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
