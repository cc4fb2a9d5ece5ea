"""Hand-written protobuf encoding of GetFeaturesResponse (pure).

The response is built as bytes so that column buffers computed by NumPy go out without a
protobuf object per column; field numbers follow protos/featuresidecar/v1/feature_service.proto
and a test parses the result with the generated code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from .codec import varint

# GetFeaturesResponse
_NAMES = 0x0A  # 1: feature_names, LEN
_COLUMNS = 0x12  # 2: columns, LEN
_REVISION = 0x18  # 3: policy_revision, VARINT
_ROWS = 0x20  # 4: row_count, VARINT

# FeatureColumn
_TYPE = 0x08  # 1: type, VARINT
_STATUSES = 0x12  # 2: statuses, LEN
_TIMESTAMPS = 0x1A  # 3: event_timestamps, LEN
_DATA = 0x22  # 4: data, LEN
_HAS_DEFAULT = b"\x40\x01"  # 8: has_default = true
_NO_DEFAULT = b"\x40\x00"  # 8: has_default = false, written explicitly
_MASK = 0x48  # 9: mask, VARINT


@lru_cache(maxsize=4096)
def _len_prefix(tag: int, length: int) -> bytes:
    return bytes((tag,)) + varint(length)


def field(tag: int, payload: bytes) -> bytes:
    return _len_prefix(tag, len(payload)) + payload if payload else b""


@lru_cache(maxsize=64)
def type_field(number: int) -> bytes:
    return bytes((_TYPE,)) + varint(number)


def fixed_column(
    type_number: int, statuses: bytes, timestamps: bytes, data: bytes, has_default: bool = False
) -> bytes:
    """A FeatureColumn of a fixed-width scalar type, already wrapped as response field 2."""
    body = b"".join(
        (
            type_field(type_number),
            field(_STATUSES, statuses),
            field(_TIMESTAMPS, timestamps),
            field(_DATA, data),
            _HAS_DEFAULT if has_default else b"",
        )
    )
    return _len_prefix(_COLUMNS, len(body)) + body


def fixed_column_head(
    type_number: int, statuses: bytes, timestamps: bytes, data_length: int, has_default: bool
) -> bytes:
    """Everything of a fixed-width column (wrapped as field 2) up to its data.

    `has_default` is always written, false included, so that heads of columns with the same
    row count have the same length and a batch of columns fits one NumPy block. Field order does
    not matter to protobuf readers. Heads of a few rows are cached: rows loaded together share
    their event time, so the same heads come back call after call.
    """
    if len(timestamps) <= _CACHED_TIMESTAMPS:
        return _cached_head(type_number, statuses, timestamps, data_length, has_default)
    return _head(type_number, statuses, timestamps, data_length, has_default)


def _head(
    type_number: int, statuses: bytes, timestamps: bytes, data_length: int, has_default: bool
) -> bytes:
    head = b"".join(
        (
            type_field(type_number),
            field(_STATUSES, statuses),
            field(_TIMESTAMPS, timestamps),
            _HAS_DEFAULT if has_default else _NO_DEFAULT,
            _len_prefix(_DATA, data_length) if data_length else b"",
        )
    )
    return _len_prefix(_COLUMNS, len(head) + data_length) + head


def wrap_column(serialized: bytes) -> bytes:
    """A FeatureColumn serialized by protobuf, as response field 2."""
    return _len_prefix(_COLUMNS, len(serialized)) + serialized


def names(refs: Iterable[str]) -> bytes:
    """Field 1 for every feature name: computed once per feature set."""
    return b"".join(field(_NAMES, ref.encode("utf-8")) or bytes((_NAMES, 0)) for ref in refs)


def response(names_part: bytes, columns: Sequence[bytes], revision: int, rows: int) -> bytes:
    return b"".join((names_part, *columns, _tail(revision, rows)))


@lru_cache(maxsize=1024)
def _tail(revision: int, rows: int) -> bytes:
    """Fields 3 and 4; the same few pairs come back call after call."""
    tail = b""
    if revision:
        tail += bytes((_REVISION,)) + varint(revision)
    if rows:
        tail += bytes((_ROWS,)) + varint(rows)
    return tail


_CACHED_TIMESTAMPS = 64  # bytes: up to 8 rows
_cached_head = lru_cache(maxsize=4096)(_head)
