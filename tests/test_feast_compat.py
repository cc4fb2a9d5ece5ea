"""Bytes written by real Feast (tests/fixtures/feast) served through the sidecar, exactly."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from support import (
    FEAST_POLICY,
    FIXTURES,
    by_name,
    column_values,
    request,
    statuses,
    stub,
    timestamps,
)

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar_server.policy_yaml import load_policy_file

EXPECTED = json.loads((FIXTURES / "feast" / "expected.json").read_text())
POLICY = load_policy_file(str(FEAST_POLICY))
KINDS = {f.ref: f.kind for v in POLICY.catalog.views for f in v.features}


def _ns(text: str) -> int:
    stamp = datetime.fromisoformat(text)
    return int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000


def _expected_value(ref: str, value: Any) -> Any:
    element = KINDS[ref].element
    if value is None:
        return None
    if isinstance(value, list):
        return [_expected_value(ref, v) for v in value]
    if element == "bytes":
        return bytes.fromhex(value["hex"])
    if element == "timestamp":
        return _ns(value)
    return value


def _serve(sidecar_factory: Any, feast_redis: Any) -> Any:
    return sidecar_factory(
        redis=feast_redis.url, bundle=str(FEAST_POLICY), workload_principal="compat-test"
    )


def test_every_type_written_by_feast_reads_back_exactly(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis)
    _, client = stub(sidecar.address)
    for view in ("driver_scalars", "driver_lists"):
        rows = EXPECTED[view]
        ids = [int(label.split("=")[1]) for label in rows]
        refs = [ref for ref in KINDS if ref.startswith(view + ":")]
        response = client.GetFeatures(request(refs, {"driver_id": ids}), timeout=10)
        columns = by_name(response)
        for ref in refs:
            name = ref.split(":")[1]
            expected = [_expected_value(ref, rows[label][name]) for label in rows]
            got = column_values(columns[ref])
            assert got == expected, ref
            want_status = ["NULL_VALUE" if v is None else "PRESENT" for v in expected]
            assert statuses(columns[ref]) == want_status, ref
            assert timestamps(columns[ref]) == [
                _ns(rows[label]["_event_timestamp"]) for label in rows
            ]
            assert columns[ref].type == KINDS[ref].number


def test_composite_and_string_keys_written_by_feast(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis)
    _, client = stub(sidecar.address)
    response = client.GetFeatures(
        request(
            ["driver_item:score", "item_stats:price"],
            {"driver_id": [1002, 1001, 1001], "item_id": ["B-2", "A-1", "B-2"]},
        ),
        timeout=10,
    )
    columns = by_name(response)
    assert column_values(columns["driver_item:score"]) == [-12.5, 0.875, None]
    assert statuses(columns["driver_item:score"]) == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert timestamps(columns["driver_item:score"]) == [
        _ns(EXPECTED["driver_item"]["driver_id=1002,item_id=B-2"]["_event_timestamp"]),
        _ns(EXPECTED["driver_item"]["driver_id=1001,item_id=A-1"]["_event_timestamp"]),
        0,
    ]
    assert column_values(columns["item_stats:price"]) == [-0.001, 19.99, -0.001]
    assert response.row_count == 3
    assert list(response.feature_names) == ["driver_item:score", "item_stats:price"]
    assert response.columns[0].type == pb.DOUBLE
