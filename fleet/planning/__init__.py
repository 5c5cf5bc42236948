"""Route planning for both legs with PyVRP, re-planning, and an independent verifier.

Entry points (contract section 2): :func:`plan_day`, :func:`replan` (with :class:`VanNow`),
:func:`verify_plan`, :func:`read_plan` / :func:`write_plan`, :func:`read_orders`.
"""

from fleet.planning.day import plan_day
from fleet.planning.engine import StartingState
from fleet.planning.orders import Orders, read_orders, write_orders
from fleet.planning.plan_io import read_plan, write_plan
from fleet.planning.replan import VanNow, replan, replan_with_state
from fleet.planning.verify import verify_plan

__all__ = [
    "Orders",
    "StartingState",
    "VanNow",
    "plan_day",
    "read_orders",
    "read_plan",
    "replan",
    "replan_with_state",
    "verify_plan",
    "write_orders",
    "write_plan",
]
