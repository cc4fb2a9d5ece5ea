"""When to try a failed call again: the retry value, and one call's attempts (clock passed in)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from ._errors import FeatureSidecarError, from_rpc_error, retry_after


def _default_codes() -> tuple[grpc.StatusCode, ...]:
    return (grpc.StatusCode.UNAVAILABLE,)


@dataclass(frozen=True)
class Retry:
    """Bounded retries inside the call's one deadline.

    `attempts` counts every try, the first included (1 turns retries off). Before try n+1 the
    client sleeps `initial_backoff * multiplier**(n-1)`, at most `max_backoff`, or longer when the
    sidecar sent a `retry-after-ms` hint. A retry whose sleep would reach the deadline is not
    made: the call fails at once with the last error instead of waiting for nothing.
    """

    attempts: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0
    codes: Iterable[grpc.StatusCode] = field(default_factory=_default_codes)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"Retry.attempts: expected an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"Retry.attempts: must be at least 1, got {self.attempts}")
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ValueError(f"Retry.{name}: must be a finite number >= 0, got {value!r}")
        if not _finite(self.multiplier) or self.multiplier < 1:
            raise ValueError(
                f"Retry.multiplier: must be a finite number >= 1, got {self.multiplier!r}"
            )
        if self.max_backoff < self.initial_backoff:
            raise ValueError(
                f"Retry.max_backoff ({self.max_backoff}) is below initial_backoff "
                f"({self.initial_backoff})"
            )
        codes = tuple(self.codes)
        for code in codes:
            if not isinstance(code, grpc.StatusCode):
                raise TypeError(f"Retry.codes: {code!r} is not a grpc.StatusCode")
        # A frozen dataclass: normalise the iterable once so the value is hashable and reusable.
        object.__setattr__(self, "codes", codes)

    def backoff(self, retry: int) -> float:
        """Seconds to sleep before retry number `retry` (1 = the second attempt)."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, got {retry}")
        # Capped before the power can overflow for large retry numbers.
        exponent = min(retry - 1, 1024)
        try:
            delay = self.initial_backoff * self.multiplier**exponent
        except OverflowError:
            return self.max_backoff
        return min(delay, self.max_backoff)

    def next_delay(
        self, attempts_made: int, error: FeatureSidecarError, remaining: float
    ) -> float | None:
        """Seconds to sleep before the next attempt, or None to give up with `error`."""
        if attempts_made >= self.attempts or error.code not in tuple(self.codes):
            return None
        delay = self.backoff(attempts_made)
        hint = retry_after(error.trailing_metadata)
        if hint is not None:
            delay = max(delay, hint)
        if delay >= remaining:
            return None
        return delay


class Attempts:
    """The attempts of one call inside its one deadline (the clock is passed in)."""

    def __init__(
        self, retry: Retry, deadline: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._retry = retry
        self._clock = clock
        self._end = clock() + deadline
        self.made = 0
        self._last: tuple[FeatureSidecarError, BaseException] | None = None

    def timeout(self) -> float:
        """Seconds the next attempt may take: all that is left of the deadline.

        When a backoff sleep overslept the deadline, the last error is raised instead of an
        attempt that could only time out.
        """
        remaining = self._end - self._clock()
        if remaining <= 0 and self._last is not None:
            error, cause = self._last
            raise error from cause
        self.made += 1
        return max(remaining, 0.0)

    def failed(self, exc: grpc.RpcError) -> float:
        """Seconds to sleep before the next attempt; raises the typed error when giving up."""
        error = from_rpc_error(exc, self.made)
        delay = self._retry.next_delay(self.made, error, self._end - self._clock())
        if delay is None:
            raise error from exc
        self._last = (error, exc)
        return delay


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
