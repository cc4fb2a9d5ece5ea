"""From Redis replies to encoded response columns (pure: replies and a clock reading in).

Feast stores a double as 9 bytes (tag 0x29 + 8), a float as 5 and a bool as 2. When every row of
a group of such features has exactly that shape, all of them are decoded by one NumPy view over
the joined bytes, and each column leaves as little-endian bytes without a Python object per value.
Everything else (text, lists, varints, nulls, masks) takes the general path of `codec` and
`rules`, which gives the same bytes on the wire.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import chain
from operator import itemgetter
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
_NO_LIMIT: Final = np.iinfo(np.int64).max
_OLDEST: Final = np.iinfo(np.int64).min
# Event-time combinations remembered per batch for single-row calls.
_SINGLES: Final = 1024

# (view, statuses, event timestamps, number of columns that share them): for metrics.
Stats = tuple[str, np.ndarray, np.ndarray | None, int]


class StatsGroup:
    """The `Stats` of a single row with given event times, one object for every call that
    serves it: the metrics count such calls by the group, not entry by entry."""

    __slots__ = ("entries",)

    def __init__(self, entries: tuple[Stats, ...]) -> None:
        self.entries = entries


# What a call hands to the metrics per column or group of columns.
Served = Stats | StatsGroup


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
        return np.array([self.lookup(raw) for raw in raws], dtype=np.int64)

    def matrix(self, columns: Sequence[Sequence[bytes | None]]) -> np.ndarray:
        """Unix nanoseconds of several `_ts` fields at once: one row per field."""
        get = self._cache.get
        flat = [get(raw) if raw else 0 for column in columns for raw in column]
        if None in flat:
            raws = [raw for column in columns for raw in column]
            flat = [
                self.lookup(raw) if value is None else value
                for raw, value in zip(raws, flat, strict=True)
            ]
        return np.array(flat, dtype=np.int64).reshape(len(columns), -1)

    def lookup(self, raw: bytes | None) -> int:
        if not raw:
            return 0
        value = self._cache.get(raw)
        if value is None:
            try:
                value = decode_timestamp(raw)
            except ValueError:
                value = 0
            if not _OLDEST < value <= _NO_LIMIT:
                # Outside int64 nanoseconds (year 9999, INT64_MIN seconds): no usable event
                # time, so served as a value without one (STALE where a maximum age applies).
                value = 0
            if len(self._cache) >= self._size:
                self._cache.clear()
            self._cache[raw] = value
        return value


class _Group:
    """The replies of one entity-key group (one per row), and on first use the same transposed
    to one tuple per hash field; a single row's fast path reads its reply as it came."""

    def __init__(self, replies: Sequence[Sequence[bytes | None]], width: int) -> None:
        self.replies = replies
        self.width = width
        self.stamps: dict[int, np.ndarray] = {}

    @cached_property
    def fields(self) -> list[tuple[bytes | None, ...]]:
        if not self.replies:
            return [()] * self.width
        return list(zip(*self.replies, strict=True))


@dataclass(frozen=True)
class _Share:
    """Columns of a batch that share event times and serving settings: one status array."""

    ts_field: int
    max_age_ns: int | None
    has_default: bool
    default: Any
    positions: np.ndarray  # rows of the batch's data block
    items: tuple[Wanted, ...]


@dataclass(frozen=True)
class _Batch:
    """Same-kind fixed-width scalars of one entity-key group: decoded by one NumPy view."""

    group: int
    kind: ValueKind
    tag: int
    dtype: str
    size: int
    items: tuple[Wanted, ...]
    fields: tuple[int, ...]
    # The batch's fields of one row's reply, as a tuple.
    pick: Callable[[Sequence[bytes | None]], tuple[bytes | None, ...]]
    shares: tuple[_Share, ...]
    # For each position: its share; per share: its maximum age (INT64_MAX when none).
    share_of: np.ndarray
    share_list: tuple[int, ...]
    max_ages: np.ndarray
    max_age_list: tuple[int, ...]
    # The columns sit next to each other in the response: one piece of bytes serves them all.
    contiguous: bool
    # Stored bytes of one row's batch -> its values without the tag bytes.
    untag: Callable[[bytes], tuple[bytes, ...]]
    # Positions [start, end) that belong to one share, in order, with that share's number.
    runs: tuple[tuple[int, int, int], ...]
    # One row's reply -> the `_ts` bytes of every share, in share order.
    pick_stamps: Callable[[Sequence[bytes | None]], tuple[bytes | None, ...]]
    # Those bytes -> what a single row needs of them (see `_Single`): rows loaded together share
    # their event times, so the same few come back call after call.
    singles: dict[tuple[bytes | None, ...], _Single] = field(
        default_factory=dict, compare=False, repr=False
    )


@dataclass(frozen=True)
class ColumnPlan:
    """How the columns of one feature set are built: computed once per caller and feature set."""

    count: int
    batches: tuple[_Batch, ...]
    general: tuple[Wanted, ...]


def plan_columns(wanted: Sequence[Wanted]) -> ColumnPlan:
    general: list[Wanted] = []
    grouped: dict[tuple[int, str], list[Wanted]] = {}
    for item in wanted:
        if item.slot is not None and item.decision.mask is None and item.kind.name in _FAST:
            grouped.setdefault((item.slot.group, item.kind.name), []).append(item)
        else:
            general.append(item)
    batches = []
    for (group, kind_name), items in grouped.items():
        tag, dtype, size = _FAST[kind_name]
        shares: dict[tuple[Any, ...], list[int]] = {}
        for position, item in enumerate(items):
            assert item.slot is not None
            d = item.decision
            default = d.default if d.has_default else None
            key = (item.slot.ts_field, d.max_age_ns, d.has_default, default)
            shares.setdefault(key, []).append(position)
        share_list = [
            _Share(
                key[0],
                key[1],
                key[2],
                key[3],
                np.array(positions, dtype=np.intp),
                tuple(items[p] for p in positions),
            )
            for key, positions in shares.items()
        ]
        share_of = np.empty(len(items), dtype=np.intp)
        for number, share in enumerate(share_list):
            share_of[share.positions] = number
        indices = [item.index for item in items]
        limits = [_NO_LIMIT if s.max_age_ns is None else s.max_age_ns for s in share_list]
        fields = tuple(item.slot.field for item in items if item.slot is not None)
        batches.append(
            _Batch(
                group,
                items[0].kind,
                tag,
                dtype,
                size,
                tuple(items),
                fields,
                _picker(fields),
                tuple(share_list),
                share_of,
                tuple(share_of.tolist()),
                np.array(limits, dtype=np.int64),
                tuple(limits),
                indices == list(range(indices[0], indices[0] + len(indices))),
                struct.Struct(f"x{size - 1}s" * len(items)).unpack,
                _runs(share_of.tolist()),
                _picker(tuple(share.ts_field for share in share_list)),
            )
        )
    return ColumnPlan(len(wanted), tuple(batches), tuple(general))


def build_columns(
    columns: ColumnPlan,
    plan: ReadPlan,
    replies: Sequence[Sequence[bytes | None]],
    rows: int,
    now_ns: int,
    mask_key: bytes,
    stamps: TimestampCache,
    stats: list[Served] | None = None,
) -> list[bytes]:
    """The encoded response columns, in request order; `stats` collects `Stats` for metrics."""
    out: list[bytes] = [b""] * columns.count
    groups = [
        _Group(replies[g * rows : (g + 1) * rows], len(group.fields))
        for g, group in enumerate(plan.groups)
    ]
    general = list(columns.general)
    for batch in columns.batches:
        if not _fast_batch(batch, groups[batch.group], rows, now_ns, stamps, out, stats):
            general.extend(batch.items)
    for item in general:
        column = _general_column(item, groups, rows, now_ns, mask_key, stamps)
        if stats is not None:
            assert column.timestamps is not None
            stats.append((item.view, column.statuses, column.timestamps, 1))
        out[item.index] = wire.wrap_column(column_message(column).SerializeToString())
    return out


def _timestamps(group: _Group, ts_field: int, stamps: TimestampCache) -> np.ndarray:
    ts = group.stamps.get(ts_field)
    if ts is None:
        ts = group.stamps[ts_field] = stamps.decode(group.fields[ts_field])
    return ts


def _fast_batch(
    batch: _Batch,
    group: _Group,
    rows: int,
    now_ns: int,
    stamps: TimestampCache,
    out: list[bytes],
    stats: list[Served] | None,
) -> bool:
    """Encodes a batch of same-kind scalar columns at once; False to use the general path."""
    if rows == 1 and _single_row(batch, group.replies[0], now_ns, stamps, out, stats):
        return True
    values = [group.fields[f] for f in batch.fields]
    missing: dict[int, np.ndarray] = {}
    count = len(batch.items)
    try:
        blob = b"".join(chain.from_iterable(values))  # type: ignore[arg-type]
    except TypeError:  # a None: some rows hold nothing for some of these features
        placeholder = bytes((batch.tag,)) + b"\x00" * (batch.size - 1)
        for position, column in enumerate(values):
            if None in column:
                missing[position] = np.fromiter((v is None for v in column), bool, rows)
                values[position] = tuple(placeholder if v is None else v for v in column)
        blob = b"".join(chain.from_iterable(values))  # type: ignore[arg-type]
    if len(blob) != count * rows * batch.size:
        return False  # a null or an unusual encoding somewhere
    if blob[:: batch.size] != _tags(batch.tag, count * rows):
        return False
    block = np.frombuffer(blob, dtype=np.uint8).reshape(count, rows, batch.size)
    data = np.ascontiguousarray(block[:, :, 1:]).view(batch.dtype).reshape(count, rows)
    if batch.kind.name == "bool" and rows and int(data.max(initial=0)) > 1:
        return False
    matrix = stamps.matrix([group.fields[share.ts_field] for share in batch.shares])
    stamps_of = list(matrix)
    # `ts < now - limit`, not `now - ts > limit`: the latter wraps for event times far in the
    # past; now minus any limit (at most INT64_MAX) stays within int64.
    fresh = not ((matrix == 0) | (matrix < now_ns - batch.max_ages[:, None])).any()
    if not missing and rows and fresh:
        _encode_batch(batch, data, stamps_of, rows, out, stats)
        return True
    for share, ts in zip(batch.shares, stamps_of, strict=True):
        statuses, ts_out = _statuses(ts, None, now_ns, share.max_age_ns)
        for position, item in zip(share.positions.tolist(), share.items, strict=True):
            gone = missing.get(position)
            if gone is None:
                item_statuses, item_ts = statuses, ts_out
            else:
                item_statuses, item_ts = _statuses(ts, gone, now_ns, share.max_age_ns)
            column = data[position]
            empty = item_statuses != _PRESENT
            if empty.any():
                column = column.copy()
                column[empty] = share.default if share.has_default else 0
            out[item.index] = wire.fixed_column(
                batch.kind.number,
                item_statuses.tobytes(),
                item_ts.tobytes(),
                column.tobytes(),
                share.has_default,
            )
            if stats is not None:
                stats.append((item.view, item_statuses, item_ts, 1))
    return True


def _single_row(
    batch: _Batch,
    reply: Sequence[bytes | None],
    now_ns: int,
    stamps: TimestampCache,
    out: list[bytes],
    stats: list[Served] | None,
) -> bool:
    """One entity, every value stored and fresh: a column is its share's head followed by the
    stored bytes after the tag. False when that does not hold (the NumPy path decides then)."""
    raws = batch.pick(reply)
    try:
        blob = b"".join(raws)  # type: ignore[arg-type]
    except TypeError:
        return False
    size = batch.size
    if len(blob) != len(raws) * size or blob[::size] != _tags(batch.tag, len(raws)):
        return False
    if batch.kind.name == "bool" and max(blob[1::size]) > 1:
        return False
    raw_stamps = batch.pick_stamps(reply)
    single = batch.singles.get(raw_stamps)
    if single is None:
        single = _single(batch, raw_stamps, stamps)
    if now_ns > single.fresh_until:
        return False
    heads = single.heads
    # The stored values without their tag bytes, cut by one C call.
    values = batch.untag(blob)
    if batch.contiguous:
        # Columns of a share that sit next to each other are its head, then value, head, ...
        out[batch.items[0].index] = b"".join(
            [heads[share] + heads[share].join(values[a:b]) for a, b, share in batch.runs]
        )
    else:
        share_of = batch.share_list
        for position, item in enumerate(batch.items):
            out[item.index] = heads[share_of[position]] + values[position]
    if stats is not None:
        stats.append(single.stats)
    return True


@dataclass(frozen=True)
class _Single:
    """A batch's single row with given event times: until when every share is fresh (-1 when
    one has no event time), each share's column head, and the entries for metrics."""

    fresh_until: int
    heads: tuple[bytes, ...]
    stats: StatsGroup


def _single(batch: _Batch, raw_stamps: tuple[bytes | None, ...], stamps: TimestampCache) -> _Single:
    present = _present(1)
    fresh_until = _NO_LIMIT * 2
    heads = []
    entries: list[Stats] = []
    for share, raw, limit in zip(batch.shares, raw_stamps, batch.max_age_list, strict=True):
        ts = stamps.lookup(raw)
        # Stale once `now - ts > limit`; no event time never counts as fresh here.
        fresh_until = min(fresh_until, ts + limit if ts else -1)
        heads.append(
            wire.fixed_column_head(
                batch.kind.number,
                b"\x01",
                ts.to_bytes(8, "little", signed=True),
                batch.size - 1,
                share.has_default,
            )
        )
        stamp = np.array([ts], dtype=np.int64)
        stamp.flags.writeable = False
        entries.append((share.items[0].view, present, stamp, len(share.items)))
    if len(batch.singles) >= _SINGLES:
        batch.singles.clear()
    single = batch.singles[raw_stamps] = _Single(
        fresh_until, tuple(heads), StatsGroup(tuple(entries))
    )
    return single


def _encode_batch(
    batch: _Batch,
    data: np.ndarray,
    stamps_of: list[np.ndarray],
    rows: int,
    out: list[bytes],
    stats: list[Served] | None,
) -> None:
    """Every row present and fresh: columns differ only in their event times (per share) and
    their data, so one NumPy block of equal-length records holds the whole batch."""
    width = rows * (batch.size - 1)
    statuses = _present(rows)
    status_bytes = statuses.tobytes()
    heads = b"".join(
        wire.fixed_column_head(
            batch.kind.number, status_bytes, ts.tobytes(), width, share.has_default
        )
        for share, ts in zip(batch.shares, stamps_of, strict=True)
    )
    count = len(batch.items)
    head = len(heads) // len(batch.shares)
    length = head + width
    block = np.empty((count, length), dtype=np.uint8)
    block[:, :head] = np.frombuffer(heads, dtype=np.uint8).reshape(-1, head)[batch.share_of]
    block[:, head:] = data.view(np.uint8).reshape(count, width)
    encoded = block.tobytes()
    items = batch.items
    if batch.contiguous:
        out[items[0].index] = encoded
    else:
        for position, item in enumerate(items):
            out[item.index] = encoded[position * length : (position + 1) * length]
    if stats is not None:
        for share, ts in zip(batch.shares, stamps_of, strict=True):
            stats.append((share.items[0].view, statuses, ts, len(share.items)))


def _runs(share_of: list[int]) -> tuple[tuple[int, int, int], ...]:
    runs: list[tuple[int, int, int]] = []
    start = 0
    for position in range(1, len(share_of) + 1):
        if position == len(share_of) or share_of[position] != share_of[start]:
            runs.append((start, position, share_of[start]))
            start = position
    return tuple(runs)


def _picker(fields: tuple[int, ...]) -> Callable[[Sequence[bytes | None]], tuple[Any, ...]]:
    if len(fields) == 1:
        only = fields[0]
        return lambda reply: (reply[only],)
    return itemgetter(*fields)


@lru_cache(maxsize=256)
def _tags(tag: int, count: int) -> bytes:
    return bytes((tag,)) * count


_PRESENT_ROWS: dict[int, np.ndarray] = {}


def _present(rows: int) -> np.ndarray:
    statuses = _PRESENT_ROWS.get(rows)
    if statuses is None:
        statuses = np.full(rows, _PRESENT, dtype=np.uint8)
        statuses.flags.writeable = False
        if len(_PRESENT_ROWS) < 1024:
            _PRESENT_ROWS[rows] = statuses
    return statuses


def _statuses(
    ts: np.ndarray, missing: np.ndarray | None, now_ns: int, max_age_ns: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Row statuses and served event times of stored rows, as `rules.apply_freshness` sets them."""
    statuses = np.full(len(ts), _PRESENT, dtype=np.uint8)
    if max_age_ns is not None:
        statuses[(ts == 0) | (ts < now_ns - max_age_ns)] = _STALE
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
    ts = _timestamps(group, item.slot.ts_field, stamps)
    apply_freshness(column, ts, now_ns, item.decision.max_age_ns)
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
