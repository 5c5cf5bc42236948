"""Issue 14, item 4: the whole control loop under faults, with the safety rules checked after
every step (``docs/chaos.md``). The ``ci`` hypothesis profile keeps it under half a minute;
``benchmarks/chaos.py`` runs the same rules for hundreds of thousands of steps."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

from tests.safety.loop_machine import LoopMachine

settings.register_profile(
    "loop-ci",
    max_examples=16,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    # a failure prints its steps; shrinking a day of faults takes minutes
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TestLoopSafety = LoopMachine.TestCase
TestLoopSafety.settings = settings.get_profile("loop-ci")
