"""The safety rules of issue 14 as a hypothesis state machine over :class:`LoopWorld`.

Each entry of :data:`~tests.safety.loop_world.RULES` becomes a rule (a fault, a dispatcher
command, or time passing) with its arguments drawn from the entry's ranges; after every step
the world's invariants must hold (``docs/chaos.md``). ``benchmarks/chaos.py`` drives the same
rules from a seed, much longer.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.safety.loop_world import RULES, LoopWorld, Param, Rule


def strategy(param: Param) -> st.SearchStrategy[Any]:
    kind = param[0]
    if kind == "int":
        return st.integers(param[1], param[2])
    if kind == "float":
        return st.floats(param[1], param[2], allow_nan=False, allow_infinity=False)
    return st.sampled_from(param[1])


class LoopMachine(RuleBasedStateMachine):
    world: LoopWorld | None = None

    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        self.world = LoopWorld(seed)

    @invariant()
    def safe(self) -> None:
        if self.world is None:
            return
        checks = self.world.checks
        assert not checks.counts, "\n".join(checks.log)

    def teardown(self) -> None:
        if self.world is not None:
            self.world.close()


def _make_rule(r: Rule) -> Any:
    def step(self: LoopMachine, **args: Any) -> None:
        assert self.world is not None
        r.apply(self.world, args)

    step.__name__ = r.name
    return rule(**{k: strategy(p) for k, p in r.params.items()})(step)


for _r in RULES:
    setattr(LoopMachine, _r.name, _make_rule(_r))
