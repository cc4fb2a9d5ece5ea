"""Health follows the policy and Redis; a lost Redis fails calls fast and heals by itself."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import EXAMPLE_POLICY, code_of, column_values, put_entity, request, stub

from featuresidecar_server.devredis import LocalRedis
from featuresidecar_server.health import Readiness
from featuresidecar_server.status_view import readiness_reason

RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(reply.status)


def _wait_health(address: str, wanted: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _health(address) == wanted:
            return
        time.sleep(0.02)
    raise AssertionError(f"health never became {wanted}")


def _seed(url: str) -> None:
    put_entity(
        url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 1},
        {"age": 34, "country": "DE", "email": "a@x", "embedding": None},
        time.time_ns(),
    )


def test_redis_lost_gives_unavailable_fast_and_recovers_without_restart(
    redis_server: LocalRedis, sidecar_factory: Any
) -> None:
    _seed(redis_server.url)
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        workload_principal=RANKER,
        redis_timeout=0.3,
        redis_health_interval=0.1,
    )
    _, client = stub(sidecar.address)
    message = request(["user_profile:age"], {"user_id": [1]})
    assert column_values(client.GetFeatures(message, timeout=5).columns[0]) == [34]
    assert _health(sidecar.address) == SERVING
    assert _health(sidecar.address, "featuresidecar.v1.FeatureService") == SERVING

    redis_server.stop()
    started = time.monotonic()
    code, details = code_of(lambda: client.GetFeatures(message, timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details.startswith(f"Redis at {redis_server.url} is unavailable")
    assert time.monotonic() - started < 1.0
    _wait_health(sidecar.address, NOT_SERVING)
    assert _health(sidecar.address, "featuresidecar.v1.FeatureService") == NOT_SERVING

    redis_server.start()
    _seed(redis_server.url)
    _wait_health(sidecar.address, SERVING)
    assert column_values(client.GetFeatures(message, timeout=5).columns[0]) == [34]


def test_a_hung_redis_fails_the_call_within_the_redis_timeout(
    redis_server: LocalRedis, sidecar_factory: Any
) -> None:
    _seed(redis_server.url)
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        workload_principal=RANKER,
        redis_timeout=0.3,
        redis_health_interval=0.1,
    )
    _, client = stub(sidecar.address)
    message = request(["user_profile:age"], {"user_id": [1]})
    client.GetFeatures(message, timeout=5)
    assert redis_server.process is not None
    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert code_of(lambda: client.GetFeatures(message, timeout=5)) == (
            grpc.StatusCode.UNAVAILABLE,
            "Redis did not answer within 300 ms",
        )
        assert 0.25 < time.monotonic() - started < 1.5
        # A caller's shorter deadline wins over the Redis timeout.
        started = time.monotonic()
        code, _ = code_of(lambda: client.GetFeatures(message, timeout=0.1))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.5
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait_health(sidecar.address, SERVING)
    assert column_values(client.GetFeatures(message, timeout=5).columns[0]) == [34]


def test_not_serving_until_a_policy_is_active(
    redis_server: LocalRedis, sidecar_factory: Any, tmp_path: Path
) -> None:
    bundle = tmp_path / "policy.yaml"
    sidecar = sidecar_factory(
        redis=redis_server.url, bundle=str(bundle), workload_principal=RANKER, ready=False
    )
    time.sleep(0.3)  # several polls of a missing file
    assert _health(sidecar.address) == NOT_SERVING
    _, client = stub(sidecar.address)
    assert code_of(lambda: client.GetFeatures(request(["a:b"], {}), timeout=5)) == (
        grpc.StatusCode.UNAVAILABLE,
        "no policy bundle is active yet; the sidecar is starting",
    )
    bundle.write_text(EXAMPLE_POLICY.read_text())
    _wait_health(sidecar.address, SERVING)


def test_not_serving_while_redis_has_never_answered(sidecar_factory: Any, tmp_path: Path) -> None:
    missing = LocalRedis()  # never started: nothing listens on its port
    sidecar = sidecar_factory(
        redis=missing.url,
        bundle=str(EXAMPLE_POLICY),
        workload_principal=RANKER,
        redis_timeout=0.2,
        ready=False,
    )
    sidecar.wait_for(lambda: sidecar.sidecar.readiness.policy_ready)
    assert _health(sidecar.address) == NOT_SERVING
    missing.start()
    try:
        _wait_health(sidecar.address, SERVING)
    finally:
        missing.close()


def _reflected_services(address: str) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        reply = next(iter(replies))
        return sorted(s.name for s in reply.list_services_response.service)


def test_reflection_is_on_by_default_and_can_be_turned_off(
    redis_server: LocalRedis, sidecar_factory: Any, tmp_path: Path
) -> None:
    on = sidecar_factory(redis=redis_server.url, bundle=str(EXAMPLE_POLICY))
    assert _reflected_services(on.address) == [
        "featuresidecar.v1.FeatureService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    off = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        reflection=False,
        listen=[f"unix:{tmp_path}/off.sock"],
    )
    code, _ = code_of(lambda: _reflected_services(off.address))
    assert code == grpc.StatusCode.UNIMPLEMENTED


def test_a_held_readiness_does_not_serve_and_says_what_it_waits_for() -> None:
    readiness = Readiness()
    readiness.policy_activated()
    readiness.redis_result(True)
    assert (readiness.serving, readiness_reason(readiness)) == (True, "")
    readiness.hold("waiting for the other workers to listen")
    assert (readiness.serving, readiness_reason(readiness)) == (
        False,
        "waiting for the other workers to listen",
    )
    readiness.release()
    assert (readiness.serving, readiness_reason(readiness)) == (True, "")
