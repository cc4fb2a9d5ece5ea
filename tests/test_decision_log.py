"""The decision log: one JSON line per call, never in the way of the call."""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import EXAMPLE_POLICY, TokenIssuer, bearer, put_entity, request, stub

from featuresidecar_server.access import Identity
from featuresidecar_server.decision_log import DecisionLog
from featuresidecar_server.grpc_service import CallOutcome
from featuresidecar_server.service import CallRecord

F_SETPIPE_SZ = 1031

SECRET = b"a secret of the sidecar, 32 bytes"
MIB = 1024 * 1024
F_SETPIPE_SZ = 1031


def _outcome() -> CallOutcome:
    record = CallRecord(
        principal="support-console",
        roles=("support-tool",),
        revision=3,
        entities=2,
        features=2,
        allowed=["user_profile:email", "user_profile:age"],
        denied=[],
        masked=["user_profile:email"],
        entity_values={"user_id": [7, 8]},
    )
    return CallOutcome(
        "GetFeatures",
        grpc.StatusCode.OK,
        0.0012345,
        "req-1",
        record,
        Identity("support-console", (), "jwt"),
    )


@pytest.mark.parametrize(
    ("mode", "entities"),
    [
        ("plain", {"user_id": [7, 8]}),
        (
            "hashed",
            {
                "user_id": [
                    hmac.new(SECRET, b"user_id=7", hashlib.sha256).hexdigest()[:16],
                    hmac.new(SECRET, b"user_id=8", hashlib.sha256).hexdigest()[:16],
                ]
            },
        ),
        ("none", None),
    ],
)
def test_one_line_per_call_with_every_field(mode: str, entities: Any) -> None:
    stream = io.StringIO()
    log = DecisionLog(stream, entities=mode, clock=lambda: 1_800_000_000.25, entity_key=SECRET)
    log.observe(_outcome())
    log.close()
    line = json.loads(stream.getvalue())
    expected = {
        "time": "2027-01-15T08:00:00.250Z",
        "request_id": "req-1",
        "method": "GetFeatures",
        "principal": "support-console",
        "identity_source": "jwt",
        "roles": ["support-tool"],
        "features": {
            "allowed": ["user_profile:email", "user_profile:age"],
            "denied": [],
            "masked": ["user_profile:email"],
        },
        "entity_count": 2,
        "policy_revision": 3,
        "code": "OK",
        "latency_ms": 1.234,
    }
    if entities is not None:
        expected["entities"] = entities
    assert line == expected
    assert stream.getvalue().count("\n") == 1


def test_lines_from_real_calls_and_no_token_in_them(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 1},
        {"age": 34, "email": "a@x"},
        time.time_ns(),
    )
    issuer = TokenIssuer(tmp_path)
    path = tmp_path / "decisions.jsonl"
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        decision_log=str(path),
        **issuer.settings(),
    )
    _, client = stub(sidecar.address)
    token = issuer.token("spiffe://cluster.local/ns/ml/sa/ranker")
    client.GetFeatures(
        request(["user_profile:age"], {"user_id": [1]}), metadata=bearer(token), timeout=5
    )
    with pytest.raises(grpc.RpcError):
        client.GetFeatures(
            request(["user_profile:email"], {"user_id": [1]}), metadata=bearer(token), timeout=5
        )
    sidecar.wait_for(lambda: path.exists() and path.read_text().count("\n") == 2)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["code"], x["features"]["allowed"], x["features"]["denied"]) for x in lines] == [
        ("OK", ["user_profile:age"], []),
        ("PERMISSION_DENIED", [], ["user_profile:email"]),
    ]
    assert all(x["roles"] == ["ranking-model"] and x["policy_revision"] == 0 for x in lines)
    assert token not in path.read_text()
    assert len(lines[0]["entities"]["user_id"][0]) == 16  # hashed by default


def test_a_full_queue_drops_and_counts_lines_and_calls_are_not_slowed(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 1},
        {"age": 34},
        time.time_ns(),
    )
    fifo = tmp_path / "decisions.fifo"
    os.mkfifo(fifo)
    # A reader that never reads, on a one-page pipe: the writer thread soon blocks for good.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fcntl.fcntl(reader, F_SETPIPE_SZ, 4096)
        sidecar = sidecar_factory(
            redis=redis_server.url,
            bundle=str(EXAMPLE_POLICY),
            decision_log=str(fifo),
            decision_log_queue=2,
            workload_principal="spiffe://cluster.local/ns/ml/sa/ranker",
        )
        _, client = stub(sidecar.address)
        message = request(["user_profile:age"], {"user_id": list(range(40))})
        slowest = 0.0
        for _ in range(200):
            started = time.perf_counter()
            client.GetFeatures(message, timeout=5)
            slowest = max(slowest, time.perf_counter() - started)
        log = sidecar.sidecar.decision_log
        assert log is not None
        assert log.dropped > 100
        assert log.written + log.writing + log.waiting + log.dropped == 200
        assert slowest < 0.5
    finally:
        os.close(reader)


def test_entity_ids_are_hashed_with_the_sidecar_secret_when_it_has_one(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    secret = tmp_path / "mask.key"
    secret.write_bytes(b"team-secret-of-24-bytes!\n")
    path = tmp_path / "decisions.jsonl"
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        decision_log=str(path),
        mask_key_file=str(secret),
        workload_principal="spiffe://cluster.local/ns/ml/sa/ranker",
    )
    _, client = stub(sidecar.address)
    client.GetFeatures(request(["user_profile:age"], {"user_id": [42]}), timeout=5)
    sidecar.wait_for(lambda: path.exists() and path.read_text().count("\n") == 1)
    line = json.loads(path.read_text())
    expected = hmac.new(b"team-secret-of-24-bytes!", b"user_id=42", hashlib.sha256).hexdigest()[:16]
    assert line["entities"] == {"user_id": [expected]}


def test_the_queue_is_bounded_in_bytes_and_drops_are_counted(tmp_path: Path) -> None:
    read, write = os.pipe()
    drops: list[int] = []
    log = DecisionLog(
        os.fdopen(write, "w"),
        entities="none",
        queue_size=10_000,
        queue_bytes=8 * MIB,
        interval=3600.0,  # the writer stays asleep until close(): the queue only fills
    )
    log.on_drop.append(lambda: drops.append(1))
    record = CallRecord(principal="p", request_bytes=MIB, entity_values={"user_id": [1, 2]})
    outcome = CallOutcome("GetFeatures", grpc.StatusCode.OK, 0.001, "r", record, None)
    for _ in range(100):
        log.observe(outcome)
    # Each call costs its request, 64 bytes per entity id and 512 for the line.
    cost = MIB + 2 * 64 + 512
    assert log.waiting == 8 * MIB // cost == 7
    assert log.waiting_bytes == 7 * cost
    assert log.dropped == len(drops) == 93
    log.close(timeout=5)
    assert os.read(read, 65536).count(b"\n") == log.written == 7
    os.close(read)


def test_long_entity_ids_are_not_kept_in_the_hash_cache() -> None:
    log = DecisionLog(io.StringIO(), entities="hashed", entity_key=SECRET)
    short, long = "u" * 256, "u" * 257
    assert log._entity("user_id", short) == log._entity("user_id", short)
    assert log._entity("user_id", long) == log._entity("user_id", long)
    assert set(log._hashed) == {("user_id", short)}
    log.close()
