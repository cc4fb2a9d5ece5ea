"""What GetFeatures calls served, counted in batches: values by status, value ages, batch sizes.

Counting a column costs a handful of NumPy calls whatever its length, and each NumPy call costs
about a microsecond; done per call that would be tens of microseconds for a call of a few
columns. So a call only appends references to its status and timestamp arrays (under a
microsecond) and every 50 ms, before every collection of the registry, and at shutdown,
the whole batch is counted in one pass, off the request path (counting inside a call would add a
millisecond to that call's latency; small batches keep each pass short). Only a batch grown
past `batch_calls` calls or `batch_values` values is counted at once, to bound memory. The
counts of a call that has returned are therefore in every scrape of the single-process
registry, and at most 50 ms late in the files of `--workers` mode.
"""

from __future__ import annotations

import threading

import numpy as np

from .metrics import (
    AGE_BUCKETS,
    ENTITY_BUCKETS,
    FEATURE_BUCKETS,
    BulkHistogram,
    SidecarMetrics,
    ViewChildren,
)
from .service import CallRecord

_NS = 1e-9
# Status codes per view in one bincount: 0..6 are the wire's numbers, 7 is never served.
_STATUS_SLOTS = 8
AGE_EDGES = np.array([*AGE_BUCKETS, np.inf], dtype=np.float64)

# (now_ns, entities, features, [(view, statuses, timestamps, columns), ...]) of one call.
Pending = tuple[int, int, int, list[tuple[str, np.ndarray, np.ndarray | None, int]]]


class ServedValues:
    def __init__(
        self, metrics: SidecarMetrics, *, batch_calls: int = 8192, batch_values: int = 1 << 20
    ) -> None:
        self.metrics = metrics
        self.batch_calls = batch_calls
        # Bounds the memory the waiting arrays keep alive.
        self.batch_values = batch_values
        self._entities = BulkHistogram(metrics.entities_per_request, ENTITY_BUCKETS)
        self._features = BulkHistogram(metrics.features_per_request, FEATURE_BUCKETS)
        self._pending: list[Pending] = []
        self._pending_values = 0
        self._pending_lock = threading.Lock()
        self._count_lock = threading.Lock()
        metrics.before_collect.append(self.flush)

    def add(self, record: CallRecord) -> None:
        """Called on the request path for every GetFeatures call that named its features."""
        columns = record.columns
        with self._pending_lock:
            self._pending.append((record.now_ns, record.entities, record.features, columns))
            self._pending_values += record.entities * len(columns)
            full = (
                len(self._pending) >= self.batch_calls or self._pending_values >= self.batch_values
            )
        if full:
            # Never waits on the request path: a count already running takes the next batch.
            self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        """Counts every waiting call; with `wait`, also waits for a count already running."""
        if not self._count_lock.acquire(blocking=wait):
            return
        try:
            with self._pending_lock:
                batch, self._pending, self._pending_values = self._pending, [], 0
            if batch:
                self._count(batch)
        finally:
            self._count_lock.release()

    # ------------------------------------------------------------------------------------------

    def _count(self, batch: list[Pending]) -> None:
        metrics = self.metrics
        self._entities.observe_many(np.array([entry[1] for entry in batch], dtype=np.float64))
        self._features.observe_many(np.array([entry[2] for entry in batch], dtype=np.float64))
        views: list[ViewChildren] = []
        number: dict[str, int] = {}
        owners: list[int] = []
        nows: list[int] = []
        copies: list[int] = []
        lengths: list[int] = []
        statuses: list[np.ndarray] = []
        stamps: list[np.ndarray] = []
        for now, _, _, columns in batch:
            for view, column_statuses, column_stamps, shared in columns:
                index = number.get(view)
                if index is None:
                    index = number[view] = len(views)
                    views.append(metrics.views.get(view) or metrics.view(view))
                owners.append(index)
                nows.append(now)
                # Columns that share their statuses and event times arrive once, with a weight.
                copies.append(shared)
                lengths.append(len(column_statuses))
                statuses.append(column_statuses)
                stamps.append(
                    column_stamps
                    if column_stamps is not None
                    else np.zeros(len(column_statuses), np.int64)
                )
        if not owners:
            return
        owner = np.repeat(np.array(owners, dtype=np.int64), lengths)
        weight = np.repeat(np.array(copies, dtype=np.float64), lengths)
        codes = owner * _STATUS_SLOTS + np.concatenate(statuses)
        counts = np.bincount(codes, weights=weight, minlength=len(views) * _STATUS_SLOTS)
        for code in np.flatnonzero(counts).tolist():
            child = views[code // _STATUS_SLOTS].values[code % _STATUS_SLOTS]
            if child is not None:
                child.inc(round(float(counts[code])))
        self._ages(
            views,
            owner,
            np.repeat(np.array(nows, np.int64), lengths),
            np.concatenate(stamps),
            weight,
        )

    def _ages(
        self,
        views: list[ViewChildren],
        owner: np.ndarray,
        now: np.ndarray,
        stamp: np.ndarray,
        weight: np.ndarray,
    ) -> None:
        """feature_sidecar_value_age_seconds of every value that has an event timestamp."""
        kept = stamp > 0
        if not kept.any():
            return
        ages = np.maximum((now[kept] - stamp[kept]) * _NS, 0.0)
        whose = owner[kept]
        times = weight[kept]
        if not all(children.age.fast for children in views):
            for index, age, n in zip(whose.tolist(), ages.tolist(), times.tolist(), strict=True):
                for _ in range(int(n)):
                    views[index].age.observe(age)
            return
        slots = len(AGE_EDGES)
        codes = whose * slots + np.searchsorted(AGE_EDGES, ages, side="left")
        counts = np.bincount(codes, weights=times, minlength=len(views) * slots)
        for code in np.flatnonzero(counts).tolist():
            views[code // slots].age.add(code % slots, round(float(counts[code])))
        sums = np.bincount(whose, weights=ages * times, minlength=len(views))
        for index, total in enumerate(sums.tolist()):
            if total:
                views[index].age.add_sum(total)
