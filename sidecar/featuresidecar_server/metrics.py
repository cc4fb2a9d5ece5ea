"""Every Prometheus metric of the sidecar, defined once: names, help, labels and buckets.

Label values are bounded: gRPC codes and method names, views and roles of the active policy,
fixed reasons and kinds. Entity ids never appear; principals only with
`--metrics-principal-label`, and only on `grpc_server_handled_total`.

The registry is passed in, so tests and several sidecars in one process never share counters.
Under `--workers N` every worker writes its values to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode) and the supervisor adds them up; `multiprocess_mode`
on each gauge says how.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import __version__
from .logs import public_url

# Latency of a sub-millisecond service: 100 us to 5 s.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
ENTITY_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
FEATURE_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
# Data freshness, from one second to a month: feature views' max ages live in this range.
AGE_BUCKETS = (
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    3 * 3600.0,
    6 * 3600.0,
    12 * 3600.0,
    86400.0,
    3 * 86400.0,
    7 * 86400.0,
    30 * 86400.0,
)

# How often what calls held back is applied to the metrics (under --workers: written to the
# worker's files). A worker killed by SIGKILL loses at most this much of its counts.
FLUSH_SECONDS = 0.05

GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# The `grpc_code` label values, as go-grpc-prometheus writes them (Go's codes.Code.String()):
# dashboards and alert rules written for Go services filter on these names.
GRPC_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
# Index = the wire's FeatureStatus number; 0 (unspecified) is never served.
STATUSES = ("", "PRESENT", "NULL_VALUE", "NOT_FOUND", "STALE", "MASKED", "DENIED")
DECISIONS = ("allow", "deny", "mask", "partial")
REDIS_ERROR_KINDS = ("timeout", "connection", "response", "other")
BUNDLE_FAILURE_REASONS = (
    "signature",
    "parse",
    "rollback",
    "size",
    "http",
    "timeout",
    "io",
    "mask_secret",
    "internal",
)
# The role label of a caller who holds no role in the policy.
NO_ROLE = "(none)"
# With --metrics-principal-label, principals beyond this many share one label value.
MAX_PRINCIPALS = 100
OTHER_PRINCIPAL = "(other)"

WORKER_RESTARTS = "feature_sidecar_worker_restarts"
WORKER_RESTARTS_HELP = "Worker processes the supervisor restarted after they died."


def is_multiprocess() -> bool:
    """True when prometheus_client keeps values in PROMETHEUS_MULTIPROC_DIR files."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def source_label(source: str) -> str:
    """A bundle source as a label value: no password, no query string (it may hold a token)."""
    if "://" not in source:
        return source
    return public_url(source)


def worker_restarts_family(restarts: int) -> CounterMetricFamily:
    """Reported by the supervisor (`--workers N`) from its own count, not from a file."""
    return CounterMetricFamily(WORKER_RESTARTS, WORKER_RESTARTS_HELP, value=restarts)


class BulkHistogram:
    """Adds many observations to one histogram child with one increment per bucket.

    prometheus_client observes one value at a time; for a column of a thousand values that is a
    thousand Python calls. This adds to the child's per-bucket counts and sum directly. `fast`
    is False when the child does not look as expected (another prometheus_client); callers
    then observe value by value. A test pins that both give the same samples.
    """

    def __init__(self, child: Histogram, buckets: Sequence[float]) -> None:
        self.child = child
        self.edges = np.array([*map(float, buckets), math.inf], dtype=np.float64)
        bounds = getattr(child, "_upper_bounds", None)
        counts = getattr(child, "_buckets", None)
        self.fast = (
            isinstance(counts, list)
            and getattr(child, "_sum", None) is not None
            and isinstance(bounds, list)
            and bounds == self.edges.tolist()
            and len(counts) == len(bounds)
        )

    def observe(self, value: float) -> None:
        self.child.observe(value)

    def add(self, slot: int, count: int) -> None:
        """`count` observations in bucket `slot` (the first bound >= each value); fast only."""
        self.child._buckets[slot].inc(count)

    def add_sum(self, total: float) -> None:
        self.child._sum.inc(total)

    def observe_many(self, samples: np.ndarray) -> None:
        """Observes every element of a float array."""
        if samples.size == 0:
            return
        if not self.fast:
            for value in samples.tolist():
                self.child.observe(value)
            return
        # Prometheus buckets are "less or equal": the first bound >= the value.
        counts = np.bincount(
            np.searchsorted(self.edges, samples, side="left"), minlength=len(self.edges)
        )
        for slot in np.flatnonzero(counts).tolist():
            self.add(slot, int(counts[slot]))
        self.add_sum(float(samples.sum()))


class Tally:
    """Counter increments and histogram observations of the request path, held as plain Python
    numbers and applied to their children in batches by `flush`.

    Under `--workers` a child's increment takes a lock, reads the pid and packs a double into a
    memory-mapped file, and a GetFeatures call made about ten of them; here a call takes the
    lock once or twice and adds to a dict. The sidecar flushes every 50 ms and before every
    collection, so a scrape of one process sees every finished call, and the supervisor's sum
    of `--workers` files is at most 50 ms behind.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Any, int] = {}
        self._samples: dict[BulkHistogram, list[float]] = {}

    def count(self, child: Any) -> None:
        with self._lock:
            counts = self._counts
            counts[child] = counts.get(child, 0) + 1

    def record(
        self, counters: Iterable[Any], histogram: BulkHistogram | None, value: float = 0.0
    ) -> None:
        """One increment of each counter child and, with `histogram`, one observation."""
        with self._lock:
            counts = self._counts
            for child in counters:
                counts[child] = counts.get(child, 0) + 1
            if histogram is not None:
                samples = self._samples.get(histogram)
                if samples is None:
                    samples = self._samples[histogram] = []
                samples.append(value)

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            samples, self._samples = self._samples, {}
        for child, count in counts.items():
            child.inc(count)
        for histogram, values_ in samples.items():
            histogram.observe_many(np.array(values_, dtype=np.float64))


class SidecarMetrics:
    """The sidecar's metric families in one registry, and the label children bound up front."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        principal_label: bool = False,
        version: str = __version__,
        process_metrics: bool = True,
    ) -> None:
        self.registry = registry
        self.principal_label = principal_label
        self.multiprocess = is_multiprocess()
        self._lock = threading.Lock()
        # Run before every collection, e.g. to count values still waiting in a batch; registered
        # first, so they run before any metric is read.
        self.tally = Tally()
        self.before_collect: list[Callable[[], None]] = [self.tally.flush]
        registry.register(_BeforeCollect(self.before_collect))
        handled_labels = (*GRPC_LABELS, "grpc_code") + (("principal",) if principal_label else ())

        self.grpc_started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            GRPC_LABELS,
            registry=registry,
        )
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC status code.",
            handled_labels,
            registry=registry,
        )
        self.grpc_handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time the server took to handle an RPC, from its start to its status.",
            GRPC_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.grpc_msg_received = Counter(
            "grpc_server_msg_received",
            "Messages received from clients.",
            GRPC_LABELS,
            registry=registry,
        )
        self.grpc_msg_sent = Counter(
            "grpc_server_msg_sent",
            "Messages sent to clients.",
            GRPC_LABELS,
            registry=registry,
        )
        self.entities_per_request = Histogram(
            "feature_sidecar_entities_per_request",
            "Entity rows in one GetFeatures request.",
            buckets=ENTITY_BUCKETS,
            registry=registry,
        )
        self.features_per_request = Histogram(
            "feature_sidecar_features_per_request",
            "Features named by one GetFeatures request.",
            buckets=FEATURE_BUCKETS,
            registry=registry,
        )
        self.values = Counter(
            "feature_sidecar_values",
            "Feature values served, by feature view and status.",
            ("view", "status"),
            registry=registry,
        )
        self.value_age_seconds = Histogram(
            "feature_sidecar_value_age_seconds",
            "Age of served values: time of the call minus the value's event timestamp.",
            ("view",),
            buckets=AGE_BUCKETS,
            registry=registry,
        )
        self.redis_request_seconds = Histogram(
            "feature_sidecar_redis_request_duration_seconds",
            "Duration of one Redis round trip (a pipelined read or a health ping).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.redis_errors = Counter(
            "feature_sidecar_redis_errors",
            "Redis round trips that failed, by kind: timeout, connection, response, other.",
            ("kind",),
            registry=registry,
        )
        self.redis_up = Gauge(
            "feature_sidecar_redis_up",
            "1 while Redis answers, 0 after a failed round trip (the lowest of all workers).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.policy_decisions = Counter(
            "feature_sidecar_policy_decisions",
            "Access decisions of GetFeatures calls, by the caller's role: allow, deny, mask, "
            "partial (allow_partial served some features as DENIED).",
            ("role", "decision"),
            registry=registry,
        )
        self.rate_limited = Counter(
            "feature_sidecar_rate_limited",
            "Calls refused with RESOURCE_EXHAUSTED by a requests_per_second limit, by role.",
            ("role",),
            registry=registry,
        )
        self.bundle_info = Gauge(
            "feature_sidecar_bundle_info",
            "1 for the active policy bundle revision, labelled with the configured source.",
            ("revision", "source"),
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.bundle_last_success = Gauge(
            "feature_sidecar_bundle_last_success_timestamp_seconds",
            "Unix time of the last successful check of the bundle source (new or unchanged); "
            "0 before the first one. Under --workers, the oldest of all workers.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.bundle_last_attempt = Gauge(
            "feature_sidecar_bundle_last_attempt_timestamp_seconds",
            "Unix time of the last attempt to fetch the bundle.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.bundle_failures = Counter(
            "feature_sidecar_bundle_failures",
            "Bundle fetches or activations that failed, by reason.",
            ("reason",),
            registry=registry,
        )
        self.decision_log_dropped = Counter(
            "feature_sidecar_decision_log_dropped",
            "Decision-log lines dropped because the writer fell behind.",
            registry=registry,
        )
        self.cache_lookups = Counter(
            "feature_sidecar_cache_lookups",
            "Entity lookups of the optional local cache (--cache-entries): hit, miss, or shared "
            "(a miss that waited for another call's read of the same entity).",
            ("result",),
            registry=registry,
        )
        self.build_info = Gauge(
            "feature_sidecar_build_info",
            "1, labelled with the version of the running sidecar.",
            ("version",),
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.build_info.labels(version).set(1)
        if process_metrics and not self.multiprocess:
            # Under --workers the supervisor reports every worker's process metrics.
            ProcessCollector(registry=registry)

        self._redis_errors = {kind: self.redis_errors.labels(kind) for kind in REDIS_ERROR_KINDS}
        self._redis_seconds = BulkHistogram(self.redis_request_seconds, LATENCY_BUCKETS)
        self._bundle_failures = {
            reason: self.bundle_failures.labels(reason) for reason in BUNDLE_FAILURE_REASONS
        }
        self._cache_lookups = {
            result: self.cache_lookups.labels(result) for result in ("hit", "miss", "shared")
        }
        # Principals that have a label value of their own (--metrics-principal-label).
        self._principals: set[str] = set()
        self._redis_up_value: bool | None = None
        self._bundle_label: tuple[str, str] | None = None
        # Copy-on-write maps, read without a lock on the request path.
        self.views: dict[str, ViewChildren] = {}
        self.roles: dict[str, RoleChildren] = {}

    # Binding -----------------------------------------------------------------------------------

    def bind_policy(self, views: Iterable[str], roles: Iterable[str]) -> None:
        """Creates the children of a policy's views and roles, so their series exist at 0."""
        for view in views:
            self.view(view)
        for role in (*roles, NO_ROLE):
            self.role(role)

    def view(self, name: str) -> ViewChildren:
        children = self.views.get(name)
        if children is None:
            with self._lock:
                children = self.views.get(name)
                if children is None:
                    children = ViewChildren(self, name)
                    self.views = {**self.views, name: children}
        return children

    def role(self, name: str) -> RoleChildren:
        children = self.roles.get(name)
        if children is None:
            with self._lock:
                children = self.roles.get(name)
                if children is None:
                    children = RoleChildren(self, name)
                    self.roles = {**self.roles, name: children}
        return children

    def principal_value(self, principal: str) -> str:
        """The `principal` label value of a caller: its own for the first MAX_PRINCIPALS
        callers, OTHER_PRINCIPAL for any later one."""
        principals = self._principals
        if principal in principals:
            return principal
        with self._lock:
            if len(principals) < MAX_PRINCIPALS:
                principals.add(principal)
                return principal
        return OTHER_PRINCIPAL

    # Events that are not calls -----------------------------------------------------------------

    def redis_round_trip(self, ok: bool, kind: str, seconds: float) -> None:
        errors = () if ok else (self._redis_errors.get(kind, self._redis_errors["other"]),)
        self.tally.record(errors, self._redis_seconds, seconds)

    def flush(self) -> None:
        """Applies what the request path holds back (see `Tally`); runs before collections."""
        for hook in self.before_collect:
            hook()

    def set_redis_up(self, up: bool) -> None:
        if up != self._redis_up_value:
            self._redis_up_value = up
            self.redis_up.set(1 if up else 0)

    def bundle_event(self, event: str, detail: Any, source: str) -> None:
        """An `Activator` event: attempt, downloaded, activated or failed."""
        if event == "attempt":
            self.bundle_last_attempt.set(float(detail))
        elif event == "downloaded":
            self.bundle_last_success.set(float(detail))
        elif event == "failed":
            counter = self._bundle_failures.get(str(detail))
            if counter is None:
                counter = self.bundle_failures.labels(str(detail))
            counter.inc()
        elif event == "activated":
            self.bundle_activated(int(detail.revision), source)

    def bundle_activated(self, revision: int, source: str) -> None:
        label = (str(revision), source_label(source))
        with self._lock:
            old, self._bundle_label = self._bundle_label, label
            self.bundle_info.labels(*label).set(1)
            if old is not None and old != label:
                if self.multiprocess:
                    # Multiprocess files cannot forget a series: 0 marks it inactive and the
                    # supervisor leaves zeros out.
                    self.bundle_info.labels(*old).set(0)
                else:
                    self.bundle_info.remove(*old)

    def decision_log_drop(self) -> None:
        self.decision_log_dropped.inc()

    def cache_lookup(self, kind: str, count: int) -> None:
        self._cache_lookups[_CACHE_RESULTS[kind]].inc(count)


_CACHE_RESULTS = {"hits": "hit", "misses": "miss", "shared": "shared"}


class _BeforeCollect(Collector):
    def __init__(self, hooks: list[Callable[[], None]]) -> None:
        self.hooks = hooks

    def collect(self) -> Iterable[Metric]:
        for hook in self.hooks:
            hook()
        return ()


class ViewChildren:
    """The children of one feature view: values by status number, and value age."""

    def __init__(self, metrics: SidecarMetrics, view: str) -> None:
        # Indexed by the status number; 0 (unspecified) and 7 are never served.
        self.values: list[Any] = [
            metrics.values.labels(view, status) if status else None for status in STATUSES
        ] + [None]
        self.age = BulkHistogram(metrics.value_age_seconds.labels(view), AGE_BUCKETS)


class RoleChildren:
    """The children of one role: decisions by name, and rate limiting."""

    def __init__(self, metrics: SidecarMetrics, role: str) -> None:
        self.decisions = {
            decision: metrics.policy_decisions.labels(role, decision) for decision in DECISIONS
        }
        self.rate_limited = metrics.rate_limited.labels(role)
