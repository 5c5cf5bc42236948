"""Whether a van's battery can drive what the controller releases to it (issue 14, item 4).

Pure: no clock, no I/O. The controller never releases a base that the van's *reported*
battery cannot finish above the reserve, including the road beyond the base up to the next
place it charges (or the order's end, where it stays):

* what the van has is the lower of its reported ``remaining_range_m`` and its state of
  charge's share of a full charge (``range_km``), less the reserve (``range_reserve_pct`` of a
  full charge: 16 km of 160 km for the van of ``configs/van.toml``); a van that never reported
  has nothing it can be trusted with;
* from where the van is, the road is walked node by node; a node with a ``charge`` action not
  yet done raises what it has to its target's share of a full charge (less the reserve);
* the walk ends at the first node past the released base with a ``charge`` action, or at the
  order's last node: that is the road the battery must cover.

When it cannot, :func:`charge_to_add` finds the first stop the controller may still change
(not released yet; at an order's first release its first node too) that has a charger (a
depot, a station or a charge stop) before the van would run short, and the charge to add
there.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from dataclasses import dataclass

from fleet.model.van import VanSpec
from fleet.protocol import Edge, Node, NodeActionType, State, StopKind

CHARGE_MARGIN_PCT = 1.0  # a charge added for the road ahead reaches this much more
CHARGER_KINDS = frozenset({StopKind.DEPOT, StopKind.STATION, StopKind.CHARGE})
EPS_M = 1e-6


def full_range_m(spec: VanSpec) -> float:
    return spec.range_km * 1000.0


def reserve_m(spec: VanSpec) -> float:
    """What the battery must always keep: ``range_reserve_pct`` of a full charge."""
    return full_range_m(spec) * spec.range_reserve_pct / 100.0


def usable_m(state: State | None, spec: VanSpec) -> float:
    """The range the van reports above the reserve (negative when below it; a van that never
    reported: minus the reserve, i.e. an empty battery)."""
    if state is None:
        return -reserve_m(spec)
    battery = state.battery
    reported = min(battery.remaining_range_m, battery.soc_pct / 100.0 * full_range_m(spec))
    return reported - reserve_m(spec)


def charge_target(node: Node, done: Container[str] = ()) -> float | None:
    """The target of ``node``'s charge action not yet done (the highest), or None."""
    targets = [
        100.0 if a.target_soc_pct is None else a.target_soc_pct
        for a in node.actions
        if a.action_type is NodeActionType.CHARGE and a.action_id not in done
    ]
    return max(targets) if targets else None


@dataclass(frozen=True, slots=True)
class RangeCheck:
    """The road the battery must cover from where the van is, and where it would run short."""

    need_m: float  # road up to the next charge past the base (or the order's end)
    have_m: float  # the reported range above the reserve, where the walk began
    short_at: int | None  # the node it could not reach above the reserve (None: it can)
    ranges_m: tuple[float, ...]  # range above the reserve on arriving at each node walked

    @property
    def ok(self) -> bool:
        return self.short_at is None


def check_range(
    nodes: Sequence[Node],
    edges: Sequence[Edge],
    *,
    start: int,
    lead_m: float,
    have_m: float,
    through: int,
    spec: VanSpec,
    done: Container[str] = (),
) -> RangeCheck:
    """Walk from node ``start`` (``lead_m`` of road away) to the first node past ``through``
    (the last node released) with a charge action, or to the last node."""
    full, reserve = full_range_m(spec), reserve_m(spec)
    left_m, need_m = have_m - lead_m, lead_m
    ranges: list[float] = []
    for i in range(start, len(nodes)):
        ranges.append(left_m)
        if left_m < -EPS_M and (i > start or lead_m > 0.0):
            # (at ``start`` itself, with no road to it, the van stands there: it charges
            # there first if the node says so)
            return RangeCheck(need_m, have_m, i, tuple(ranges))
        target = charge_target(nodes[i], done)
        if target is not None:
            if i > through:
                break  # the next charge past the base: far enough
            left_m = max(left_m, target / 100.0 * full - reserve)
        if i + 1 >= len(nodes):
            break
        length_m = edges[i].length_m
        left_m -= length_m
        need_m += length_m
    return RangeCheck(need_m, have_m, None, tuple(ranges))


@dataclass(frozen=True, slots=True)
class AddedCharge:
    index: int  # the node
    target_pct: float
    duration_s: float  # charging time from the charge it arrives with


def charge_to_add(
    nodes: Sequence[Node],
    edges: Sequence[Edge],
    check: RangeCheck,
    *,
    start: int,
    first_changeable: int,
    through: int,
    spec: VanSpec,
    done: Container[str] = (),
) -> AddedCharge | None:
    """The first node from ``max(start, first_changeable)`` before ``check.short_at`` with a
    charger, where a charge to what the road ahead needs (up to its next charge past
    ``through``, or the end) lets the van on; None when there is none."""
    if check.short_at is None:
        return None
    full, reserve = full_range_m(spec), reserve_m(spec)
    for j in range(max(start, first_changeable), check.short_at):
        node = nodes[j]
        if node.kind not in CHARGER_KINDS:
            continue
        arrive_m = check.ranges_m[j - start]
        if arrive_m < -EPS_M and j > start:
            break  # it cannot even get there
        ahead_m = 0.0
        for k in range(j, len(nodes) - 1):
            ahead_m += edges[k].length_m
            if k + 1 > through and charge_target(nodes[k + 1], done) is not None:
                break
        target = math.ceil((ahead_m + reserve) / full * 100.0 + CHARGE_MARGIN_PCT)
        if target > 100.0 + CHARGE_MARGIN_PCT:
            continue  # more than a full charge: not from here
        target_pct = min(100.0, max(float(target), charge_target(node, done) or 0.0))
        arrive_pct = max(0.0, (arrive_m + reserve) / full * 100.0)
        energy_kwh = max(0.0, target_pct - arrive_pct) / 100.0 * spec.battery_kwh
        return AddedCharge(j, target_pct, float(math.ceil(spec.charge_time_s(energy_kwh))))
    return None
