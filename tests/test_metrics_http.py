"""The HTTP port of a real sidecar: /metrics, /status, /healthz, /readyz, and its errors."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path
from typing import Any

import pytest
from support import request, settings, stub
from test_metrics_support import (
    PRINCIPAL,
    BundleSigner,
    http_get,
    seed,
    status_json,
    wait_until,
    write_policy,
)

from featuresidecar_server.config import ConfigError
from featuresidecar_server.metrics_http import Endpoints, MetricsServer
from featuresidecar_server.server import ListenError


def _base(sidecar: Any) -> str:
    return f"http://{sidecar.sidecar.http.address}"


def test_readyz_is_503_until_a_bundle_is_active_and_while_redis_is_down(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    bundle = tmp_path / "later.yaml"  # not there yet
    seed(redis_server.url, write_policy(tmp_path))
    sidecar = sidecar_factory(
        ready=False,
        redis=redis_server.url,
        bundle=str(bundle),
        workload_principal=PRINCIPAL,
        metrics_listen="127.0.0.1:0",
    )
    base = _base(sidecar)
    assert http_get(f"{base}/healthz")[0] == 200
    wait_until(lambda: sidecar.sidecar.readiness.redis_up, what="the first Redis ping")
    code, headers, body = http_get(f"{base}/readyz")
    assert (code, body) == (503, b"not ready: no policy bundle is active yet\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    status = wait_until(
        lambda: (found := status_json(base))["last_error"] and found,
        what="the first failed attempt",
    )
    assert status["active"] is None
    assert status["ready"] is False
    assert status["last_error"]["reason"] == "io"
    assert status["consecutive_failures"] >= 1

    write_policy(tmp_path, name="later.yaml")
    wait_until(lambda: http_get(f"{base}/readyz")[0] == 200, what="ready after the bundle")
    assert http_get(f"{base}/readyz")[2] == b"ready\n"

    redis_server.stop()
    wait_until(lambda: http_get(f"{base}/readyz")[0] == 503, what="not ready without Redis")
    assert http_get(f"{base}/readyz")[2] == b"not ready: Redis does not answer\n"
    assert http_get(f"{base}/healthz")[::2] == (200, b"ok\n")
    redis_server.start()
    wait_until(lambda: http_get(f"{base}/readyz")[0] == 200, what="ready again with Redis")


def test_status_shows_the_active_bundle_and_the_last_error(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    signer = BundleSigner(tmp_path)
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(signer.bundle(4))
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(bundle),
        workload_principal=PRINCIPAL,
        metrics_listen="127.0.0.1:0",
        allow_unsigned=False,
        bundle_public_key=[str(signer.public_path)],
        bundle_poll_interval=3600.0,
    )
    base = _base(sidecar)
    # Ready comes with the activation; the download is recorded a moment later.
    status = wait_until(
        lambda: (found := status_json(base))["last_successful_download"] and found,
        what="the first download",
    )
    digest = sidecar.sidecar.activator.status.active_digest
    assert status["active"] == {
        "revision": 4,
        "digest": digest,
        "from": str(bundle),
        "key_id": sidecar.sidecar.activator.status.active_key_id,
        "signed": True,
    }
    assert status["source"] == str(bundle)
    assert status["last_error"] is None
    assert status["consecutive_failures"] == 0
    assert status["ready"] is True and status["reason"] == ""
    assert status["last_successful_download"] == status["last_activation"]
    assert set(status) == {
        "source",
        "active",
        "last_attempt",
        "last_successful_download",
        "last_activation",
        "last_error",
        "consecutive_failures",
        "ready",
        "reason",
    }

    bundle.write_bytes(signer.bundle(3))
    sidecar.sidecar.sync.poll_once()
    status = status_json(base)
    assert status["active"]["revision"] == 4
    assert status["consecutive_failures"] == 1
    assert status["last_error"]["reason"] == "rollback"
    assert status["last_error"]["message"] == "revision 3 is lower than the active revision 4"


def test_metrics_in_text_or_openmetrics_and_gzip(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    seed(redis_server.url, write_policy(tmp_path))
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(tmp_path / "policy.yaml"),
        workload_principal=PRINCIPAL,
        metrics_listen="127.0.0.1:0",
    )
    _, client = stub(sidecar.address)
    client.GetFeatures(request(["profile:age"], {"user_id": [1]}), timeout=5)
    base = _base(sidecar)

    code, headers, body = http_get(f"{base}/metrics")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "# HELP grpc_server_handled_total RPCs completed on the server" in text
    assert "# TYPE grpc_server_handling_seconds histogram" in text
    assert 'feature_sidecar_build_info{version="0.1.0"} 1.0' in text
    assert "process_resident_memory_bytes" in text

    code, headers, body = http_get(
        f"{base}/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert code == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")

    code, headers, body = http_get(f"{base}/metrics", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert b"grpc_server_started_total" in gzip.decompress(body)

    code, _, body = http_get(f"{base}/nothing-here")
    assert code == 404
    assert body == b"not found: /nothing-here (try /metrics, /status, /healthz, /readyz)\n"


def test_metrics_listen_errors_name_the_setting(tmp_path: Path) -> None:
    for bad in ("9090", "localhost:http", "host:99999", ":9090"):
        with pytest.raises(ConfigError, match="--metrics-listen"):
            settings(bundle=str(tmp_path / "p.yaml"), metrics_listen=bad)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(
            f"127.0.0.1:{port}",
            Endpoints(metrics=_EmptyCollector(), status=dict, ready=lambda: (True, "")),
        )
        with pytest.raises(ListenError, match=rf"--metrics-listen 127.0.0.1:{port}: cannot bind"):
            server.start()


def test_an_endpoint_that_fails_answers_500_and_the_server_lives_on() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    server = MetricsServer(
        "127.0.0.1:0",
        Endpoints(metrics=_EmptyCollector(), status=broken, ready=lambda: (False, "")),
    ).start()
    try:
        base = f"http://{server.address}"
        assert http_get(f"{base}/status")[::2] == (500, b"internal error; see the sidecar's log\n")
        assert http_get(f"{base}/readyz")[2] == b"not ready: starting\n"
        assert http_get(f"{base}/healthz")[0] == 200
    finally:
        server.stop()


class _EmptyCollector:
    def collect(self) -> list[Any]:
        return []
