"""The settings of `feature-sidecar serve`, declared once (flags, env and config file)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .config import ENV_PREFIX, ConfigError, Option, redis_password

SERVE_OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        "list",
        ["127.0.0.1:50051"],
        "gRPC address, host:port or unix:/path; repeat for several",
        metavar="ADDR",
    ),
    Option(
        "redis",
        "str",
        "redis://127.0.0.1:6379/0",
        "Redis URL: redis://, rediss:// or unix://; the password may come from "
        f"{ENV_PREFIX}REDIS_PASSWORD instead",
        metavar="URL",
    ),
    Option("redis-password-file", "str", None, "file holding the Redis password", metavar="FILE"),
    Option(
        "redis-timeout",
        "duration",
        0.5,
        "time limit of one Redis round trip, e.g. 250ms",
        metavar="DURATION",
    ),
    Option(
        "redis-max-connections",
        "int",
        2,
        "pipelining Redis connections per worker, shared by concurrent calls",
        metavar="N",
    ),
    Option(
        "redis-health-interval",
        "duration",
        1.0,
        "how often Redis is pinged for health",
        metavar="DURATION",
    ),
    Option(
        "bundle",
        "str",
        None,
        "policy bundle: http(s):// URL or file path (a policy YAML with --allow-unsigned)",
        metavar="PATH_OR_URL",
    ),
    Option(
        "bundle-public-key",
        "list",
        [],
        "trusted Ed25519 public key (PEM) for bundle signatures; repeat for rotation",
        metavar="FILE",
    ),
    Option(
        "allow-unsigned",
        "bool",
        False,
        "DEVELOPMENT ONLY: accept a policy YAML or an unsigned bundle",
    ),
    Option(
        "bundle-poll-interval",
        "duration",
        30.0,
        "how often the bundle source is checked for a new revision",
        metavar="DURATION",
    ),
    Option(
        "bundle-timeout", "duration", 10.0, "time limit of one bundle download", metavar="DURATION"
    ),
    Option("bundle-max-bytes", "int", 32 * 1024 * 1024, "largest bundle accepted", metavar="N"),
    Option(
        "bundle-ca-file", "str", None, "CA certificates for an https bundle server", metavar="FILE"
    ),
    Option(
        "state-dir",
        "str",
        None,
        "directory for the last good bundle, loaded at start",
        metavar="DIR",
    ),
    Option("reflection", "bool", True, "turn off gRPC server reflection", negatable=True),
    Option(
        "grace-period",
        "duration",
        10.0,
        "on SIGTERM, how long in-flight calls may take to finish",
        metavar="DURATION",
    ),
    Option("log-format", "choice", "plain", "log line format", choices=("plain", "json")),
    Option(
        "log-level", "choice", "info", "log level", choices=("debug", "info", "warning", "error")
    ),
    Option("jwt-jwks", "str", None, "JWKS file of keys that sign bearer tokens", metavar="FILE"),
    Option("jwt-issuer", "str", None, "required 'iss' of bearer tokens", metavar="ISS"),
    Option("jwt-audience", "str", None, "required 'aud' of bearer tokens", metavar="AUD"),
    Option(
        "jwt-groups-claim",
        "str",
        "groups",
        "token claim holding the caller's groups",
        metavar="CLAIM",
    ),
    Option("tls-cert", "str", None, "server certificate (PEM) for TCP listeners", metavar="FILE"),
    Option("tls-key", "str", None, "server private key (PEM)", metavar="FILE"),
    Option(
        "tls-client-ca",
        "str",
        None,
        "CA of client certificates: requires and verifies them (mTLS)",
        metavar="FILE",
    ),
    Option(
        "workload-principal",
        "str",
        None,
        "principal of callers on the unix socket (the pod's own workload)",
        metavar="PRINCIPAL",
    ),
    Option(
        "decision-log",
        "str",
        None,
        "one JSON line per call: 'stdout' or a file path",
        metavar="stdout|PATH",
    ),
    Option(
        "decision-log-entities",
        "choice",
        "hashed",
        "how entity ids appear in it",
        choices=("hashed", "plain", "none"),
    ),
    Option(
        "decision-log-queue",
        "int",
        10000,
        "lines waiting to be written; more are dropped and counted",
        metavar="N",
    ),
    Option(
        "decision-log-queue-bytes",
        "int",
        64 * 1024 * 1024,
        "bytes of calls waiting to be written to the decision log; more are dropped and counted",
        metavar="N",
    ),
    Option(
        "metrics-listen",
        "str",
        None,
        "host:port of the HTTP port for /metrics, /status, /healthz and /readyz",
        metavar="ADDR",
    ),
    Option(
        "metrics-principal-label",
        "bool",
        False,
        "label request metrics with the caller's principal (only for few principals)",
    ),
    Option("workers", "int", 1, "worker processes sharing the TCP port", metavar="N"),
    Option(
        "mask-key-file", "str", None, "secret mixed into the key of 'mask: hash'", metavar="FILE"
    ),
    Option(
        "max-request-entities",
        "int",
        100_000,
        "entity rows one request may carry, whatever the policy allows",
        metavar="N",
    ),
    Option(
        "max-request-bytes",
        "int",
        16 * 1024 * 1024,
        "largest request accepted, in bytes; gRPC refuses a larger one as it arrives "
        "(RESOURCE_EXHAUSTED)",
        metavar="N",
    ),
    Option(
        "max-inflight",
        "int",
        256,
        "FeatureService calls served at once; more get RESOURCE_EXHAUSTED instead of queueing",
        metavar="N",
    ),
    Option(
        "cache-entries",
        "int",
        0,
        "entity hashes kept in a local cache (0: no cache); see --cache-ttl",
        metavar="N",
    ),
    Option(
        "cache-ttl",
        "duration",
        1.0,
        "how long a cached entity may be served before Redis is read again",
        metavar="DURATION",
    ),
)


@dataclass(frozen=True)
class ServeSettings:
    listen: list[str]
    redis: str
    redis_password_file: str | None
    redis_timeout: float
    redis_max_connections: int
    redis_health_interval: float
    bundle: str | None
    bundle_public_key: list[str]
    allow_unsigned: bool
    bundle_poll_interval: float
    bundle_timeout: float
    bundle_max_bytes: int
    bundle_ca_file: str | None
    state_dir: str | None
    reflection: bool
    grace_period: float
    log_format: str
    log_level: str
    jwt_jwks: str | None
    jwt_issuer: str | None
    jwt_audience: str | None
    jwt_groups_claim: str
    tls_cert: str | None
    tls_key: str | None
    tls_client_ca: str | None
    workload_principal: str | None
    decision_log: str | None
    decision_log_entities: str
    decision_log_queue: int
    decision_log_queue_bytes: int
    metrics_listen: str | None
    metrics_principal_label: bool
    workers: int
    mask_key_file: str | None
    max_request_entities: int
    max_request_bytes: int
    max_inflight: int
    cache_entries: int
    cache_ttl: float

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> ServeSettings:
        settings = cls(**{f.name: values[f.name] for f in fields(cls)})
        settings.check()
        return settings

    def check(self) -> None:
        if not self.bundle:
            raise ConfigError("--bundle is required: a bundle URL or file (see docs/policy.md)")
        if not self.listen:
            raise ConfigError("--listen: give at least one address")
        for address in self.listen:
            if not address.startswith("unix:") and address.rpartition(":")[2].isdigit() is False:
                raise ConfigError(f"--listen {address!r}: use host:port or unix:/path")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if self.workers > 1:
            self._check_shareable()
        if self.metrics_listen is not None:
            try:
                parse_host_port(self.metrics_listen, "--metrics-listen")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.max_request_entities < 1:
            raise ConfigError("--max-request-entities must be at least 1")
        for value, flag in (
            (self.max_request_bytes, "--max-request-bytes"),
            (self.max_inflight, "--max-inflight"),
            (self.decision_log_queue, "--decision-log-queue"),
            (self.decision_log_queue_bytes, "--decision-log-queue-bytes"),
        ):
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1")
        if self.cache_entries < 0:
            raise ConfigError("--cache-entries must not be negative")
        if self.bundle_max_bytes < 1:
            raise ConfigError("--bundle-max-bytes must be positive")
        if not self.allow_unsigned and not self.bundle_public_key:
            raise ConfigError(
                "--bundle-public-key is required to verify signed bundles "
                "(or --allow-unsigned, for development only)"
            )

    def _check_shareable(self) -> None:
        """Workers share TCP ports (SO_REUSEPORT); only worker 0 binds unix sockets."""
        tcp = [address for address in self.listen if not address.startswith("unix:")]
        if not tcp:
            raise ConfigError(
                f"--workers {self.workers} needs a TCP --listen address (host:port) that the "
                "workers share; a unix socket can only be bound by one of them"
            )
        for address in tcp:
            if address.rpartition(":")[2] == "0":
                raise ConfigError(
                    f"--listen {address}: with --workers {self.workers} give a fixed port; "
                    "each worker would get a different random one"
                )

    def redis_password(self) -> str | None:
        return redis_password(self.redis_password_file)


def parse_host_port(address: str, what: str) -> tuple[str, int]:
    """host:port or [v6]:port -> (host, port); a ValueError names the setting and the problem."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{what} {address!r}: use host:port, e.g. 0.0.0.0:9464")
    if int(port) > 65535:
        raise ValueError(f"{what} {address!r}: port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
