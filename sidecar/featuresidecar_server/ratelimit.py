"""Token buckets per principal (pure: the clock is passed in)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float
    rate: float
    burst: float


class RateLimiter:
    def __init__(self, clock: Callable[[], float], max_principals: int = 100_000) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max = max_principals

    def acquire(self, principal: str, rate: float, burst: float | None = None) -> float:
        """0.0 when a request may go now, else the seconds until one token is back."""
        now = self._clock()
        capacity = float(burst) if burst else max(rate, 1.0)
        bucket = self._buckets.get(principal)
        if bucket is None or bucket.rate != rate or bucket.burst != capacity:
            bucket = _Bucket(capacity, now, rate, capacity)
            self._buckets[principal] = bucket
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(principal)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate
