"""Serving rules applied to a decoded column: freshness, defaults, masking (pure)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import numpy as np

from .codec import Column, Status, build_column, encode_value
from .valuetypes import STRING, ValueKind

MASK_CODES = {None: 0, "hash": 1, "redact": 2}
_HASH_HEX_CHARS = 32


def apply_freshness(
    column: Column, timestamps: np.ndarray, now_ns: int, max_age_ns: int | None
) -> None:
    """Marks rows older than `max_age_ns` STALE and records each row's event time.

    A stored row without an event time cannot prove its age, so it is stale whenever a maximum
    age applies.
    """
    stored = (column.statuses == Status.PRESENT) | (column.statuses == Status.NULL_VALUE)
    column.timestamps = np.where(stored, timestamps, 0).astype(np.int64)
    if max_age_ns is None:
        return
    # Not `now - ts > max_age`: that wraps in int64 for event times far in the past.
    too_old = stored & ((timestamps == 0) | (timestamps < now_ns - max_age_ns))
    if too_old.any():
        column.statuses[too_old] = Status.STALE
        _clear(column, too_old)


def apply_default(column: Column, default: Any) -> Column:
    """Rows NOT_FOUND or STALE hold `default`; their status still says which."""
    st = column.statuses
    missing = (st == Status.NOT_FOUND) | (st == Status.STALE)
    if missing.any():
        values = column.row_values()
        for i in np.flatnonzero(missing):
            values[i] = default
        rebuilt = build_column(column.kind, st, values)
        rebuilt.timestamps = column.timestamps
        rebuilt.decode_errors = column.decode_errors
        column = rebuilt
    column.has_default = True
    return column


def apply_mask(column: Column, mask: str, key: bytes) -> Column:
    """Present rows become MASKED: hashed (a STRING column of keyed hashes) or redacted."""
    present = column.statuses == Status.PRESENT
    if mask == "redact":
        column.statuses[present] = Status.MASKED
        _clear(column, present)
        column.mask = MASK_CODES["redact"]
        column.has_default = False
        return column
    values = column.row_values()
    hashed = [
        keyed_hash(key, column.kind, values[i]) if present[i] else None for i in range(column.rows)
    ]
    statuses = column.statuses.copy()
    statuses[present] = Status.MASKED
    masked = build_column(STRING, statuses, hashed)
    masked.timestamps = column.timestamps
    masked.mask = MASK_CODES["hash"]
    masked.decode_errors = column.decode_errors
    return masked


def keyed_hash(key: bytes, kind: ValueKind, value: Any) -> str:
    """Equal values give equal hashes under one key, so masked columns still join."""
    digest = hmac.new(key, encode_value(value, kind), hashlib.sha256).hexdigest()
    return digest[:_HASH_HEX_CHARS]


def denied_column(kind: ValueKind, rows: int) -> Column:
    statuses = np.full(rows, Status.DENIED, dtype=np.uint8)
    column = build_column(kind, statuses, [None] * rows)
    column.timestamps = np.zeros(rows, dtype=np.int64)
    return column


def _clear(column: Column, rows: np.ndarray) -> None:
    """Drops the values of `rows`, whose new status already says they hold none."""
    if not rows.any():
        return
    if not column.kind.is_list and column.data is not None:
        column.data = column.data.copy()
        column.data[rows] = 0
        return
    values = column.row_values()
    rebuilt = build_column(column.kind, column.statuses, values)
    column.data, column.items, column.offsets = rebuilt.data, rebuilt.items, rebuilt.offsets
