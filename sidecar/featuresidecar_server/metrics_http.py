"""The HTTP port (`--metrics-listen host:port`): /metrics, /status, /healthz, /readyz.

Its own port, separate from gRPC, served by a small threaded HTTP server in a daemon thread.
What it answers comes from callables, so the single-process sidecar and the `--workers`
supervisor share it.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .server import ListenError
from .settings import parse_host_port

log = logging.getLogger("featuresidecar.http")

Status = Callable[[], dict[str, Any]]
Ready = Callable[[], tuple[bool, str]]
ENDPOINTS = ("/metrics", "/status", "/healthz", "/readyz")


def exposition(
    collector: Collector, accept: str, accept_encoding: str = ""
) -> tuple[bytes, dict[str, str]]:
    """The metrics body in the format the Accept header asks for (OpenMetrics or text)."""
    encoder, content_type = choose_encoder(accept)
    body = encoder(collector)
    headers = {"Content-Type": content_type}
    if "gzip" in accept_encoding:
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return body, headers


@dataclass
class Endpoints:
    metrics: Collector
    status: Status
    ready: Ready


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    endpoints: Endpoints


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # A stuck client must not hold a thread forever.
    timeout = 10
    server_version = "feature-sidecar"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        endpoints = self.server.endpoints
        try:
            if path == "/metrics":
                body, headers = exposition(
                    endpoints.metrics,
                    self.headers.get("Accept", ""),
                    self.headers.get("Accept-Encoding", ""),
                )
                self._send(200, body, headers, send_body)
            elif path == "/status":
                self._json(200, endpoints.status(), send_body)
            elif path == "/healthz":
                self._text(200, "ok\n", send_body)
            elif path == "/readyz":
                ready, reason = endpoints.ready()
                if ready:
                    self._text(200, "ready\n", send_body)
                else:
                    self._text(503, f"not ready: {reason or 'starting'}\n", send_body)
            else:
                self._text(404, f"not found: {path} (try {', '.join(ENDPOINTS)})\n", send_body)
        except Exception as exc:
            log.error("HTTP endpoint failed", exc_info=exc, extra={"path": path})
            self._text(500, "internal error; see the sidecar's log\n", send_body)

    def _json(self, code: int, document: Any, send_body: bool) -> None:
        body = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
        self._send(code, body, {"Content-Type": "application/json"}, send_body)

    def _text(self, code: int, text: str, send_body: bool) -> None:
        self._send(code, text.encode(), {"Content-Type": "text/plain; charset=utf-8"}, send_body)

    def _send(self, code: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes and probes every few seconds would drown the log; errors are logged above.
        pass


class MetricsServer:
    """The HTTP port in a daemon thread; `start()` binds it or raises ListenError."""

    def __init__(self, address: str, endpoints: Endpoints) -> None:
        self.requested = address
        self.endpoints = endpoints
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        try:
            host, port = parse_host_port(self.requested, "--metrics-listen")
        except ValueError as exc:
            raise ListenError(str(exc)) from None
        server_class = _Server6 if ":" in host else _Server
        try:
            server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ListenError(
                f"--metrics-listen {self.requested}: cannot bind ({exc.strerror or exc})"
            ) from None
        server.endpoints = self.endpoints
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics port listening", extra={"listen": self.address})
        return self

    @property
    def address(self) -> str:
        """The bound host:port (the real port when 0 was asked for)."""
        if self._server is None:
            return self.requested
        host, port = self._server.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"{shown}:{port}"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
