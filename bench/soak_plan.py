"""The soak's timeline, scaled to its duration (pure: numbers in, schedule out).

    0 ........ measure_s ........... warmup_end ... +rss_window ........ -rss_window-3s ..... end
    closed loop:  open loop at half the measured maximum, for the rest of the run
    the maximum   disruptions, in cycles of five kinds, one per slot, until -rss_window-3s
                  (warm-up)            RSS baseline                     recovery  RSS at the end

The disruptions begin right after the measurement; a longer run gets more cycles, not longer
disruptions, so a 60-second run still has each kind once. The warm-up is the measurement phase
plus 25 % of the run, so it holds at least the first Redis pause (a 10-minute run: two whole
cycles). The calls that pile up while Redis does not answer are the run's largest burst, and the
memory a burst takes stays with the process as its high-water mark: one 10-minute run stepped
+7.5 MiB at its first pause, another +2.3, +0.4, +0.3, +0.5, +0.5 and 0 MiB at its pauses after
the first, while a run with a pause every 8 s stayed at 88-90 MiB through 26 pauses. Taking the
baseline after the first pauses makes the RSS check look for growth that goes on, not for those
first steps. The baseline window may hold a disruption; its median does not follow the few
seconds one moves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REDIS_PAUSE = "redis_pause"
REDIS_RESTART = "redis_restart"
BUNDLE_500 = "bundle_500"
BUNDLE_STALL = "bundle_stall"
BUNDLE_NEW_REVISION = "bundle_new_revision"
# Redis and bundle kinds alternate so that the bundle poller's backoff from one bundle
# disruption has run out before the next one begins.
CYCLE = (REDIS_PAUSE, BUNDLE_500, REDIS_RESTART, BUNDLE_STALL, BUNDLE_NEW_REVISION)
REDIS_AWAY = frozenset({REDIS_PAUSE, REDIS_RESTART})

# The warm-up is the measurement phase plus this fraction of the duration.
WARMUP_FRACTION = 0.25
TARGET_SLOT_S = 15.0
# Quiet seconds between the last disruption's slot and the final RSS window.
RECOVERY_S = 3.0
# Quiet seconds a slot keeps after its disruption ends.
SLOT_MARGIN_S = 2.0
# The first disruption starts this long after the measurement.
FIRST_DELAY_S = 1.0
# The first Redis pause must be over this long (the sidecar reconnects) before the warm-up ends.
PAUSE_MARGIN_S = 3.0
MIN_DURATION_S = 60.0

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'60s', '10m', '1.5m', '90' (seconds) -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"duration {text!r}: use seconds or minutes, e.g. 60s or 10m")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Timing:
    """The sidecar settings the schedule depends on."""

    redis_timeout: float = 0.5
    bundle_timeout: float = 2.0
    poll_interval: float = 1.0

    def event_seconds(self, kind: str) -> float:
        """How long a disruption lasts; for a new revision, how long the sidecar has to move."""
        if kind == REDIS_PAUSE:
            return max(1.5, 4 * self.redis_timeout)
        if kind == REDIS_RESTART:
            return 1.5  # down, before the restart
        if kind == BUNDLE_500:
            return 3 * self.poll_interval
        if kind == BUNDLE_STALL:
            return self.bundle_timeout + 2 * self.poll_interval
        if kind == BUNDLE_NEW_REVISION:
            return max(5.0, 4 * self.poll_interval)
        raise ValueError(f"unknown disruption {kind!r}")


@dataclass(frozen=True)
class Event:
    kind: str
    start: float
    seconds: float


@dataclass(frozen=True)
class Plan:
    duration: float
    measure_s: float
    warmup_end: float
    rss_window: float
    slot: float
    events: tuple[Event, ...]

    @property
    def baseline_window(self) -> tuple[float, float]:
        return self.warmup_end, self.warmup_end + self.rss_window

    @property
    def final_window(self) -> tuple[float, float]:
        return self.duration - self.rss_window, self.duration


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def plan(duration: float, timing: Timing = Timing()) -> Plan:
    if duration < MIN_DURATION_S:
        raise ValueError(
            f"a soak of {duration:g} s is too short: it needs at least {MIN_DURATION_S:g} s "
            "for the measurement, the warm-up and each disruption once"
        )
    measure_s = round(_clamp(0.1 * duration, 5.0, 20.0), 3)
    warmup_end = round(measure_s + WARMUP_FRACTION * duration, 3)
    rss_window = round(_clamp(0.08 * duration, 5.0, 30.0), 3)
    first = measure_s + FIRST_DELAY_S
    available = duration - rss_window - RECOVERY_S - first
    cycles = max(1, int(available // (len(CYCLE) * TARGET_SLOT_S)))
    slot = available / (cycles * len(CYCLE))
    longest = max(timing.event_seconds(kind) for kind in CYCLE)
    if slot < longest + SLOT_MARGIN_S:
        raise ValueError(
            f"a soak of {duration:g} s leaves {slot:.1f} s per disruption; "
            f"{longest + SLOT_MARGIN_S:g} s are needed: make it longer"
        )
    events = tuple(
        Event(kind, round(first + i * slot, 3), timing.event_seconds(kind))
        for i, kind in enumerate(CYCLE * cycles)
    )
    # CYCLE begins with a Redis pause: the warm-up must hold it.
    if first + timing.event_seconds(REDIS_PAUSE) + PAUSE_MARGIN_S > warmup_end:
        raise ValueError(f"a soak of {duration:g} s has no room for a Redis pause in its warm-up")
    return Plan(duration, measure_s, warmup_end, rss_window, round(slot, 3), events)
