"""`feature-sidecar serve`: wires the parts together and runs them until SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from .activation import Activator
from .authn import Authenticator, JwtSettings
from .bundle_fetch import BundleSync, make_fetcher
from .bundle_format import load_public_key, trusted_keys
from .cache import EntityCache
from .config import ConfigError, read_flag_file
from .decision_log import DecisionLog
from .grpc_service import FeatureServicer, Observer
from .health import Readiness
from .memory import Reclaimer
from .metrics import SidecarMetrics
from .metrics_calls import CallMetrics, CountedHealthServicer, enable_reflection
from .metrics_http import Endpoints, MetricsServer
from .server import build_server, tls_credentials
from .service import FeatureReader
from .settings import ServeSettings
from .snapshot import ActivePolicy
from .status_view import local_status, readiness_reason
from .store import RedisStore

log = logging.getLogger("featuresidecar.server")

__all__ = ["Sidecar", "run"]

# A shorter secret could be guessed by trying candidates, which is what it exists to prevent.
MIN_MASK_SECRET = 16


@dataclass
class Sidecar:
    """A running sidecar in this process; tests drive it directly."""

    settings: ServeSettings
    server: grpc.aio.Server
    addresses: list[str]
    readiness: Readiness
    activator: Activator
    sync: BundleSync
    store: RedisStore
    reader: FeatureReader
    decision_log: DecisionLog | None
    metrics: SidecarMetrics | None = None
    calls: CallMetrics | None = None
    http: MetricsServer | None = None
    reclaimer: Reclaimer | None = None
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    on_close: list[Callable[[], None]] = field(default_factory=list)

    async def start(self) -> None:
        if self.settings.metrics_listen and self.metrics is not None and self.http is None:
            # First, so /readyz answers 503 while the bundle and Redis come up.
            self.http = MetricsServer(
                self.settings.metrics_listen,
                Endpoints(
                    metrics=self.metrics.registry,
                    status=lambda: local_status(self.activator, self.readiness),
                    ready=lambda: (self.readiness.serving, readiness_reason(self.readiness)),
                ),
            ).start()
        await self.server.start()
        self.readiness.publish()
        self.activator.load_persisted()
        self.tasks.append(asyncio.create_task(self.sync.run(self.stop_event)))
        self.tasks.append(
            asyncio.create_task(
                self.readiness.watch_redis(
                    self.store.ping, self.settings.redis_health_interval, self.stop_event
                )
            )
        )
        if self.decision_log is not None:
            self.tasks.append(asyncio.create_task(self.decision_log.run(self.stop_event)))
        if self.calls is not None:
            self.tasks.append(asyncio.create_task(self.calls.run(self.stop_event)))
        if self.reclaimer is not None:
            self.tasks.append(asyncio.create_task(self.reclaimer.run(self.stop_event)))
        # What exists now (modules, the persisted policy) lives as long as the process: the
        # cyclic collector need not walk it again on every full collection.
        gc.freeze()
        log.info(
            "feature sidecar started",
            extra={
                "listen": ",".join(self.addresses),
                "redis": self.store.url,
                "bundle": self.activator.status.source,
            },
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stops accepting calls, lets in-flight ones finish within the grace period."""
        self.readiness.drain()
        await self.server.stop(self.settings.grace_period if grace is None else grace)
        self.stop_event.set()
        for task in self.tasks:
            try:
                await asyncio.wait_for(task, timeout=self.settings.bundle_timeout + 1)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        await self.store.close()
        for callback in self.on_close:
            callback()
        if self.http is not None:
            self.http.stop()
        log.info("feature sidecar stopped")


def build(
    settings: ServeSettings,
    observers: list[Observer] | None = None,
    *,
    registry: CollectorRegistry | None = None,
    shared_port: bool = False,
) -> Sidecar:
    """Every part of a sidecar, not started yet; its metrics go to `registry` (a new one if
    None). `shared_port`: a worker of a supervisor, binding TCP ports with its siblings."""
    metrics = SidecarMetrics(
        CollectorRegistry() if registry is None else registry,
        principal_label=settings.metrics_principal_label,
    )
    calls = CallMetrics(metrics)
    readiness = Readiness(CountedHealthServicer(calls))

    def redis_result(ok: bool, kind: str, seconds: float) -> None:
        readiness.redis_result(ok, kind, seconds)
        metrics.redis_round_trip(ok, kind, seconds)
        metrics.set_redis_up(readiness.redis_up)

    store = RedisStore(
        settings.redis,
        password=settings.redis_password(),
        timeout=settings.redis_timeout,
        max_connections=settings.redis_max_connections,
        listener=redis_result,
    )
    active = ActivePolicy()
    keys = []
    for path in settings.bundle_public_key:
        pem = read_flag_file("--bundle-public-key", path)
        keys.append(load_public_key(pem, f"--bundle-public-key {path}"))
    assert settings.bundle is not None
    mask_secret = b""
    if settings.mask_key_file:
        mask_secret = read_flag_file("--mask-key-file", settings.mask_key_file).strip()
        if len(mask_secret) < MIN_MASK_SECRET:
            raise ConfigError(
                f"--mask-key-file {settings.mask_key_file}: holds {len(mask_secret)} bytes; a "
                f"mask secret needs at least {MIN_MASK_SECRET} (e.g. `head -c 32 /dev/urandom "
                "| base64`)"
            )
    activator = Activator(
        active,
        source=settings.bundle,
        trusted=trusted_keys(keys),
        allow_unsigned=settings.allow_unsigned,
        state_dir=settings.state_dir,
        mask_secret=mask_secret,
    )
    activator.listeners.append(
        lambda event, _: readiness.policy_activated() if event == "activated" else None
    )

    def bundle_event(event: str, detail: Any) -> None:
        if event == "activated" and active.current is not None:
            snapshot = active.current
            metrics.bind_policy(
                snapshot.catalog.views, (role.name for role in snapshot.policy.roles)
            )
        metrics.bundle_event(event, detail, activator.status.source)

    activator.listeners.append(bundle_event)
    fetcher = make_fetcher(
        settings.bundle,
        timeout=settings.bundle_timeout,
        max_bytes=settings.bundle_max_bytes,
        ca_file=settings.bundle_ca_file,
    )
    sync = BundleSync(fetcher, activator, interval=settings.bundle_poll_interval)
    jwt_settings = None
    if settings.jwt_jwks:
        jwt_settings = JwtSettings(
            settings.jwt_jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            groups_claim=settings.jwt_groups_claim,
        )
    try:
        authenticator = Authenticator(
            jwt_settings=jwt_settings, workload_principal=settings.workload_principal
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cache = None
    if settings.cache_entries:
        cache = EntityCache(settings.cache_entries, settings.cache_ttl)
        cache.stats.listeners.append(metrics.cache_lookup)
    reader = FeatureReader(active, store, cache=cache, max_rows=settings.max_request_entities)
    reclaimer = Reclaimer()
    all_observers = [
        calls.observe,
        lambda outcome: reclaimer.saw(outcome.record.request_bytes),
        *(observers or []),
    ]
    decision_log = None
    if settings.decision_log:
        decision_log = DecisionLog.open(
            settings.decision_log,
            entities=settings.decision_log_entities,
            queue_size=settings.decision_log_queue,
            queue_bytes=settings.decision_log_queue_bytes,
            entity_key=mask_secret,
        )
        all_observers.append(decision_log.observe)
        decision_log.on_drop.append(metrics.decision_log_drop)
    servicer = FeatureServicer(
        reader,
        authenticator,
        all_observers,
        starters=[calls.started],
        max_inflight=settings.max_inflight,
    )
    assert readiness.servicer is not None
    server, addresses = build_server(
        servicer,
        readiness.servicer,
        listen=settings.listen,
        # Enabled below with a servicer that is counted like every other method.
        reflection_on=False,
        credentials=tls_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca),
        max_request_bytes=settings.max_request_bytes,
        reuse_port=shared_port,
    )
    if settings.reflection:
        enable_reflection(server, calls)
    return Sidecar(
        settings,
        server,
        addresses,
        readiness,
        activator,
        sync,
        store,
        reader,
        decision_log,
        metrics,
        calls,
        reclaimer=reclaimer,
    )


# Runs once the sidecar has started, e.g. to publish a worker's status; `stopping` ends it.
AfterStart = Callable[[Sidecar, asyncio.Event], Awaitable[None]]


async def run(
    settings: ServeSettings,
    after_start: AfterStart | None = None,
    hold: str = "",
    shared_port: bool = False,
) -> int:
    """Serves until SIGTERM or SIGINT. With `hold`, health stays NOT_SERVING, for that reason,
    until `after_start`'s code calls `sidecar.readiness.release()`."""
    sidecar = build(settings, shared_port=shared_port)
    if hold:
        sidecar.readiness.hold(hold)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await sidecar.start()
    if after_start is not None:
        await after_start(sidecar, stopping)
    await stopping.wait()
    log.info("shutting down", extra={"grace_seconds": settings.grace_period})
    await sidecar.stop()
    return 0
