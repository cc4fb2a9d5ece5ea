"""Metrics of a real sidecar after known sequences of calls: exact counts, exact labels."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from support import (
    EXAMPLE_POLICY,
    TokenIssuer,
    bearer,
    code_of,
    column_values,
    put_entity,
    request,
    stub,
)
from test_metrics_support import (
    PRINCIPAL,
    BundleSigner,
    http_get,
    scrape,
    scrape_until,
    seed,
    total,
    value,
    wait_until,
    write_policy,
)

from featuresidecar_server.codec import Status
from featuresidecar_server.columns import StatsGroup
from featuresidecar_server.grpc_service import CallOutcome
from featuresidecar_server.metrics import (
    LATENCY_BUCKETS,
    MAX_PRINCIPALS,
    OTHER_PRINCIPAL,
    BulkHistogram,
    SidecarMetrics,
    Tally,
)
from featuresidecar_server.metrics_calls import CallMetrics
from featuresidecar_server.metrics_values import ServedValues
from featuresidecar_server.service import CallRecord

FS = {"grpc_type": "unary", "grpc_service": "featuresidecar.v1.FeatureService"}
GET = {**FS, "grpc_method": "GetFeatures"}
F_SETPIPE_SZ = 1031

# Users 1, 2 and 3 as `seed` writes them (see test_metrics_support).
MASKED_CALL = request(["profile:age", "profile:email", "stats:clicks"], {"user_id": [1, 2, 3]})
PARTIAL_CALL = request(["profile:age", "stats:score"], {"user_id": [1]}, allow_partial=True)
ALLOWED_CALL = request(["profile:age"], {"user_id": [1]})
DENIED_CALL = request(["stats:score"], {"user_id": [1]})
UNKNOWN_CALL = request(["profile:nope"], {"user_id": [1]})


def _sidecar(sidecar_factory: Any, redis_url: str, tmp_path: Path, **settings: Any) -> Any:
    policy = write_policy(tmp_path)
    seed(redis_url, policy)
    settings.setdefault("metrics_listen", "127.0.0.1:0")
    return sidecar_factory(
        redis=redis_url, bundle=str(policy), workload_principal=PRINCIPAL, **settings
    )


def _base(sidecar: Any) -> str:
    return f"http://{sidecar.sidecar.http.address}"


def test_exact_counts_after_a_known_sequence_of_calls(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    sidecar = _sidecar(sidecar_factory, redis_server.url, tmp_path)
    base = _base(sidecar)
    _, client = stub(sidecar.address)
    before = scrape(base)
    assert value(before, "grpc_server_handled_total", **GET, grpc_code="OK") == 0

    for _ in range(5):
        client.GetFeatures(MASKED_CALL, timeout=5)
    client.GetFeatures(PARTIAL_CALL, timeout=5)
    client.GetFeatures(ALLOWED_CALL, timeout=5)
    for _ in range(2):
        assert code_of(lambda: client.GetFeatures(DENIED_CALL, timeout=5))[0] == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    assert code_of(lambda: client.GetFeatures(UNKNOWN_CALL, timeout=5))[0] == (
        grpc.StatusCode.NOT_FOUND
    )

    after = scrape(base)
    handled = {
        code: value(after, "grpc_server_handled_total", **GET, grpc_code=code)
        for code in ("OK", "PermissionDenied", "NotFound", "Unavailable", "InvalidArgument")
    }
    assert handled == {
        "OK": 7,
        "PermissionDenied": 2,
        "NotFound": 1,
        "Unavailable": 0,
        "InvalidArgument": 0,
    }
    assert value(after, "grpc_server_started_total", **GET) == 10
    assert value(after, "grpc_server_msg_received_total", **GET) == 10
    assert value(after, "grpc_server_msg_sent_total", **GET) == 7
    assert value(after, "grpc_server_handling_seconds_count", **GET) == 10
    assert value(after, "grpc_server_handling_seconds_bucket", **GET, le="+Inf") == 10

    values = {
        (view, status): value(after, "feature_sidecar_values_total", view=view, status=status)
        for view in ("profile", "stats")
        for status in ("PRESENT", "NULL_VALUE", "NOT_FOUND", "STALE", "MASKED", "DENIED")
    }
    assert values == {
        # age: 5 x [PRESENT, NULL_VALUE, NOT_FOUND] + 2 x PRESENT; email: 5 x [MASKED, MASKED,
        # NOT_FOUND].
        ("profile", "PRESENT"): 7,
        ("profile", "NULL_VALUE"): 5,
        ("profile", "NOT_FOUND"): 10,
        ("profile", "STALE"): 0,
        ("profile", "MASKED"): 10,
        ("profile", "DENIED"): 0,
        # clicks: 5 x [STALE (2 h > 1 h), PRESENT, NOT_FOUND]; score: once DENIED (allow_partial).
        ("stats", "PRESENT"): 5,
        ("stats", "NULL_VALUE"): 0,
        ("stats", "NOT_FOUND"): 5,
        ("stats", "STALE"): 5,
        ("stats", "MASKED"): 0,
        ("stats", "DENIED"): 1,
    }
    decisions = {
        decision: value(
            after, "feature_sidecar_policy_decisions_total", role="scorer", decision=decision
        )
        for decision in ("allow", "deny", "mask", "partial")
    }
    assert decisions == {"allow": 1, "deny": 2, "mask": 5, "partial": 1}
    assert value(after, "feature_sidecar_rate_limited_total", role="scorer") == 0

    # Every call that got past request validation: 5 x 3 rows, then 1 row each.
    assert value(after, "feature_sidecar_entities_per_request_count") == 10
    assert value(after, "feature_sidecar_entities_per_request_sum") == 5 * 3 + 5
    assert value(after, "feature_sidecar_entities_per_request_bucket", le="1.0") == 5
    assert value(after, "feature_sidecar_features_per_request_sum") == 5 * 3 + 2 + 1 + 2 + 1

    # Ages: profile values are 30 s (user 1) or 120 s (user 2) old; stats 2 h and 10 min.
    age = "feature_sidecar_value_age_seconds_bucket"
    assert value(after, age, view="profile", le="10.0") == 0
    assert value(after, age, view="profile", le="60.0") == 5 * 2 + 2
    assert value(after, age, view="profile", le="300.0") == 5 * 4 + 2
    assert value(after, age, view="profile", le="+Inf") == 5 * 4 + 2
    assert value(after, age, view="stats", le="300.0") == 0
    assert value(after, age, view="stats", le="900.0") == 5
    assert value(after, age, view="stats", le="3600.0") == 5
    assert value(after, age, view="stats", le="10800.0") == 10
    assert value(after, "feature_sidecar_value_age_seconds_count", view="stats") == 10
    mean = value(after, "feature_sidecar_value_age_seconds_sum", view="stats") / 10
    assert 3900 <= mean <= 3960  # (7200 + 600) / 2 plus the few seconds the test took

    # No principal and no entity id anywhere by default.
    assert not any("principal" in dict(labels) for _, labels in after)
    text = http_get(f"{base}/metrics")[2].decode()
    assert PRINCIPAL not in text
    assert 'revision="0"' in text


def test_principal_label_only_when_asked_for(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    sidecar = _sidecar(sidecar_factory, redis_server.url, tmp_path, metrics_principal_label=True)
    _, client = stub(sidecar.address)
    client.GetFeatures(ALLOWED_CALL, timeout=5)
    code_of(lambda: client.GetFeatures(DENIED_CALL, timeout=5))
    after = scrape(_base(sidecar))
    labels = {**GET, "principal": PRINCIPAL}
    assert value(after, "grpc_server_handled_total", **labels, grpc_code="OK") == 1
    assert value(after, "grpc_server_handled_total", **labels, grpc_code="PermissionDenied") == 1
    # Only there: the histogram and the other counters keep their cardinality.
    assert value(after, "grpc_server_started_total", **GET) == 2
    assert value(after, "grpc_server_handling_seconds_count", **GET) == 2


def test_health_checks_and_reflection_are_counted(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    sidecar = _sidecar(sidecar_factory, redis_server.url, tmp_path)
    with grpc.insecure_channel(sidecar.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(3):
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        missing = health_pb2.HealthCheckRequest(service="no.such.Service")
        assert code_of(lambda: health.Check(missing, timeout=5))[0] == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
        first = next(watch)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        asks = [reflection_pb2.ServerReflectionRequest(list_services="")] * 2
        answers = list(reflect.ServerReflectionInfo(iter(asks), timeout=5))
        services = {s.name for s in answers[0].list_services_response.service}
        assert services == {
            "featuresidecar.v1.FeatureService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
    base = _base(sidecar)

    after = scrape_until(
        base,
        lambda samples: total(samples, "grpc_server_handled_total", grpc_method="Watch") == 1,
        "the cancelled Watch to be counted",
    )
    check = {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    assert value(after, "grpc_server_started_total", **check) == 4
    assert value(after, "grpc_server_handled_total", **check, grpc_code="OK") == 3
    assert value(after, "grpc_server_handled_total", **check, grpc_code="NotFound") == 1
    assert value(after, "grpc_server_msg_sent_total", **check) == 3
    watch_labels = {
        "grpc_type": "server_stream",
        "grpc_service": "grpc.health.v1.Health",
        "grpc_method": "Watch",
    }
    assert value(after, "grpc_server_handled_total", **watch_labels, grpc_code="Canceled") == 1
    assert value(after, "grpc_server_msg_sent_total", **watch_labels) >= 1
    reflection = {
        "grpc_type": "bidi_stream",
        "grpc_service": "grpc.reflection.v1alpha.ServerReflection",
        "grpc_method": "ServerReflectionInfo",
    }
    assert value(after, "grpc_server_started_total", **reflection) == 1
    assert value(after, "grpc_server_msg_received_total", **reflection) == 2
    assert value(after, "grpc_server_msg_sent_total", **reflection) == 2
    assert value(after, "grpc_server_handled_total", **reflection, grpc_code="OK") == 1


def test_rate_limited_calls_by_role(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path,
        "limits:\n  - roles: [scorer]\n    requests_per_second: 0.001\n    burst: 1\n",
    )
    seed(redis_server.url, policy)
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(policy),
        workload_principal=PRINCIPAL,
        metrics_listen="127.0.0.1:0",
    )
    _, client = stub(sidecar.address)
    client.GetFeatures(ALLOWED_CALL, timeout=5)
    for _ in range(3):
        assert code_of(lambda: client.GetFeatures(ALLOWED_CALL, timeout=5))[0] == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
    after = scrape(_base(sidecar))
    assert value(after, "feature_sidecar_rate_limited_total", role="scorer") == 3
    assert value(after, "grpc_server_handled_total", **GET, grpc_code="ResourceExhausted") == 3
    # The policy allowed them; the limit refused them.
    assert (
        value(after, "feature_sidecar_policy_decisions_total", role="scorer", decision="allow") == 4
    )
    assert value(after, "feature_sidecar_rate_limited_total", role="(none)") == 0


def test_redis_errors_latency_and_up(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    sidecar = _sidecar(sidecar_factory, redis_server.url, tmp_path, redis_timeout=0.3)
    base = _base(sidecar)
    _, client = stub(sidecar.address)
    client.GetFeatures(ALLOWED_CALL, timeout=5)
    up = scrape(base)
    assert value(up, "feature_sidecar_redis_up") == 1
    assert value(up, "feature_sidecar_redis_request_duration_seconds_count") >= 1
    assert {
        k: value(up, "feature_sidecar_redis_errors_total", kind=k)
        for k in ("timeout", "connection", "response", "other")
    } == dict.fromkeys(("timeout", "connection", "response", "other"), 0)

    redis_server.stop()
    assert code_of(lambda: client.GetFeatures(ALLOWED_CALL, timeout=5))[0] == (
        grpc.StatusCode.UNAVAILABLE
    )
    down = scrape(base)
    assert value(down, "feature_sidecar_redis_up") == 0
    assert value(down, "feature_sidecar_redis_errors_total", kind="connection") >= 1
    assert value(down, "grpc_server_handled_total", **GET, grpc_code="Unavailable") == 1
    # The policy allowed the call; Redis failed it.
    assert (
        value(down, "feature_sidecar_policy_decisions_total", role="scorer", decision="allow") == 2
    )

    redis_server.start()
    wait_until(lambda: value(scrape(base), "feature_sidecar_redis_up") == 1, what="Redis back")
    client.GetFeatures(ALLOWED_CALL, timeout=5)


def test_bundle_metrics_follow_activations_and_rejections(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    signer = BundleSigner(tmp_path)
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(signer.bundle(1))
    seed(redis_server.url, write_policy(tmp_path))
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(bundle),
        workload_principal=PRINCIPAL,
        metrics_listen="127.0.0.1:0",
        allow_unsigned=False,
        bundle_public_key=[str(signer.public_path)],
        # No timed polls after the first: the test polls by hand, so every count is exact.
        bundle_poll_interval=3600.0,
    )
    base = _base(sidecar)
    poll = sidecar.sidecar.sync.poll_once
    source = str(bundle)

    # Ready comes with the activation; the download is recorded a moment later.
    first = scrape_until(
        base,
        lambda samples: value(samples, "feature_sidecar_bundle_last_success_timestamp_seconds") > 0,
        "the first download",
    )
    assert value(first, "feature_sidecar_bundle_info", revision="1", source=source) == 1
    success = value(first, "feature_sidecar_bundle_last_success_timestamp_seconds")
    assert abs(success - time.time()) < 60
    assert value(first, "feature_sidecar_bundle_last_attempt_timestamp_seconds") >= success - 1
    reasons = ("signature", "parse", "rollback", "size", "http", "timeout", "io")
    assert {
        r: value(first, "feature_sidecar_bundle_failures_total", reason=r) for r in reasons
    } == (dict.fromkeys(reasons, 0))

    bundle.write_bytes(signer.bundle(2))
    poll()
    second = scrape(base)
    infos = {
        dict(labels)["revision"]: v
        for (name, labels), v in second.items()
        if name == "feature_sidecar_bundle_info"
    }
    assert infos == {"2": 1}  # the old revision is gone, not 0

    bundle.write_text('{"format": "feature-sidecar-bundle/v1", "payload": "not base64!!"')
    poll()
    corrupt = scrape(base)
    assert value(corrupt, "feature_sidecar_bundle_failures_total", reason="parse") == 1
    assert value(corrupt, "feature_sidecar_bundle_info", revision="2", source=source) == 1
    assert value(corrupt, "feature_sidecar_bundle_last_attempt_timestamp_seconds") >= value(
        corrupt, "feature_sidecar_bundle_last_success_timestamp_seconds"
    )

    bundle.write_bytes(signer.bundle(1))
    poll()
    bundle.write_bytes(BundleSigner(tmp_path, "stranger").bundle(3))
    poll()
    bundle.unlink()
    poll()
    last = scrape(base)
    assert {r: value(last, "feature_sidecar_bundle_failures_total", reason=r) for r in reasons} == {
        **dict.fromkeys(reasons, 0),
        "parse": 1,
        "rollback": 1,
        "signature": 1,
        "io": 1,
    }
    assert value(last, "feature_sidecar_bundle_info", revision="2", source=source) == 1
    assert sidecar.sidecar.activator.status.failures == {
        "parse": 1,
        "rollback": 1,
        "signature": 1,
        "io": 1,
    }


def test_bundle_source_label_hides_passwords_and_queries() -> None:
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry, process_metrics=False)
    metrics.bundle_activated(7, "https://user:s3cret@bundles.example/ml.json?X-Amz-Signature=abc")
    labels = {
        tuple(sorted(s.labels.items()))
        for family in registry.collect()
        if family.name == "feature_sidecar_bundle_info"
        for s in family.samples
    }
    assert labels == {
        (("revision", "7"), ("source", "https://user:***@bundles.example/ml.json")),
    }


def test_decision_log_drops_are_counted(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    fifo = tmp_path / "decisions.fifo"
    os.mkfifo(fifo)
    # A reader that never reads, on a one-page pipe: the writer thread soon blocks.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fcntl.fcntl(reader, F_SETPIPE_SZ, 4096)
        sidecar = _sidecar(
            sidecar_factory,
            redis_server.url,
            tmp_path,
            decision_log=str(fifo),
            decision_log_queue=1,
        )
        _, client = stub(sidecar.address)
        log = sidecar.sidecar.decision_log
        for _ in range(60):
            client.GetFeatures(MASKED_CALL, timeout=5)
        assert log.dropped > 0
        dropped = value(scrape(_base(sidecar)), "feature_sidecar_decision_log_dropped_total")
        assert dropped == log.dropped
    finally:
        os.close(reader)


@pytest.mark.parametrize("samples", [[], [0.0], [0.0001, 0.0002, 7.0, 1e9], list(range(50))])
def test_bulk_observations_equal_one_by_one(samples: list[float]) -> None:
    one, bulk = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=one)
    for sample in samples:
        reference.observe(sample)
    target = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=bulk)
    adder = BulkHistogram(target, LATENCY_BUCKETS)
    assert adder.fast
    adder.observe_many(np.array(samples, dtype=np.float64))

    def samples_of(registry: CollectorRegistry) -> list[tuple[str, Any, float]]:
        return [
            (s.name, s.labels, s.value)
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert samples_of(bulk) == samples_of(one)


def test_a_tally_holds_counts_and_observations_until_flushed_then_applies_them_once() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["k"], registry=registry)
    hist = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=registry)
    a, b = counter.labels("a"), counter.labels("b")
    tally = Tally()
    tally.count(a)
    tally.record((a, b), BulkHistogram(hist, LATENCY_BUCKETS), 0.0003)
    tally.record((), BulkHistogram(hist, LATENCY_BUCKETS), 7.0)
    assert registry.get_sample_value("c_total", {"k": "a"}) == 0
    assert registry.get_sample_value("h_count") == 0
    tally.flush()
    tally.flush()  # nothing is applied twice
    assert registry.get_sample_value("c_total", {"k": "a"}) == 2
    assert registry.get_sample_value("c_total", {"k": "b"}) == 1
    assert registry.get_sample_value("h_count") == 2
    assert registry.get_sample_value("h_sum") == 7.0003
    assert registry.get_sample_value("h_bucket", {"le": "0.0005"}) == 1
    assert registry.get_sample_value("h_bucket", {"le": "5.0"}) == 1
    assert registry.get_sample_value("h_bucket", {"le": "+Inf"}) == 2


def _outcome(rows: int, now: int) -> CallOutcome:
    record = CallRecord(principal=PRINCIPAL, roles=("scorer",), entities=rows, features=3)
    record.now_ns = now
    statuses = np.array([Status.PRESENT, Status.NOT_FOUND, Status.STALE] * rows, np.uint8)[:rows]
    for view, age in (("profile", 5), ("profile", 7200), ("stats", 40)):
        stamps = np.full(rows, now - age * 1_000_000_000, np.int64)
        stamps[statuses == Status.NOT_FOUND] = 0
        record.columns.append((view, statuses.copy(), stamps, 1))
    return CallOutcome("GetFeatures", grpc.StatusCode.OK, 0.001, "r", record, None)


def _recorded(rows: int, fast: bool) -> list[tuple[str, Any, float]]:
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry, process_metrics=False)
    metrics.bind_policy(["profile", "stats"], ["scorer"])
    for children in metrics.views.values():
        children.age.fast = fast
    calls = CallMetrics(metrics)
    outcome = _outcome(rows, 1_800_000_000 * 1_000_000_000)
    for _ in range(3):
        calls.observe(outcome)
    return sorted(
        (s.name, sorted(s.labels.items()), s.value)
        for family in registry.collect()
        if family.name.startswith("feature_sidecar_value")
        for s in family.samples
        if not s.name.endswith("_created")
    )


@pytest.mark.parametrize("rows", [1, 2, 7])
def test_values_and_ages_of_wide_calls_equal_value_by_value(rows: int) -> None:
    fast = _recorded(rows, fast=True)
    assert fast == _recorded(rows, fast=False)
    counted = {(n, tuple(labels)): v for n, labels, v in fast}
    present = len([i for i in range(rows) if i % 3 == 0])
    stamped = len([i for i in range(rows) if i % 3 != 1])  # all but NOT_FOUND
    assert counted[
        ("feature_sidecar_values_total", (("status", "PRESENT"), ("view", "profile")))
    ] == (3 * 2 * present)
    assert (
        counted[("feature_sidecar_value_age_seconds_bucket", (("le", "10.0"), ("view", "profile")))]
        == 3 * stamped
    )


def test_calls_that_share_their_arrays_are_aged_each_at_its_own_time() -> None:
    # Single-row calls of one entity share their status and event-time arrays; their values
    # are grouped when counted, and each call's age is still measured at that call's time.
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry, process_metrics=False)
    calls = CallMetrics(metrics)
    now = 1_800_000_000 * 1_000_000_000
    statuses = np.array([Status.PRESENT], np.uint8)
    stamps = np.array([now - 5 * 1_000_000_000], np.int64)
    for later in (0, 100, 100):
        record = CallRecord(principal=PRINCIPAL, roles=("scorer",), entities=1, features=4)
        record.now_ns = now + later * 1_000_000_000
        record.columns.append(("profile", statuses, stamps, 4))
        calls.observe(CallOutcome("GetFeatures", grpc.StatusCode.OK, 0.001, "r", record, None))
    metrics.flush()

    def bucket(le: str) -> float | None:
        labels = {"view": "profile", "le": le}
        return registry.get_sample_value("feature_sidecar_value_age_seconds_bucket", labels)

    assert (bucket("1.0"), bucket("10.0"), bucket("60.0"), bucket("300.0")) == (0, 4, 4, 12)
    assert registry.get_sample_value(
        "feature_sidecar_value_age_seconds_sum", {"view": "profile"}
    ) == (4 * 5 + 8 * 105)
    assert (
        registry.get_sample_value(
            "feature_sidecar_values_total", {"view": "profile", "status": "PRESENT"}
        )
        == 12
    )


def _served_samples(calls: list[tuple[int, list[Any]]]) -> dict[tuple[str, tuple[Any, ...]], float]:
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry, process_metrics=False)
    served = ServedValues(metrics)
    for now, columns in calls:
        record = CallRecord(principal=PRINCIPAL, roles=("scorer",), entities=1, features=6)
        record.now_ns = now
        record.columns = columns
        served.add(record)
    metrics.flush()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        if family.name.startswith("feature_sidecar_value")
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_single_rows_grouped_by_event_times_count_like_each_call_alone() -> None:
    # Single-row calls of one entity hand the metrics one shared group of entries; counting the
    # group must equal counting every call's entries one by one, ages included: within one
    # bucket, across a bucket edge (9.5 s to 10.5 s) and for an event time in the future.
    second = 1_000_000_000
    now = 1_800_000_000 * second
    present = np.array([Status.PRESENT], np.uint8)
    entries = (
        ("profile", present, np.array([now - 95 * second // 10], np.int64), 3),
        ("stats", present, np.array([now - 100 * second], np.int64), 2),
        ("profile", present, np.array([now + 2 * second], np.int64), 1),
        ("stats", present, None, 4),
    )
    group = StatsGroup(entries)
    times = [now, now + second // 5, now + second]
    grouped = _served_samples([(t, [group]) for t in times])
    alone = _served_samples([(t, list(entries)) for t in times])
    assert grouped.keys() == alone.keys()
    for key, expected in alone.items():
        assert grouped[key] == pytest.approx(expected, rel=1e-12), key
    profile_10s = (
        "feature_sidecar_value_age_seconds_bucket",
        (("le", "10.0"), ("view", "profile")),
    )
    assert grouped[profile_10s] == 3 + 3 + 3  # the future one (age 0) and two of 9.5/9.7/10.5
    present_stats = ("feature_sidecar_values_total", (("status", "PRESENT"), ("view", "stats")))
    assert grouped[present_stats] == 3 * (2 + 4)


def test_every_principal_past_the_label_limit_is_served_and_counted_as_other(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    issuer = TokenIssuer(tmp_path)
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_stats",
        {"user_id": 1},
        {"ctr_7d": 0.5},
        time.time_ns(),
    )
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        metrics_principal_label=True,
        **issuer.settings(),
    )
    _, client = stub(sidecar.address)
    message = request(["user_stats:ctr_7d"], {"user_id": [1]})
    callers = MAX_PRINCIPALS + 20
    for n in range(callers):
        token = issuer.token(f"analyst-{n}", ["data-science"])
        response = client.GetFeatures(message, timeout=5, metadata=bearer(token))
        assert column_values(response.columns[0]) == [0.5]
    registry = sidecar.sidecar.metrics.registry
    handled = {
        labels["principal"]: value
        for labels, value in (
            (sample.labels, sample.value)
            for family in registry.collect()
            if family.name == "grpc_server_handled"
            for sample in family.samples
            if sample.name == "grpc_server_handled_total" and sample.labels["grpc_code"] == "OK"
        )
    }
    assert len(handled) == MAX_PRINCIPALS + 1
    assert handled[OTHER_PRINCIPAL] == 20
    assert handled["analyst-0"] == 1
    assert sum(handled.values()) == callers


def test_a_failing_observer_never_changes_a_calls_outcome(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(outcome: CallOutcome) -> None:
        raise RecursionError("an observer that fails")

    sidecar = _sidecar(sidecar_factory, redis_server.url, tmp_path, observers=[broken])
    _, client = stub(sidecar.address)
    with caplog.at_level("ERROR", logger="featuresidecar.observers"):
        for _ in range(3):
            response = client.GetFeatures(ALLOWED_CALL, timeout=5)
            assert list(response.columns[0].statuses) == [Status.PRESENT]
        assert code_of(lambda: client.GetFeatures(DENIED_CALL, timeout=5))[0] == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    # Logged, but not once per call.
    failures = [r for r in caplog.records if r.name == "featuresidecar.observers"]
    assert len(failures) == 1
    assert failures[0].getMessage() == "observing a call failed; the call's outcome stands"
