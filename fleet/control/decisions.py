"""What a host of the controller core does with its decisions, in the one order every host
keeps: the controller service (:mod:`fleet.control.service`) and the simulator's fast mode,
which hosts the core in-process.

After :meth:`~fleet.control.core.ControllerCore.drain`, a host **writes** the changes, **then**
sends the commands in :func:`send_order` (emergency stops and other urgent commands ahead of
everything else, the rest in decision order), **then** runs each re-plan request and hands its
outcome back to the core with :func:`settle_replan`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fleet.control.core import CheckedPlan, ControllerCore, Outgoing, ReplanRequest
from fleet.errors import FleetError

log = logging.getLogger(__name__)


def send_order(sends: Iterable[Outgoing]) -> list[Outgoing]:
    """The commands of one drain in the order they go out: urgent first, else as decided."""
    return sorted(sends, key=lambda s: not s.urgent)


def settle_replan(
    core: ControllerCore,
    request: ReplanRequest,
    outcome: CheckedPlan | Exception,
    now_s: float,
) -> str | None:
    """Hand a re-plan's outcome (the verified plan, or what the planner raised) to the core.

    A planner error, a planner crash and a plan the core cannot apply are each a failed
    re-plan (an event); none leaves the re-plan in flight, so the ones queued behind it go
    ahead. Returns the error when the re-plan failed, else ``None``.
    """
    if isinstance(outcome, FleetError):
        error = str(outcome)
        core.replan_failed(request.replan_id, error, now_s)
        return error
    if isinstance(outcome, Exception):  # a planner defect must not leave the re-plan in flight
        log.error("re-plan %s crashed", request.replan_id, exc_info=outcome)
        error = f"the planner crashed: {type(outcome).__name__}: {outcome}"
        core.replan_failed(request.replan_id, error, now_s)
        return error
    try:
        core.replan_done(outcome, now_s)
    except Exception as exc:  # a plan the core cannot apply: a failed re-plan, an event
        log.exception("re-plan %s could not be applied", request.replan_id)
        error = f"the re-plan could not be applied: {type(exc).__name__}: {exc}"
        core.replan_not_applied(request.replan_id, error, now_s)
        return error
    return None
