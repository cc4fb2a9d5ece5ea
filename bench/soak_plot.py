"""The soak's picture: p99 latency, RSS and non-OK codes over time, disruptions shaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a CI machine

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

COLORS = {
    "redis_pause": "tab:red",
    "redis_restart": "tab:purple",
    "bundle_500": "tab:orange",
    "bundle_stall": "tab:olive",
    "bundle_new_revision": "tab:green",
}
CODE_COLORS = {
    "UNAVAILABLE": "tab:red",
    "DEADLINE_EXCEEDED": "tab:orange",
    "PERMISSION_DENIED": "tab:gray",
}


def plot(result: dict[str, Any], path: Path) -> None:
    windows = result["windows"]
    width = windows[1]["t"] - windows[0]["t"] if len(windows) > 1 else 5.0
    times = [w["t"] + width / 2 for w in windows]
    fig, (latency, memory, errors) = plt.subplots(
        3, 1, figsize=(12, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    for axis in (latency, memory, errors):
        _shade(axis, result)

    latency.plot(times, [w["p99_ms"] for w in windows], label="p99, every call", color="black")
    latency.plot(
        times, [w["p99_ok_ms"] for w in windows], label="p99, OK calls", color="tab:blue", ls="--"
    )
    latency.set_yscale("log")
    latency.set_ylabel(f"p99 latency (ms), {width:g} s windows")
    rate = result["load"]
    latency.set_title(
        f"Soak {result['duration_s']:g} s: {rate['driven_rps']:,.0f} calls/s "
        f"(half of the measured {rate['max_rps']:,.0f}); "
        f"{'PASS' if result['passed'] else 'FAIL'}"
    )

    rss = result["rss_samples"]
    memory.plot([t for t, _ in rss], [v for _, v in rss], color="tab:blue", label="sidecar VmRSS")
    check = result["rss"]
    if check["baseline_mib"]:
        low, high = check["baseline_window_s"]
        memory.hlines(check["baseline_mib"], low, high, color="black", lw=2, label="baseline")
        memory.axhline(
            check["baseline_mib"] * check["limit"], color="tab:red", ls=":", label="limit (+5 %)"
        )
    if check["final_mib"]:
        low, high = check["final_window_s"]
        memory.hlines(check["final_mib"], low, high, color="tab:green", lw=2, label="end")
    memory.set_ylabel("RSS (MiB)")
    memory.legend(loc="lower right", fontsize=8)

    names = sorted({name for w in windows for name in w["codes"] if name != "OK"})
    bottom = [0.0] * len(windows)
    for name in names:
        counts = [float(w["codes"].get(name, 0)) for w in windows]
        errors.bar(
            times,
            counts,
            width=width * 0.9,
            bottom=bottom,
            label=f"{name} (the requests for the denied feature)"
            if name == "PERMISSION_DENIED"
            else name,
            color=CODE_COLORS.get(name, "black"),
        )
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    errors.set_ylabel(f"non-OK calls per {width:g} s")
    host = result.get("host_load") or []
    if host:
        # What else wanted the CPUs: on a shared machine it explains slow windows.
        load = errors.twinx()
        load.plot([t for t, _, _ in host], [v for _, v, _ in host], color="tab:cyan", lw=1)
        load.set_ylabel("host load average (1 min)", color="tab:cyan")
    errors.set_xlabel("seconds since the start of the load")
    if names:
        errors.legend(loc="upper right", fontsize=8)

    handles = [Patch(color="0.85", label="max measurement (closed loop)")]
    handles += [Patch(color=c, alpha=0.25, label=k) for k, c in COLORS.items()]
    latency.legend(
        handles=[*latency.get_legend_handles_labels()[0], *handles], loc="upper right", fontsize=8
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _shade(axis: Any, result: dict[str, Any]) -> None:
    axis.axvspan(0, result["plan"]["measure_s"], color="0.85", lw=0)
    for event in result["disruptions"]:
        end = max(event["end_s"], event["start_s"] + 0.5)  # an instant still shows
        axis.axvspan(event["start_s"], end, color=COLORS[event["kind"]], alpha=0.25, lw=0)
