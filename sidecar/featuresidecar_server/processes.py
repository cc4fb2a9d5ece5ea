"""Stopping a child process that this process started (the demo's, the tests', the benchmark's)."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(process: subprocess.Popen[Any], grace: float) -> int:
    """SIGTERM, up to `grace` seconds to exit, then SIGKILL; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
