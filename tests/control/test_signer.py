"""The signer's message ids: at least the clock in microseconds, reserved ahead (in a worker
thread) or on demand, never reused, rising across restarts with a kept, new or lost store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fleet.control.keys import ID_UNITS_PER_S, MESSAGE_ID_BLOCK, MasterKey, Signer
from fleet.protocol import CommandVerifier, decode, derive_van_key
from fleet.protocol.messages import InstantActions, Order
from fleet.store import SqliteStore
from tests.support import protocol_examples as ex

NOW_S = ex.NOW_S


def _ids(signer: Signer, now_s: float, n: int = 3) -> list[int]:
    message = ex.instant(van_id="V1")
    return [
        decode(InstantActions, signer.payload(message, now_s)).header.message_id for _ in range(n)
    ]


def test_ids_reserved_ahead_in_a_thread_are_used_in_order_and_never_again(tmp_path: Path) -> None:
    calls: list[str] = []
    with SqliteStore(tmp_path / "fleet.db") as store:

        def reserve(van_id: str, block: int, floor: int) -> int:
            calls.append(van_id)
            return store.reserve_message_ids(van_id, block, floor)

        signer = Signer("ctl", MasterKey(ex.MASTER_SECRET), reserve)
        assert not signer.ready("V1", NOW_S)
        worker = threading.Thread(target=signer.prepare, args=(["V1", "V2", "V1"], NOW_S))
        worker.start()
        worker.join(10)
        assert signer.ready("V1", NOW_S) and signer.ready("V2", NOW_S)
        assert calls == ["V1", "V2"]  # once per van, however often it is named
        floor = int(NOW_S * ID_UNITS_PER_S)
        assert _ids(signer, NOW_S) == [floor, floor + 1, floor + 2]
        assert _ids(signer, NOW_S + 1.0, 1) == [floor + ID_UNITS_PER_S]  # they follow the clock
        assert calls == ["V1", "V2"]  # signing needed no further trip to the store
        # a restarted controller starts past everything reserved, used or not
        again = Signer("ctl", MasterKey(ex.MASTER_SECRET), store.reserve_message_ids)
        (restarted,) = _ids(again, NOW_S + 2.0, 1)
        assert restarted == floor + MESSAGE_ID_BLOCK


def test_ids_keep_rising_when_the_clock_steps_back(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "fleet.db") as store:
        signer = Signer("ctl", MasterKey(ex.MASTER_SECRET), store.reserve_message_ids)
        before = _ids(signer, NOW_S)
        after = _ids(signer, NOW_S - 3600.0)  # an NTP step back by an hour
        assert after[0] == before[-1] + 1
        again = Signer("ctl", MasterKey(ex.MASTER_SECRET), store.reserve_message_ids)
        assert _ids(again, NOW_S - 3600.0, 1)[0] > after[-1]


@pytest.mark.parametrize("store_kind", ["new store", "same store"])
def test_a_van_accepts_orders_from_a_controller_restarted_after_ids_past_1000(
    tmp_path: Path, store_kind: str
) -> None:
    """Issue 14, item 1: a van that accepted ids past 1000 from one controller (its counter
    had passed 1000 with pauses and resumes) must accept the commands of a controller started
    later with a new (lost, restored) store and the same key."""
    key = derive_van_key(ex.MASTER_SECRET, ex.VAN)
    van = CommandVerifier(ex.VAN, [key], last_message_ids={"order": 1002, "instant": 1002})
    db = tmp_path / ("fleet.db" if store_kind == "same store" else "fleet-new.db")
    with SqliteStore(tmp_path / "fleet.db") as old:
        old.reserve_message_ids(ex.VAN, 1000)
        old.reserve_message_ids(ex.VAN, 1000)  # the old controller's ids ran to 2000
    with SqliteStore(db) as store:
        signer = Signer("ctl", MasterKey(ex.MASTER_SECRET), store.reserve_message_ids)
        order = ex.order()
        for update in range(3):
            payload = signer.payload(order.model_copy(update={"order_update_id": update}), NOW_S)
            van.verify(decode(Order, payload), NOW_S)  # raises if refused
        instant = decode(InstantActions, signer.payload(ex.instant(), NOW_S + 0.1))
        van.verify(instant, NOW_S + 0.1)
        assert van.last_message_ids["order"] >= int(NOW_S * ID_UNITS_PER_S)
