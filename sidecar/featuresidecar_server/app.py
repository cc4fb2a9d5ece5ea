"""`feature-sidecar serve`: wires the parts together and runs them until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health

from .activation import Activator
from .authn import Authenticator, JwtSettings
from .bundle_fetch import BundleSync, make_fetcher
from .bundle_format import load_public_key, trusted_keys
from .config import ConfigError
from .decision_log import DecisionLog
from .grpc_service import FeatureServicer, Observer
from .health import Readiness
from .server import build_server, tls_credentials
from .service import FeatureReader
from .settings import ServeSettings
from .snapshot import ActivePolicy
from .store import RedisStore

log = logging.getLogger("featuresidecar.server")

__all__ = ["Sidecar", "run"]


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
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    on_close: list[Callable[[], None]] = field(default_factory=list)

    async def start(self) -> None:
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
        log.info("feature sidecar stopped")


def build(settings: ServeSettings, observers: list[Observer] | None = None) -> Sidecar:
    """Every part of a sidecar, not started yet."""
    readiness = Readiness(health.aio.HealthServicer())
    store = RedisStore(
        settings.redis,
        password=settings.redis_password(),
        timeout=settings.redis_timeout,
        max_connections=settings.redis_max_connections,
        listener=readiness.redis_result,
    )
    active = ActivePolicy()
    keys = []
    for path in settings.bundle_public_key:
        try:
            with open(path, "rb") as handle:
                keys.append(load_public_key(handle.read(), f"--bundle-public-key {path}"))
        except OSError as exc:
            raise ConfigError(f"--bundle-public-key {path}: {exc.strerror}") from None
    assert settings.bundle is not None
    mask_secret = b""
    if settings.mask_key_file:
        try:
            with open(settings.mask_key_file, "rb") as handle:
                mask_secret = handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"--mask-key-file {settings.mask_key_file}: {exc.strerror}") from None
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
    reader = FeatureReader(active, store)
    all_observers = list(observers or [])
    decision_log = None
    if settings.decision_log:
        decision_log = DecisionLog.open(
            settings.decision_log,
            entities=settings.decision_log_entities,
            queue_size=settings.decision_log_queue,
        )
        all_observers.append(decision_log.observe)
    servicer = FeatureServicer(reader, authenticator, all_observers)
    server, addresses = build_server(
        servicer,
        readiness.servicer,
        listen=settings.listen,
        reflection_on=settings.reflection,
        credentials=tls_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca),
    )
    return Sidecar(
        settings, server, addresses, readiness, activator, sync, store, reader, decision_log
    )


async def run(settings: ServeSettings) -> int:
    sidecar = build(settings)
    await sidecar.start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("shutting down", extra={"grace_seconds": settings.grace_period})
    await sidecar.stop()
    return 0
