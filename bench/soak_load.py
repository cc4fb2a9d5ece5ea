"""The soak's load: its own process, so that the disruptions never stall the clock of the calls.

    python bench/soak_load.py --target 127.0.0.1:PORT --token-file F --duration 600 \
        --measure 20 --out DIR

It builds its pool of requests and its channels, prints "ready", reads t0 (a CLOCK_MONOTONIC
time, shared with the parent) from stdin, then:

- from t0 for `--measure` seconds, a closed loop (`--concurrency` callers, each waiting for its
  answer) measures the maximum throughput: OK answers per second after its first second;
- from there to t0 + `--duration`, an open loop starts calls at a fixed rate, half of that
  maximum, whether or not earlier calls have answered.

Every call is recorded (scheduled start, latency from the scheduled start, gRPC code, request
kind, policy revision of an OK answer) and every OK answer is checked against the policy and the
loaded data (soak_data.check). Writes calls.npz and load.json into `--out`.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import soak_data

METHOD = "/featuresidecar.v1.FeatureService/GetFeatures"
MEASURE_WARMUP_S = 1.0
# A call that raised something other than a gRPC error: never expected.
CLIENT_EXCEPTION = 99
_EXAMPLES_PER_CODE = 3


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pool = soak_data.request_pool(args.pool)
        self.metadata = (("authorization", f"Bearer {Path(args.token_file).read_text().strip()}"),)
        self.rng = random.Random(11)
        # Made in run(): grpc.aio binds a channel to the event loop it is made in.
        self.channels: list[grpc.aio.Channel] = []
        self.methods: list[Any] = []
        self.t0 = 0.0
        self.start = array.array("d")
        self.latency = array.array("d")
        self.lag = array.array("d")
        self.code = array.array("b")
        self.kind = array.array("b")
        self.revision = array.array("q")
        self.violations: dict[str, int] = {}
        self.violation_examples: list[dict[str, Any]] = []
        self.error_examples: dict[str, list[str]] = {}
        self.not_sent = 0
        self.calls = 0

    async def one(self, scheduled: float) -> None:
        expected = self.pool[self.rng.randrange(len(self.pool))]
        method = self.methods[self.calls % len(self.methods)]
        self.calls += 1
        clock = time.monotonic
        started = clock()
        answer: bytes | None = None
        try:
            answer = await method(
                expected.payload, metadata=self.metadata, timeout=self.args.deadline
            )
            code = 0
        except grpc.aio.AioRpcError as exc:
            code = int(exc.code().value[0])
            self._example(exc.code().name, exc.details() or "")
        except Exception as exc:  # the soak reports it; it must not end the load
            code = CLIENT_EXCEPTION
            self._example("CLIENT_EXCEPTION", repr(exc))
        ended = clock()
        revision = 0
        if answer is not None:
            revision = self._check(expected, answer, scheduled - self.t0)
        self.start.append(scheduled - self.t0)
        self.latency.append(ended - scheduled)
        self.lag.append(started - scheduled)
        self.code.append(code)
        self.kind.append(expected.kind)
        self.revision.append(revision)

    def _check(self, expected: soak_data.Expected, answer: bytes, at: float) -> int:
        try:
            revision, violation, detail = soak_data.check(expected, answer)
        except Exception as exc:  # an answer that does not even parse
            revision, violation, detail = 0, "wrong_shape", repr(exc)
        if violation:
            self.violations[violation] = self.violations.get(violation, 0) + 1
            if len(self.violation_examples) < 20:
                self.violation_examples.append(
                    {
                        "t": round(at, 3),
                        "violation": violation,
                        "kind": soak_data.KIND_NAMES[expected.kind],
                        "detail": detail[:300],
                    }
                )
        return revision

    def _example(self, name: str, details: str) -> None:
        seen = self.error_examples.setdefault(name, [])
        if len(seen) < _EXAMPLES_PER_CODE and details not in seen:
            seen.append(details[:300])

    async def closed_loop(self, until: float) -> None:
        clock = time.monotonic

        async def caller() -> None:
            while clock() < until:
                await self.one(clock())

        await asyncio.gather(*(caller() for _ in range(self.args.concurrency)))

    async def open_loop(self, rate: float, begin: float, until: float) -> None:
        """Calls at `rate` per second from `begin`, each on its own task; at most
        `rate * (deadline + 1)` in flight (more are counted as not sent)."""
        interval = 1.0 / rate
        cap = int(rate * (self.args.deadline + 1)) + 1
        tasks: set[asyncio.Task[None]] = set()
        clock = time.monotonic
        number = 0
        while True:
            due = begin + number * interval
            if due >= until:
                break
            now = clock()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while due <= now and due < until:
                if len(tasks) >= cap:
                    self.not_sent += 1
                else:
                    task = asyncio.create_task(self.one(due))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                number += 1
                due = begin + number * interval
        if tasks:
            await asyncio.gather(*tasks)

    async def run(self) -> dict[str, Any]:
        args = self.args
        self.channels = [
            grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(args.connections)
        ]
        self.methods = [c.unary_unary(METHOD) for c in self.channels]
        # The first calls open the connections before t0, so they are not measured.
        for method in self.methods:
            await method(self.pool[0].payload, metadata=self.metadata, timeout=10)
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        self.t0 = float(line)
        await asyncio.sleep(max(0.0, self.t0 - time.monotonic()))
        measure_end = self.t0 + args.measure
        await self.closed_loop(measure_end)
        counted = np.frombuffer(self.start, dtype=np.float64) >= MEASURE_WARMUP_S
        ok = np.frombuffer(self.code, dtype=np.int8) == 0
        measured_s = args.measure - MEASURE_WARMUP_S
        maximum = float((counted & ok).sum()) / measured_s
        rate = max(1.0, maximum / 2)
        closed_calls = len(self.start)
        await self.open_loop(rate, max(measure_end, time.monotonic()), self.t0 + args.duration)
        for channel in self.channels:
            await channel.close()
        lag = np.frombuffer(self.lag, dtype=np.float64)[closed_calls:]
        return {
            "max_rps": round(maximum, 1),
            "driven_rps": round(rate, 1),
            "measure_s": args.measure,
            "concurrency": args.concurrency,
            "connections": args.connections,
            "closed_loop_calls": closed_calls,
            "open_loop_calls": len(self.start) - closed_calls,
            "not_sent": self.not_sent,
            "open_loop_start_lag_ms": {
                "p99": round(float(np.percentile(lag, 99)) * 1000, 3) if len(lag) else None,
                "max": round(float(lag.max()) * 1000, 3) if len(lag) else None,
            },
            "deadline_s": args.deadline,
            "violations": self.violations,
            "violation_examples": self.violation_examples,
            "error_examples": self.error_examples,
        }

    def save(self, out: Path, summary: dict[str, Any]) -> None:
        np.savez(
            out / "calls.npz",
            start=np.frombuffer(self.start, dtype=np.float64),
            latency=np.frombuffer(self.latency, dtype=np.float64),
            code=np.frombuffer(self.code, dtype=np.int8),
            kind=np.frombuffer(self.kind, dtype=np.int8),
            revision=np.frombuffer(self.revision, dtype=np.int64),
        )
        (out / "load.json").write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of the sidecar")
    parser.add_argument("--token-file", required=True, help="bearer token of the caller")
    parser.add_argument("--duration", type=float, required=True, help="seconds from t0")
    parser.add_argument("--measure", type=float, required=True, help="closed-loop seconds")
    parser.add_argument("--out", required=True, help="directory for calls.npz and load.json")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--pool", type=int, default=2000, help="pre-built requests")
    parser.add_argument("--deadline", type=float, default=2.0, help="seconds per call")
    args = parser.parse_args()
    load = Load(args)
    summary = asyncio.run(load.run())
    load.save(Path(args.out), summary)


if __name__ == "__main__":
    main()
