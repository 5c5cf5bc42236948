"""Line health: the faults a link counted (:class:`LinkStats`), told to people at a bounded rate.

Pure: the caller passes the time. :class:`HealthLog` turns growing counters into one log line
at most every ``interval_s`` — the first fault after a quiet spell at once, the rest summed
up — so a noisy or hostile line cannot flood the log, and nothing counted goes unsaid.
:func:`fault_counts` and :func:`describe_counts` are what ``firmware-bridge monitor`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware_bridge.link.core import LinkStats
from firmware_bridge.wire import NakReason

# (LinkStats field, how a person reads it), in the order they are told
COUNTERS: tuple[tuple[str, str], ...] = (
    ("crc_errors", "CRC errors"),
    ("garbage", "garbage (bad COBS, short, oversize)"),
    ("refused_rx", "frames refused (good CRC, unusable)"),
    ("refused_tx", "our frames refused by the peer"),
    ("naks_tx", "NAKs sent"),
    ("naks_rx", "NAKs received"),
    ("version_mismatches", "HELLOs of another protocol version"),
    ("unsessioned_rx", "frames ignored without a session"),
)
# counted, shown by the monitor, but not logged as a warning: a few arrive at every handshake
# (the peer's heartbeats before its HELLO was answered)
QUIET = frozenset({"unsessioned_rx"})


def fault_counts(stats: LinkStats) -> dict[str, int]:
    """The fault counters of ``stats`` by field name, NAKs also by reason
    (``naks_tx.CRC``, ``naks_rx.BAD_VERSION``, …)."""
    out = {name: int(getattr(stats, name)) for name, _ in COUNTERS}
    for prefix, by_reason in (
        ("naks_tx", stats.naks_tx_by_reason),
        ("naks_rx", stats.naks_rx_by_reason),
    ):
        for reason in NakReason:
            if by_reason.get(reason):
                out[f"{prefix}.{reason.name}"] = by_reason[reason]
    return out


def describe_counts(counts: dict[str, int], *, skip_zero: bool = True) -> str:
    """``3 CRC errors, 2 NAKs sent (CRC 2), …`` for the counters in ``counts``."""
    parts: list[str] = []
    for name, label in COUNTERS:
        value = counts.get(name, 0)
        if skip_zero and not value:
            continue
        reasons = [
            f"{reason.name} {counts[key]}"
            for reason in NakReason
            if counts.get(key := f"{name}.{reason.name}")
        ]
        parts.append(f"{label} {value}" + (f" ({', '.join(reasons)})" if reasons else ""))
    return ", ".join(parts) if parts else "none"


@dataclass(slots=True)
class HealthLog:
    """Rate-limited reporting of a link's fault counters."""

    interval_s: float = 10.0
    _told: dict[str, int] = field(default_factory=dict)
    _told_at: float = float("-inf")

    def check(self, stats: LinkStats, now: float) -> str | None:
        """A line to log now (the counters grown since the last one), or None: nothing new
        worth a warning, or the last line was less than ``interval_s`` ago (the growth waits
        and is told then)."""
        counts = fault_counts(stats)
        grown = {k: v - self._told.get(k, 0) for k, v in counts.items()}
        if not any(v for k, v in grown.items() if k.split(".")[0] not in QUIET):
            return None
        if now - self._told_at < self.interval_s:
            return None
        first = self._told_at == float("-inf")
        since = "" if first else f" in the last {now - self._told_at:.0f} s"
        self._told = counts
        self._told_at = now
        return (
            f"line faults{since}: {describe_counts(grown)}; since start: {describe_counts(counts)}"
        )
