"""The core of `feature-sidecar load`: typed columns of one feature view into Redis, Feast's layout.

The caller hands in batches of columns (join keys and features, as Python sequences or NumPy
arrays; `tabular` reads them from CSV or Parquet). Each batch is converted completely before any
of it is written, so a bad value stops the load before its batch reaches Redis; batches already
written stay written and the error says how many rows they held. Each batch is one pipeline: per
entity an HSET of every feature field plus `_ts:<view>` (other views' fields in a shared hash are
left alone), and an EXPIRE when a TTL is given. docs/loader.md describes the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import redis
from redis.exceptions import RedisError

from .catalog import Catalog
from .cells import CellError, Values, encode_column, encode_event_times, encode_key_column
from .codec import encode_timestamp
from .entity_key import key_prefix
from .layout import field_of, ts_field_of
from .policy import Feature
from .valuetypes import ValueKind

# Called after each written batch with the number of rows written so far.
Progress = Callable[[int], None]


class UsageError(ValueError):
    """The load asks for something the policy does not have (a view, a feature)."""


class LoadFailed(Exception):
    """The load stopped; `rows_written` rows (whole batches) are in Redis."""

    def __init__(self, message: str, rows_written: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.rows_written = rows_written


class DataError(LoadFailed):
    """The input does not fit the view: a missing column or a value that does not convert."""


class StoreFailed(LoadFailed):
    """Redis refused a write or could not be reached."""


@dataclass(frozen=True)
class Target:
    """What one view's rows turn into, computed once per load."""

    view: str
    # Sorted by name, as Feast orders them in the entity key.
    join_keys: tuple[tuple[str, ValueKind], ...]
    features: tuple[Feature, ...]
    # One hash field per feature, then `_ts:<view>`.
    fields: tuple[bytes, ...]
    prefix: bytes
    project: bytes

    @property
    def columns(self) -> tuple[str, ...]:
        """The input columns a load of this target reads."""
        names = [name for name, _ in self.join_keys] + [f.name for f in self.features]
        return tuple(dict.fromkeys(names))


def plan(catalog: Catalog, view: str, features: Sequence[str] | None = None) -> Target:
    """The target of a load into `view`: all its features, or the named subset."""
    info = catalog.views.get(view)
    if info is None:
        raise UsageError(
            f"unknown feature view {view!r} (the policy has: {', '.join(sorted(catalog.views))})"
        )
    by_name = {f.name: f for f in info.view.features}
    if features:
        unknown = [name for name in features if name not in by_name]
        if unknown:
            raise UsageError(
                f"view {view!r} has no feature {', '.join(map(repr, unknown))} "
                f"(it has: {', '.join(by_name)})"
            )
        twice = sorted({name for name in features if list(features).count(name) > 1})
        if twice:
            raise UsageError(f"feature {', '.join(map(repr, twice))} is named twice")
        chosen = tuple(by_name[name] for name in features)
    else:
        chosen = info.view.features
    return Target(
        view=view,
        join_keys=info.join_keys,
        features=chosen,
        fields=(*(field_of(f.ref) for f in chosen), ts_field_of(view)),
        prefix=key_prefix([name for name, _ in info.join_keys]),
        project=catalog.project.encode("utf-8"),
    )


def check_columns(
    target: Target,
    available: Sequence[str],
    source: str,
    timestamp_column: str | None = None,
    *,
    subset_hint: bool = False,
) -> list[str]:
    """Raises DataError naming every missing column; returns the columns the load ignores.

    With `subset_hint`, a missing feature column points at --features.
    """
    present = set(available)
    missing = [name for name in target.columns if name not in present]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        keys = {name for name, _ in target.join_keys}
        hint = ""
        if subset_hint and any(name not in keys for name in missing):
            hint = "; to load some of its features, name them with --features"
        raise DataError(
            f"{source}: missing column{plural} {', '.join(map(repr, missing))} of view "
            f"{target.view!r} (the input has: {', '.join(available) or 'no columns'}){hint}"
        )
    if timestamp_column is not None and timestamp_column not in present:
        raise DataError(
            f"{source}: missing column {timestamp_column!r} named as the timestamp column "
            f"(the input has: {', '.join(available) or 'no columns'})"
        )
    used = set(target.columns) | {timestamp_column}
    return [name for name in available if name not in used]


@dataclass(frozen=True)
class Batch:
    """Rows of input: one column per join key and feature, all of the same length."""

    columns: Mapping[str, Values]
    # The number of each row as the input counts it, for error messages.
    rows: Sequence[int]
    # Unix nanoseconds (or datetimes) per row; None: the load's own time.
    timestamps: Values | None = None


@dataclass(frozen=True)
class Encoded:
    keys: list[bytes]
    values: list[list[bytes]]  # per feature, per row
    timestamps: list[bytes] | bytes  # per row, or one for every row


def encode_batch(
    target: Target, batch: Batch, source: str, now: bytes, timestamp_column: str = "timestamps"
) -> Encoded:
    """Keys and value bytes of a whole batch; DataError naming row, column and value."""
    rows = len(batch.rows)
    for name in target.columns:
        if len(batch.columns[name]) != rows:
            raise DataError(
                f"{source}: column {name!r} has {len(batch.columns[name])} values "
                f"where the batch has {rows} rows"
            )

    def fail(column: str, exc: CellError) -> DataError:
        return DataError(f"{source}: row {batch.rows[exc.index]}, column {column!r}: {exc}")

    parts = []
    for name, kind in target.join_keys:
        try:
            parts.append(encode_key_column(batch.columns[name], kind))
        except CellError as exc:
            raise fail(name, exc) from None
    prefix, project = target.prefix, target.project
    if len(parts) == 1:
        keys = [prefix + part + project for part in parts[0]]
    else:
        keys = [prefix + b"".join(row) + project for row in zip(*parts, strict=True)]
    values = []
    for feature in target.features:
        try:
            values.append(encode_column(batch.columns[feature.name], feature.kind, feature.dim))
        except CellError as exc:
            raise fail(feature.name, exc) from None
    timestamps: list[bytes] | bytes = now
    if batch.timestamps is not None:
        if len(batch.timestamps) != rows:
            raise DataError(
                f"{source}: {len(batch.timestamps)} timestamps where the batch has {rows} rows"
            )
        try:
            timestamps = encode_event_times(batch.timestamps)
        except CellError as exc:
            raise fail(timestamp_column, exc) from None
    return Encoded(keys, values, timestamps)


def write(client: redis.Redis, target: Target, encoded: Encoded, ttl: int | None) -> None:
    """One pipeline: HSET of every field (and EXPIRE) per entity."""
    template: list[bytes] = [b""] * (2 * len(target.fields))
    template[0::2] = target.fields
    stamps = (
        repeat(encoded.timestamps) if isinstance(encoded.timestamps, bytes) else encoded.timestamps
    )
    pipe = client.pipeline(transaction=False)
    # execute_command, not hset(mapping=...): no dict per row, and redis-py leaves it untyped.
    command: Callable[..., Any] = pipe.execute_command
    # `stamps` may be endless (one time for every row): the keys bound the rows.
    rows = zip(*encoded.values, stamps, strict=False)
    for key, row in zip(encoded.keys, rows, strict=False):
        args = template.copy()
        args[1::2] = row
        command("HSET", key, *args)
        if ttl:
            command("EXPIRE", key, ttl)
    pipe.execute()


def load_batches(
    client: redis.Redis,
    target: Target,
    batches: Iterable[Batch],
    *,
    source: str,
    now_ns: int,
    ttl: int | None = None,
    progress: Progress | None = None,
    timestamp_column: str = "timestamps",
    store: str = "Redis",
) -> int:
    """Converts and writes batch after batch; the number of rows written.

    `now_ns` is the event time of rows whose batch carries none. `store` names Redis in errors
    (a URL without its password).
    """
    if ttl is not None and ttl < 1:
        raise UsageError(f"the TTL must be at least 1 second, not {ttl}")
    now = encode_timestamp(now_ns)
    written = 0
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator, None)
            if batch is None:
                return written
            encoded = encode_batch(target, batch, source, now, timestamp_column)
        except DataError as exc:
            raise DataError(f"{exc.message} ({_written(written)})", written) from None
        try:
            write(client, target, encoded, ttl)
        except RedisError as exc:
            reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
            raise StoreFailed(
                f"{store}: {reason} ({written} rows written before this batch; "
                "this batch may be partly written)",
                written,
            ) from None
        written += len(encoded.keys)
        if progress is not None:
            progress(written)


def _written(rows: int) -> str:
    if rows == 0:
        return "nothing was written"
    return f"{rows} rows written before this batch; none of this batch was written"


def load_rows(
    client: redis.Redis,
    catalog: Catalog,
    view: str,
    columns: Mapping[str, Values],
    timestamps_ns: int | np.integer | Values,
    *,
    features: Sequence[str] | None = None,
    ttl: int | None = None,
    batch_size: int = 1000,
    progress: Progress | None = None,
    source: str = "input",
) -> int:
    """Loads columns held in memory (lists or NumPy arrays, None or a mask for null).

    `columns` holds one column per join key and per feature (all of the view's features unless
    `features` names a subset); `timestamps_ns` is one event time for every row or one per row.
    Rows are numbered from 1 in error messages. Returns the number of rows written.
    """
    if batch_size < 1:
        raise UsageError(f"the batch size must be at least 1, not {batch_size}")
    target = plan(catalog, view, features)
    check_columns(target, list(columns), source)
    names = target.columns
    total = len(columns[names[0]])
    for name in names:
        if len(columns[name]) != total:
            raise DataError(
                f"{source}: column {name!r} has {len(columns[name])} values but column "
                f"{names[0]!r} has {total}"
            )
    per_row: Values | None = None
    now_ns = 0
    if isinstance(timestamps_ns, (int, np.integer)):
        now_ns = int(timestamps_ns)
    else:
        per_row = timestamps_ns
        if len(per_row) != total:
            raise DataError(f"{source}: {len(per_row)} timestamps for {total} rows")

    def batches() -> Iterable[Batch]:
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            yield Batch(
                {name: columns[name][start:stop] for name in names},
                range(start + 1, stop + 1),
                None if per_row is None else per_row[start:stop],
            )

    return load_batches(
        client, target, batches(), source=source, now_ns=now_ns, ttl=ttl, progress=progress
    )
