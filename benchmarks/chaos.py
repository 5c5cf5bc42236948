#!/usr/bin/env python3
"""The safety machine of tests/safety driven long: faults, restarts and commands, seeded.

    python benchmarks/chaos.py                      # 100,000 steps, seed 1
    python benchmarks/chaos.py --steps 5000 --seed 7

The same world and rules as ``tests/safety/test_loop_stateful.py`` (``docs/chaos.md``): the
controller's core with its SQLite store and signer, three vans' firmware bridge cores with
their persisted order books, their simulated VCUs, an in-memory broker that loses,
duplicates, reorders and delays, one van that never connects. Each step is one rule of
``tests/safety/loop_world.RULES`` — time passing, a controller restart with its store kept,
lost or restored from an older copy, a bridge restart, a VCU reboot, a network fault, an
e-stop, resume, pause or cancel, a low battery, a van out of reach — picked by weight with
arguments from a ``random.Random(seed)``; a fresh day every ``--episode`` steps. The
invariants are checked after every 0.5 s of simulated time.

Prints a table per rule (times applied, invariant violations in the step it started) and one
per invariant, and ends with one JSON line: ``{"steps", "invariant_violations",
"estop_unobeyed", "stale_live_s_max", "parcels_lost", "parcels_duplicated",
"orders_beyond_battery", ...}``. Targets: at least 100,000 steps, every count 0,
``stale_live_s_max`` ≤ 1.0 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.safety.loop_world import (  # noqa: E402
    CHECK_KINDS,
    LIVE_BOUND_S,
    RULES,
    ChaosResult,
    run_chaos,
)

COVERAGE_EVENTS = (
    "order_sent",
    "order_confirmed",
    "order_lost",
    "order_recovered",
    "order_unconfirmed",
    "charge_added",
    "release_held",
    "van_out_of_service",
    "van_cancelled",
    "replan_applied",
    "instant_confirmed",
    "instant_refused",
    "implausible_progress",
    "parcel_unserved",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000, help="rules applied in all")
    parser.add_argument("--seed", type=int, default=1, help="seed of every draw")
    parser.add_argument("--episode", type=int, default=200, help="steps of one simulated day")
    parser.add_argument(
        "--calm-every",
        type=int,
        default=2,
        help="every N-th day is calm (time passes 40 times as often): the vans reach the doors; "
        "0: none",
    )
    args = parser.parse_args()
    if args.steps < 1 or args.episode < 1 or args.calm_every < 0:
        parser.error("--steps and --episode must be at least 1, --calm-every at least 0")
    logging.basicConfig(level=logging.CRITICAL)  # the vans' warnings are the faults we inject
    console = Console(stderr=True)
    started = time.monotonic()
    last = [started]

    def progress(r: ChaosResult) -> None:
        now = time.monotonic()
        if now - last[0] >= 30.0:
            last[0] = now
            console.print(
                f"{r.steps:,} steps, {r.worlds} days, {sum(r.violations.values())} violations, "
                f"{now - started:.0f} s"
            )

    result = run_chaos(
        args.seed,
        args.steps,
        episode_steps=args.episode,
        calm_every=args.calm_every,
        on_world=progress,
    )
    wall_s = time.monotonic() - started

    out = Console()
    rules = Table(title=f"Chaos: {result.steps:,} steps, seed {args.seed}, {result.worlds} days")
    rules.add_column("rule / fault")
    rules.add_column("applied", justify="right")
    rules.add_column("violations", justify="right")
    names = [r.name for r in RULES]
    shown = {
        "advance": ["advance"],
        "bridge_restart_wiped": ["bridge_restart_wiped"],
        "controller_restart": [f"controller_restart_{k}" for k in ("kept", "lost", "restored")],
        "net_loss": ["net_loss", "  loss (messages)"],
        "net_duplicate": ["net_duplicate", "  duplicate (messages)"],
        "net_reorder": ["net_reorder", "  reorder (messages)"],
        "net_delay": ["net_delay", "  delay (messages)"],
        "van_out_of_reach": ["van_out_of_reach"],
    }
    for name in [*names, "never_connects"]:
        for key in shown.get(name, [name]):
            rules.add_row(key, f"{result.applied[key]:,}", str(result.by_fault[key]))
    out.print(rules)
    checks = Table(title="Invariants (checked every 0.5 s of simulated time)")
    checks.add_column("invariant")
    checks.add_column("violations", justify="right")
    for kind in CHECK_KINDS:
        checks.add_row(kind, str(result.violations[kind]))
    checks.add_row("stale_live_s_max", f"{result.stale_live_s_max:.2f} s")
    out.print(checks)
    seen = Table(title="What happened (the controller's events, summed over the days)")
    seen.add_column("event")
    seen.add_column("count", justify="right")
    seen.add_row("parcels delivered (vans' books)", f"{result.delivered:,} of {result.parcels:,}")
    seen.add_row(
        "  of which on calm days",
        f"{result.calm_delivered:,} of {result.calm_days * 6:,} ({result.calm_days} days)",
    )
    for kind in COVERAGE_EVENTS:
        seen.add_row(kind, f"{result.events[kind]:,}")
    out.print(seen)
    for line in result.log[:20]:
        out.print(line, markup=False)
    out.print(
        f"{result.sim_s / 3600:.1f} h simulated in {wall_s:.0f} s "
        f"({result.steps / wall_s:.0f} steps/s); live bound {LIVE_BOUND_S:g} s"
    )
    print(
        json.dumps(
            {
                "steps": result.steps,
                "seed": args.seed,
                "invariant_violations": sum(result.violations.values()),
                "estop_unobeyed": result.violations["estop_unobeyed"],
                "stale_live_s_max": round(result.stale_live_s_max, 3),
                "parcels_lost": result.violations["parcels_lost"],
                "parcels_duplicated": result.violations["parcels_duplicated"],
                "orders_beyond_battery": result.violations["orders_beyond_battery"],
                "order_lost_unhandled": result.violations["order_lost_unhandled"],
                "parcels_delivered": result.delivered,
                "calm_days": result.calm_days,
                "simulated_h": round(result.sim_s / 3600, 2),
                "wall_s": round(wall_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
