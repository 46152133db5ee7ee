"""Optional rate limits (``limits.rate``): requests per second per source address, checked
before authentication so a flood of bad signatures is cut off before costing a
verification, and per principal, checked once the caller is known.

Each key has a token bucket: ``rate`` tokens a second, holding at most ``burst_s`` seconds'
worth. Memory stays bounded whatever the number of keys (a spoofed-source flood, a fleet
of principals): a bucket that has filled up again says nothing a fresh bucket would not,
so full buckets are dropped whenever the table grows past ``max_keys``; if it is still
past that, those seen least recently are dropped too. That errs only towards letting a
caller in, and never the one flooding now: its bucket was just used.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Limits", "RateLimiter"]


class RateLimiter:
    __slots__ = ("_buckets", "_capacity", "_clock", "_max_keys", "_rate")

    def __init__(
        self,
        rate: float,
        *,
        burst_s: float = 2.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate * burst_s)  # a burst holds at least one request
        self._max_keys = max_keys
        self._clock = clock
        # key -> (tokens, when they were counted), least recently seen first.
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        """Take a token from ``key``'s bucket: False when it is empty (throttle the call)."""
        now = self._clock()
        found = self._buckets.pop(key, None)  # put back last: recently seen
        if found is None:
            if len(self._buckets) >= self._max_keys:
                self._prune(now)
            tokens = self._capacity
        else:
            held, since = found
            tokens = min(self._capacity, held + (now - since) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        rate, capacity = self._rate, self._capacity
        self._buckets = {
            key: (tokens, since)
            for key, (tokens, since) in self._buckets.items()
            if tokens + (now - since) * rate < capacity
        }
        # Amortised: the next prune is at least max_keys / 2 new keys away.
        for key in list(self._buckets)[: max(0, len(self._buckets) - self._max_keys // 2)]:
            del self._buckets[key]


class Limits:
    """The data plane's rate limits, either of which may be off (None)."""

    __slots__ = ("per_principal", "per_source")

    def __init__(
        self, *, per_source: RateLimiter | None = None, per_principal: RateLimiter | None = None
    ) -> None:
        self.per_source = per_source
        self.per_principal = per_principal

    @classmethod
    def of(
        cls, per_source: float | None, per_principal: float | None, *, burst_s: float
    ) -> Limits | None:
        """The limits configured, or None when there are none (nothing to check per call)."""
        if per_source is None and per_principal is None:
            return None
        return cls(
            per_source=None if per_source is None else RateLimiter(per_source, burst_s=burst_s),
            per_principal=None
            if per_principal is None
            else RateLimiter(per_principal, burst_s=burst_s),
        )
