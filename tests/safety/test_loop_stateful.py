"""Issue 14, item 4: the whole control loop under faults, with the safety rules checked after
every step (``docs/chaos.md``). The ``ci`` hypothesis profile keeps it under half a minute;
``benchmarks/chaos.py`` runs the same rules for hundreds of thousands of steps."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, Phase, settings

from fleet.protocol import NodeActionType
from tests.safety.loop_machine import LoopMachine
from tests.safety.loop_world import ORDER_LOST_BOUND_S, SPEC, LoopWorld

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


# The invariants themselves can fail: each detector fires on the fault it is there for.


def test_a_van_moving_while_its_vcu_is_latched_is_an_unobeyed_estop() -> None:
    world = LoopWorld(3)
    try:
        van = world.vcus["ST-A-01"]
        van.firmware.memory.latch(7)
        world.run(0.5)
        van.vehicle.odometer_m += 5.0  # as if it drove on
        world.run(0.5)
        assert world.checks.counts["estop_unobeyed"] == 1
        van.firmware.memory.release()  # and the latch gone with no RESUME
        world.run(0.5)
        assert world.checks.counts["estop_unobeyed"] == 2
    finally:
        world.close()


def test_data_older_than_the_bound_shown_live_is_counted_and_timed() -> None:
    world = LoopWorld(3)
    try:
        world.run(2.0)
        for van_id in world.published:
            for message_id in world.published[van_id]:
                world.published[van_id][message_id] -= 60.0  # the data behind every state
        world.checks.counts.clear()
        world.run(2.0)
        assert world.checks.counts["stale_live"] >= 1
        assert world.checks.stale_live_s_max >= 0.5
    finally:
        world.close()


def test_a_parcel_delivered_twice_or_from_elsewhere_is_counted() -> None:
    world = LoopWorld(3)
    try:
        ledger, kind = world.ledger, NodeActionType.DELIVER
        ledger.move("ST-A-01", kind, "P1", "", world)  # P1 is still at the warehouse
        assert world.checks.counts["parcels_lost"] == 1
        ledger.move("ST-A-02", kind, "P1", "", world)
        assert world.checks.counts["parcels_duplicated"] == 1
    finally:
        world.close()


def test_a_release_beyond_the_reported_battery_is_counted() -> None:
    world = LoopWorld(3)
    try:
        world.run(60.0)
        core = world.controller.core
        assert core is not None
        record = core.van_record("WH-PORTO-01")
        assert record is not None and record.order is not None
        world.vcus["WH-PORTO-01"].vehicle.energy_kwh = 0.05 * SPEC.battery_kwh
        world.run(2.0)  # the controller has the van's 5 %
        world.checks.released.clear()  # as if this order's base were released only now
        world.checks.order_sent("WH-PORTO-01", record.order)
        assert world.checks.counts["orders_beyond_battery"] == 1
    finally:
        world.close()


def test_a_van_left_without_its_order_past_the_bound_is_counted() -> None:
    world = LoopWorld(3)
    try:
        world.run(20.0)  # the line haul van has confirmed its order
        core = world.controller.core
        assert core is not None
        record = core.van_record("WH-PORTO-01")
        assert record is not None and record.echoed
        # a controller that would never notice: the bound is the machine's, not the config's
        core.config = dataclasses.replace(core.config, order_lost_after_s=1e9)
        world.bridge_restart(0, 1.0, wiped=True)
        world.run(ORDER_LOST_BOUND_S + 2.0)
        assert world.checks.counts["order_lost_unhandled"] >= 1
    finally:
        world.close()
