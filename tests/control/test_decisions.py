"""Every host of the core keeps the service's order: urgent commands first, and a re-plan
that fails in any way (planner error, planner crash, a plan the core cannot apply) is a
failed re-plan, never one left in flight."""

from __future__ import annotations

from typing import Any, cast

from fleet.control.core import CheckedPlan, Outgoing, check_plan
from fleet.control.decisions import send_order, settle_replan
from fleet.errors import InfeasibleError
from tests.control.harness import Harness, accept_all
from tests.support import plans


def _send(van_id: str, urgent: bool = False) -> Outgoing:
    return Outgoing(van_id, cast(Any, None), urgent=urgent)


def test_urgent_commands_go_first_and_the_rest_in_decision_order() -> None:
    sends = [_send("A"), _send("B", urgent=True), _send("C"), _send("D", urgent=True)]
    assert [s.van_id for s in send_order(sends)] == ["B", "D", "A", "C"]


def _requested(h: Harness) -> Any:
    h.core.request_replan("test", h.now_s)
    h.pump()
    return h.replans[-1]


def test_a_planner_error_or_crash_is_a_failed_replan_and_the_next_one_may_start() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    h.report()
    request = _requested(h)
    error = settle_replan(h.core, request, InfeasibleError("no van can"), h.now_s)
    h.pump()
    assert error == "no van can" and "replan_failed" in h.kinds()
    second = _requested(h)
    assert second.replan_id != request.replan_id
    error = settle_replan(h.core, second, RuntimeError("boom"), h.now_s)
    h.pump()
    assert error == "the planner crashed: RuntimeError: boom"
    assert _requested(h).replan_id != second.replan_id  # nothing left in flight


def test_a_plan_the_core_cannot_apply_is_a_failed_replan() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    h.report()
    request = _requested(h)
    broken = cast(CheckedPlan, object())  # replan_done cannot read it
    error = settle_replan(h.core, request, broken, h.now_s)
    h.pump()
    assert error is not None and error.startswith("the re-plan could not be applied")
    assert _requested(h).replan_id != request.replan_id


def test_a_good_plan_is_applied() -> None:
    h = Harness()
    h.dispatch(plans.plan(), plans.parcels())
    h.report()
    request = _requested(h)
    checked = check_plan(
        plans.plan(), list(request.parcels), "{}", accept_all, plan_id=request.replan_id
    )
    assert settle_replan(h.core, request, checked, h.now_s) is None
    h.pump()
    assert "replan_applied" in h.kinds()
