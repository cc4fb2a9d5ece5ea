"""What recording metrics costs per call, and what a gRPC server interceptor would cost.

    .venv/bin/python bench/metrics_cost.py [--calls N]

1. `CallMetrics.observe` (the observer FeatureServicer runs after every call) plus the start
   hook, for typical calls, with their share of the batched flush (every 100 calls), with the
   in-process registry and in prometheus_client's multiprocess mode (`--workers N`; measured in
   a child process with PROMETHEUS_MULTIPROC_DIR set).
2. The same trivial unary call (health Check) on a loopback grpc.aio server with and without a
   counting ServerInterceptor: the extra CPU per call an interceptor would add to every call;
   and the interceptor's own Python work in isolation (the end-to-end difference is small
   against the call and drowns in noise on a busy machine).
Numbers are microseconds per call; the best of several rounds, so other load shows less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np


def _outcomes() -> dict[str, Any]:
    from featuresidecar_server.access import Identity
    from featuresidecar_server.codec import Status
    from featuresidecar_server.grpc_service import CallOutcome
    from featuresidecar_server.service import CallRecord

    now = time.time_ns()
    identity = Identity("bench", (), "workload")

    def record(rows: int, features: int, views: int) -> CallRecord:
        result = CallRecord(principal="bench", roles=("ranker",), entities=rows, features=features)
        result.now_ns = now
        statuses = np.full(rows, Status.PRESENT, dtype=np.uint8)
        statuses[::7] = Status.NOT_FOUND
        for i in range(features):
            stamps = np.full(rows, now - 90 * 1_000_000_000, dtype=np.int64)
            stamps[statuses == Status.NOT_FOUND] = 0
            result.columns.append((f"view_{i % views}", statuses.copy(), stamps, 1))
        result.allowed = [f"view_{i % views}:f{i}" for i in range(features)]
        return result

    denied = CallRecord(principal="bench", roles=("ranker",), entities=1, features=2)
    denied.denied = ["view_0:secret"]
    ok = grpc.StatusCode.OK
    return {
        "1 row x 3 features (2 views)": CallOutcome(
            "GetFeatures", ok, 0.0004, "r", record(1, 3, 2), identity
        ),
        "10 rows x 5 features (2 views)": CallOutcome(
            "GetFeatures", ok, 0.0006, "r", record(10, 5, 2), identity
        ),
        "100 rows x 10 features (3 views)": CallOutcome(
            "GetFeatures", ok, 0.002, "r", record(100, 10, 3), identity
        ),
        "PERMISSION_DENIED (no values)": CallOutcome(
            "GetFeatures", grpc.StatusCode.PERMISSION_DENIED, 0.0002, "r", denied, identity
        ),
    }


def _best(run: Callable[[], None], calls: int, rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def observe_costs(calls: int) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from featuresidecar_server.metrics import SidecarMetrics
    from featuresidecar_server.metrics_calls import CallMetrics

    metrics = SidecarMetrics(CollectorRegistry(), process_metrics=False)
    metrics.bind_policy(["view_0", "view_1", "view_2"], ["ranker"])
    recorder = CallMetrics(metrics)
    results = {}
    # The sidecar applies what calls held back every 50 ms: 100 calls' worth at 2,000 calls/s.
    every = 100
    for name, outcome in _outcomes().items():
        count = [0]

        def once(outcome: Any = outcome, count: list[int] = count) -> None:
            recorder.started("GetFeatures")
            recorder.observe(outcome)
            count[0] += 1
            if count[0] % every == 0:
                metrics.flush()

        results[name] = _best(once, calls)
    return results


class _CountingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The cheapest useful interceptor: wraps the handler to count start and end."""

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def counted(request: Any, context: Any) -> Any:
            self.started += 1
            try:
                return await inner(request, context)
            finally:
                self.finished += 1

        return handler._replace(unary_unary=counted)


async def _server_cpu_per_call(interceptors: list[Any] | None, calls: int) -> float:
    """CPU of this process (server and client) per health Check over loopback."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server(interceptors=interceptors)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            ask = health_pb2.HealthCheckRequest()
            for _ in range(200):
                await check(ask)
            started = time.process_time()
            for _ in range(calls):
                await check(ask)
            return (time.process_time() - started) / calls * 1e6
    finally:
        await server.stop(None)


async def _interception_only(calls: int) -> tuple[float, float]:
    """The Python work an interceptor adds to one call, without the network around it."""
    interceptor = _CountingInterceptor()

    async def behavior(request: Any, context: Any) -> Any:
        return request

    handler = grpc.unary_unary_rpc_method_handler(behavior)

    async def continuation(details: Any) -> Any:
        return handler

    async def plain() -> None:
        await handler.unary_unary(None, None)

    async def intercepted() -> None:
        wrapped = await interceptor.intercept_service(continuation, None)
        await wrapped.unary_unary(None, None)

    results = []
    for run in (plain, intercepted):
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(calls):
                await run()
            best = min(best, (time.perf_counter() - started) / calls * 1e6)
        results.append(best)
    return results[0], results[1]


def interceptor_costs(calls: int, rounds: int = 5) -> tuple[float, float]:
    plain, intercepted = [], []
    for _ in range(rounds):  # alternate, so drift in machine load hits both
        plain.append(asyncio.run(_server_cpu_per_call(None, calls)))
        intercepted.append(asyncio.run(_server_cpu_per_call([_CountingInterceptor()], calls)))
    return float(np.median(plain)), float(np.median(intercepted))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        for name, cost in observe_costs(args.calls).items():
            print(f"{name}\t{cost:.2f}")
        return 0

    print("Recording one call (CallMetrics.started + observe), microseconds:")
    single = observe_costs(args.calls)
    with tempfile.TemporaryDirectory() as directory:
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--calls", str(args.calls)],
            env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory),
            capture_output=True,
            text=True,
            check=True,
        )
    multi = dict(line.split("\t") for line in child.stdout.splitlines())
    width = max(len(name) for name in single)
    print(f"  {'call':<{width}}  in-process  multiprocess")
    for name, cost in single.items():
        print(f"  {name:<{width}}  {cost:10.2f}  {float(multi[name]):12.2f}")

    print("\nA counting grpc.aio server interceptor, CPU per loopback health Check, microseconds:")
    plain, intercepted = interceptor_costs(max(1000, args.calls // 10))
    print(f"  without: {plain:.1f}   with: {intercepted:.1f}   added: {intercepted - plain:.1f}")
    plain, intercepted = asyncio.run(_interception_only(args.calls))
    print(
        f"  the interception alone (no network): {intercepted - plain:.2f} "
        f"({plain:.2f} -> {intercepted:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
