"""Stopping child processes: SIGTERM first, SIGKILL after the grace period."""

from __future__ import annotations

import signal
import subprocess
import sys

from featuresidecar_server import processes


def _child(code: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", code + "\nprint('ready', flush=True)\nimport time; time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def test_a_child_that_honours_sigterm_exits_on_it() -> None:
    process = _child("")
    assert processes.stop(process, grace=10) == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    process = _child("import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    assert processes.stop(process, grace=0.2) == -signal.SIGKILL


def test_a_child_that_already_exited_gives_its_status() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    assert processes.stop(process, grace=1) == 3
