"""Per-van rate limiting: a flooding van is throttled and reported, the others go on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at_s: float
    dropped: int = 0


class RateLimiter:
    """A token bucket per van: ``rate_per_s`` sustained, ``burst`` at once (time passed in)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str, now_s: float) -> bool:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(self.burst, now_s)
        elapsed = now_s - b.at_s
        if elapsed > 0:
            b.tokens = min(self.burst, b.tokens + elapsed * self.rate_per_s)
            b.at_s = now_s
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        b.dropped += 1
        return False

    def take_dropped(self) -> dict[str, int]:
        """Messages dropped per key since the last call (keys with none are left out)."""
        out: dict[str, int] = {}
        for key, b in self._buckets.items():
            if b.dropped:
                out[key] = b.dropped
                b.dropped = 0
        return out
