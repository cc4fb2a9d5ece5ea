"""Every bound on what a caller can make the sidecar hold: driven past, with the process's
memory checked against a stated ceiling (a real `feature-sidecar serve` process)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import (
    EXAMPLE_POLICY,
    ServeProcess,
    TokenIssuer,
    bearer,
    code_of,
    put_entity,
    request,
    stub,
)

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar_server.devredis import LocalRedis, free_port
from featuresidecar_server.memory import Reclaimer

METHOD = "/featuresidecar.v1.FeatureService/GetFeatures"
MIB = 1024 * 1024


def _sidecar(
    redis: LocalRedis, tmp_path: Path, *flags: str, stdout: int | None = None
) -> tuple[ServeProcess, str, Any]:
    """A sidecar that takes bearer tokens on a TCP port: callers without one are strangers."""
    issuer = TokenIssuer(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    args = [
        "--listen",
        address,
        "--redis",
        redis.url,
        "--bundle",
        str(EXAMPLE_POLICY),
        "--allow-unsigned",
        "--jwt-jwks",
        str(issuer.jwks_path),
        "--jwt-issuer",
        issuer.ISSUER,
        "--jwt-audience",
        issuer.AUDIENCE,
        *flags,
    ]
    process = ServeProcess(args, tmp_path / "sidecar.log", stdout=stdout)
    return process.wait_serving(address), address, issuer


def _raw_calls(address: str, body: bytes, callers: int, calls: int, **kw: Any) -> list[Any]:
    """`callers` threads, each sending `body` `calls` times; every call's code."""
    codes: list[Any] = []

    def caller() -> None:
        options = [("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(address, options=options) as channel:
            call = channel.unary_unary(METHOD)
            for _ in range(calls):
                try:
                    call(body, timeout=30, **kw)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def _features_message(size: int) -> bytes:
    """A GetFeaturesRequest of about `size` bytes: one very long feature name."""
    return pb.GetFeaturesRequest(features=["x" * size]).SerializeToString()


def test_oversize_requests_are_refused_as_they_arrive_and_never_held_whole(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    sidecar, address, _ = _sidecar(redis_server, tmp_path)
    try:
        before = sidecar.memory_mib()
        # Four strangers at once, 60 MiB each: over the default 16 MiB limit.
        codes = _raw_calls(address, _features_message(60 * MIB), callers=4, calls=2)
        assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 8
        # Ceiling: what the sidecar held before plus 150 MiB (one 60 MiB request held whole
        # would be more than that, four of them far more).
        assert sidecar.memory_mib("VmHWM") < before + 150
    finally:
        assert sidecar.stop() == 0


def test_a_request_over_max_request_bytes_is_resource_exhausted(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    sidecar, address, issuer = _sidecar(redis_server, tmp_path, "--max-request-bytes", "65536")
    try:
        metadata = bearer(issuer.token("alice", ["data-science"]))
        _, client = stub(address)
        small = request(["user_stats:ctr_7d"], {"user_id": [1]})
        assert client.GetFeatures(small, timeout=5, metadata=metadata).feature_names == [
            "user_stats:ctr_7d"
        ]
        big = request(["user_stats:ctr_7d"], {"user_id": list(range(100_000, 140_000))})
        code, message = code_of(lambda: client.GetFeatures(big, timeout=5, metadata=metadata))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "65536" in message
    finally:
        assert sidecar.stop() == 0


def test_strangers_get_unauthenticated_before_their_request_is_decoded(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    sidecar, address, issuer = _sidecar(redis_server, tmp_path)
    try:
        garbage = b"\xff" * 64  # not a GetFeaturesRequest
        assert _raw_calls(address, garbage, 1, 1) == [grpc.StatusCode.UNAUTHENTICATED]
        metadata = bearer(issuer.token("alice", ["data-science"]))
        assert _raw_calls(address, garbage, 1, 1, metadata=metadata) == [
            grpc.StatusCode.INVALID_ARGUMENT
        ]
    finally:
        assert sidecar.stop() == 0


def test_memory_is_trimmed_only_after_a_large_request() -> None:
    reclaimer = Reclaimer(threshold=1000)
    reclaimer.saw(999)
    reclaimer.trim()
    assert reclaimer.trims == 0
    reclaimer.saw(1000)
    reclaimer.trim()
    reclaimer.trim()
    assert reclaimer.trims == 1


@pytest.mark.parametrize("flag", ["--max-request-bytes", "--max-inflight"])
def test_bounds_must_be_positive(flag: str, tmp_path: Path) -> None:
    sidecar = ServeProcess(
        ["--bundle", str(EXAMPLE_POLICY), "--allow-unsigned", flag, "0"], tmp_path / "log"
    )
    assert sidecar.exit_code() == 2
    assert f"{flag} must be at least 1" in sidecar.log.read_text()


def test_calls_past_max_inflight_are_shed_not_queued(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_stats",
        {"user_id": 1},
        {"ctr_7d": 0.5},
        time.time_ns(),
    )
    metrics = f"127.0.0.1:{free_port()}"
    sidecar, address, issuer = _sidecar(
        redis_server,
        tmp_path,
        "--max-inflight",
        "4",
        "--redis-timeout",
        "20s",
        "--metrics-listen",
        metrics,
    )
    metadata = bearer(issuer.token("alice", ["data-science"]))
    message = request(["user_stats:ctr_7d"], {"user_id": [1]})
    _, client = stub(address)
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)  # the first four calls stay in flight
    try:
        held = [client.GetFeatures.future(message, timeout=30, metadata=metadata) for _ in range(4)]
        _wait_started(metrics, 4)
        code, text = code_of(lambda: client.GetFeatures(message, timeout=5, metadata=metadata))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert text == (
            "the sidecar is serving its limit of 4 calls at once (--max-inflight); "
            "retry after a short backoff"
        )
        before = sidecar.memory_mib()
        shed = _raw_calls(address, message.SerializeToString(), 8, 50, metadata=metadata)
        assert shed == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 400
        assert sidecar.memory_mib() < before + 20
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert [list(f.result(timeout=30).columns[0].statuses) for f in held] == [[1]] * 4
    assert sidecar.stop() == 0


def _wait_started(metrics: str, calls: int, timeout: float = 10.0) -> None:
    """Until the sidecar has started `calls` GetFeatures calls (by its own metrics)."""
    deadline = time.monotonic() + timeout
    wanted = (
        'grpc_server_started_total{grpc_method="GetFeatures",'
        'grpc_service="featuresidecar.v1.FeatureService",grpc_type="unary"} '
        f"{float(calls)}"
    )
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as response:
            if wanted in response.read().decode():
                return
        time.sleep(0.01)
    raise AssertionError(f"the sidecar did not start {calls} calls")


def test_decision_log_lines_nobody_reads_hold_at_most_the_queue_bytes(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    sidecar, address, issuer = _sidecar(
        redis_server,
        tmp_path,
        "--decision-log",
        "stdout",
        "--decision-log-entities",
        "plain",
        "--decision-log-queue-bytes",
        str(32 * MIB),
        "--metrics-listen",
        f"127.0.0.1:{free_port()}",
        stdout=subprocess.PIPE,  # and nobody reads it
    )
    try:
        metadata = bearer(issuer.token("alice", ["data-science"]))
        # About 10 MB each: 1,000 rows with 10,000-character item ids.
        rows = 1000
        message = request(
            ["user_item:affinity"],
            {"user_id": list(range(rows)), "item_id": [f"{n:010d}" * 1000 for n in range(rows)]},
        )
        assert message.ByteSize() > 10 * 1000 * 1000
        _, client = stub(address)
        client.GetFeatures(message, timeout=30, metadata=metadata)
        before = sidecar.memory_mib()
        for _ in range(60):
            response = client.GetFeatures(message, timeout=30, metadata=metadata)
            assert response.row_count == rows
        # 60 calls' entity ids are 600 MB: the queue keeps 32 MiB of them, the rest is dropped.
        assert sidecar.memory_mib() < before + 32 + 100
    finally:
        sidecar.stop()


def test_metadata_past_16_kib_is_refused_as_it_arrives(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    sidecar, address, issuer = _sidecar(redis_server, tmp_path)
    try:
        token = bearer(issuer.token("alice", ["data-science"]))
        message = request(["user_stats:ctr_7d"], {"user_id": [1]})
        _, client = stub(address)
        before = sidecar.memory_mib()
        for size in (17 * 1024, 1 << 20):
            junk = [("x-junk", "a" * size)]
            code, text = code_of(
                lambda junk=junk: client.GetFeatures(message, timeout=5, metadata=junk)
            )
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert text.endswith(f"(value length {size} vs. 16384)")
        body = message.SerializeToString()
        junk = [*token, ("x-junk", "a" * (1 << 20))]
        assert _raw_calls(address, body, 4, 10, metadata=junk) == (
            [grpc.StatusCode.RESOURCE_EXHAUSTED] * 40
        )
        assert sidecar.memory_mib() < before + 30
    finally:
        assert sidecar.stop() == 0


def test_entity_rows_past_the_sidecar_limit_are_refused(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    sidecar, address, issuer = _sidecar(redis_server, tmp_path, "--max-request-entities", "5000")
    try:
        token = bearer(issuer.token("alice", ["data-science"]))
        _, client = stub(address)
        before = sidecar.memory_mib()
        message = request(["user_stats:ctr_7d"], {"user_id": list(range(1_000_000))})
        for _ in range(10):
            code, text = code_of(lambda: client.GetFeatures(message, timeout=30, metadata=token))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert text == (
            "entities.user_id: 1000000 rows exceed the sidecar's limit of 5000 per request "
            "(--max-request-entities); split the batch"
        )
        assert sidecar.memory_mib() < before + 60
    finally:
        assert sidecar.stop() == 0


def _wide_policy(path: Path, features: int) -> Path:
    names = "\n".join(f"        - {{name: f{n}, type: double}}" for n in range(features))
    path.write_text(
        "version: 1\nproject: wide\ncatalog:\n  entities:\n    - name: user\n"
        "      join_keys: [{name: user_id, type: int64}]\n  views:\n    - name: wide\n"
        f"      entities: [user]\n      features:\n{names}\n"
        "roles:\n  - {name: reader, allow: ['wide:*']}\n"
        "bindings:\n  - {principal: reader, roles: [reader]}\n"
    )
    return path


def test_plans_for_many_feature_sets_are_bounded_by_the_features_they_name(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    features = 400
    policy = _wide_policy(tmp_path / "wide.yaml", features)
    socket = tmp_path / "s.sock"
    args = ["--listen", f"unix:{socket}", "--redis", redis_server.url, "--bundle", str(policy)]
    args += ["--allow-unsigned", "--workload-principal", "reader"]
    sidecar = ServeProcess(args, tmp_path / "log").wait_serving(f"unix:{socket}")
    try:
        _, client = stub(f"unix:{socket}")
        every = [f"wide:f{n}" for n in range(features)]
        duplicate = request([every[0], every[0]], {"user_id": [1]})
        assert code_of(lambda: client.GetFeatures(duplicate, timeout=5)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "features[1]: 'wide:f0' is requested twice",
        )
        client.GetFeatures(request(every, {"user_id": [1]}), timeout=5)
        before = sidecar.memory_mib()
        # 600 different sets of 399 features each: 239,400 features planned, far more than the
        # 65,536 that the plan cache keeps.
        for n in range(600):
            names = every[: n % features] + every[n % features + 1 :]
            if n >= features:
                names = names[::-1]
            response = client.GetFeatures(request(names, {"user_id": [1]}), timeout=5)
            assert len(response.feature_names) == features - 1
        assert sidecar.memory_mib() < before + 80
    finally:
        assert sidecar.stop() == 0


def test_the_entity_cache_keeps_at_most_cache_entries(
    redis_server: LocalRedis, sidecar_factory: Any
) -> None:
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        workload_principal="spiffe://cluster.local/ns/ml/sa/ranker",
        cache_entries=1000,
        cache_ttl=3600.0,
    )
    cache = sidecar.sidecar.reader.cache
    _, client = stub(sidecar.address)
    before = _own_memory_mib()
    for start in range(0, 50_000, 1000):
        message = request(["user_profile:age"], {"user_id": list(range(start, start + 1000))})
        client.GetFeatures(message, timeout=10)
        assert len(cache) <= 1000
    assert len(cache) == 1000
    assert cache.stats.misses == 50_000
    assert _own_memory_mib() < before + 40


def _own_memory_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
