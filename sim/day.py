"""Getting a day ready to simulate: the road network, the parcels, and the morning plan.

Both modes start from the same :class:`PreparedDay`, so the same scenario and seed give both
the same parcels and (with ``max_iterations``) the same plan.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleet.model import Parcel, Plan
from fleet.planning import plan_day
from fleet.planning.plan_io import plan_to_json
from fleet.planning.verify import verify_plan
from fleet.roads import RoadNetwork, load_network
from sim.demand import DayDemand, day_demand
from sim.scenario import Scenario

Progress = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class PreparedDay:
    scenario: Scenario
    net: RoadNetwork
    demand: DayDemand
    plan: Plan
    plan_document: str  # plan.json text (canonical), what the controller stores
    plan_wall_s: float  # how long planning took


def plan_document(plan: Plan) -> str:
    return json.dumps(plan_to_json(plan), sort_keys=True, separators=(",", ":"))


def prepare_day(
    scenario: Scenario,
    *,
    progress: Progress | None = None,
    max_iterations: int | None = None,
    workers: int | None = None,
    net: RoadNetwork | None = None,
    demand: DayDemand | None = None,
) -> PreparedDay:
    """Load the network, draw the parcels, plan those known at the start of the day.

    ``max_iterations`` caps the planner's search so that the plan does not depend on the
    machine's speed (tests and the mode comparison use it). ``net`` and ``demand`` are
    the road network and the day's parcels when the caller already has them (a benchmark
    that changes the drawn demand); by default they are loaded and drawn from the scenario.
    """

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    if net is None:
        report("road network", 0.0)
        net = load_network(
            scenario.site,
            scenario.van,
            progress=lambda stage, f: report(f"road network: {stage}", 0.2 * f),
        )
    if demand is None:
        report("drawing the day's parcels", 0.2)
        demand = day_demand(scenario, net)
    known = demand.known_by(scenario.run.start_s)
    t0 = time.monotonic()
    plan = plan_day(
        known,
        scenario.site,
        scenario.van,
        net,
        time_limit_s=scenario.run.plan_time_limit_s,
        seed=scenario.seed,
        day=scenario.day,
        max_iterations=max_iterations,
        workers=workers,
        progress=lambda stage, f: report(f"planning: {stage}", 0.25 + 0.75 * f),
        sharing=scenario.run.sharing,
    )
    wall = time.monotonic() - t0
    report("planned", 1.0)
    return PreparedDay(scenario, net, demand, plan, plan_document(plan), wall)


def verifier(day: PreparedDay) -> Callable[[Plan, Sequence[Parcel]], list[str]]:
    """The independent verifier, bound to the day's site, van and network."""
    sc = day.scenario

    def verify(plan: Plan, parcels: Sequence[Parcel]) -> list[str]:
        return verify_plan(plan, parcels, sc.site, sc.van, day.net)

    return verify
