"""`feature-sidecar load`: a CSV or Parquet file into Redis, in the layout the sidecar reads.

Exit codes: 0 loaded; 1 the data or Redis stopped the load (the message says how many rows were
written); 2 the command line, the policy or the view is wrong (nothing was written).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from . import config
from .config import ENV_PREFIX, ConfigError, Option, read_flag_file, redis_password

if TYPE_CHECKING:
    from .catalog import Catalog

LOAD_OPTIONS: tuple[Option, ...] = (
    Option(
        "redis",
        "str",
        None,
        "Redis URL to write to (required): redis://, rediss:// or unix://; the password may "
        f"come from {ENV_PREFIX}REDIS_PASSWORD instead",
        metavar="URL",
    ),
    Option("redis-password-file", "str", None, "file holding the Redis password", metavar="FILE"),
    Option(
        "redis-timeout",
        "duration",
        10.0,
        "time limit of one Redis round trip (one batch), e.g. 30s",
        metavar="DURATION",
    ),
    Option(
        "bundle",
        "str",
        None,
        "the policy (required): a policy YAML or a bundle file; its catalog gives the types",
        metavar="POLICY",
    ),
    Option(
        "bundle-public-key",
        "list",
        [],
        "trusted Ed25519 public key (PEM) that must verify a signed bundle; repeatable "
        "(also --public-key)",
        metavar="FILE",
    ),
    Option("view", "str", None, "the feature view to load (required)", metavar="VIEW"),
    Option("from", "str", None, "the input file (required): .csv, .parquet or .pq", metavar="FILE"),
    Option(
        "format",
        "choice",
        None,
        "input format when the file name does not tell",
        choices=("csv", "parquet"),
    ),
    Option(
        "features",
        "list",
        [],
        "load only these features of the view (comma-separated or repeated)",
        metavar="A,B",
    ),
    Option(
        "timestamp-column",
        "str",
        None,
        "column holding each row's event time (default: the time of the load)",
        metavar="COL",
    ),
    Option("ttl-seconds", "int", None, "expire each written entity after N seconds", metavar="N"),
    Option("batch-size", "int", 1000, "rows per Redis pipeline", metavar="N"),
    Option("quiet", "bool", False, "print nothing but errors"),
)


@dataclass(frozen=True)
class LoadSettings:
    redis: str
    redis_password_file: str | None
    redis_timeout: float
    bundle: str
    bundle_public_key: list[str]
    view: str
    source: str
    format: str | None
    features: list[str]
    timestamp_column: str | None
    ttl_seconds: int | None
    batch_size: int
    quiet: bool

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> LoadSettings:
        for name in ("redis", "bundle", "view", "from"):
            if not values[name]:
                raise ConfigError(f"--{name} is required [env {ENV_PREFIX}{name.upper()}]")
        if values["batch_size"] < 1:
            raise ConfigError(f"--batch-size must be at least 1, not {values['batch_size']}")
        if values["ttl_seconds"] is not None and values["ttl_seconds"] < 1:
            raise ConfigError(f"--ttl-seconds must be at least 1, not {values['ttl_seconds']}")
        # `--features a,b` and repeated flags both work (the env var is split by config).
        features = [part.strip() for item in values["features"] for part in item.split(",")]
        values = dict(values, source=values["from"], features=[f for f in features if f])
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def redis_password(self) -> str | None:
        return redis_password(self.redis_password_file)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "load",
        help="load a CSV or Parquet file of feature values into Redis",
        description="Load one feature view's values from a CSV or Parquet file into Redis, in "
        "the layout the sidecar (and Feast) reads. Every flag also reads "
        "FEATURE_SIDECAR_<NAME> (e.g. FEATURE_SIDECAR_REDIS); a flag wins. docs/loader.md "
        "describes the input.",
    )
    config.add_options(parser, LOAD_OPTIONS)
    parser.add_argument(
        "--public-key",
        dest="bundle_public_key",
        action="append",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="same as --bundle-public-key",
    )
    parser.set_defaults(handler=run)


def settings_from(args: argparse.Namespace) -> LoadSettings:
    # No config file: FEATURE_SIDECAR_CONFIG belongs to `serve`, whose settings load lacks.
    return LoadSettings.from_values(config.resolve(LOAD_OPTIONS, args, os.environ, {}))


def run(args: argparse.Namespace) -> int:
    from .loader import LoadFailed, UsageError
    from .policy_yaml import PolicyError

    err = sys.stderr
    try:
        return _load(settings_from(args), err)
    except (ConfigError, UsageError, PolicyError) as exc:
        print(f"feature-sidecar load: {exc}", file=err)
        return 2
    except LoadFailed as exc:
        print(f"feature-sidecar load: {exc.message}", file=err)
        return 1


def _load(settings: LoadSettings, err: TextIO) -> int:
    from . import loader, tabular
    from .store import redact_url

    catalog = read_catalog(settings.bundle, settings.bundle_public_key)
    target = loader.plan(catalog, settings.view, settings.features or None)
    table = tabular.open_table(settings.source, tabular.format_of(settings.source, settings.format))
    ignored = loader.check_columns(
        target,
        table.columns,
        table.source,
        settings.timestamp_column,
        subset_hint=not settings.features,
    )
    if ignored and not settings.quiet:
        print(
            f"{table.source}: ignoring columns not loaded into view {target.view!r}: "
            f"{', '.join(ignored)}",
            file=err,
        )
    url = redact_url(settings.redis)
    client = _connect(settings, url)
    kinds = dict(target.join_keys)
    kinds.update((f.name, f.kind) for f in target.features)
    bar = None
    if not settings.quiet and err.isatty():
        bar = ProgressBar(err, table.estimate_rows(), time.monotonic)
    written = [0]

    def progress(rows: int) -> None:
        written[0] = rows
        if bar is not None:
            bar(rows)

    started = time.monotonic()
    try:
        rows = loader.load_batches(
            client,
            target,
            table.batches(kinds, settings.timestamp_column, settings.batch_size),
            source=table.source,
            now_ns=time.time_ns(),
            ttl=settings.ttl_seconds,
            progress=progress,
            timestamp_column=settings.timestamp_column or "timestamps",
            store=f"Redis at {url}",
        )
    except KeyboardInterrupt:
        if bar is not None:
            bar.clear()
        print(f"feature-sidecar load: interrupted; {written[0]} rows were written", file=err)
        return 130
    finally:
        if bar is not None:
            bar.clear()
        client.close()
    if not settings.quiet:
        print(
            summary(rows, len(target.features), target.view, url, time.monotonic() - started),
            file=err,
        )
    return 0


def read_catalog(path: str, key_files: list[str]) -> Catalog:
    """The catalog of a policy YAML or bundle file; a signed bundle must verify against a key.

    The loader grants no access, so an unsigned bundle or a YAML is read as it is; but a bundle
    that carries a signature is trusted only when verified, and a given key demands one.
    """
    from .bundle_format import BundleError, load_public_key, looks_like_bundle, trusted_keys, verify
    from .catalog import Catalog
    from .policy_yaml import parse_policy

    keys = []
    for key_file in key_files:
        pem = read_flag_file("--public-key", key_file)
        try:
            keys.append(load_public_key(pem, where=f"--public-key {key_file}"))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    data = read_flag_file("--bundle", path)
    if looks_like_bundle(data):
        try:
            bundle = verify(data, trusted_keys(keys), allow_unsigned=not keys)
        except BundleError as exc:
            if not keys and exc.reason == "signature":
                raise ConfigError(
                    f"--bundle {path}: the bundle is signed; give --public-key FILE to verify it"
                ) from None
            raise ConfigError(f"--bundle {path}: {exc.message}") from None
        source = bundle.policy_source
    elif keys:
        raise ConfigError(
            f"--bundle {path}: not a signed bundle, so --public-key cannot verify it "
            "(drop --public-key to load with a policy YAML)"
        )
    else:
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"--bundle {path}: not UTF-8 text") from None
    return Catalog(parse_policy(source, source=path))


def _connect(settings: LoadSettings, shown_url: str) -> Any:
    """A Redis client that answered PING; ConfigError for a bad URL, LoadFailed if unreachable."""
    import redis
    from redis.exceptions import RedisError

    from .loader import LoadFailed

    parts = urlsplit(settings.redis)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"--redis {shown_url}: unsupported URL scheme {parts.scheme!r} "
            "(use redis://, rediss:// or unix://)"
        )
    kwargs: dict[str, Any] = {}
    password = settings.redis_password()
    if password and parts.password is None:
        kwargs["password"] = password
    try:
        client = redis.Redis.from_url(
            settings.redis,
            socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout,
            **kwargs,
        )
    except ValueError as exc:
        raise ConfigError(f"--redis {shown_url}: {exc}") from None
    try:
        client.ping()
    except RedisError as exc:
        client.close()
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
        raise LoadFailed(
            f"Redis at {shown_url} is unavailable: {reason} (nothing was written)"
        ) from None
    return client


def summary(rows: int, features: int, view: str, url: str, seconds: float) -> str:
    values = rows * features
    rate = values / seconds if seconds > 0 else 0.0
    row_word = "row" if rows == 1 else "rows"
    feature_word = "feature" if features == 1 else "features"
    return (
        f"loaded {rows} {row_word} x {features} {feature_word} of view {view!r} into {url} "
        f"in {seconds:.1f} s ({_three_digits(rate):,} values/s)"
    )


def _three_digits(rate: float) -> int:
    """The rate to three significant digits: the clock does not know more."""
    if rate < 1000:
        return round(rate)
    scale = 10 ** (int(math.log10(rate)) - 2)
    return int(round(rate / scale) * scale)


class ProgressBar:
    """One line on a terminal, redrawn in place with a carriage return."""

    def __init__(
        self,
        stream: TextIO,
        total: int | None,
        clock: Callable[[], float],
        *,
        interval: float = 0.1,
        width: int = 30,
    ) -> None:
        self.stream = stream
        self.total = total or None
        self.clock = clock
        self.interval = interval
        self.width = width
        self.started = clock()
        self._drawn_at = -math.inf
        self._shown = 0

    def __call__(self, done: int) -> None:
        now = self.clock()
        if now - self._drawn_at < self.interval:
            return
        self._drawn_at = now
        elapsed = now - self.started
        rate = f"{done / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        if self.total is not None:
            filled = int(self.width * min(done / self.total, 1.0))
            bar = "#" * filled + "." * (self.width - filled)
            text = f"[{bar}] {done:,}/{self.total:,} rows  {rate}"
        else:
            text = f"{done:,} rows  {rate}"
        text = text.rstrip()
        self.stream.write("\r" + text + " " * max(self._shown - len(text), 0))
        self.stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0
