"""The soak's pure parts: its schedule scaled to the duration, the verdict from recorded calls and
RSS samples, and the check of an answer against the policy (no processes, no timing)."""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from featuresidecar.v1 import feature_service_pb2 as pb

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Appended, not inserted: the bench's module names must not shadow anything the tests import.
sys.path.append(str(BENCH))

import soak_data  # noqa: E402
import soak_plan  # noqa: E402
import soak_verdict  # noqa: E402
from soak_verdict import Calls, Disruption, Violations  # noqa: E402

OK, DEADLINE, DENIED, SHED, INTERNAL, UNAVAILABLE = 0, 4, 7, 8, 13, 14


def test_durations_take_seconds_minutes_or_a_bare_number() -> None:
    assert [soak_plan.parse_duration(t) for t in ("60s", "10m", "1.5m", "90", " 2m ")] == [
        60.0,
        600.0,
        90.0,
        90.0,
        120.0,
    ]
    with pytest.raises(ValueError, match="use seconds or minutes"):
        soak_plan.parse_duration("10x")


def test_a_one_minute_soak_has_each_disruption_once_the_first_pause_in_the_warm_up() -> None:
    plan = soak_plan.plan(60)
    assert (plan.measure_s, plan.warmup_end, plan.rss_window, plan.slot) == (6.0, 21.0, 5.0, 9.0)
    assert plan.baseline_window == (21.0, 26.0)
    assert plan.final_window == (55.0, 60.0)
    assert [(e.kind, e.start, e.seconds) for e in plan.events] == [
        ("redis_pause", 7.0, 2.0),
        ("bundle_500", 16.0, 3.0),
        ("redis_restart", 25.0, 1.5),
        ("bundle_stall", 34.0, 4.0),
        ("bundle_new_revision", 43.0, 5.0),
    ]


def test_a_ten_minute_soak_repeats_the_cycle_instead_of_lengthening_it() -> None:
    plan = soak_plan.plan(600)
    assert (plan.measure_s, plan.warmup_end, plan.rss_window, plan.slot) == (
        20.0,
        170.0,
        30.0,
        15.6,
    )
    kinds = [e.kind for e in plan.events]
    assert {k: kinds.count(k) for k in soak_plan.CYCLE} == dict.fromkeys(soak_plan.CYCLE, 7)
    # Two whole cycles, and so two Redis pauses, before the warm-up ends at 170 s.
    assert [e.start for e in plan.events if e.kind == "redis_pause"] == [
        21.0,
        99.0,
        177.0,
        255.0,
        333.0,
        411.0,
        489.0,
    ]
    assert plan.events[-1] == soak_plan.Event("bundle_new_revision", 551.4, 5.0)
    # The last slot ends before the recovery and the final RSS window.
    assert plan.events[-1].start + plan.slot == pytest.approx(567.0)


def test_a_soak_shorter_than_a_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="needs at least 60 s"):
        soak_plan.plan(59)


# --- the verdict -------------------------------------------------------------------------------


def _calls(rows: Sequence[tuple[float, float, int, int, int]]) -> Calls:
    """(start s, latency s, code, kind, revision) per call."""
    columns = list(zip(*rows, strict=True))
    return Calls(
        np.array(columns[0], dtype=float),
        np.array(columns[1], dtype=float),
        np.array(columns[2], dtype=np.int8),
        np.array(columns[3], dtype=np.int8),
        np.array(columns[4], dtype=np.int64),
    )


def _steady_rss(baseline: float, final: float) -> list[tuple[float, float]]:
    """One sample a second for 60 s: `baseline` until 30 s, `final` from then on."""
    return [(float(t), baseline if t < 30 else final) for t in range(61)]


def _ok_calls(count: int = 10) -> list[tuple[float, float, int, int, int]]:
    return [(1.0 + i, 0.001, OK, soak_data.ALLOWED_ONLY, 1) for i in range(count)]


def _evaluate(
    calls: Calls, rss: list[tuple[float, float]], disruptions: Sequence[Disruption] = ()
) -> dict[str, object]:
    return soak_verdict.evaluate(
        soak_plan.plan(60), calls, rss, list(disruptions), Violations(), revision_bound=5.0
    )


def test_all_ok_and_flat_memory_pass() -> None:
    result = _evaluate(_calls(_ok_calls()), _steady_rss(100.0, 100.0))
    assert (result["passed"], result["reasons"]) == (True, [])
    assert result["codes"] == {"expected": {"OK": 10}, "unexpected": {}}


def test_an_unexpected_code_fails_the_soak() -> None:
    calls = _calls([*_ok_calls(), (20.0, 0.002, INTERNAL, soak_data.WITH_MASKED, 0)])
    result = _evaluate(calls, _steady_rss(100.0, 100.0))
    assert result["passed"] is False
    assert result["reasons"] == ["unexpected codes: INTERNAL x1"]
    assert result["codes"] == {"expected": {"OK": 10}, "unexpected": {"INTERNAL": 1}}


def test_redis_codes_are_expected_only_while_redis_is_away_and_its_grace() -> None:
    pause = Disruption(soak_plan.REDIS_PAUSE, 20.0, 22.0)
    calls = _calls(
        [
            *_ok_calls(),
            (21.0, 0.5, UNAVAILABLE, soak_data.ALLOWED_ONLY, 0),  # during the pause
            (21.5, 0.001, SHED, soak_data.ALLOWED_ONLY, 0),  # shed: calls piled up
            (23.5, 0.5, DEADLINE, soak_data.ALLOWED_ONLY, 0),  # in the grace period
            (30.0, 0.5, UNAVAILABLE, soak_data.ALLOWED_ONLY, 0),  # long after
            (31.0, 0.001, SHED, soak_data.ALLOWED_ONLY, 0),  # shed with Redis answering
        ]
    )
    result = _evaluate(calls, _steady_rss(100.0, 100.0), [pause])
    assert result["codes"] == {
        "expected": {"OK": 10, "DEADLINE_EXCEEDED": 1, "RESOURCE_EXHAUSTED": 1, "UNAVAILABLE": 1},
        "unexpected": {"RESOURCE_EXHAUSTED": 1, "UNAVAILABLE": 1},
    }
    assert pause.effect == 2
    assert result["reasons"] == ["unexpected codes: RESOURCE_EXHAUSTED x1, UNAVAILABLE x1"]


def test_permission_denied_is_expected_only_for_requests_that_ask_the_denied_feature() -> None:
    calls = _calls(
        [
            *_ok_calls(),
            (20.0, 0.001, DENIED, soak_data.STRICT_DENIED, 0),
            (21.0, 0.001, DENIED, soak_data.ALLOWED_ONLY, 0),
            (22.0, 0.001, OK, soak_data.STRICT_DENIED, 1),
        ]
    )
    result = _evaluate(calls, _steady_rss(100.0, 100.0))
    assert result["codes"] == {
        "expected": {"OK": 10, "PERMISSION_DENIED": 1},
        "unexpected": {"OK": 1, "PERMISSION_DENIED": 1},
    }


def test_a_disruption_that_changed_nothing_fails_the_soak() -> None:
    result = _evaluate(
        _calls(_ok_calls()),
        _steady_rss(100.0, 100.0),
        [Disruption(soak_plan.REDIS_RESTART, 40.0, 41.5)],
    )
    assert result["reasons"] == ["redis_restart at 40.0 s had no visible effect"]


def test_rss_growth_of_6_percent_fails() -> None:
    result = _evaluate(_calls(_ok_calls()), _steady_rss(100.0, 106.0))
    assert result["rss"] == {
        "baseline_window_s": [21.0, 26.0],
        "final_window_s": [55.0, 60.0],
        "baseline_mib": 100.0,
        "final_mib": 106.0,
        "limit": 1.05,
        "growth": 0.06,
        "passed": False,
    }
    assert result["reasons"] == ["RSS grew from 100.0 to 106.0 MiB (limit 5%)"]


def test_rss_growth_of_4_percent_passes() -> None:
    result = _evaluate(_calls(_ok_calls()), _steady_rss(100.0, 104.0))
    assert (result["rss"]["growth"], result["rss"]["passed"]) == (0.04, True)  # type: ignore[index]
    assert (result["passed"], result["reasons"]) == (True, [])


def test_rss_is_the_floor_of_each_window() -> None:
    rss = _steady_rss(100.0, 100.0)
    rss[23] = (23.0, 400.0)  # a spike in the baseline window does not move it
    for t in (56, 57, 58, 59):  # nor one of four seconds at the end (a host stall)
        rss[t] = (float(t), 108.0)
    result = _evaluate(_calls(_ok_calls()), rss)
    assert (result["rss"]["baseline_mib"], result["rss"]["final_mib"]) == (100.0, 100.0)  # type: ignore[index]
    assert result["passed"] is True


def test_policy_violations_fail_the_soak() -> None:
    result = soak_verdict.evaluate(
        soak_plan.plan(60),
        _calls(_ok_calls()),
        _steady_rss(100.0, 100.0),
        [],
        Violations({"secret_in_answer": 2, "wrong_value": 1}),
        revision_bound=5.0,
    )
    assert result["reasons"] == [
        "answers against the policy: {'secret_in_answer': 2}",
        "answers wrong data: {'wrong_value': 1}",
    ]


def test_the_sidecar_must_move_to_a_new_revision_within_the_bound() -> None:
    published = Disruption(soak_plan.BUNDLE_NEW_REVISION, 30.0, 30.0, revision=2)
    calls = _calls(
        [
            (29.0, 0.001, OK, soak_data.ALLOWED_ONLY, 1),
            (30.5, 0.3, OK, soak_data.ALLOWED_ONLY, 2),  # answered at 30.8
            (31.0, 0.001, OK, soak_data.ALLOWED_ONLY, 1),  # in flight around the swap: fine
            (36.0, 0.001, OK, soak_data.ALLOWED_ONLY, 1),  # past the 5 s bound: not fine
        ]
    )
    result = _evaluate(calls, _steady_rss(100.0, 100.0), [published])
    assert result["revisions"] == [
        {
            "revision": 2,
            "published_s": 30.0,
            "first_answer_s": 30.8,
            "lag_s": 0.8,
            "older_answers_after_bound": 1,
            "passed": False,
        }
    ]
    assert result["reasons"] == [
        "revision 2: first answer after 0.8 s (bound 5 s), 1 older answers after the bound"
    ]


# --- the answer check --------------------------------------------------------------------------

KNOWN, UNKNOWN = 7, soak_data.USERS + 3


def _answer(expected: soak_data.Expected, email_values: Sequence[str]) -> bytes:
    """The answer the policy asks for to rows [KNOWN, UNKNOWN], except that the masked column
    holds `email_values`."""
    response = pb.GetFeaturesResponse(
        feature_names=list(expected.features), policy_revision=3, row_count=2
    )
    for ref in expected.features:
        column = response.columns.add()
        column.statuses = expected.statuses[ref]
        if ref in soak_data.NUMERIC:
            value = {"stats:clicks_7d": soak_data.clicks, "stats:ctr": soak_data.ctr}.get(
                ref, soak_data.spend
            )
            column.data = struct.pack(soak_data.NUMERIC[ref], value(KNOWN)) + bytes(8)
        elif ref == soak_data.COUNTRY:
            column.strings.extend([soak_data.country(KNOWN), ""])
        elif ref == soak_data.MASKED:
            column.mask = pb.MASK_HASH
            column.strings.extend(email_values)
        else:
            column.strings.extend(["", ""])
    return response.SerializeToString()


def test_an_answer_as_the_policy_says_passes_the_check() -> None:
    expected = soak_data.expected_for(soak_data.PARTIAL_DENIED, [KNOWN, UNKNOWN])
    assert expected.features[-2:] == (soak_data.MASKED, soak_data.DENIED)
    assert soak_data.check(expected, _answer(expected, ["0123456789abcdef" * 2, ""])) == (
        3,
        "",
        "",
    )


def test_a_masked_value_in_the_clear_is_a_policy_violation() -> None:
    expected = soak_data.expected_for(soak_data.WITH_MASKED, [KNOWN, UNKNOWN])
    leaked = _answer(expected, [soak_data.email(KNOWN), ""])
    assert soak_data.check(expected, leaked) == (
        3,
        "secret_in_answer",
        "'user7@soak.example' is in the answer",
    )


def test_an_answer_to_a_request_for_the_denied_feature_is_a_policy_violation() -> None:
    expected = soak_data.expected_for(soak_data.STRICT_DENIED, [KNOWN])
    answer = pb.GetFeaturesResponse(policy_revision=1).SerializeToString()
    assert soak_data.check(expected, answer) == (
        1,
        "denied_call_answered",
        "a request for the denied feature got OK",
    )
