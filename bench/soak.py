"""The soak: load at half the measured maximum while Redis and the bundle server are disrupted.

    python bench/soak.py --duration 10m     # make soak DURATION=10m; CI: DURATION=60s

Starts on loopback and free ports: a redis-server with the soak's data (saved to a snapshot, so a
killed Redis comes back with it), an HTTP server with a signed bundle, and `feature-sidecar serve`
as a real process (signed bundle over HTTP, JWT identity, metrics, decision log to a file, state
directory, a mask key). A separate load process measures the maximum throughput in the first
seconds, then calls at half of it; meanwhile Redis is paused and killed, and the bundle server
answers 500, stalls, and publishes a new signed revision, on a schedule scaled to the duration
(soak_plan). Writes bench/results/soak.json and soak.png, prints a summary, and exits 1 when the
run fails (soak_verdict says when).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

sys.path.insert(0, str(Path(__file__).parent))

import run
import soak_chaos
import soak_data
import soak_plan
import soak_verdict
import workload
from soak_chaos import BundleServer
from soak_plan import Event, Plan, Timing
from soak_verdict import Calls, Disruption

from featuresidecar_server import processes
from featuresidecar_server.bundle_format import build, public_key_pem
from featuresidecar_server.devredis import LocalRedis, free_port
from featuresidecar_server.probe import wait_serving

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
TIMING = Timing(redis_timeout=0.5, bundle_timeout=2.0, poll_interval=1.0)
# Seconds a stalled bundle request is held: past the sidecar's --bundle-timeout.
STALL_HOLD_S = TIMING.bundle_timeout + 1.0


class Signer:
    """The bundle signing key; each new revision is built from the same policy shape."""

    def __init__(self, work: Path) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.public = work / "bundle.pub"
        self.public.write_bytes(public_key_pem(self.key.public_key()))
        self.revision = 1

    def bundle(self, revision: int) -> bytes:
        return build(soak_data.policy(revision), revision, self.key)


def serve_args(
    port: int,
    metrics_port: int,
    redis: LocalRedis,
    bundle_url: str,
    public: Path,
    work: Path,
    identity: workload.Identity,
    workers: int,
) -> list[str]:
    mask_key = work / "mask.key"
    mask_key.write_bytes(os.urandom(32).hex().encode())
    return [
        "--listen",
        f"127.0.0.1:{port}",
        "--redis",
        redis.url,
        "--redis-timeout",
        f"{int(TIMING.redis_timeout * 1000)}ms",
        "--redis-health-interval",
        "200ms",
        "--bundle",
        bundle_url,
        "--bundle-public-key",
        str(public),
        "--bundle-poll-interval",
        f"{TIMING.poll_interval:g}s",
        "--bundle-timeout",
        f"{TIMING.bundle_timeout:g}s",
        "--state-dir",
        str(work / "state"),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--decision-log",
        str(work / "decisions.jsonl"),
        "--mask-key-file",
        str(mask_key),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        *identity.flags(),
    ]


@contextlib.contextmanager
def sidecar(args: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(BIN / "feature-sidecar"), "serve", *args], stdout=out, stderr=out, env=env
        )
    try:
        try:
            wait_serving(f"127.0.0.1:{port}", process, timeout=60)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; see {log}") from None
        yield process
    finally:
        processes.stop(process, grace=30)


@contextlib.contextmanager
def load_process(
    port: int, token_file: Path, plan: Plan, out: Path
) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "soak_load.py"),
            "--target",
            f"127.0.0.1:{port}",
            "--token-file",
            str(token_file),
            "--duration",
            str(plan.duration),
            "--measure",
            str(plan.measure_s),
            "--out",
            str(out),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        processes.stop(process, grace=10)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def run_events(
    plan: Plan, t0: float, redis: LocalRedis, server: BundleServer, signer: Signer
) -> list[Disruption]:
    """The disruptions, each at its planned time, with the times they really happened."""
    done = []
    for event in plan.events:
        _sleep_until(t0 + event.start)
        done.append(disrupt(event, t0, redis, server, signer))
        print(f"  {done[-1].start:7.1f} s  {event.kind}", flush=True)
    return done


def disrupt(
    event: Event, t0: float, redis: LocalRedis, server: BundleServer, signer: Signer
) -> Disruption:
    started = time.monotonic() - t0
    record = Disruption(event.kind, started, started)
    if event.kind == soak_plan.REDIS_PAUSE:
        soak_chaos.pause_redis(redis, event.seconds)
    elif event.kind == soak_plan.REDIS_RESTART:
        keys = soak_chaos.kill_and_restart_redis(redis, event.seconds)
        record.note = f"keys after the restart: {keys}"
    elif event.kind in (soak_plan.BUNDLE_500, soak_plan.BUNDLE_STALL):
        counter = "500" if event.kind == soak_plan.BUNDLE_500 else "stalled_past_timeout"
        before = server.counts[counter]
        mode = soak_chaos.ERROR if event.kind == soak_plan.BUNDLE_500 else soak_chaos.STALL
        server.set_mode(mode)
        try:
            time.sleep(event.seconds)
        finally:
            server.set_mode(soak_chaos.NORMAL)
        if event.kind == soak_plan.BUNDLE_STALL:
            time.sleep(0.05)  # the released handlers count themselves
        record.effect = server.counts[counter] - before
        record.effect_what = (
            "bundle polls answered 500"
            if event.kind == soak_plan.BUNDLE_500
            else f"bundle polls held past the sidecar's {TIMING.bundle_timeout:g} s timeout"
        )
    elif event.kind == soak_plan.BUNDLE_NEW_REVISION:
        signer.revision += 1
        server.publish(signer.bundle(signer.revision), signer.revision)
        record.revision = signer.revision
        record.effect_what = "answers carrying the new revision"
    record.end = time.monotonic() - t0
    return record


def scrape(metrics_port: int) -> dict[str, float]:
    """The sidecar's own counters of what went wrong, for the report."""
    wanted = (
        "feature_sidecar_bundle_failures_total",
        "feature_sidecar_redis_errors_total",
        "feature_sidecar_decision_log_dropped_total",
        "grpc_server_handled_total",
    )
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as page:
        text = page.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(wanted) and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            if name.startswith("grpc_server_handled_total") and "GetFeatures" not in name:
                continue
            out[name] = float(value)
    return out


def soak(duration: float, workers: int, out_dir: Path) -> dict[str, Any]:
    plan = soak_plan.plan(duration, TIMING)
    work = Path(tempfile.mkdtemp(prefix="fs-soak-"))
    print(
        f"soak: {duration:g} s, {len(plan.events)} disruptions every {plan.slot:g} s from "
        f"{plan.events[0].start:g} s; work directory {work}",
        flush=True,
    )
    signer = Signer(work)
    identity = workload.Identity(work)
    token_file = work / "token"
    token_file.write_text(identity.token)
    server = BundleServer(signer.bundle(1), 1, STALL_HOLD_S)
    server.stalled_past = TIMING.bundle_timeout
    server.start()
    port, metrics_port = free_port(), free_port()
    try:
        with LocalRedis() as redis:
            soak_data.load(redis.url, soak_data.policy(1))
            soak_chaos.save_redis(redis.port)
            keys = soak_chaos.dbsize(redis.port)
            args = serve_args(
                port, metrics_port, redis, server.url, signer.public, work, identity, workers
            )
            with (
                sidecar(args, port, work / "sidecar.log") as process,
                load_process(port, token_file, plan, work) as load,
            ):
                assert load.stdin is not None and load.stdout is not None
                if load.stdout.readline().strip() != "ready":
                    raise RuntimeError("the load process did not start")
                t0 = time.monotonic() + 0.2
                load.stdin.write(f"{t0!r}\n")
                load.stdin.flush()
                sampler = soak_chaos.RssSampler(process.pid, lambda: time.monotonic() - t0)
                sampler.start()
                try:
                    disruptions = run_events(plan, t0, redis, server, signer)
                    _sleep_until(t0 + plan.duration)
                    if load.wait(timeout=60) != 0:
                        raise RuntimeError(f"the load process failed with {load.returncode}")
                finally:
                    sampler.stop()
                metrics = scrape(metrics_port)
                sidecar_alive = process.poll() is None
    finally:
        server.stop()
    result = report(plan, work, disruptions, sampler.samples, metrics, workers)
    result["host_load"] = [list(sample) for sample in sampler.host]
    result["host_load_at_unexpected"] = load_at_unexpected(result)
    result["redis_keys"] = keys
    result["bundle_server"] = dict(server.counts)
    if not sidecar_alive:
        result["passed"] = False
        result["reasons"].append("the sidecar process exited during the run")
    decisions = work / "decisions.jsonl"
    result["decision_log_bytes"] = decisions.stat().st_size if decisions.exists() else 0
    if result["passed"]:
        shutil.rmtree(work, ignore_errors=True)
    else:
        # Kept for the post-mortem: the sidecar's log, its decision log, the calls.
        result["work_dir"] = str(work)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    import soak_plot

    soak_plot.plot(result, out_dir / "soak.png")
    return result


def report(
    plan: Plan,
    work: Path,
    disruptions: list[Disruption],
    rss: list[tuple[float, float]],
    metrics: dict[str, float],
    workers: int,
) -> dict[str, Any]:
    with np.load(work / "calls.npz") as data:
        calls = Calls(data["start"], data["latency"], data["code"], data["kind"], data["revision"])
    load = json.loads((work / "load.json").read_text())
    violations = soak_verdict.Violations(load["violations"], load["violation_examples"])
    bound = TIMING.event_seconds(soak_plan.BUNDLE_NEW_REVISION)
    verdict = soak_verdict.evaluate(plan, calls, rss, disruptions, violations, bound)
    for check, event in zip(
        verdict["revisions"], [d for d in disruptions if d.revision], strict=True
    ):
        event.effect = int(check["first_answer_s"] is not None)
        if check["first_answer_s"] is not None:
            event.end = check["first_answer_s"]  # shaded until the sidecar moved
    if load["not_sent"]:
        verdict["passed"] = False
        verdict["reasons"].append(
            f"the load process fell behind: {load['not_sent']} calls were not sent"
        )
    open_calls = calls.start >= plan.measure_s
    return {
        "passed": verdict.pop("passed"),
        "reasons": verdict.pop("reasons"),
        "duration_s": plan.duration,
        "plan": {
            "measure_s": plan.measure_s,
            "warmup_end_s": plan.warmup_end,
            "warmup": f"the measurement phase plus {soak_plan.WARMUP_FRACTION:.0%} of the run",
            "rss_window_s": plan.rss_window,
            "disruption_slot_s": plan.slot,
            "redis_grace_s": soak_verdict.REDIS_GRACE_S,
            "revision_bound_s": bound,
        },
        "sidecar": {
            "workers": workers,
            "redis_timeout_s": TIMING.redis_timeout,
            "bundle_timeout_s": TIMING.bundle_timeout,
            "bundle_poll_interval_s": TIMING.poll_interval,
        },
        "load": {
            key: load[key]
            for key in (
                "max_rps",
                "driven_rps",
                "measure_s",
                "concurrency",
                "connections",
                "closed_loop_calls",
                "open_loop_calls",
                "not_sent",
                "open_loop_start_lag_ms",
                "deadline_s",
            )
        },
        "p99_ms_open_loop": soak_verdict.p99_ms(calls.latency[open_calls]),
        "error_examples": load["error_examples"],
        **verdict,
        "disruptions": soak_verdict.disruption_rows(disruptions),
        "rss_samples": [[t, v] for t, v in rss],
        "sidecar_metrics": metrics,
        "machine": machine_info(),
    }


def load_at_unexpected(result: dict[str, Any]) -> dict[str, Any] | None:
    """The host's load in the windows that hold unexpected codes: on a shared machine, whether
    something else held the CPUs then (the verdict does not excuse them for it)."""
    width = soak_verdict.P99_WINDOW_S
    starts = [w["t"] for w in result["windows"] if w["unexpected"]]
    if not starts:
        return None
    inside = [
        (load, running)
        for t, load, running in result["host_load"]
        if any(low <= t < low + width + 1 for low in starts)
    ]
    return {
        "windows_s": starts,
        "load_average_max": max((load for load, _ in inside), default=None),
        "runnable_max": max((running for _, running in inside), default=None),
        "cpus": os.cpu_count(),
    }


def machine_info() -> dict[str, Any]:
    info = run.machine(run.Settings(quick=False))
    info.pop("quick", None)
    return info


def summary(result: dict[str, Any]) -> str:
    load = result["load"]
    rss = result["rss"]
    lines = [
        f"soak {result['duration_s']:g} s: {'PASS' if result['passed'] else 'FAIL'}",
        f"  max {load['max_rps']:,.1f} calls/s (closed loop, {load['measure_s']:g} s); "
        f"driven {load['driven_rps']:,.1f} calls/s (open loop); {result['calls']:,} calls",
        f"  expected codes:   {result['codes']['expected']}",
        f"  unexpected codes: {result['codes']['unexpected'] or 'none'}",
        f"  policy/data violations: {result['violations'] or 'none'}",
        f"  p99 (open loop): {result['p99_ms_open_loop']} ms; "
        f"worst {soak_verdict.P99_WINDOW_S:g} s window: {_worst(result)} ms",
        f"  RSS {rss['baseline_mib']} MiB after warm-up -> {rss['final_mib']} MiB at the end "
        f"(growth {_percent(rss['growth'])}, limit {soak_verdict.RSS_GROWTH_LIMIT:.0%})",
    ]
    for check in result["revisions"]:
        lines.append(
            f"  revision {check['revision']}: published at {check['published_s']} s, "
            f"first answer after {check['lag_s']} s"
        )
    for event in result["disruptions"]:
        lines.append(
            f"  {event['start_s']:7.1f}-{event['end_s']:7.1f} s {event['kind']:<20} "
            f"{event['effect']} {event['effect_what']}"
            + (f"; {event['note']}" if event.get("note") else "")
        )
    lines += [f"  reason: {reason}" for reason in result["reasons"]]
    busy = result.get("host_load_at_unexpected")
    if busy:
        lines.append(
            f"  host at the unexpected codes ({len(busy['windows_s'])} windows of "
            f"{soak_verdict.P99_WINDOW_S:g} s): load average up to {busy['load_average_max']}, "
            f"up to {busy['runnable_max']} runnable tasks on {busy['cpus']} CPUs"
        )
    return "\n".join(lines)


def _worst(result: dict[str, Any]) -> float | None:
    values = [w["p99_ms"] for w in result["windows"] if w["p99_ms"] is not None]
    return max(values) if values else None


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="10m", help="e.g. 60s or 10m (default 10m)")
    parser.add_argument("--workers", type=int, default=1, help="sidecar worker processes")
    parser.add_argument("--out", default=str(HERE / "results"), help="directory of the results")
    args = parser.parse_args()
    try:
        duration = soak_plan.parse_duration(args.duration)
        soak_plan.plan(duration, TIMING)
    except ValueError as exc:
        parser.error(str(exc))
    result = soak(duration, args.workers, Path(args.out))
    print(summary(result))
    print(f"wrote {Path(args.out) / 'soak.json'} and soak.png")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
