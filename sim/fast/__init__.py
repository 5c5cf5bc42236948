"""The fast mode: a whole day as a discrete-event simulation, in one process, without a broker.

* :mod:`sim.fast.host`: :class:`FastRun`, the run: it hosts the real controller core and the
  re-planner in-process and is the scenario driver's backend (:mod:`sim.driver`);
* :mod:`sim.fast.van`: :class:`~sim.fast.van.FastVan`, one van: the bridge's order book with
  the vehicle's motion event by event;
* :mod:`sim.fast.motion`: a leg of that motion in closed form;
* :mod:`sim.fast.recorder`: what the vans tell the world, written into the trace;
* :mod:`sim.fast.loop`: the event loop and its clock.
"""

from sim.fast.host import FAST_TICK_S, FastProgress, FastRun, run_fast

__all__ = ["FAST_TICK_S", "FastProgress", "FastRun", "run_fast"]
