"""The soak's verdict from what was recorded (pure: arrays and records in, numbers and reasons out).

Pass: every gRPC code was one the moment allows (OK; UNAVAILABLE or DEADLINE_EXCEEDED only while
Redis was away, plus a grace period to reconnect, and RESOURCE_EXHAUSTED then too: calls pile up
while Redis does not answer, and past --max-inflight the sidecar sheds them; PERMISSION_DENIED
only for the requests that ask the denied feature without allow_partial), no OK answer broke
the policy or the loaded data, the sidecar moved to each new bundle revision in time and never
served an older one after that, every disruption had a visible effect, and the sidecar's RSS at
the end is under 1.05 x its RSS just after the warm-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soak_data
from soak_plan import REDIS_AWAY, Plan

# gRPC status code numbers (grpc.StatusCode values), named here to keep this module pure.
CODE_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
OK, DEADLINE_EXCEEDED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE = 0, 4, 7, 8, 14
# What a caller may get while Redis is away: its failure, or the load shedding it causes.
REDIS_AWAY_CODES = (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)

RSS_GROWTH_LIMIT = 0.05
# After Redis returns, the sidecar's pool reconnects and its health check turns green again:
# calls in this window may still fail with the Redis codes.
REDIS_GRACE_S = 2.0
P99_WINDOW_S = 5.0


@dataclass
class Calls:
    """One entry per call: scheduled start (s from t0), latency (s), gRPC code number, request
    kind (soak_data), policy revision of an OK answer (0 otherwise)."""

    start: np.ndarray
    latency: np.ndarray
    code: np.ndarray
    kind: np.ndarray
    revision: np.ndarray

    @property
    def end(self) -> np.ndarray:
        return np.asarray(self.start + self.latency)


@dataclass
class Disruption:
    """What happened, at the times it really happened (s from t0); `effect` counts what shows
    the disruption bit (filled in by `evaluate` for Redis kinds)."""

    kind: str
    start: float
    end: float
    effect: int = 0
    effect_what: str = ""
    revision: int = 0
    # What else was seen (the keys a restarted Redis holds again).
    note: str = ""


@dataclass
class Violations:
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)


def code_name(number: int) -> str:
    return CODE_NAMES.get(int(number), f"CODE_{int(number)}")


def _overlaps(calls: Calls, windows: Sequence[tuple[float, float]]) -> np.ndarray:
    inside = np.zeros(len(calls.start), dtype=bool)
    end = calls.end
    for low, high in windows:
        inside |= (calls.start < high) & (end > low)
    return inside


def expected_codes(calls: Calls, disruptions: Sequence[Disruption]) -> np.ndarray:
    """Per call: whether its code is one the moment allows."""
    away = [(d.start, d.end + REDIS_GRACE_S) for d in disruptions if d.kind in REDIS_AWAY]
    redis_codes = np.isin(calls.code, REDIS_AWAY_CODES) & _overlaps(calls, away)
    strict = calls.kind == soak_data.STRICT_DENIED
    wanted = np.where(strict, calls.code == PERMISSION_DENIED, calls.code == OK)
    return np.asarray(wanted | redis_codes)


def codes_by_expectation(calls: Calls, expected: np.ndarray) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {"expected": {}, "unexpected": {}}
    for label, mask in (("expected", expected), ("unexpected", ~expected)):
        numbers, counts = np.unique(calls.code[mask], return_counts=True)
        out[label] = {code_name(n): int(c) for n, c in zip(numbers, counts, strict=True)}
    return out


def p99_ms(values: np.ndarray) -> float | None:
    return round(float(np.percentile(values, 99)) * 1000, 3) if len(values) else None


def windows(
    calls: Calls, duration: float, expected: np.ndarray, width: float = P99_WINDOW_S
) -> list[dict[str, Any]]:
    """p99 latency (every call, and OK calls), codes and unexpected codes per window of
    `width` seconds."""
    out = []
    for low in np.arange(0.0, duration, width):
        high = min(duration, low + width)
        inside = (calls.start >= low) & (calls.start < high)
        numbers, counts = np.unique(calls.code[inside], return_counts=True)
        ok = inside & (calls.code == OK)
        out.append(
            {
                "t": round(float(low), 3),
                "calls": int(inside.sum()),
                "p99_ms": p99_ms(calls.latency[inside]),
                "p99_ok_ms": p99_ms(calls.latency[ok]),
                "codes": {code_name(n): int(c) for n, c in zip(numbers, counts, strict=True)},
                "unexpected": int((inside & ~expected).sum()),
            }
        )
    return out


def rss_check(samples: Sequence[tuple[float, float]], plan: Plan) -> dict[str, Any]:
    """RSS (MiB) just after the warm-up and at the end: the lowest sample of each window.

    The floor, not the median: a host stall piles up calls for a few seconds and lifts RSS
    for as long (seen once in a 60 s run: 81 -> 90 -> 83 MiB within 3 s), which is not growth;
    memory that leaks lifts every sample, the floor included."""
    times = np.array([t for t, _ in samples], dtype=float)
    values = np.array([v for _, v in samples], dtype=float)

    def floor(window: tuple[float, float]) -> float | None:
        inside = (times >= window[0]) & (times <= window[1])
        return round(float(values[inside].min()), 2) if inside.any() else None

    baseline = floor(plan.baseline_window)
    final = floor(plan.final_window)
    result: dict[str, Any] = {
        "baseline_window_s": list(plan.baseline_window),
        "final_window_s": list(plan.final_window),
        "baseline_mib": baseline,
        "final_mib": final,
        "limit": 1 + RSS_GROWTH_LIMIT,
        "growth": None,
        "passed": False,
    }
    if baseline and final is not None:
        result["growth"] = round(final / baseline - 1, 4)
        result["passed"] = final < (1 + RSS_GROWTH_LIMIT) * baseline
    return result


def revision_check(
    calls: Calls, disruptions: Sequence[Disruption], bound: float
) -> list[dict[str, Any]]:
    """For each published revision: when an answer first carried it, and whether any call
    started more than `bound` seconds after publishing still got an older one."""
    ok = calls.code == OK
    out = []
    for event in disruptions:
        if event.revision == 0:
            continue
        newer = ok & (calls.revision >= event.revision) & (calls.end >= event.start)
        first = float(calls.end[newer].min()) if newer.any() else None
        late = ok & (calls.start > event.start + bound) & (calls.revision < event.revision)
        lag = None if first is None else round(first - event.start, 3)
        out.append(
            {
                "revision": event.revision,
                "published_s": round(event.start, 3),
                "first_answer_s": None if first is None else round(first, 3),
                "lag_s": lag,
                "older_answers_after_bound": int(late.sum()),
                "passed": lag is not None and lag <= bound and not late.any(),
            }
        )
    return out


def _redis_effects(calls: Calls, disruptions: Sequence[Disruption]) -> None:
    failing = np.isin(calls.code, (UNAVAILABLE, DEADLINE_EXCEEDED))
    for event in disruptions:
        if event.kind in REDIS_AWAY:
            inside = _overlaps(calls, [(event.start, event.end + REDIS_GRACE_S)])
            event.effect = int((failing & inside).sum())
            event.effect_what = "calls that failed with UNAVAILABLE or DEADLINE_EXCEEDED"


def evaluate(
    plan: Plan,
    calls: Calls,
    rss: Sequence[tuple[float, float]],
    disruptions: Sequence[Disruption],
    violations: Violations,
    revision_bound: float,
) -> dict[str, Any]:
    """Everything the JSON reports about the run, with `passed` and the reasons it did not."""
    expected = expected_codes(calls, disruptions)
    codes = codes_by_expectation(calls, expected)
    _redis_effects(calls, disruptions)
    memory = rss_check(rss, plan)
    revisions = revision_check(calls, disruptions, revision_bound)
    reasons = []
    unexpected = codes["unexpected"]
    if unexpected:
        listed = ", ".join(f"{name} x{count}" for name, count in sorted(unexpected.items()))
        reasons.append(f"unexpected codes: {listed}")
    for group, names in (
        ("against the policy", soak_data.POLICY_VIOLATIONS),
        ("wrong data", soak_data.DATA_VIOLATIONS),
    ):
        found = {n: violations.counts[n] for n in names if violations.counts.get(n)}
        if found:
            reasons.append(f"answers {group}: {found}")
    if not memory["passed"]:
        reasons.append(
            f"RSS grew from {memory['baseline_mib']} to {memory['final_mib']} MiB "
            f"(limit {RSS_GROWTH_LIMIT:.0%})"
        )
    for check in revisions:
        if not check["passed"]:
            reasons.append(
                f"revision {check['revision']}: first answer after {check['lag_s']} s "
                f"(bound {revision_bound:g} s), {check['older_answers_after_bound']} older "
                "answers after the bound"
            )
    for event in disruptions:
        if event.revision == 0 and event.effect == 0:
            reasons.append(f"{event.kind} at {event.start:.1f} s had no visible effect")
    if not len(calls.start):
        reasons.append("no calls were made")
    return {
        "passed": not reasons,
        "reasons": reasons,
        "calls": len(calls.start),
        "codes": codes,
        "violations": dict(violations.counts),
        "violation_examples": violations.examples,
        "rss": memory,
        "revisions": revisions,
        "windows": windows(calls, plan.duration, expected),
    }


def disruption_rows(disruptions: Sequence[Disruption]) -> list[dict[str, Any]]:
    return [
        {
            "kind": d.kind,
            "start_s": round(d.start, 3),
            "end_s": round(d.end, 3),
            "effect": d.effect,
            "effect_what": d.effect_what,
            **({"note": d.note} if d.note else {}),
            **({"revision": d.revision} if d.revision else {}),
        }
        for d in disruptions
    ]


def merge_counts(into: dict[str, int], more: Mapping[str, int]) -> None:
    for name, count in more.items():
        into[name] = into.get(name, 0) + count
