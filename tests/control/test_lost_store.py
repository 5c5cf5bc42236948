"""A controller started on a new, empty store (its disk lost) while the vans drive the orders
of the old one: the vans are obeyed (docs/controller.md, "Safety and recovery"), and a van
holding an order this controller never sent is told and shown for what it is — never idle."""

from __future__ import annotations

from fleet.control.config import ControllerConfig
from fleet.protocol import InstantActionType
from fleet.protocol.control_api import VanMode
from tests.control.harness import Harness
from tests.support import plans

VAN = "ST-A-01"


def test_a_van_driving_an_order_of_a_lost_store_is_told_and_shown_holding_not_idle() -> None:
    before = Harness(config=ControllerConfig(release_ahead_stops=1))
    before.report()
    before.dispatch(plans.plan(), plans.parcels())
    before.drive("WH-PORTO-01", 3)  # the line haul unloaded: the last mile may go
    before.vans[VAN].drive_all()  # to the end of its released base; more stops ahead
    van = before.vans[VAN]
    assert van.order is not None and van.on_board
    held = van.order.order_id

    lost = Harness(config=before.config, vans=before.vans, now_s=before.now_s + 60.0)
    lost.report()
    lost.report()  # a second state tells nothing new
    (status,) = lost.core.status([VAN], lost.now_s).vans
    assert status.mode is VanMode.AT_STOP
    assert held in status.mode_reason and "unknown to this controller" in status.mode_reason
    told = [e for e in lost.events if e.kind == "order_unknown"]
    assert [(e.van_id, e.data["order_id"]) for e in told] == [(VAN, held)]
    # what is safer still goes through: the e-stop reaches the van
    lost.core.instant(InstantActionType.EMERGENCY_STOP, [VAN], lost.now_s)
    lost.pump()
    assert van.emergency_stop
    # a van that finished its order (nothing ahead) is idle, and nothing is told of it
    (line_haul,) = lost.core.status(["WH-PORTO-01"], lost.now_s).vans
    assert line_haul.mode is VanMode.IDLE
