"""The store on SQLite (WAL): one file, one controller, every write in one transaction.

Tables (``docs/controller.md``): ``plans``, ``parcels``, ``vans`` (order book and flags),
``van_states`` (latest state per van), ``orders_sent`` (every order update, append-only),
``events`` (append-only log), ``message_ids`` (reserved anti-replay counters). The SQL sticks
to what PostgreSQL also speaks (``INSERT ... ON CONFLICT ... DO UPDATE``); only the DDL and the
placeholder style differ between backends.

Durability: WAL with ``synchronous=NORMAL`` survives a killed process (``kill -9``) without
losing a committed transaction; set ``durable=True`` for ``synchronous=FULL`` where power loss
must not lose the last transactions either. A lock file beside the database keeps a second
controller from opening it. Every operation holds the store's lock, so the controller may
write from a worker thread while it reads or reserves ids from its event loop.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

from pydantic import TypeAdapter, ValidationError

from fleet.errors import FleetError, StoreError
from fleet.protocol import State
from fleet.store.records import (
    Changes,
    EventRecord,
    ParcelRecord,
    PlanRecord,
    Snapshot,
    VanRecord,
    VanStateRecord,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plans (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, cause TEXT NOT NULL,
    created_s REAL NOT NULL, day TEXT NOT NULL, timezone TEXT NOT NULL, document TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parcels (
    parcel_id TEXT PRIMARY KEY, status TEXT NOT NULL, holder TEXT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vans (van_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS van_states (
    van_id TEXT PRIMARY KEY, seen_s REAL NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders_sent (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    van_id TEXT NOT NULL, order_id TEXT NOT NULL, order_update_id INTEGER NOT NULL,
    source TEXT NOT NULL, payload TEXT NOT NULL,
    UNIQUE (van_id, order_id, order_update_id));
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY, time_s REAL NOT NULL, kind TEXT NOT NULL,
    van_id TEXT, parcel_id TEXT, detail TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_van ON events (van_id, event_id);
CREATE INDEX IF NOT EXISTS events_by_parcel ON events (parcel_id, event_id);
CREATE TABLE IF NOT EXISTS message_ids (van_id TEXT PRIMARY KEY, reserved_to INTEGER NOT NULL);
"""

T = TypeVar("T")
_VAN = TypeAdapter(VanRecord)
_PARCEL = TypeAdapter(ParcelRecord)
_DATA = TypeAdapter(dict[str, str | int | float | bool | None])


FILE_MODE = 0o600  # the store and its lock file: the fleet's data, for the controller only


class SqliteStore:
    """Open (creating if needed) the store at ``path``; use as a context manager."""

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = path
        self._lock_file: IO[bytes] | None = None
        self._mutex = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            # Created 0600 (SQLite gives its -wal and -shm files the same mode): the store
            # holds every order, position and event of the fleet.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._check_version()
            row = self._db.execute("SELECT COALESCE(MAX(event_id), 0) FROM events").fetchone()
            self._last_event_id: int = row[0]
        except sqlite3.Error as exc:
            self._unlock()
            raise StoreError(f"{path}: cannot open the store: {exc}") from exc
        except FleetError:
            self._unlock()
            raise

    # -- lifetime -------------------------------------------------------------------------
    def _lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
        handle = os.fdopen(fd, "a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise StoreError(
                f"{self.path}: another controller has this store open (lock {lock_path}); "
                "one store serves one controller"
            ) from exc
        self._lock_file = handle

    def _unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def close(self) -> None:
        """Close once any write under way in another thread has finished (a controller that
        stops may leave one running in a worker thread; closing under it would crash)."""
        try:
            with self._mutex:
                self._db.close()
        finally:
            self._unlock()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif row[0] != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.path}: schema version {row[0]}, this controller speaks {SCHEMA_VERSION}"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._mutex:
            yield from self._in_transaction()

    def _in_transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._db.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()

    # -- reading --------------------------------------------------------------------------
    def load(self) -> Snapshot:
        """Everything needed to resume; a corrupt row is a :class:`StoreError` naming it."""
        try:
            with self._mutex:
                return self._load()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read: {exc}") from exc

    def _load(self) -> Snapshot:
        db = self._db
        plans = tuple(
            PlanRecord(*row)
            for row in db.execute(
                "SELECT plan_id, kind, cause, created_s, day, timezone, document "
                "FROM plans ORDER BY seq"
            )
        )
        parcels = tuple(
            self._decode(_PARCEL, text, f"parcels[{pid}]")
            for pid, text in db.execute("SELECT parcel_id, record FROM parcels")
        )
        vans = tuple(
            self._decode(_VAN, text, f"vans[{van_id}]")
            for van_id, text in db.execute("SELECT van_id, record FROM vans")
        )
        states = tuple(
            VanStateRecord(van_id, self._decode_state(van_id, text), seen_s)
            for van_id, seen_s, text in db.execute("SELECT van_id, seen_s, state FROM van_states")
        )
        return Snapshot(parcels, vans, states, plans, self._last_event_id)

    def _decode(self, adapter: TypeAdapter[T], text: str, where: str) -> T:
        try:
            return adapter.validate_json(text)
        except (ValidationError, FleetError) as exc:
            raise StoreError(f"{self.path}: {where} is corrupt: {exc}") from exc

    def _decode_state(self, van_id: str, text: str) -> State:
        try:
            return State.model_validate_json(text)
        except ValidationError as exc:
            raise StoreError(f"{self.path}: van_states[{van_id}] is corrupt: {exc}") from exc

    def events(
        self,
        *,
        after_id: int = 0,
        limit: int = 100,
        van_id: str | None = None,
        parcel_id: str | None = None,
    ) -> list[EventRecord]:
        """Events with ``event_id > after_id``, oldest first, at most ``limit``."""
        query = "SELECT event_id, time_s, kind, van_id, parcel_id, detail, data FROM events "
        where, args = ["event_id > ?"], [after_id]
        if van_id is not None:
            where.append("van_id = ?")
            args.append(van_id)  # type: ignore[arg-type]
        if parcel_id is not None:
            where.append("parcel_id = ?")
            args.append(parcel_id)  # type: ignore[arg-type]
        query += "WHERE " + " AND ".join(where) + " ORDER BY event_id LIMIT ?"
        args.append(limit)
        try:
            with self._mutex:
                rows = self._db.execute(query, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read events: {exc}") from exc
        return [
            EventRecord(kind, time_s, van, parcel, detail, _DATA.validate_json(data), event_id)
            for event_id, time_s, kind, van, parcel, detail, data in rows
        ]

    def orders_sent(self, van_id: str) -> list[tuple[str, int, str]]:
        """(order_id, order_update_id, source) of every update built for ``van_id``."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT order_id, order_update_id, source FROM orders_sent WHERE van_id = ? "
                "ORDER BY seq",
                (van_id,),
            ).fetchall()
        return [(o, u, s) for o, u, s in rows]

    # -- writing --------------------------------------------------------------------------
    def commit(self, changes: Changes) -> list[EventRecord]:
        """Write ``changes`` in one transaction; returns its events with their ids."""
        if not changes:
            return []
        with self._mutex:
            first_id = self._last_event_id + 1
            events = [
                EventRecord(e.kind, e.time_s, e.van_id, e.parcel_id, e.detail, e.data, first_id + i)
                for i, e in enumerate(changes.events)
            ]
            try:
                with self._transaction() as cur:
                    self._write(cur, changes, events)
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: write failed, nothing was stored: {exc}") from exc
            self._last_event_id += len(events)
            return events

    @staticmethod
    def _write(cur: sqlite3.Cursor, changes: Changes, events: list[EventRecord]) -> None:
        cur.executemany(
            "INSERT INTO plans (plan_id, kind, cause, created_s, day, timezone, document) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (plan_id) DO NOTHING",
            [
                (p.plan_id, p.kind, p.cause, p.created_s, p.day, p.timezone, p.document)
                for p in changes.plans
            ],
        )
        cur.executemany(
            "INSERT INTO parcels (parcel_id, status, holder, record) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (parcel_id) DO UPDATE SET status = excluded.status, "
            "holder = excluded.holder, record = excluded.record",
            [
                (pid, r.status.value, r.holder, _PARCEL.dump_json(r).decode())
                for pid, r in changes.parcels.items()
            ],
        )
        cur.executemany(
            "INSERT INTO vans (van_id, record) VALUES (?, ?) "
            "ON CONFLICT (van_id) DO UPDATE SET record = excluded.record",
            [(van_id, _VAN.dump_json(r).decode()) for van_id, r in changes.vans.items()],
        )
        cur.executemany(
            "INSERT INTO van_states (van_id, seen_s, state) VALUES (?, ?, ?) "
            "ON CONFLICT (van_id) DO UPDATE SET seen_s = excluded.seen_s, state = excluded.state",
            [
                (s.van_id, s.seen_s, s.raw.decode() if s.raw else s.state.model_dump_json())
                for s in changes.van_states.values()
            ],
        )
        cur.executemany(
            "INSERT INTO orders_sent (van_id, order_id, order_update_id, source, payload) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (van_id, order_id, order_update_id) DO NOTHING",
            [
                (van_id, o.order_id, o.order_update_id, source, o.model_dump_json())
                for van_id, source, o in changes.orders_sent
            ],
        )
        cur.executemany(
            "INSERT INTO events (event_id, time_s, kind, van_id, parcel_id, detail, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (e.event_id, e.time_s, e.kind, e.van_id, e.parcel_id, e.detail, json.dumps(e.data))
                for e in events
            ],
        )

    def reserve_message_ids(self, van_id: str, block: int, floor: int = 0) -> int:
        """Reserve ``block`` message ids for ``van_id`` from ``max(reserved + 1, floor)``,
        durably; returns the first one.

        Ids are never reused, even after a crash: the next reservation starts past this block.
        """
        try:
            with self._transaction() as cur:
                row = cur.execute(
                    "SELECT reserved_to FROM message_ids WHERE van_id = ?", (van_id,)
                ).fetchone()
                start = max((row[0] if row else 0) + 1, floor)
                cur.execute(
                    "INSERT INTO message_ids (van_id, reserved_to) VALUES (?, ?) "
                    "ON CONFLICT (van_id) DO UPDATE SET reserved_to = excluded.reserved_to",
                    (van_id, start + block - 1),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot reserve message ids: {exc}") from exc
        return int(start)
