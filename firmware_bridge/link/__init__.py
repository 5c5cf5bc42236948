"""The serial link: a sans-I/O protocol core, byte transports, and the asyncio adapter."""

from firmware_bridge.link.core import (
    BadFrame,
    Delivered,
    Discarded,
    EstopAcked,
    LinkConfig,
    LinkCore,
    LinkDown,
    LinkEvent,
    LinkStats,
    LinkUp,
    Received,
    Rejected,
    VersionMismatch,
    default_window,
)
from firmware_bridge.link.health import HealthLog, describe_counts, fault_counts
from firmware_bridge.link.serial_link import SerialLink, url_opener
from firmware_bridge.link.transport import (
    FdTransport,
    Listener,
    PtyPair,
    Transport,
    open_serial_url,
)

__all__ = [
    "BadFrame",
    "Delivered",
    "Discarded",
    "EstopAcked",
    "FdTransport",
    "HealthLog",
    "LinkConfig",
    "LinkCore",
    "LinkDown",
    "LinkEvent",
    "LinkStats",
    "LinkUp",
    "Listener",
    "PtyPair",
    "Received",
    "Rejected",
    "SerialLink",
    "Transport",
    "VersionMismatch",
    "default_window",
    "describe_counts",
    "fault_counts",
    "open_serial_url",
    "url_opener",
]
