"""From Redis replies to encoded response columns (pure: replies and a clock reading in).

Feast stores a double as 9 bytes (tag 0x29 + 8), a float as 5 and a bool as 2. When every row of
a group of such features has exactly that shape, all of them are decoded by one NumPy view over
the joined bytes, and each column leaves as little-endian bytes without a Python object per value.
Everything else (text, lists, varints, nulls, masks) takes the general path of `codec` and
`rules`, which gives the same bytes on the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from . import wire
from .access import Decision
from .codec import Column, Status, decode_column, decode_timestamp
from .layout import ReadPlan, Slot
from .response import column_message
from .rules import apply_default, apply_freshness, apply_mask, denied_column
from .valuetypes import ValueKind

# kind -> (tag byte, dtype, stored size)
_FAST: Final = {"double": (0x29, "<f8", 9), "float": (0x35, "<f4", 5), "bool": (0x38, "u1", 2)}
_PRESENT: Final = int(Status.PRESENT)
_NOT_FOUND: Final = int(Status.NOT_FOUND)
_STALE: Final = int(Status.STALE)

Stats = tuple[str, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class Wanted:
    """One requested feature: where it sits in the response and in the replies."""

    index: int
    kind: ValueKind
    view: str
    decision: Decision
    slot: Slot | None  # None when denied


class TimestampCache:
    """Decoded `_ts:<view>` values: rows loaded together share their bytes."""

    def __init__(self, size: int = 4096) -> None:
        self._cache: dict[bytes, int] = {}
        self._size = size

    def decode(self, raws: Sequence[bytes | None]) -> np.ndarray:
        cache = self._cache
        out = np.zeros(len(raws), dtype=np.int64)
        for row, raw in enumerate(raws):
            if not raw:
                continue
            value = cache.get(raw)
            if value is None:
                try:
                    value = decode_timestamp(raw)
                except ValueError:
                    value = 0
                if len(cache) >= self._size:
                    cache.clear()
                cache[raw] = value
            out[row] = value
        return out


class _Group:
    """The replies of one entity-key group, transposed to one tuple per hash field."""

    def __init__(self, replies: Sequence[Sequence[bytes | None]], width: int, rows: int) -> None:
        self.fields: list[tuple[bytes | None, ...]] = (
            list(zip(*replies, strict=True)) if rows else [()] * width
        )
        self.ages: dict[int, np.ndarray] = {}
        self.stamps: dict[int, np.ndarray] = {}


def build_columns(
    wanted: Sequence[Wanted],
    plan: ReadPlan,
    replies: Sequence[Sequence[bytes | None]],
    rows: int,
    now_ns: int,
    mask_key: bytes,
    stamps: TimestampCache,
    stats: list[Stats] | None = None,
) -> list[bytes]:
    """The encoded response columns, in request order; `stats` collects (view, statuses, event
    timestamps) of each column for metrics."""
    out: list[bytes] = [b""] * len(wanted)
    groups = [
        _Group(replies[g * rows : (g + 1) * rows], len(group.fields), rows)
        for g, group in enumerate(plan.groups)
    ]
    general: list[Wanted] = []
    batches: dict[tuple[int, str], list[Wanted]] = {}
    for item in wanted:
        if item.slot is not None and item.decision.mask is None and item.kind.name in _FAST:
            batches.setdefault((item.slot.group, item.kind.name), []).append(item)
        else:
            general.append(item)
    for (g, kind_name), items in batches.items():
        if not _fast_batch(items, groups[g], kind_name, rows, now_ns, stamps, out, stats):
            general.extend(items)
    for item in general:
        column = _general_column(item, groups, rows, now_ns, mask_key, stamps)
        if stats is not None:
            assert column.timestamps is not None
            stats.append((item.view, column.statuses, column.timestamps))
        out[item.index] = wire.wrap_column(column_message(column).SerializeToString())
    return out


def _timestamps(group: _Group, slot: Slot, stamps: TimestampCache) -> np.ndarray:
    ts = group.stamps.get(slot.ts_field)
    if ts is None:
        ts = group.stamps[slot.ts_field] = stamps.decode(group.fields[slot.ts_field])
    return ts


def _fast_batch(
    items: list[Wanted],
    group: _Group,
    kind_name: str,
    rows: int,
    now_ns: int,
    stamps: TimestampCache,
    out: list[bytes],
    stats: list[Stats] | None,
) -> bool:
    """Encodes a batch of same-kind scalar columns at once; False to use the general path."""
    tag, dtype, size = _FAST[kind_name]
    placeholder = bytes((tag,)) + b"\x00" * (size - 1)
    parts: list[bytes] = []
    missing: dict[int, np.ndarray] = {}
    for position, item in enumerate(items):
        assert item.slot is not None
        values = group.fields[item.slot.field]
        if None in values:
            missing[position] = np.fromiter((v is None for v in values), dtype=bool, count=rows)
            values = tuple(placeholder if v is None else v for v in values)
        parts.extend(values)  # type: ignore[arg-type]
    blob = b"".join(parts)
    if len(blob) != len(items) * rows * size:
        return False  # a null or an unusual encoding somewhere
    block = np.frombuffer(blob, dtype=np.uint8).reshape(len(items), rows, size)
    if rows and not bool((block[:, :, 0] == tag).all()):
        return False
    data = np.ascontiguousarray(block[:, :, 1:]).view(dtype).reshape(len(items), rows)
    if kind_name == "bool" and rows and int(data.max(initial=0)) > 1:
        return False
    shared: dict[tuple[int, int | None], tuple[np.ndarray, bytes, np.ndarray, bytes]] = {}
    for position, item in enumerate(items):
        slot = item.slot
        assert slot is not None
        decision = item.decision
        ts = _timestamps(group, slot, stamps)
        gone = missing.get(position)
        if gone is None:
            key = (slot.ts_field, decision.max_age_ns)
            entry = shared.get(key)
            if entry is None:
                statuses, ts_out = _statuses(ts, None, now_ns, decision.max_age_ns)
                entry = shared[key] = (statuses, statuses.tobytes(), ts_out, ts_out.tobytes())
            statuses, status_bytes, ts_out, ts_bytes = entry
        else:
            statuses, ts_out = _statuses(ts, gone, now_ns, decision.max_age_ns)
            status_bytes, ts_bytes = statuses.tobytes(), ts_out.tobytes()
        values = data[position]
        empty = statuses != _PRESENT
        if decision.has_default:
            if empty.any():
                values = values.copy()
                values[empty] = decision.default
        elif empty.any():
            values = values.copy()
            values[empty] = 0
        out[item.index] = wire.fixed_column(
            item.kind.number, status_bytes, ts_bytes, values.tobytes(), decision.has_default
        )
        if stats is not None:
            stats.append((item.view, statuses, ts_out))
    return True


def _statuses(
    ts: np.ndarray, missing: np.ndarray | None, now_ns: int, max_age_ns: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Row statuses and served event times of stored rows, as `rules.apply_freshness` sets them."""
    statuses = np.full(len(ts), _PRESENT, dtype=np.uint8)
    if max_age_ns is not None:
        statuses[(ts == 0) | (now_ns - ts > max_age_ns)] = _STALE
    if missing is None:
        return statuses, ts
    statuses[missing] = _NOT_FOUND
    return statuses, np.where(missing, 0, ts)


def _general_column(
    item: Wanted,
    groups: list[_Group],
    rows: int,
    now_ns: int,
    mask_key: bytes,
    stamps: TimestampCache,
) -> Column:
    if item.slot is None:
        return denied_column(item.kind, rows)
    group = groups[item.slot.group]
    column = decode_column(group.fields[item.slot.field], item.kind)
    apply_freshness(column, _timestamps(group, item.slot, stamps), now_ns, item.decision.max_age_ns)
    decision = item.decision
    if decision.mask is not None:
        return apply_mask(column, decision.mask, mask_key)
    if decision.has_default:
        return apply_default(column, decision.default)
    return column


def wanted_of(
    features: Sequence[Any], decisions: Sequence[Decision], slot_of: Sequence[int], plan: ReadPlan
) -> tuple[Wanted, ...]:
    return tuple(
        Wanted(i, f.kind, f.view, d, plan.slots[s] if s >= 0 else None)
        for i, (f, d, s) in enumerate(zip(features, decisions, slot_of, strict=True))
    )
