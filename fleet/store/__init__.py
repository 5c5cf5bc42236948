"""Persistence: parcels, plans, orders sent, van state and an append-only event log.

:class:`Store` is the seam the controller writes through; :class:`SqliteStore` (WAL) is the
default backend. A store serves one controller and writes each batch of changes in one
transaction, so a crash never leaves half a plan.
"""

from typing import Protocol

from fleet.store.records import (
    TERMINAL_STATUSES,
    Changes,
    EventRecord,
    ParcelRecord,
    ParcelStatus,
    PendingInstant,
    PlanRecord,
    Snapshot,
    VanRecord,
    VanStateRecord,
)
from fleet.store.sqlite import SqliteStore


class Store(Protocol):
    def load(self) -> Snapshot: ...

    def commit(self, changes: Changes) -> list[EventRecord]: ...

    def events(
        self,
        *,
        after_id: int = 0,
        limit: int = 100,
        van_id: str | None = None,
        parcel_id: str | None = None,
    ) -> list[EventRecord]: ...

    def reserve_message_ids(self, van_id: str, block: int, floor: int = 0) -> int: ...

    def close(self) -> None: ...


__all__ = [
    "TERMINAL_STATUSES",
    "Changes",
    "EventRecord",
    "ParcelRecord",
    "ParcelStatus",
    "PendingInstant",
    "PlanRecord",
    "Snapshot",
    "SqliteStore",
    "Store",
    "VanRecord",
    "VanStateRecord",
]
