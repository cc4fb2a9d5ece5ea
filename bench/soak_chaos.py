"""What the soak does to the sidecar's surroundings: a bundle server that can fail, stall and
publish new revisions; Redis paused or killed and restarted; and the sidecar's RSS, sampled.

Everything here runs in the soak's parent process, on loopback, on free ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from featuresidecar_server.devredis import LocalRedis

NORMAL, ERROR, STALL = "normal", "error", "stall"


class BundleServer:
    """Serves one signed bundle at /bundle.json with an ETag, or fails on purpose.

    Modes: `normal` (200, or 304 when the ETag matches), `error` (500), `stall` (holds each
    request without answering for up to `stall_s`, or until the mode changes, then closes it).
    Counts what it answered in each mode.
    """

    def __init__(self, bundle: bytes, revision: int, stall_s: float) -> None:
        self.stall_s = stall_s
        self._lock = threading.Lock()
        self._bundle = bundle
        self._revision = revision
        self._mode = NORMAL
        self._release = threading.Event()
        self.counts = {"200": 0, "304": 0, "500": 0, "stalled": 0, "stalled_past_timeout": 0}
        self.stalled_past = 0.0  # requests held at least this long count as stalled past it
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per poll would drown the soak's output

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bundle.json"

    def start(self) -> BundleServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self._mode = mode
            # Stalled requests end when the stall does; a new stall gets a new event.
            self._release.set()
            self._release = threading.Event()

    def publish(self, bundle: bytes, revision: int) -> None:
        with self._lock:
            self._bundle = bundle
            self._revision = revision

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            mode, bundle, release = self._mode, self._bundle, self._release
            etag = f'"rev-{self._revision}"'
        if request.path != "/bundle.json":
            request.send_error(404)
            return
        if mode == ERROR:
            self._count("500")
            request.send_error(500, "soak: the bundle server fails on purpose")
            return
        if mode == STALL:
            held = time.monotonic()
            release.wait(self.stall_s)
            self._count("stalled")
            if time.monotonic() - held >= self.stalled_past:
                self._count("stalled_past_timeout")
            request.close_connection = True
            return
        if request.headers.get("If-None-Match") == etag:
            self._count("304")
            request.send_response(304)
            request.send_header("ETag", etag)
            request.end_headers()
            return
        self._count("200")
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(bundle)))
        request.send_header("ETag", etag)
        request.end_headers()
        # The sidecar may have given up on this download; its next poll tries again.
        with contextlib.suppress(OSError):
            request.wfile.write(bundle)


def pause_redis(redis: LocalRedis, seconds: float) -> None:
    """SIGSTOP for `seconds`: the port stays open but nothing answers."""
    assert redis.process is not None
    pid = redis.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def kill_and_restart_redis(redis: LocalRedis, down_s: float) -> int:
    """SIGKILL (a crash: no shutdown, no save), `down_s` seconds with nothing on the port, then
    a new redis-server on the same port and directory, which loads the snapshot the soak saved
    after loading its data. Returns the number of keys it holds again."""
    assert redis.process is not None
    process = redis.process
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    redis.process = None
    time.sleep(down_s)
    redis.start()
    return dbsize(redis.port)


def dbsize(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
        reply = sock.recv(64)
    return int(reply[1:].split(b"\r\n", 1)[0])


def save_redis(port: int) -> None:
    """SAVE: the snapshot a restarted Redis loads (LocalRedis runs with --save "", so this is
    the only one, taken once the data is in)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"*1\r\n$4\r\nSAVE\r\n")
        reply = sock.recv(64)
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"Redis SAVE answered {reply!r}")


def rss_mib(pid: int) -> float | None:
    """VmRSS of a process in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """The process and its children (the workers under --workers N)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        children = [int(p) for p in path.read_text().split()]
    except OSError:
        children = []
    return [pid, *children]


def host_load() -> tuple[float, int]:
    """The host's 1-minute load average and the tasks runnable right now: on a shared machine,
    what else wanted the CPUs when the sidecar was slow."""
    fields = Path("/proc/loadavg").read_text().split()
    return float(fields[0]), int(fields[3].split("/")[0])


class RssSampler:
    """Every `interval` seconds, the summed VmRSS of a process tree and the host's load, in a
    thread."""

    def __init__(self, pid: int, clock: Callable[[], float], interval: float = 1.0) -> None:
        self.pid = pid
        self.clock = clock
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.host: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            values = [rss_mib(p) for p in process_tree(self.pid)]
            present = [v for v in values if v is not None]
            now = round(self.clock(), 3)
            if present:
                self.samples.append((now, round(sum(present), 2)))
            self.host.append((now, *host_load()))
            self._stop.wait(self.interval)
