"""Every parser survives damaged input: it accepts it or refuses it with its documented error.

Each target (``tests/fuzz/targets.py``) runs a few hundred derandomised examples here, so CI
is fast and repeatable; ``benchmarks/fuzz.py`` runs the same targets for ≥ 100,000 inputs.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import Target, all_targets

EXAMPLES = 100
_WORKDIR: list[Path] = []


def _targets() -> list[Target]:
    """Built at collection (the ids name the parsers), over a private copy of the configs
    that is removed when the test process ends."""
    if not _WORKDIR:
        workdir = Path(tempfile.mkdtemp(prefix="fleet-fuzz-"))
        atexit.register(shutil.rmtree, workdir, True)
        _WORKDIR.append(workdir)
    return all_targets(_WORKDIR[0])


TARGETS = _targets()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_the_parser_never_crashes(target: Target) -> None:
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=max(25, int(EXAMPLES * min(target.share, 1.5))),
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(target.strategy)
    def run(value: object) -> None:
        outcomes[target.run(value).split(":")[0]] += 1

    run()
    # the strategy reaches both sides of the parser: what it takes and what it refuses
    assert outcomes["rejected"] > 0, outcomes
    assert outcomes["accepted"] > 0, outcomes
