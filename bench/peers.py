"""The peer: Feast's Python feature server (`feast serve`) on the same Redis data.

Feast is never a dependency of this project: `make bench-peers` installs it into
bench/.peers-venv, and this module runs that environment's `feast` command. The data the
benchmark loads is in Feast's layout, so Feast reads it as it is.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import workload

VENV = Path(os.environ.get("FEATURE_SIDECAR_PEERS_VENV", Path(__file__).parent / ".peers-venv"))
FEAST = VENV / "bin" / "feast"

_DEFINITIONS = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
source = FileSource(path="{source}", timestamp_field="event_timestamp")


def view(name):
    return FeatureView(name=name, entities=[user], ttl=timedelta(days=7), source=source,
                       schema=[Field(name=f"f{{i}}", dtype=Float64) for i in range(10)])


"""


def available() -> bool:
    return FEAST.exists()


def _repo(directory: Path, redis_url: str) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as parquet

    repo = directory / "feast_repo"
    repo.mkdir(exist_ok=True)
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    (repo / "feature_store.yaml").write_text(
        "project: bench\nregistry: registry.db\nprovider: local\n"
        f'online_store:\n  type: redis\n  connection_string: "{host_port}"\n'
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    source = repo / "source.parquet"
    columns: dict[str, Any] = {
        "user_id": pa.array([0], pa.int64()),
        "event_timestamp": pa.array([0], pa.timestamp("us", tz="UTC")),
    }
    for i in range(10):
        columns[f"f{i}"] = pa.array([0.0])
    parquet.write_table(pa.table(columns), source)
    # `feast apply` finds module-level objects, so each view gets its own name.
    views = "".join(f'v{v} = view("v{v}")\n' for v in range(5))
    (repo / "definitions.py").write_text(_DEFINITIONS.format(source=source) + views)
    subprocess.run([str(FEAST), "apply"], cwd=repo, check=True, capture_output=True)
    return repo


def _body(users: list[int]) -> bytes:
    return json.dumps(
        {
            "features": workload.S1_FEATURES,
            "entities": {"user_id": users},
            "full_feature_names": True,
        }
    ).encode()


def _latency(port: int, body: bytes, calls: int, warmup: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    samples = []
    for i in range(warmup + calls):
        started = time.perf_counter()
        connection.request("POST", "/get-online-features", body, headers)
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"feast answered {response.status}: {payload[:200]!r}")
        if i >= warmup:
            samples.append(time.perf_counter() - started)
    connection.close()
    ordered = np.sort(np.asarray(samples)) * 1000
    return {
        "p50_ms": round(float(np.percentile(ordered, 50)), 3),
        "p99_ms": round(float(np.percentile(ordered, 99)), 3),
        "n": len(samples),
    }


async def _throughput(port: int, body: bytes, seconds: float, callers: int) -> dict[str, float]:
    request = (
        b"POST /get-online-features HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    samples: list[float] = []

    errors = 0

    async def caller(until: float, record: bool) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
            except (ConnectionError, asyncio.IncompleteReadError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            if record:
                samples.append(time.perf_counter() - started)
        writer.close()

    await asyncio.gather(*(caller(time.perf_counter() + 1.0, False) for _ in range(callers)))
    started = time.perf_counter()
    await asyncio.gather(*(caller(started + seconds, True) for _ in range(callers)))
    elapsed = time.perf_counter() - started
    ordered = np.sort(np.asarray(samples)) * 1000
    return {
        "rps": round(len(samples) / elapsed, 1),
        "p99_ms": round(float(np.percentile(ordered, 99)), 3),
        "errors": errors,
    }


def feast(
    redis_url: str, settings: Any, one: list[int], hundred: list[int], directory: Path
) -> dict[str, Any]:
    from featuresidecar_server import processes
    from featuresidecar_server.devredis import free_port

    repo = _repo(directory, redis_url)
    results: dict[str, Any] = {}
    for workers, names in ((1, ("s1", "s2")), (settings.workers, ("s4",))):
        port = free_port()
        process = subprocess.Popen(
            [
                str(FEAST),
                "serve",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--workers",
                str(workers),
                "--no-access-log",
                "--max-requests",
                "100000000",
            ],
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    _latency(port, _body(one), 1, 0)
                    break
                except (OSError, RuntimeError, http.client.HTTPException):
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("feast serve did not start") from None
                    time.sleep(0.2)
            if "s1" in names:
                results["s1"] = _latency(port, _body(one), settings.calls // 3, 50)
                results["s2"] = _latency(port, _body(hundred), settings.calls_s2 // 3, 20)
            if "s4" in names:
                results["s4"] = asyncio.run(_throughput(port, _body(one), settings.s4_seconds, 32))
        finally:
            processes.stop(process, grace=30)
    results["version"] = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", "import feast; print(feast.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    results["workers"] = {"s1": 1, "s2": 1, "s4": settings.workers}
    return results
