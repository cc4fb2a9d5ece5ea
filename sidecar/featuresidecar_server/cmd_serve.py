"""`feature-sidecar serve`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from . import config, logs
from .memory import tune_allocator
from .server import ListenError
from .settings import SERVE_OPTIONS, ServeSettings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the sidecar",
        description="Run the gRPC sidecar. Every flag also reads FEATURE_SIDECAR_<NAME> "
        "(e.g. FEATURE_SIDECAR_REDIS_TIMEOUT); precedence: flag > environment > "
        "--config file > default.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML file of settings [env FEATURE_SIDECAR_CONFIG]"
    )
    config.add_options(parser, SERVE_OPTIONS)
    parser.set_defaults(handler=run)


def settings_from(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings.from_values(config.load(SERVE_OPTIONS, args))


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except config.ConfigError as exc:
        print(f"feature-sidecar serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    tune_allocator()
    try:
        if settings.workers > 1:
            # The supervisor builds no sidecar: each worker does, in its own process.
            from .workers import run_workers

            return run_workers(settings)
        from .app import run as run_app

        return asyncio.run(run_app(settings))
    except (config.ConfigError, ListenError, ValueError) as exc:
        print(f"feature-sidecar serve: {exc}", file=sys.stderr)
        return 2
