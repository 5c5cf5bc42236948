#!/usr/bin/env python3
"""Fault injection at volume: every scenario of tests/faults, several runs each, with figures.

    python benchmarks/faults.py                       # 3 runs of each scenario, factor 60
    python benchmarks/faults.py --runs 5 --scenario broker_restart --factor 30

Each run starts the whole stack as real processes — Mosquitto from the credentials `fleet
broker credentials` makes, the controller, and per van a firmware bridge and a simulated VCU
over a real serial line — on one clock ``--factor`` times faster than the wall, dispatches a
day planned by `fleet plan` (six parcels, three vans), injects the scenario's failure,
emergency-stops a van mid-route through the dispatcher, and waits for the day to end
(``tests/faults/scenarios.py`` says what each scenario does and measures).

The restart cases (issue 14) run the same way: the controller restarted on its store
(``controller_restart``), on a new, empty one with the same key (``…_lost_store``: its
e-stop must still be obeyed) and on an older copy (``…_old_store``); the last-mile van's
bridge stopped (``bridge_sigterm``) or killed (``bridge_sigkill``) mid-order and started
again on its ``--state-dir``; its VCU rebooted with the e-stop latched
(``vcu_reboot_estop_latched``: the van must not move until resumed). ``docs/safety.md``
says what each part does in each case.

Prints a table — scenario, runs, parcels lost, parcels duplicated, orders applied twice,
vans not at rest in a known state, e-stops obeyed, worst e-stop latency, recovery time
(median and worst), the vans' final modes, wall time — and ends with one JSON line:
``{"scenarios": N, "runs": R, "parcels_lost": …, "parcels_duplicated": …,
"orders_applied_twice": …, "unknown_vans": …, "estop_unobeyed": …, "estop_max_s": …,
"estop_bound_s": …, "failed_runs": …, "per_scenario": {…}}``. A run that cannot finish (the
day stalls) counts its undelivered parcels as lost. Where the controller lost its store,
parcels are counted by the vans' own account (their bridges'). Timings are of this machine,
now.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.faults.scenarios import SCENARIOS, RunResult, run_scenario  # noqa: E402
from tests.faults.stack import ESTOP_BOUND_S  # noqa: E402
from tests.faults.world import build_world  # noqa: E402


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario")
    parser.add_argument("--factor", type=float, default=60.0, help="simulated s per wall s")
    parser.add_argument(
        "--scenario", default="", help="only scenarios containing this (a,b: either)"
    )
    parser.add_argument("--timeout", type=float, default=240.0, help="wall s allowed per run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    console = Console(width=200)  # a file or a pipe gets the whole table too
    wanted = args.scenario.split(",")
    names = [n for n in SCENARIOS if any(w in n for w in wanted)]
    if not names:
        sys.exit(f"no scenario matches {args.scenario!r} (have: {', '.join(SCENARIOS)})")

    results: dict[str, list[RunResult]] = {n: [] for n in names}
    failures: dict[str, list[str]] = {n: [] for n in names}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleet-faults-") as tmp:
        console.print("building the world (fleet plan, road network) ...")
        world = build_world(Path(tmp) / "world")
        for name in names:
            for run in range(args.runs):
                workdir = Path(tmp) / f"{name}-{run}"
                workdir.mkdir()
                console.print(f"{name} run {run + 1}/{args.runs} ...", highlight=False)

                async def one(
                    name: str = name, run: int = run, workdir: Path = workdir
                ) -> RunResult:
                    async with asyncio.timeout(args.timeout):
                        return await run_scenario(
                            world, name, workdir, factor=args.factor, seed=run
                        )

                try:
                    results[name].append(asyncio.run(one()))
                except Exception as exc:  # the day stalled or a process died: a failed run
                    failures[name].append(f"{type(exc).__name__}: {exc}")
                    console.print(
                        f"[red]run failed[/]: {''.join(traceback.format_exception(exc)[-3:])}",
                        highlight=False,
                    )
    elapsed_s = time.perf_counter() - started

    table = Table(title=f"Fault injection: {args.runs} run(s) a scenario, clock x{args.factor:g}")
    for col in (
        "scenario",
        "runs",
        "parcels lost",
        "duplicated",
        "orders applied twice",
        "vans unknown",
        "e-stop obeyed",
        "e-stop max s",
        "recovery s (median / max)",
        "final modes",
        "wall s",
    ):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    totals = {"lost": 0, "dup": 0, "twice": 0, "unknown": 0, "failed": 0, "unobeyed": 0}
    per: dict[str, dict[str, object]] = {}
    estops: list[float] = []
    parcels = len(world.parcel_ids)
    for name in names:
        rs = results[name]
        failed = len(failures[name])
        lost = (
            sum(len(r.lost) for r in rs) + failed * parcels
        )  # a stalled day delivered nothing sure
        dup = sum(len(r.duplicated) for r in rs)
        twice = sum(r.orders_applied_twice for r in rs)
        unknown = sum(len(r.unknown_vans) for r in rs)
        e = [r.estop_latency_s for r in rs if r.estop_latency_s is not None]
        rec = [r.recovery_s for r in rs if r.recovery_s is not None]
        estops += e
        tried = [r.estop_obeyed for r in rs if r.estop_obeyed is not None]
        unobeyed = sum(1 for ok in tried if not ok)
        finals = Counter(m for r in rs for m in r.final_modes.values())
        totals["unobeyed"] += unobeyed
        totals["lost"] += lost
        totals["dup"] += dup
        totals["twice"] += twice
        totals["unknown"] += unknown
        totals["failed"] += failed
        per[name] = {
            "runs": len(rs) + failed,
            "failed_runs": failed,
            "stalled_runs": sum(r.stalled for r in rs),
            "parcels_lost": lost,
            "parcels_duplicated": dup,
            "orders_applied_twice": twice,
            "unknown_vans": unknown,
            "estop_tried": len(tried),
            "estop_unobeyed": unobeyed,
            "estop_max_s": round(max(e), 3) if e else None,
            "final_modes": dict(sorted(finals.items())),
            "recovery_median_s": round(statistics.median(rec), 2) if rec else None,
            "recovery_max_s": round(max(rec), 2) if rec else None,
        }
        red = "[red]{}[/]".format
        table.add_row(
            name,
            f"{len(rs) + failed}"
            + (f" ({failed} failed)" if failed else "")
            + (f" ({sum(r.stalled for r in rs)} stalled)" if any(r.stalled for r in rs) else ""),
            red(lost) if lost else "0",
            red(dup) if dup else "0",
            red(twice) if twice else "0",
            red(unknown) if unknown else "0",
            f"{len(tried) - unobeyed}/{len(tried)}" if not unobeyed else red(f"{unobeyed} NOT"),
            f"{max(e):.3f}" if e else "-",
            _fmt(rec),
            " ".join(f"{m}×{n}" for m, n in sorted(finals.items())),
            f"{statistics.median([r.wall_s for r in rs]):.1f}" if rs else "-",
        )
    console.print(table)
    shown = ("latch_kept", "moved_while_latched_m", "modes_while_latched", "aboard_at_end",
             "orders_unknown", "parcels_by_status", "timeline")  # fmt: skip
    for name in names:
        for failure in failures[name]:
            console.print(f"[red]{name}[/]: {failure}", highlight=False)
        for r in results[name]:
            if not r.ok:  # say why, so that a rare failure can be looked into
                why = {k: r.notes[k] for k in shown if k in r.notes}
                console.print(
                    f"[yellow]{name}[/] seed {r.seed}: stalled={r.stalled} lost={r.lost} "
                    f"duplicated={r.duplicated} e-stop obeyed={r.estop_obeyed} "
                    f"final={r.final_modes} {why}",
                    highlight=False,
                )
    print(
        json.dumps(
            {
                "scenarios": len(names),
                "runs": sum(int(p["runs"]) for p in per.values()),  # type: ignore[call-overload]
                "parcels_lost": totals["lost"],
                "parcels_duplicated": totals["dup"],
                "orders_applied_twice": totals["twice"],
                "unknown_vans": totals["unknown"],
                "failed_runs": totals["failed"],
                "estop_unobeyed": totals["unobeyed"],
                "estop_max_s": round(max(estops), 3) if estops else None,
                "estop_bound_s": ESTOP_BOUND_S,
                "factor": args.factor,
                "elapsed_s": round(elapsed_s, 1),
                "per_scenario": per,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
