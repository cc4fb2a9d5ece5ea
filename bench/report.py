"""Ratios against the floors, the targets of issue 4/7, and the Markdown table."""

from __future__ import annotations

from typing import Any


def _sum(results: dict[str, Any], scenario: str, stat: str) -> float:
    floors = results["floors"]
    return float(floors["grpc"][scenario][stat] + floors["redis"][scenario][stat])


def ratios(results: dict[str, Any]) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    s = results["scenarios"]
    r: dict[str, float] = {
        "s1_p50_vs_floor_p50_sum": s["s1"]["p50_ms"] / _sum(results, "s1", "p50_ms"),
        "s1_p99_vs_floor_p50_sum": s["s1"]["p99_ms"] / _sum(results, "s1", "p50_ms"),
        "s1_p99_vs_floor_p99_sum": s["s1"]["p99_ms"] / _sum(results, "s1", "p99_ms"),
        "s2_p50_vs_floor_p50_sum": s["s2"]["p50_ms"] / _sum(results, "s2", "p50_ms"),
        "s3_p50_vs_floor_p50_sum": s["s3"]["p50_ms"] / _sum(results, "s3", "p50_ms"),
        "s4_rps_vs_floor_grpc": s["s4"]["rps"] / results["floors"]["grpc"]["s4"]["rps"],
        "s5_p50_vs_s1_p50": s["s5"]["p50_ms"] / s["s1"]["p50_ms"],
    }
    targets: dict[str, dict[str, Any]] = {
        "s1_p50": {"ratio": r["s1_p50_vs_floor_p50_sum"], "limit": 1.25},
        "s1_p99": {"ratio": r["s1_p99_vs_floor_p50_sum"], "limit": 1.5},
        "s2_p50": {"ratio": r["s2_p50_vs_floor_p50_sum"], "limit": 1.2},
        "s4_rps": {"ratio": r["s4_rps_vs_floor_grpc"], "minimum": 0.6},
        "s5_p50": {"ratio": r["s5_p50_vs_s1_p50"], "limit": 1.05},
        "rss_mib": {"value": results["rss"]["mib"], "limit": 80},
        "startup_s": {"value": results["startup"]["s"], "limit": 1.0},
        "load_values_per_s": {"value": results["load"]["values_per_s"], "minimum": 200_000},
    }
    feast = results.get("peers", {}).get("feast")
    if feast:
        r["feast_s1_p99_vs_sidecar"] = feast["s1"]["p99_ms"] / s["s1"]["p99_ms"]
        r["feast_s2_p99_vs_sidecar"] = feast["s2"]["p99_ms"] / s["s2"]["p99_ms"]
        r["sidecar_s4_rps_vs_feast"] = s["s4"]["rps"] / feast["s4"]["rps"]
        targets["vs_feast_s1_p99"] = {"ratio": r["feast_s1_p99_vs_sidecar"], "minimum": 4}
        targets["vs_feast_s2_p99"] = {"ratio": r["feast_s2_p99_vs_sidecar"], "minimum": 20}
        targets["vs_feast_s4_rps"] = {"ratio": r["sidecar_s4_rps_vs_feast"], "minimum": 10}
    for target in targets.values():
        measured = target.get("ratio", target.get("value"))
        if "limit" in target:
            target["met"] = measured <= target["limit"]
        else:
            target["met"] = measured >= target["minimum"]
    return {k: round(v, 3) for k, v in r.items()}, targets


def _rps(d: dict[str, Any] | None) -> str:
    return f"{d['rps']:,.0f}, {d['p99_ms']:.3f}" if d else "-"


def markdown(results: dict[str, Any]) -> str:
    s = results["scenarios"]
    fg, fr = results["floors"]["grpc"], results["floors"]["redis"]
    feast = results.get("peers", {}).get("feast") or {}

    def lat(d: dict[str, Any] | None) -> str:
        return f"{d['p50_ms']:.3f} / {d['p99_ms']:.3f}" if d else "-"

    rows = [
        "| scenario | sidecar p50 / p99 ms | floor_grpc | floor_redis | Feast |",
        "|---|---|---|---|---|",
        f"| s1: 1 entity x 50 doubles | {lat(s['s1'])} | {lat(fg['s1'])} | {lat(fr['s1'])} "
        f"| {lat(feast.get('s1'))} |",
        f"| s2: 100 entities x 50 doubles | {lat(s['s2'])} | {lat(fg['s2'])} | {lat(fr['s2'])} "
        f"| {lat(feast.get('s2'))} |",
        f"| s3: 1 entity x 10 doubles + 256-float embedding | {lat(s['s3'])} | {lat(fg['s3'])} "
        f"| {lat(fr['s3'])} | - |",
        f"| s5: s1 with 10,000 features, 200 roles | {lat(s['s5'])} | - | - | - |",
        f"| s6: Zipf entities, no cache | {lat(s['s6']['no_cache'])} | - | - | - |",
        f"| s6: Zipf entities, local cache (hit rate {s['s6']['cache']['hit_rate']:.0%}) "
        f"| {lat(s['s6']['cache'])} | - | - | - |",
        f"| s4: 32 callers, {results['machine']['cpus']} workers (requests/s, p99 ms) "
        f"| {_rps(s['s4'])} | {_rps(fg['s4'])} | - | {_rps(feast.get('s4'))} |",
        "",
        _s4_cpu(s["s4"], fg["s4"]),
        "",
        f"load: {results['load']['values_per_s']:,} values/s; "
        f"rss: {results['rss']['mib']} MiB per worker "
        f"({results['rss'].get('anon_mib', '-')} private, "
        f"{results['rss'].get('file_mib', '-')} shared library and file pages; "
        f"PSS {results['rss'].get('pss_mib', '-')}); "
        f"startup: {results['startup']['s']} s",
        "",
        "recording metrics, microseconds per call: "
        + "; ".join(f"{k}: {v}" for k, v in results.get("metrics_cost_us", {}).items()),
        "",
        "| target | measured | bound | met |",
        "|---|---|---|---|",
    ]
    for name, target in results["targets"].items():
        measured = target.get("ratio", target.get("value"))
        bound = f"<= {target['limit']}" if "limit" in target else f">= {target['minimum']}"
        rows.append(f"| {name} | {measured:,.3f} | {bound} | {'yes' if target['met'] else 'NO'} |")
    return "\n".join(rows)


def _s4_cpu(sidecar: dict[str, Any], floor: dict[str, Any]) -> str:
    """Server CPU per call in s4, how the workers shared it, and each round's requests/s."""

    def part(name: str, d: dict[str, Any]) -> str:
        shares = "/".join(f"{share:.0%}" for share in d.get("worker_cpu_shares", []))
        rounds = ", ".join(f"{rps:,.0f}" for rps in d.get("rounds_rps", []))
        return (
            f"{name} {d.get('server_cpu_us_per_call', '-')} us of server CPU per call "
            f"(workers' shares {shares or '-'}; requests/s by round {rounds or '-'})"
        )

    return "s4: " + part("sidecar", sidecar) + "; " + part("floor_grpc", floor)
