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
from bisect import bisect_left

import numpy as np

from .columns import Served, StatsGroup
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
_AGE_EDGES = AGE_EDGES.tolist()


def _age_slot(age: float) -> int:
    """The bucket of one age, as `_ages` finds it: the first bound >= the age (0 and below
    count as 0)."""
    return bisect_left(_AGE_EDGES, max(age, 0.0))


# (now_ns, entities, features, what it served: see columns.Served) of one call.
Pending = tuple[int, int, int, list[Served]]


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

        def number_of(view: str) -> int:
            """A view first seen in this batch: its children, and its number in `views`."""
            views.append(metrics.views.get(view) or metrics.view(view))
            number[view] = len(views) - 1
            return number[view]

        owners: list[int] = []
        nows: list[int] = []
        copies: list[int] = []
        lengths: list[int] = []
        statuses: list[np.ndarray] = []
        stamps: list[np.ndarray] = []
        # Single rows that share their event times arrive as one group object per call.
        groups: dict[int, tuple[StatsGroup, list[int]]] = {}
        for now, _, _, columns in batch:
            for entry in columns:
                if isinstance(entry, StatsGroup):
                    found = groups.get(id(entry))
                    if found is None:
                        found = groups[id(entry)] = (entry, [])
                    found[1].append(now)
                    continue
                view, column_statuses, column_stamps, shared = entry
                index = number.get(view)
                if index is None:
                    index = number_of(view)
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
        # Ages of grouped calls that could not be added at once, call by call.
        late: tuple[list[int], list[int], list[int], list[float]] = ([], [], [], [])
        for shared_group, times in groups.values():
            calls, first, last = len(times), min(times), max(times)
            for view, column_statuses, column_stamps, shared in shared_group.entries:
                index = number.get(view)
                if index is None:
                    index = number_of(view)
                # Statuses of every call of the group at once; ages below (no event time here).
                owners.append(index)
                nows.append(0)
                copies.append(shared * calls)
                lengths.append(len(column_statuses))
                statuses.append(column_statuses)
                stamps.append(np.zeros(len(column_statuses), np.int64))
                ts = int(column_stamps[0]) if column_stamps is not None else 0
                if ts <= 0:
                    continue
                age = views[index].age
                slot = _age_slot((first - ts) * _NS)
                if age.fast and first >= ts and slot == _age_slot((last - ts) * _NS):
                    # Every call's age falls in one bucket: add them all, and their sum.
                    age.add(slot, shared * calls)
                    age.add_sum(shared * (sum(times) - calls * ts) * _NS)
                    continue
                for now in times:
                    late[0].append(index)
                    late[1].append(now)
                    late[2].append(ts)
                    late[3].append(shared)
        if late[0]:
            self._ages(
                views,
                np.array(late[0], np.int64),
                np.array(late[1], np.int64),
                np.array(late[2], np.int64),
                np.array(late[3], np.float64),
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
        # In floating point: int64 `now - stamp` wraps for event times far in the past.
        ages = np.maximum((now[kept].astype(np.float64) - stamp[kept]) * _NS, 0.0)
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
