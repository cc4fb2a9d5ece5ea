"""Readiness: SERVING only while a policy bundle is active and Redis answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

from .errors import ServiceError

log = logging.getLogger("featuresidecar.health")

SERVICE_NAME = "featuresidecar.v1.FeatureService"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    def __init__(self, servicer: health.aio.HealthServicer | None = None) -> None:
        self.servicer = servicer
        self.policy_ready = False
        self.redis_up = False
        self.draining = False
        # Set while something outside this process must happen first (see `hold`).
        self.held_for = ""
        self._redis_seen = False
        self.listeners: list[Callable[[bool], None]] = []
        self._published: bool | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def serving(self) -> bool:
        return self.policy_ready and self.redis_up and not self.draining and not self.held_for

    def hold(self, reason: str) -> None:
        """Not serving, whatever else holds, until `release()`; `reason` is what is awaited."""
        self.held_for = reason
        self.publish()

    def release(self) -> None:
        if self.held_for:
            self.held_for = ""
            self.publish()

    def policy_activated(self) -> None:
        self.policy_ready = True
        self.publish()

    def redis_result(self, ok: bool, kind: str = "", seconds: float = 0.0) -> None:
        # A Redis error reply (e.g. WRONGTYPE) says nothing about Redis being reachable.
        if not ok and kind == "response":
            return
        if ok != self.redis_up or not self._redis_seen:
            was_seen, self._redis_seen = self._redis_seen, True
            log.log(
                logging.INFO if ok else logging.WARNING,
                ("Redis is reachable again" if was_seen else "Redis is reachable")
                if ok
                else "Redis is unreachable",
                extra={"kind": kind} if kind else {},
            )
            self.redis_up = ok
            self.publish()

    def drain(self) -> None:
        self.draining = True
        self.publish()

    def publish(self) -> None:
        """Pushes a change to the health service; callable from any thread."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None or (self._loop is not None and running is not self._loop):
            # Bundle activation runs in a worker thread; the health service lives on the loop.
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.publish)
            return
        self._loop = running
        serving = self.serving
        if serving == self._published:
            return
        self._published = serving
        for listener in self.listeners:
            listener(serving)
        if self.servicer is None:
            return
        status = _SERVING if serving else _NOT_SERVING
        for name in ("", SERVICE_NAME):
            task = running.create_task(self.servicer.set(name, status))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def watch_redis(
        self, ping: Callable[[], object], interval: float, stop: asyncio.Event
    ) -> None:
        """Pings Redis every `interval` seconds; store calls report in between."""
        while not stop.is_set():
            # A failure was already recorded by the store's listener.
            with contextlib.suppress(ServiceError):
                await ping()  # type: ignore[misc]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
