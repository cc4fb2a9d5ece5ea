"""A sidecar's TCP port is its own: no second process, sidecar or not, can share it."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
from support import EXAMPLE_POLICY, ServeProcess

from featuresidecar_server import probe
from featuresidecar_server.devredis import LocalRedis, free_port

RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"


def _args(redis: LocalRedis, port: int, *more: str) -> list[str]:
    return [
        "--listen",
        f"127.0.0.1:{port}",
        "--redis",
        redis.url,
        "--bundle",
        str(EXAMPLE_POLICY),
        "--allow-unsigned",
        "--workload-principal",
        RANKER,
        *more,
    ]


def _bind_with_reuseport(port: int) -> int:
    """What a process of the same user that wants a share of the connections would do: the
    errno of its bind (0 when it got in)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            intruder.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno or -1
        return 0


def test_a_lone_sidecar_holds_its_port_alone(redis_server: LocalRedis, tmp_path: Path) -> None:
    port = free_port()
    first = ServeProcess(_args(redis_server, port), tmp_path / "first.log")
    try:
        first.wait_serving(f"127.0.0.1:{port}")
        assert _bind_with_reuseport(port) == errno.EADDRINUSE
        second = ServeProcess(_args(redis_server, port), tmp_path / "second.log")
        assert second.exit_code() == 2
        assert f"--listen 127.0.0.1:{port}: cannot bind; is another process" in (
            second.log.read_text()
        )
    finally:
        assert first.stop() == 0


@pytest.mark.parametrize("second_workers", ["1", "2"])
def test_a_second_sidecar_cannot_join_the_port_of_a_supervisors_workers(
    redis_server: LocalRedis, tmp_path: Path, second_workers: str
) -> None:
    port = free_port()
    first = ServeProcess(_args(redis_server, port, "--workers", "2"), tmp_path / "first.log")
    try:
        first.wait_serving(f"127.0.0.1:{port}")
        second = ServeProcess(
            _args(redis_server, port, "--workers", second_workers), tmp_path / "second.log"
        )
        assert second.exit_code() == 2
        text = second.log.read_text()
        assert f"--listen 127.0.0.1:{port}:" in text
        assert "another process" in text
    finally:
        assert first.stop() == 0


def test_a_second_sidecar_does_not_take_over_a_live_unix_socket(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    def on(path: Path) -> list[str]:
        return ["--listen", f"unix:{path}", *_args(redis_server, free_port())[2:]]

    live = tmp_path / "s.sock"
    first = ServeProcess(on(live), tmp_path / "first.log")
    try:
        first.wait_serving(f"unix:{live}")
        second = ServeProcess(on(live), tmp_path / "second.log")
        assert second.exit_code() == 2
        assert f"--listen unix:{live}: another process (another sidecar?) is serving" in (
            second.log.read_text()
        )
        assert probe.serving(f"unix:{live}")  # the first one still has it
    finally:
        assert first.stop() == 0
    # A socket file left behind by a process that is gone is taken over.
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(stale))
    again = ServeProcess(on(stale), tmp_path / "again.log")
    try:
        again.wait_serving(f"unix:{stale}")
    finally:
        assert again.stop() == 0
