"""The benchmark: the sidecar against the floors (and Feast, when installed), in one run.

    python bench/run.py            # full: about 5 minutes on 2 cores
    python bench/run.py --quick    # under a minute (CI runs it so the benchmark cannot rot)

Prints a Markdown table and writes bench/results/latest.json (quick: quick.json). Ratios are
computed inside the run, so a noisy machine moves the numbers more than the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import metrics_cost
import peers
import report
import workload
from floors import floor_redis

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar_server import processes
from featuresidecar_server.devredis import LocalRedis, free_port
from featuresidecar_server.probe import wait_serving

METHOD = "/featuresidecar.v1.FeatureService/GetFeatures"
BIN = Path(sys.executable).parent
HERE = Path(__file__).parent


class Settings:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.users = 2_000 if quick else 10_000
        self.calls = 300 if quick else 3_000
        self.calls_s2 = 100 if quick else 600
        self.warmup = 100 if quick else 300
        self.s4_seconds = 3.0 if quick else 10.0
        self.load_rows = 20_000 if quick else 100_000
        self.workers = os.cpu_count() or 1


# --- processes ---------------------------------------------------------------------------------


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def sidecar(
    args: list[str], log: Path, port: int
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """A real `feature-sidecar serve`; yields it and the seconds it took to be SERVING."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")}
    with log.open("ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(BIN / "feature-sidecar"), "serve", *args], stdout=out, stderr=out, env=env
        )
    try:
        try:
            wait_serving(f"127.0.0.1:{port}", process, timeout=60)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; see {log}") from None
        yield process, time.perf_counter() - started
    finally:
        processes.stop(process, grace=30)


@contextlib.contextmanager
def floor_server(
    payload: bytes, workers: int, directory: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    response = directory / f"floor-{len(payload)}.bin"
    response.write_bytes(payload)
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "floors.py"),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--response",
            str(response),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, process)
        time.sleep(0.2)  # every worker bound
        yield port, process
    finally:
        processes.stop(process, grace=30)


def _memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and its parts: private anonymous memory, and pages of mapped files (shared
    libraries, mostly), which other workers and processes share; PSS divides those among them."""
    fields = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file", "Pss:": "pss"}
    out = dict.fromkeys(fields.values(), 0.0)
    for source in (Path(f"/proc/{pid}/status"), Path(f"/proc/{pid}/smaps_rollup")):
        if not source.exists():
            continue
        for line in source.read_text().splitlines():
            parts = line.split()
            name = fields.get(parts[0]) if parts else None
            if name:
                out[name] = round(int(parts[1]) / 1024, 1)
    return out


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


# --- measuring ---------------------------------------------------------------------------------


def _summary(samples: Sequence[float]) -> dict[str, float]:
    ordered = np.sort(np.asarray(samples)) * 1000
    return {
        "p50_ms": round(float(np.percentile(ordered, 50)), 3),
        "p99_ms": round(float(np.percentile(ordered, 99)), 3),
        "mean_ms": round(float(ordered.mean()), 3),
        "n": len(ordered),
    }


def latency(call: Callable[[], Any], calls: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter
    for _ in range(calls):
        started = clock()
        call()
        samples.append(clock() - started)
    return _summary(samples)


def interleaved(
    callers: dict[str, Callable[[], Any]], calls: int, warmup: int, rounds: int = 10
) -> dict[str, dict[str, float]]:
    """Latency of each caller, measured in alternating blocks so that all of them see the same
    machine: a slow minute on a shared host then moves every number, not the ratios."""
    for call in callers.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in callers}
    block = max(1, calls // rounds)
    clock = time.perf_counter
    for _ in range(rounds):
        for name, call in callers.items():
            out = samples[name]
            for _ in range(block):
                started = clock()
                call()
                out.append(clock() - started)
    return {name: _summary(values) for name, values in samples.items()}


def _caller(
    stack: contextlib.ExitStack, port: int, request: bytes, metadata: Sequence[tuple[str, str]]
) -> Callable[[], bytes]:
    call, channel = grpc_caller(port, request, metadata)
    stack.callback(channel.close)
    return call


def grpc_caller(
    port: int, request: bytes, metadata: Sequence[tuple[str, str]]
) -> tuple[Callable[[], bytes], grpc.Channel]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    method = channel.unary_unary(METHOD)  # bytes in, bytes out: no client-side protobuf work
    return (lambda: method(request, metadata=metadata, timeout=10)), channel


async def _throughput(
    port: int,
    request: bytes,
    metadata: Sequence[tuple[str, str]],
    seconds: float,
    warmup: float,
    callers: int,
    connections: int,
) -> tuple[list[float], int, float]:
    """One round on fresh connections: the measured latencies, every call made (warm-up
    included) and the measured seconds."""
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(connections)
    ]
    methods = [c.unary_unary(METHOD) for c in channels]
    samples: list[float] = []
    made = 0
    clock = time.perf_counter

    async def caller(index: int, until: float, record: bool) -> None:
        nonlocal made
        method = methods[index % len(methods)]
        while clock() < until:
            started = clock()
            try:
                await method(request, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError:
                continue
            made += 1
            if record:
                samples.append(clock() - started)

    await asyncio.gather(*(caller(i, clock() + warmup, False) for i in range(callers)))
    started = clock()
    await asyncio.gather(*(caller(i, started + seconds, True) for i in range(callers)))
    elapsed = clock() - started
    for channel in channels:
        await channel.close()
    return samples, made, elapsed


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(
    port: int,
    request: bytes,
    metadata: Sequence[tuple[str, str]],
    seconds: float,
    callers: int = 32,
    connections: int = 8,
    rounds: int = 3,
    servers: Sequence[int] = (),
) -> dict[str, Any]:
    """`callers` concurrent asyncio callers over `connections` connections for `seconds`, in
    `rounds` rounds on fresh connections: the kernel gives each connection to one worker, and
    over a few connections that split is often uneven, so one unlucky split does not decide
    the result. With `servers` (the worker pids), their CPU per call and each one's share."""
    before = {pid: _cpu_seconds(pid) for pid in servers}
    samples: list[float] = []
    made = 0
    measured = 0.0
    per_round = []
    for number in range(rounds):
        warmup = 1.0 if number == 0 else 0.3
        got, calls, elapsed = asyncio.run(
            _throughput(port, request, metadata, seconds / rounds, warmup, callers, connections)
        )
        samples += got
        made += calls
        measured += elapsed
        per_round.append(round(len(got) / elapsed, 1))
    summary = _summary(samples)
    result: dict[str, Any] = {
        "rps": round(len(samples) / measured, 1),
        "p99_ms": summary["p99_ms"],
        "p50_ms": summary["p50_ms"],
        "rounds_rps": per_round,
    }
    if servers and made:
        spent = {pid: _cpu_seconds(pid) - before[pid] for pid in servers}
        total = sum(spent.values())
        result["server_cpu_us_per_call"] = round(total / made * 1e6, 1)
        result["worker_cpu_shares"] = [
            round(spent[pid] / total, 3) if total else 0.0 for pid in servers
        ]
    return result


# --- the run -----------------------------------------------------------------------------------


def _request(features: Sequence[str], users: Sequence[int]) -> bytes:
    message = pb.GetFeaturesRequest(features=list(features))
    message.entities["user_id"].int64_values.values.extend(users)
    return message.SerializeToString()


def _serve_args(
    port: int,
    bundle: Path,
    public: Path,
    redis_url: str,
    identity: Any,
    state: Path,
    workers: int,
    work: Path,
    name: str,
    metrics_port: int | None = None,
) -> list[str]:
    return [
        "--listen",
        f"127.0.0.1:{port}",
        "--redis",
        redis_url,
        "--bundle",
        str(bundle),
        "--bundle-public-key",
        str(public),
        "--state-dir",
        str(state),
        "--workers",
        str(workers),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port or free_port()}",
        "--decision-log",
        str(work / f"{name}-decisions.jsonl"),
        "--log-level",
        "warning",
        *identity.flags(),
    ]


def run(settings: Settings, out_path: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    log = work / "sidecars.log"
    results: dict[str, Any] = {"scenarios": {}, "floors": {"redis": {}, "grpc": {}}, "peers": {}}
    scen = results["scenarios"]
    rng = np.random.default_rng(7)
    with LocalRedis() as redis_server:
        small = workload.policy(views=5, features_per_view=10, roles=1)
        large = workload.policy(views=100, features_per_view=100, roles=200)
        workload.load(redis_server.url, small, settings.users)
        identity = workload.Identity(work)
        metadata = [("authorization", f"Bearer {identity.token}")]
        small_bundle, small_pub = workload.signed_bundle(work, small, "small")
        large_bundle, large_pub = workload.signed_bundle(work, large, "large")
        one = [int(rng.integers(settings.users))]
        hundred = [int(u) for u in rng.choice(settings.users, 100, replace=False)]
        requests = {
            "s1": _request(workload.S1_FEATURES, one),
            "s2": _request(workload.S1_FEATURES, hundred),
            "s3": _request(workload.S3_FEATURES, one),
        }
        responses: dict[str, bytes] = {}

        print("- latency, 1 worker each: the sidecars and the floors, interleaved", flush=True)
        small_port, large_port = free_port(), free_port()
        small_args = _serve_args(
            small_port,
            small_bundle,
            small_pub,
            redis_server.url,
            identity,
            work / "state-small-1",
            1,
            work,
            "small-1",
        )
        large_args = _serve_args(
            large_port,
            large_bundle,
            large_pub,
            redis_server.url,
            identity,
            work / "state-large-1",
            1,
            work,
            "large-1",
        )
        with contextlib.ExitStack() as stack:
            stack.enter_context(sidecar(small_args, log, small_port))
            stack.enter_context(sidecar(large_args, log, large_port))
            for name, message in requests.items():
                call, channel = grpc_caller(small_port, message, metadata)
                stack.callback(channel.close)
                responses[name] = call()
            floors = {
                name: stack.enter_context(floor_server(responses[name], 1, work))[0]
                for name in requests
            }
            for name, refs, users in (
                ("s1", workload.S1_FEATURES, one),
                ("s2", workload.S1_FEATURES, hundred),
                ("s3", workload.S3_FEATURES, one),
            ):
                fetch = floor_redis(redis_server.url, refs)
                callers = {
                    name: _caller(stack, small_port, requests[name], metadata),
                    "floor_grpc": _caller(stack, floors[name], requests[name], metadata),
                    "floor_redis": lambda f=fetch, u=users: f(u),  # type: ignore[misc]
                }
                if name == "s1":
                    # s5 is s1 against the large catalog: measured alongside, so that drift of
                    # the machine does not pass for a difference between the catalogs.
                    callers["s5"] = _caller(stack, large_port, requests["s1"], metadata)
                calls = settings.calls_s2 if name == "s2" else settings.calls
                measured = interleaved(callers, calls, settings.warmup)
                scen[name] = measured[name]
                results["floors"]["grpc"][name] = measured["floor_grpc"]
                results["floors"]["redis"][name] = measured["floor_redis"]
                if "s5" in measured:
                    scen["s5"] = measured["s5"]

        print(f"- s4: 32 callers, {settings.workers} workers, sidecar then floor", flush=True)
        port = free_port()
        args = _serve_args(
            port,
            small_bundle,
            small_pub,
            redis_server.url,
            identity,
            work / "state-small-n",
            settings.workers,
            work,
            "small-n",
        )
        with sidecar(args, log, port) as (process, _):
            workers = _children(process.pid) if settings.workers > 1 else [process.pid]
            scen["s4"] = throughput(
                port, requests["s1"], metadata, settings.s4_seconds, servers=workers
            )
        with floor_server(responses["s1"], settings.workers, work) as (floor_port, floor):
            results["floors"]["grpc"]["s4"] = throughput(
                floor_port,
                requests["s1"],
                metadata,
                settings.s4_seconds,
                servers=_children(floor.pid),
            )

        print("- s6: Zipf-distributed entities, with and without the local cache", flush=True)
        scen["s6"] = zipf_benchmark(
            settings, redis_server.url, small_bundle, small_pub, identity, metadata, work, log
        )

        print(f"- rss after s4 with the large catalog, {settings.workers} workers", flush=True)
        port = free_port()
        state = work / "state-large-n"
        args = _serve_args(
            port,
            large_bundle,
            large_pub,
            redis_server.url,
            identity,
            state,
            settings.workers,
            work,
            "large-n",
        )
        with sidecar(args, log, port) as (process, _):
            throughput(port, requests["s1"], metadata, settings.s4_seconds)
            workers = _children(process.pid) if settings.workers > 1 else [process.pid]
            memory = [_memory_mib(pid) for pid in workers]
            biggest = max(memory, key=lambda m: m["rss"])
            results["rss"] = {
                "mib": biggest["rss"],
                "per_worker_mib": [m["rss"] for m in memory],
                # The parts of the biggest worker's VmRSS, and its proportional share.
                "anon_mib": biggest["anon"],
                "file_mib": biggest["file"],
                "pss_mib": biggest["pss"],
                "supervisor_mib": _memory_mib(process.pid)["rss"],
            }

        print("- startup with a persisted bundle (bundle server down)", flush=True)
        startups = {}
        for name, pub, state_dir in (
            ("large", large_pub, state),
            ("small", small_pub, work / "state-small-1"),
        ):
            port = free_port()
            down = f"http://127.0.0.1:{free_port()}/bundle.json"
            args = [
                a if a != str(large_bundle) else down
                for a in _serve_args(
                    port,
                    large_bundle,
                    pub,
                    redis_server.url,
                    identity,
                    state_dir,
                    1,
                    work,
                    f"startup-{name}",
                )
            ]
            with sidecar(args, log, port) as (_, seconds):
                startups[name] = round(seconds, 3)
        results["startup"] = {"s": startups["large"], "s_small_catalog": startups["small"]}

        print(f"- load: {settings.load_rows:,} entities x 10 features", flush=True)
        results["load"] = load_benchmark(redis_server.url, small, settings.load_rows, work)

        print("- the cost of recording metrics per call", flush=True)
        costs = metrics_cost.observe_costs(2_000 if settings.quick else 20_000)
        results["metrics_cost_us"] = {name: round(cost, 2) for name, cost in costs.items()}

        if peers.available():
            print("- peer: Feast feature server", flush=True)
            results["peers"]["feast"] = peers.feast(redis_server.url, settings, one, hundred, work)

    results["machine"] = machine(settings)
    results["ratios"], results["targets"] = report.ratios(results)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(report.markdown(results))
    print(f"\nwrote {out_path}")
    return results


def _cache_lookups(metrics_port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("feature_sidecar_cache_lookups_total{"):
            result = line.split('result="')[1].split('"')[0]
            counts[result] = float(line.rsplit(" ", 1)[1])
    return counts


def zipf_benchmark(
    settings: Settings,
    redis_url: str,
    bundle: Path,
    public: Path,
    identity: Any,
    metadata: Any,
    work: Path,
    log: Path,
) -> dict[str, Any]:
    """One entity per call, drawn from a Zipf distribution (s = 1.2) over every loaded user."""
    rng = np.random.default_rng(11)
    calls = settings.calls
    draws = np.minimum(rng.zipf(1.2, calls + settings.warmup), settings.users) - 1
    messages = [_request(workload.S1_FEATURES, [int(u)]) for u in draws]
    out: dict[str, Any] = {"zipf_s": 1.2, "users": settings.users}
    variants: list[tuple[str, list[str]]] = [
        ("no_cache", []),
        ("cache", ["--cache-entries", "2000", "--cache-ttl", "5s"]),
    ]
    for name, extra in variants:
        port, metrics_port = free_port(), free_port()
        state = work / f"state-{name}"
        args = _serve_args(
            port, bundle, public, redis_url, identity, state, 1, work, f"s6-{name}", metrics_port
        )
        with sidecar([*args, *extra], log, port):
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            method = channel.unary_unary(METHOD)
            queue = iter(messages)
            summary: dict[str, Any] = latency(
                lambda m=method, q=queue: m(next(q), metadata=metadata, timeout=10),
                calls,
                settings.warmup,
            )
            channel.close()
            if extra:
                lookups = _cache_lookups(metrics_port)
                total = sum(lookups.values()) or 1.0
                summary["hit_rate"] = round(lookups.get("hit", 0.0) / total, 3)
        out[name] = summary
    return out


def load_benchmark(redis_url: str, source: str, rows: int, work: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as parquet

    rng = np.random.default_rng(3)
    table = {"user_id": pa.array(np.arange(1_000_000, 1_000_000 + rows, dtype=np.int64))}
    for i in range(10):
        table[f"f{i}"] = pa.array(rng.standard_normal(rows))
    path = work / "load.parquet"
    parquet.write_table(pa.table(table), path)
    policy = work / "load-policy.yaml"
    policy.write_text(source)
    started = time.perf_counter()
    subprocess.run(
        [
            str(BIN / "feature-sidecar"),
            "load",
            "--redis",
            redis_url,
            "--bundle",
            str(policy),
            "--view",
            "v0",
            "--from",
            str(path),
            "--quiet",
        ],
        check=True,
    )
    seconds = time.perf_counter() - started
    return {
        "values_per_s": round(rows * 10 / seconds),
        "rows": rows,
        "features": 10,
        "seconds": round(seconds, 3),
        "includes": "process start, reading Parquet, writing",
    }


def machine(settings: Settings) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import grpc as grpc_module
    import redis

    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "grpcio": grpc_module.__version__,
        "redis_py": redis.__version__,
        "platform": platform.platform(),
        "quick": settings.quick,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under a minute)")
    parser.add_argument("--out", help="JSON result path")
    args = parser.parse_args()
    default = "quick.json" if args.quick else "latest.json"
    out = Path(args.out) if args.out else HERE / "results" / default
    run(Settings(args.quick), out)


if __name__ == "__main__":
    main()
