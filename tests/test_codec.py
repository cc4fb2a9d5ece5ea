"""The Feast Value codec and entity keys, without I/O."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from featuresidecar_server.codec import (
    DecodeError,
    Status,
    decode_column,
    decode_timestamp,
    decode_value,
    encode_timestamp,
    encode_value,
)
from featuresidecar_server.entity_key import EntityValueError, key_prefix, redis_key
from featuresidecar_server.layout import field_of
from featuresidecar_server.valuetypes import KINDS

ROUND_TRIPS: list[tuple[str, Any]] = [
    ("int32", -7),
    ("int32", 2**31 - 1),
    ("int64", -(2**63)),
    ("int64", 0),
    ("float", -1.25),
    ("double", 1e300),
    ("string", "Zürich"),
    ("string", ""),
    ("bytes", b"\x00\xff"),
    ("bool", False),
    ("timestamp", 1_700_000_000 * 10**9),
    ("int32_list", [-1, 0, 7]),
    ("int64_list", [2**40, -3]),
    ("float_list", [0.5, -2.0]),
    ("double_list", []),
    ("string_list", ["a", "", "東京"]),
    ("bytes_list", [b"", b"\x01"]),
    ("bool_list", [True, False]),
    ("timestamp_list", [0, 10**9]),
]


@pytest.mark.parametrize(("kind", "value"), ROUND_TRIPS)
def test_values_round_trip(kind: str, value: Any) -> None:
    assert decode_value(encode_value(value, KINDS[kind]), KINDS[kind]) == value


def test_null_values() -> None:
    assert encode_value(None, KINDS["string"]) == b""
    assert decode_value(b"", KINDS["string"]) is None
    # Feast writes a null timestamp as INT64_MIN seconds.
    assert encode_value(None, KINDS["timestamp"]) == bytes.fromhex("4080808080808080808001")
    assert decode_value(bytes.fromhex("4080808080808080808001"), KINDS["timestamp"]) is None
    assert decode_value(b"\x98\x01\x00", KINDS["double"]) is None  # null_val = NULL


def test_exact_bytes_of_the_common_cases() -> None:
    assert encode_value(5_000_000_000, KINDS["int64"]) == bytes.fromhex("2080e497d012")
    assert encode_value(-7, KINDS["int32"]) == bytes.fromhex("18f9ffffffffffffffff01")
    assert encode_value(0.5, KINDS["double"]) == b"\x29" + struct.pack("<d", 0.5)
    assert encode_value([], KINDS["int32_list"]) == bytes.fromhex("6a00")
    assert encode_timestamp(1_768_478_400 * 10**9) == bytes.fromhex("08c0ada3cb06")
    assert decode_timestamp(bytes.fromhex("08b8aea3cb06108094ef3a")) == (
        1_768_478_520 * 10**9 + 123_456_000
    )


def test_stored_values_widen_but_never_narrow_silently() -> None:
    assert decode_value(encode_value(7, KINDS["int32"]), KINDS["int64"]) == 7
    assert decode_value(encode_value(0.5, KINDS["float"]), KINDS["double"]) == 0.5
    with pytest.raises(DecodeError, match="stored double value where int64 is declared"):
        decode_value(encode_value(0.5, KINDS["double"]), KINDS["int64"])
    with pytest.raises(DecodeError, match="stored string value where int64_list is declared"):
        decode_value(encode_value("x", KINDS["string"]), KINDS["int64_list"])


def test_unpacked_lists_are_read_too() -> None:
    # DoubleList{val: 1.5, val: 2.5} written unpacked: field 1, wire type 1, twice.
    inner = b"\x09" + struct.pack("<d", 1.5) + b"\x09" + struct.pack("<d", 2.5)
    raw = b"\x7a" + bytes([len(inner)]) + inner
    assert decode_value(raw, KINDS["double_list"]) == [1.5, 2.5]


@pytest.mark.parametrize("raw", [b"\x29\x00\x00", b"\x20", b"\x7a\x05\x0a", b"\x07"])
def test_truncated_or_garbage_bytes_raise(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_value(raw, KINDS["double_list"] if raw.startswith(b"\x7a") else KINDS["int64"])


def test_columns_fast_and_general_paths_agree() -> None:
    kind = KINDS["double"]
    values = [0.25, -1.5, 3.0]
    fast = decode_column([encode_value(v, kind) for v in values], kind)
    assert fast.data is not None and fast.data.tolist() == values
    assert fast.statuses.tolist() == [Status.PRESENT] * 3
    general = decode_column([encode_value(0.25, kind), None, b"", b"\x29\x00"], kind)
    assert general.statuses.tolist() == [
        Status.PRESENT,
        Status.NOT_FOUND,
        Status.NULL_VALUE,
        Status.NULL_VALUE,
    ]
    assert general.decode_errors == 1
    assert general.data is not None and general.data.tolist() == [0.25, 0.0, 0.0, 0.0]


def test_list_columns_use_offsets() -> None:
    kind = KINDS["float_list"]
    column = decode_column([encode_value([1.0, 2.0], kind), None, encode_value([3.0], kind)], kind)
    assert column.offsets is not None and column.offsets.tolist() == [0, 2, 2, 3]
    assert column.data is not None and column.data.dtype == np.dtype("<f4")
    assert column.row_values() == [[1.0, 2.0], None, [3.0]]


def test_entity_keys_match_feast() -> None:
    # From tests/fixtures/feast/README.md: the key of driver 1001 in project "compat".
    assert redis_key([("driver_id", KINDS["int64"])], [1001], "compat").hex() == (
        "0100000002000000090000006472697665725f69640400000008000000e903000000000000636f6d706174"
    )
    # Composite keys are sorted by join key name whatever order they come in.
    keys = [("item_id", KINDS["string"]), ("driver_id", KINDS["int64"])]
    assert redis_key(keys, ["A-1", 1001], "compat").hex() == (
        "0200000002000000090000006472697665725f696402000000070000006974656d5f69640400000008000000"
        "e9030000000000000200000003000000412d31636f6d706174"
    )
    assert key_prefix(["b", "a"]) == key_prefix(["a", "b"])
    assert field_of("driver_scalars:int64_f").hex() == "25308249"
    with pytest.raises(EntityValueError, match="out of range for int32"):
        redis_key([("k", KINDS["int32"])], [2**31], "p")


@pytest.mark.parametrize("kind", ["float_list", "double_list"])
def test_equal_length_packed_lists_take_the_vectorized_path(kind: str) -> None:
    rows = [[0.5, -1.25, 3.0], [1.0, 2.0, 4.0], [0.0, 0.0, 0.0]]
    raws = [encode_value(v, KINDS[kind]) for v in rows]
    column = decode_column(raws, KINDS[kind])
    assert column.row_values() == rows
    assert column.data is not None and column.data.dtype == np.dtype(KINDS[kind].dtype)
    assert column.offsets is not None and column.offsets.tolist() == [0, 3, 6, 9]
    # Different lengths, nulls or a missing row fall back to the value-by-value path.
    mixed = decode_column([raws[0], encode_value([1.0], KINDS[kind]), b"", None], KINDS[kind])
    assert mixed.row_values() == [rows[0], [1.0], None, None]
    assert mixed.statuses.tolist() == [1, 1, 2, 3]
