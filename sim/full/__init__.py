"""The full stack: every part of the real system, at accelerated time, in one process.

* :mod:`sim.full.stack`: :class:`FullRun`, the run: it brings up a broker, the controller
  service, a simulated VCU and a real firmware bridge per van, plays the dispatcher, and is
  the scenario driver's backend (:mod:`sim.driver`);
* :mod:`sim.full.timing`: :class:`Timing`, every wall-clock guard stretched with the clock;
* :mod:`sim.full.vans`: per van a simulated VCU and a real firmware bridge;
* :mod:`sim.full.observer`: the trace, from what the fleet says on the broker;
* :mod:`sim.full.netlink`: a van's cellular link, which the simulator can cut.
"""

from sim.full.stack import Companion, FullProgress, FullRun, StackInfo, run_full
from sim.full.timing import MAX_HEARTBEAT_S, WALL_SLACK, Timing

__all__ = [
    "MAX_HEARTBEAT_S",
    "WALL_SLACK",
    "Companion",
    "FullProgress",
    "FullRun",
    "StackInfo",
    "Timing",
    "run_full",
]
