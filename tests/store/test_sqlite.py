"""The SQLite store: whole transactions, a faithful reload, one controller per file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from fleet.errors import StoreError
from fleet.protocol import State, decode, encode
from fleet.store import (
    Changes,
    EventRecord,
    ParcelRecord,
    ParcelStatus,
    PendingInstant,
    PlanRecord,
    SqliteStore,
    VanRecord,
    VanStateRecord,
)
from tests.support import plans
from tests.support import protocol_examples as ex


def _changes() -> Changes:
    parcel = plans.parcels(1)[0]
    order = ex.order()
    return Changes(
        plans=[PlanRecord("P-1", "plan", "dispatch", 1.0, "2026-11-23", "Europe/Lisbon", "{}")],
        parcels={"P1": ParcelRecord(parcel, ParcelStatus.LOADED, "P-1", holder="WH-PORTO-01")},
        vans={
            "WH-PORTO-01": VanRecord(
                van_id="WH-PORTO-01",
                order=order,
                released=2,
                sent=True,
                pending_instants=(PendingInstant(ex.instant(), 1.0, 2.0, 1),),
            )
        },
        van_states={
            "WH-PORTO-01": VanStateRecord("WH-PORTO-01", ex.state(van_id="WH-PORTO-01"), 5.0)
        },
        events=[
            EventRecord("plan_dispatched", 1.0, detail="1 van"),
            EventRecord("parcel_loaded", 2.0, van_id="WH-PORTO-01", parcel_id="P1", data={"n": 1}),
        ],
        orders_sent=[("WH-PORTO-01", "P-1", order)],
    )


def test_what_is_committed_comes_back_whole(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    changes = _changes()
    with SqliteStore(db) as store:
        events = store.commit(changes)
        assert [e.event_id for e in events] == [1, 2]
    with SqliteStore(db) as store:
        snap = store.load()
        assert snap.parcels == tuple(changes.parcels.values())
        assert snap.vans == tuple(changes.vans.values())
        assert snap.van_states == tuple(changes.van_states.values())
        assert snap.plans == tuple(changes.plans)
        assert snap.last_event_id == 2
        assert store.orders_sent("WH-PORTO-01") == [("O-1", 0, "P-1")]
        # ids keep rising after a reopen
        assert store.commit(Changes(events=[EventRecord("x", 3.0)]))[0].event_id == 3


def test_events_filter_by_van_parcel_and_position(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "f.db") as store:
        store.commit(_changes())
        assert [e.kind for e in store.events(van_id="WH-PORTO-01")] == ["parcel_loaded"]
        assert [e.kind for e in store.events(parcel_id="P1")] == ["parcel_loaded"]
        assert [e.event_id for e in store.events(after_id=1)] == [2]
        assert store.events(after_id=1)[0].data == {"n": 1}
        assert len(store.events(limit=1)) == 1


def test_a_failed_commit_leaves_nothing_half_written(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    with SqliteStore(db) as store:
        # Someone else wrote event 1 behind the store's back: the batch's first event
        # collides with it, so the whole batch must be rolled back.
        with sqlite3.connect(db) as other:
            other.execute(
                "INSERT INTO events (event_id, time_s, kind, detail, data) VALUES (1, 0, 'x', '', '{}')"
            )
        with pytest.raises(StoreError, match="nothing was stored"):
            store.commit(_changes())
        snap = store.load()
        assert snap.parcels == () and snap.vans == () and snap.plans == ()


def test_a_second_controller_cannot_open_the_same_store(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    with SqliteStore(db), pytest.raises(StoreError, match="another controller"):
        SqliteStore(db)
    SqliteStore(db).close()  # free again once the first one closed


def test_message_ids_are_never_reused_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    with SqliteStore(db) as store:
        assert store.reserve_message_ids("A", 100) == 1
        assert store.reserve_message_ids("A", 100) == 101
        assert store.reserve_message_ids("B", 10) == 1
    with SqliteStore(db) as store:
        assert store.reserve_message_ids("A", 100) == 201


def test_a_corrupt_row_is_named(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    with SqliteStore(db) as store:
        store.commit(_changes())
    with sqlite3.connect(db) as other:
        other.execute("UPDATE vans SET record = '{\"van_id\": 3}'")
    with (
        SqliteStore(db) as store,
        pytest.raises(StoreError, match=r"vans\[WH-PORTO-01\] is corrupt"),
    ):
        store.load()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the store"):
        SqliteStore(db)


def test_a_van_state_is_stored_as_the_van_sent_it(tmp_path: Path) -> None:
    """The controller hands over the JSON a state was decoded from: it is stored as it came
    (not encoded again) and reads back as the same state."""
    state = ex.state(van_id="WH-PORTO-01")
    raw = b'{ "van_id" : "WH-PORTO-01", ' + encode(state)[1:]  # spacing of its own
    raw = raw.replace(b',"van_id":"WH-PORTO-01"', b"", 1)
    assert decode(State, raw) == state
    db = tmp_path / "fleet.db"
    with SqliteStore(db) as store:
        store.commit(
            Changes(van_states={"WH-PORTO-01": VanStateRecord("WH-PORTO-01", state, 5.0, raw)})
        )
    with sqlite3.connect(db) as plain:
        (text,) = plain.execute("SELECT state FROM van_states").fetchone()
    assert text == raw.decode()
    with SqliteStore(db) as store:
        (back,) = store.load().van_states
    assert (back.van_id, back.state, back.seen_s) == ("WH-PORTO-01", state, 5.0)


def test_closing_waits_for_a_write_under_way_in_another_thread(tmp_path: Path) -> None:
    """A stopping controller may leave a write running in a worker thread: closing the store
    under it crashed the process (SQLite used after close); now close waits for it."""
    db = tmp_path / "fleet.db"
    store = SqliteStore(db)
    writing, gate = threading.Event(), threading.Event()
    write = store._write

    def slow_write(cur: sqlite3.Cursor, changes: Changes, events: list[EventRecord]) -> None:
        writing.set()
        assert gate.wait(30)
        write(cur, changes, events)

    store._write = slow_write  # type: ignore[method-assign]
    writer = threading.Thread(target=store.commit, args=(Changes(events=[EventRecord("x", 1.0)]),))
    writer.start()
    assert writing.wait(30)
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waits for the write
    gate.set()
    writer.join(30)
    closer.join(30)
    assert not closer.is_alive()
    with SqliteStore(db) as again:
        assert [e.kind for e in again.events()] == ["x"]
