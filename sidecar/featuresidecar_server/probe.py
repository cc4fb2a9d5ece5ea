"""Asking a sidecar over gRPC health whether it serves: for the demo, the benchmark and tests."""

from __future__ import annotations

import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serving(target: str, timeout: float = 0.5) -> bool:
    """Whether the sidecar at `target` answers SERVING now."""
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_serving(
    target: str, process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 30.0
) -> float:
    """Seconds until the sidecar started as `process` serves; RuntimeError if it exits first
    or does not serve within `timeout`."""
    started = time.monotonic()
    while not serving(target):
        if process.poll() is not None:
            raise RuntimeError(f"the sidecar exited with code {process.returncode}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the sidecar did not become SERVING within {timeout:g} s")
        time.sleep(0.005)
    return time.monotonic() - started
