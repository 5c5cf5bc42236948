"""The signer's message ids: reserved ahead (in a worker thread) or on demand, never reused."""

from __future__ import annotations

import threading
from pathlib import Path

from fleet.control.keys import MESSAGE_ID_BLOCK, MasterKey, Signer
from fleet.protocol import decode
from fleet.protocol.messages import InstantActions
from fleet.store import SqliteStore
from tests.support import protocol_examples as ex


def test_ids_reserved_ahead_in_a_thread_are_used_in_order_and_never_again(tmp_path: Path) -> None:
    calls: list[str] = []
    with SqliteStore(tmp_path / "fleet.db") as store:

        def reserve(van_id: str, block: int) -> int:
            calls.append(van_id)
            return store.reserve_message_ids(van_id, block)

        signer = Signer("ctl", MasterKey(ex.MASTER_SECRET), reserve)
        assert not signer.ready("V1")
        worker = threading.Thread(target=signer.prepare, args=(["V1", "V2", "V1"],))
        worker.start()
        worker.join(10)
        assert signer.ready("V1") and signer.ready("V2")
        assert calls == ["V1", "V2"]  # once per van, however often it is named
        message = ex.instant(van_id="V1")
        ids = [
            decode(InstantActions, signer.payload(message, 1.0)).header.message_id for _ in range(3)
        ]
        assert ids == [1, 2, 3]
        assert calls == ["V1", "V2"]  # signing needed no further trip to the store
        # a restarted controller starts past everything reserved, used or not
        again = Signer("ctl", MasterKey(ex.MASTER_SECRET), store.reserve_message_ids)
        restarted = decode(InstantActions, again.payload(message, 2.0)).header.message_id
        assert restarted == MESSAGE_ID_BLOCK + 1
