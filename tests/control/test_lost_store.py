"""A controller started on a new, empty store (its disk lost), or on an older copy of it,
while the vans drive the orders of the newer one (docs/safety.md, sections 7 and 8): the vans
are obeyed; a van holding an order this controller never sent is told and shown for what it
is — never idle; a van holding a later update than the copy knows gets the next one numbered
above its own, so its work is not stranded."""

from __future__ import annotations

import pytest

from fleet.control.config import ControllerConfig
from fleet.protocol import InstantActionType, NodeActionType, OrderVerdict
from fleet.protocol.control_api import VanMode
from fleet.store import ParcelStatus
from tests.control.harness import Harness
from tests.control.test_safety import _snapshot_of, _status
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


@pytest.mark.parametrize("copied", ["before its order was sent", "after its first update"])
def test_a_controller_on_an_older_copy_of_its_store_numbers_its_updates_above_the_vans(
    copied: str,
) -> None:
    """The store is copied early (before the station van's order could go out: its parcels
    were not at the station yet; or once it had loaded); the van drives on through more
    updates; the controller restarts on the copy. Its next update must be taken (numbered
    above the van's), and the van must finish every stop — none stranded beyond its released
    base — with every parcel it delivered known as delivered."""
    h = Harness(config=ControllerConfig(release_ahead_stops=1))
    h.report()
    h.dispatch(plans.plan(), plans.parcels())
    copy = _snapshot_of(h) if copied == "before its order was sent" else None
    h.drive("WH-PORTO-01", 3)
    h.drive(VAN, 1)  # loaded at the station
    copy = copy or _snapshot_of(h)
    h.drive(VAN, 1)  # a door: the old controller released more, as a later update
    van = h.vans[VAN]
    assert van.order is not None
    held = van.order.order_update_id
    copied_order = {v.van_id: v for v in copy.vans}[VAN]
    assert not copied_order.sent or copied_order.order.order_update_id < held  # type: ignore[union-attr]

    older = Harness(config=h.config, snapshot=copy, now_s=h.now_s + 600.0, vans=h.vans)
    older.report()  # (an update sent before the van's state came is refused: harmless)
    assert older.orders_for(VAN)[-1].order_update_id == held + 1
    assert [verdict for v, verdict in older.verdicts if v == VAN][-1] is OrderVerdict.UPDATE
    assert "order_renumbered" in older.kinds()
    while van.step():
        older.report(VAN)
    assert van.reached == len(van.order.nodes) - 1 and not van.on_board
    assert "order_rejected" not in older.kinds()
    delivered = {
        pid
        for node in van.order.nodes
        for action in node.actions
        if action.action_type is NodeActionType.DELIVER
        for pid in action.parcel_ids
    }
    assert delivered and all(_status(older, p) is ParcelStatus.DELIVERED for p in delivered)
