#!/usr/bin/env python3
"""Fuzzing at volume: every entry point of fleet, the bridge and the simulator, ≥ 300,000 inputs.

    python benchmarks/fuzz.py                     # 300,000 inputs, seed 1
    python benchmarks/fuzz.py --inputs 20000 --seed 7 --target mqtt

Runs the targets of ``tests/fuzz/targets.py`` — MQTT messages (every model the controller,
the bridge and the CLI decode), the bridge's command handling end to end, serial frames
(stream decoder at any chunking, single frames, every payload type, the link state
machine), the TOML configs (van, site, controller, scenario, key and login files), the
orders CSV and the plan JSON — and every entry point of issue 15 (``tests/fuzz/
entry_targets.py``): the CLI's arguments through the real typer app, control-API requests
carried out by a controller core, plan files with extreme numbers and nesting, ids of every
Unicode category, binary config and key files, TOML edited as a tree, orders CSV built from
its grammar, van states with skewed clocks — each with its share of the inputs, from
damaged valid inputs, grammar-aware edits and random bytes (``tests/fuzz/mutate.py``).

A **hang** is an input that takes more than ``HANG_S`` (5 s); one that takes over
``ABORT_S`` is stopped by an alarm and ends its target.

A **crash** is any exception other than the parser's documented error type, a documented
error without a clear message (file, line, topic or field named), or an accepted input that
its own package then cannot use (see ``tests/fuzz/targets.py``). Inputs that hit a defect
already reported to its owner (``tests/fuzz/known_defects.py``) count as crashes too and are
listed one line each; the run goes on looking for new ones. A new crash stops its target
(Hypothesis shrinks it to a minimal input, printed below the table).

Prints a table (per target: inputs, accepted, rejected, crashes, hangs, slowest input,
inputs/s), then one JSON line: ``{"inputs": N, "crashes": C, "new_crashes": K,
"known_defects": {...}, "hangs": H, "targets": T, "slowest_input_s": X, "peak_rss_mb": M,
"seed": S, "elapsed_s": E}``. Timings are of this machine at this moment.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.fuzz.known_defects import KNOWN_DEFECTS  # noqa: E402
from tests.fuzz.targets import Target, all_targets  # noqa: E402


@dataclass
class Result:
    target: Target
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    known: Counter[str] = field(default_factory=Counter)
    crash: str = ""
    elapsed_s: float = 0.0
    hangs: int = 0
    slowest_s: float = 0.0


HANG_S = 5.0  # an input slower than this is a hang
ABORT_S = 60  # one slower than this is stopped (SIGALRM) and ends its target


class Hang(Exception):
    """An input ran past ABORT_S."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang(f"an input ran over {ABORT_S} s")


def run_target(target: Target, examples: int, seed_value: int) -> Result:
    result = Result(target)

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
        report_multiple_bugs=False,
    )
    @given(target.strategy)
    def fuzz(value: object) -> None:
        result.inputs += 1
        signal.alarm(ABORT_S)
        started = time.perf_counter()
        try:
            outcome = target.run(value)
        finally:
            signal.alarm(0)
            took_s = time.perf_counter() - started
            result.slowest_s = max(result.slowest_s, took_s)
            if took_s > HANG_S:
                result.hangs += 1
        kind, _, detail = outcome.partition(":")
        result.outcomes[kind] += 1
        if kind == "known":
            result.known[detail] += 1

    start = time.perf_counter()
    try:
        fuzz()
    except Hang:
        result.hangs += 1
        result.crash = f"hang: an input ran over {ABORT_S} s"
    except Exception as exc:  # a new crash: Hypothesis has shrunk it to a minimal input
        notes = "\n".join(getattr(exc, "__notes__", []))
        result.crash = f"{type(exc).__name__}: {exc}\n{notes}\n" + "".join(
            traceback.format_exception(exc)[-6:]
        )
    result.elapsed_s = time.perf_counter() - start
    return result


MEMORY_CAP_BYTES = 8 << 30  # address space for this process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=300_000, help="total inputs to try")
    parser.add_argument("--seed", type=int, default=1, help="random seed (the run repeats)")
    parser.add_argument("--target", default="", help="only targets whose name contains this")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # refusals are logged; we count them
    signal.signal(signal.SIGALRM, _alarm)  # the bridge logs every refused command; we count them
    # An input that makes a parser allocate without bound is a crash to report (MemoryError),
    # not a reason for the kernel to kill the whole run.
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = MEMORY_CAP_BYTES if hard == resource.RLIM_INFINITY else min(MEMORY_CAP_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    console = Console()

    with tempfile.TemporaryDirectory(prefix="fleet-fuzz-") as tmp:
        targets = [t for t in all_targets(Path(tmp)) if args.target in t.name]
        if not targets:
            sys.exit(f"no target matches {args.target!r}")
        total_share = sum(t.share for t in targets)
        results: list[Result] = []
        started = time.perf_counter()
        for i, target in enumerate(targets):
            # rounded up, so that the run is at least --inputs (Hypothesis may stop a target
            # a few inputs short when it has tried every distinct input it can make)
            examples = max(1, math.ceil(args.inputs * target.share / total_share))
            console.print(
                f"[{i + 1}/{len(targets)}] {target.name}: {examples:,} inputs ...",
                highlight=False,
            )
            results.append(run_target(target, examples, args.seed + i))
        elapsed_s = time.perf_counter() - started

    table = Table(title=f"Fuzzing: {len(results)} parsers, seed {args.seed}")
    for col in (
        "target",
        "parses",
        "inputs",
        "accepted",
        "rejected",
        "crashes",
        "hangs",
        "slowest s",
        "inputs/s",
    ):
        table.add_column(col, justify="right" if col not in ("target", "parses") else "left")
    for r in results:
        crashes = sum(r.known.values()) + (1 if r.crash else 0)
        table.add_row(
            r.target.name,
            r.target.parses,
            f"{r.inputs:,}",
            f"{r.outcomes['accepted']:,}",
            f"{r.outcomes['rejected']:,}",
            f"[red]{crashes:,}[/]" if crashes else "0",
            f"[red]{r.hangs:,}[/]" if r.hangs else "0",
            f"{r.slowest_s:.2f}",
            f"{r.inputs / r.elapsed_s:,.0f}" if r.elapsed_s else "-",
        )
    inputs = sum(r.inputs for r in results)
    known: Counter[str] = Counter()
    for r in results:
        known.update(r.known)
    new = [r for r in results if r.crash]
    crashes = sum(known.values()) + len(new)
    table.add_row(
        "total",
        "",
        f"{inputs:,}",
        f"{sum(r.outcomes['accepted'] for r in results):,}",
        f"{sum(r.outcomes['rejected'] for r in results):,}",
        f"{crashes:,}",
        f"{sum(r.hangs for r in results):,}",
        f"{max(r.slowest_s for r in results):.2f}",
        f"{inputs / elapsed_s:,.0f}",
        style="bold",
    )
    console.print(table)
    for defect in KNOWN_DEFECTS:
        if known[defect.id]:
            console.print(
                f"[red]known defect[/] {defect.id} ({known[defect.id]:,} inputs) in "
                f"{defect.owner}: {defect.summary}",
                highlight=False,
            )
    for r in new:
        console.print(f"[red bold]NEW CRASH[/] in {r.target.name}:\n{r.crash}", highlight=False)
    print(
        json.dumps(
            {
                "inputs": inputs,
                "crashes": crashes,
                "new_crashes": len(new),
                "known_defects": {k: v for k, v in sorted(known.items())},
                "hangs": sum(r.hangs for r in results),
                "targets": len(results),
                "slowest_input_s": round(max(r.slowest_s for r in results), 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "seed": args.seed,
                "elapsed_s": round(elapsed_s, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
