"""The benchmark's output contract: the JSON keys the README and the issue name, the ratios
against the floors and the targets, computed from measured numbers (no timing here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _report() -> Any:
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results() -> dict[str, Any]:
    latency = {"p50_ms": 1.0, "p99_ms": 2.0}
    return {
        "machine": {"cpus": 2},
        "scenarios": {
            "s1": {"p50_ms": 0.75, "p99_ms": 1.5},
            "s2": {"p50_ms": 2.4, "p99_ms": 4.0},
            "s3": latency,
            "s4": {"rps": 3000.0, "p99_ms": 20.0, "server_cpu_us_per_call": 400.0},
            "s5": {"p50_ms": 0.78, "p99_ms": 1.6},
            "s6": {"no_cache": latency, "cache": {**latency, "hit_rate": 0.8}},
        },
        "floors": {
            "grpc": {
                "s1": {"p50_ms": 0.5, "p99_ms": 0.8},
                "s2": {"p50_ms": 0.5, "p99_ms": 1.0},
                "s3": latency,
                "s4": {"rps": 5000.0, "p99_ms": 10.0},
            },
            "redis": {
                "s1": {"p50_ms": 0.1, "p99_ms": 0.2},
                "s2": {"p50_ms": 1.5, "p99_ms": 3.0},
                "s3": latency,
            },
        },
        "peers": {
            "feast": {
                "s1": {"p50_ms": 2.0, "p99_ms": 6.0},
                "s2": {"p50_ms": 40.0, "p99_ms": 80.0},
                "s4": {"rps": 300.0, "p99_ms": 100.0},
            }
        },
        "load": {"values_per_s": 200_000},
        "rss": {"mib": 80.0},
        "startup": {"s": 1.2},
    }


def test_ratios_and_targets_follow_the_issue() -> None:
    ratios, targets = _report().ratios(_results())
    assert ratios == {
        "s1_p50_vs_floor_p50_sum": 1.25,
        "s1_p99_vs_floor_p50_sum": 2.5,
        "s1_p99_vs_floor_p99_sum": 1.5,
        "s2_p50_vs_floor_p50_sum": 1.2,
        "s3_p50_vs_floor_p50_sum": 0.5,
        "s4_rps_vs_floor_grpc": 0.6,
        "s5_p50_vs_s1_p50": 1.04,
        "feast_s1_p99_vs_sidecar": 4.0,
        "feast_s2_p99_vs_sidecar": 20.0,
        "sidecar_s4_rps_vs_feast": 10.0,
    }
    # A bound reached exactly is met; startup over 1 s and s1 p99 over 1.5x are not.
    assert {name: target["met"] for name, target in targets.items()} == {
        "s1_p50": True,
        "s1_p99": False,
        "s2_p50": True,
        "s4_rps": True,
        "s5_p50": True,
        "rss_mib": True,
        "startup_s": False,
        "load_values_per_s": True,
        "vs_feast_s1_p99": True,
        "vs_feast_s2_p99": True,
        "vs_feast_s4_rps": True,
    }


def test_without_feast_there_are_no_peer_targets() -> None:
    results = _results()
    results["peers"] = {}
    ratios, targets = _report().ratios(results)
    assert "sidecar_s4_rps_vs_feast" not in ratios
    assert not [name for name in targets if name.startswith("vs_feast")]


def test_the_committed_results_hold_every_key_and_their_own_ratios() -> None:
    results = json.loads((BENCH / "results" / "latest.json").read_text())
    scenarios = results["scenarios"]
    for name in ("s1", "s2", "s3", "s5"):
        assert set(scenarios[name]) >= {"p50_ms", "p99_ms"}, name
    assert set(scenarios["s4"]) >= {"rps", "p99_ms", "server_cpu_us_per_call", "rounds_rps"}
    assert set(scenarios["s6"]) >= {"no_cache", "cache"}
    assert results["load"]["values_per_s"] > 0
    assert results["rss"]["mib"] > 0 and results["startup"]["s"] > 0
    assert set(results["floors"]) == {"redis", "grpc"}
    assert set(results["machine"]) >= {"cpus", "python", "grpcio", "date", "quick"}
    assert results["machine"]["quick"] is False
    ratios, targets = _report().ratios(results)
    assert results["ratios"] == ratios
    assert {k: t["met"] for k, t in results["targets"].items()} == {
        k: t["met"] for k, t in targets.items()
    }


def test_the_table_shows_every_scenario_and_the_s4_cpu_line() -> None:
    results = _results()
    results["ratios"], results["targets"] = _report().ratios(results)
    text = _report().markdown(results)
    for row in ("| s1: ", "| s2: ", "| s3: ", "| s5: ", "| s6: Zipf entities, no cache", "| s4: "):
        assert row in text
    assert "s4: sidecar 400.0 us of server CPU per call" in text
    assert "| s1_p99 | 2.500 | <= 1.5 | NO |" in text
