"""Recording calls: the gRPC server metrics, access decisions, and what GetFeatures served.

FeatureService calls are recorded by the `CallOutcome` observer that `grpc_service` runs after
every call, plus a start hook; health and reflection by thin subclasses of their servicers.
A grpc.aio server interceptor could count all of them in one place, and bench/metrics_cost.py
measures its own work at about 1.5 µs per call, so cost did not decide: the observer
already holds the call's code, duration and record (an interceptor would have to rebuild them),
and `server.build_server` builds the server without interceptors. Label children are bound
once; a call's increments and its duration go to the metrics' `Tally`, which applies them in
batches (values served are counted in batches too, see metrics_values).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from .grpc_service import SERVICE, CallOutcome
from .isolation import contained
from .metrics import (
    FLUSH_SECONDS,
    GRPC_CODE_NAMES,
    LATENCY_BUCKETS,
    NO_ROLE,
    BulkHistogram,
    SidecarMetrics,
)
from .metrics_values import ServedValues
from .service import CallRecord

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_OK = grpc.StatusCode.OK


class MethodMetrics:
    """The children of one gRPC method, bound once."""

    def __init__(self, metrics: SidecarMetrics, kind: str, service: str, method: str) -> None:
        labels = (kind, service, method)
        self.metrics = metrics
        self.labels = labels
        self.started = metrics.grpc_started.labels(*labels)
        self.received = metrics.grpc_msg_received.labels(*labels)
        self.sent = metrics.grpc_msg_sent.labels(*labels)
        self.seconds = BulkHistogram(metrics.grpc_handling_seconds.labels(*labels), LATENCY_BUCKETS)
        self.tally = metrics.tally
        self._handled: dict[Any, Any] = {}
        if not metrics.principal_label:
            # Every code exists from the start, so rate() and ratios see zeros, not gaps.
            self._handled = {
                code: metrics.grpc_handled.labels(*labels, GRPC_CODE_NAMES[code])
                for code in grpc.StatusCode
            }

    def handled(self, code: grpc.StatusCode, principal: str = "") -> Any:
        if not self.metrics.principal_label:
            return self._handled[code]
        key = (code, principal)
        child = self._handled.get(key)
        if child is None:
            principal = self.metrics.principal_value(principal)
            key = (code, principal)
            child = self._handled.get(key)
            if child is None:
                child = self._handled[key] = self.metrics.grpc_handled.labels(
                    *self.labels, GRPC_CODE_NAMES[code], principal
                )
        return child

    def finished(
        self, code: grpc.StatusCode, seconds: float, principal: str = "", *more: Any
    ) -> None:
        """Handled with `code`, its duration, and one increment of each of `more`."""
        contained("recording a call's metrics", self._finished, code, seconds, principal, more)

    def _finished(
        self, code: grpc.StatusCode, seconds: float, principal: str, more: tuple[Any, ...]
    ) -> None:
        self.tally.record((self.handled(code, principal), *more), self.seconds, seconds)

    @contextlib.contextmanager
    def call(self, context: Any) -> Iterator[None]:
        """Counts one call of a servicer method that runs inside the block: started, handled
        with the code the block ended with, and its duration."""
        self.tally.count(self.started)
        start = time.perf_counter()
        code = _OK
        try:
            yield
        except BaseException as exc:
            code = _code_of(exc, context)
            raise
        finally:
            self.finished(code, time.perf_counter() - start)


class CallMetrics:
    """Observer and start hook of FeatureServicer; owns the children of every method."""

    def __init__(self, metrics: SidecarMetrics) -> None:
        self.metrics = metrics
        self.served = ServedValues(metrics)
        self._methods: dict[str, MethodMetrics] = {
            name: MethodMetrics(metrics, "unary", SERVICE, name)
            for name in ("GetFeatures", "ListFeatures")
        }

    async def run(self, stop: asyncio.Event, every: float = FLUSH_SECONDS) -> None:
        """Applies what calls held back (counts, durations, values served) at least every
        `every` seconds, so that quiet workers' files are current; once more at the end."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
            self.metrics.flush()

    def method(self, kind: str, service: str, method: str) -> MethodMetrics:
        return MethodMetrics(self.metrics, kind, service, method)

    def _of(self, method: str) -> MethodMetrics:
        children = self._methods.get(method)
        if children is None:
            children = self._methods[method] = MethodMetrics(self.metrics, "unary", SERVICE, method)
        return children

    def started(self, method: str) -> None:
        children = self._of(method)
        children.tally.count(children.started)

    def observe(self, outcome: CallOutcome) -> None:
        children = self._of(outcome.method)
        code = outcome.code
        record = outcome.record
        principal = ""
        if self.metrics.principal_label:
            principal = record.principal or (outcome.identity.principal if outcome.identity else "")
        counters = [children.received]
        if code is _OK:
            counters.append(children.sent)
        if record.features:
            self.served.add(record)
            self._decided(record, code is _OK, counters)
        children.finished(code, outcome.seconds, principal, *counters)

    def _decided(self, record: CallRecord, ok: bool, counters: list[Any]) -> None:
        """One decision per role of the caller, for calls that reached the access decision."""
        if record.denied:
            decision = "partial" if ok else "deny"
        elif not record.roles:
            return  # the request failed before any decision (bad request, unknown feature)
        elif ok and record.masked:
            decision = "mask"
        else:
            decision = "allow"
        metrics = self.metrics
        for role in record.roles or (NO_ROLE,):
            children = metrics.roles.get(role) or metrics.role(role)
            counters.append(children.decisions[decision])
            if record.rate_limited:
                counters.append(children.rate_limited)


class CountedHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """The standard health service, counted like every other gRPC method."""

    def __init__(self, calls: CallMetrics) -> None:
        super().__init__()
        self._check = calls.method("unary", HEALTH_SERVICE, "Check")
        self._watch = calls.method("server_stream", HEALTH_SERVICE, "Watch")

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        counted = self._check
        with counted.call(context):
            counted.tally.count(counted.received)
            response: health_pb2.HealthCheckResponse = await super().Check(request, context)
            counted.tally.count(counted.sent)
            return response

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        counted = self._watch
        with counted.call(context):
            counted.tally.count(counted.received)
            await super().Watch(request, _CountingWrites(context, counted))


class _CountingWrites:
    """A servicer context whose `write` counts sent messages."""

    def __init__(self, context: Any, counted: MethodMetrics) -> None:
        self._context = context
        self._counted = counted

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._counted.tally.count(self._counted.sent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class CountedReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """Server reflection (for grpcurl and friends), counted."""

    def __init__(self, service_names: tuple[str, ...], calls: CallMetrics) -> None:
        super().__init__(service_names)
        self._counted = calls.method("bidi_stream", reflection.SERVICE_NAME, "ServerReflectionInfo")

    async def ServerReflectionInfo(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        counted = self._counted

        async def received() -> AsyncIterator[Any]:
            async for message in request_iterator:
                counted.tally.count(counted.received)
                yield message

        with counted.call(context):
            async for response in super().ServerReflectionInfo(received(), context):
                counted.tally.count(counted.sent)
                yield response


def enable_reflection(server: grpc.aio.Server, calls: CallMetrics) -> None:
    """What `reflection.enable_server_reflection` does, with the counted servicer."""
    names = (SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        CountedReflectionServicer(names, calls), server
    )


def _code_of(exc: BaseException, context: Any) -> grpc.StatusCode:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode) and code is not _OK:
        return code
    return grpc.StatusCode.UNKNOWN
