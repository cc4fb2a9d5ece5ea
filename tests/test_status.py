"""`feature-sidecar status`: a running sidecar's /status, printed, with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_metrics_support import (
    PRINCIPAL,
    BundleSigner,
    seed,
    status_json,
    wait_until,
    write_policy,
)

from featuresidecar_server.cli import main
from featuresidecar_server.devredis import free_port

EXE = str(Path(sys.executable).parent / "feature-sidecar")


def _signed_sidecar(sidecar_factory: Any, redis_url: str, tmp_path: Path, **extra: Any) -> Any:
    signer = BundleSigner(tmp_path)
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(signer.bundle(5))
    seed(redis_url, write_policy(tmp_path))
    sidecar = sidecar_factory(
        redis=redis_url,
        bundle=str(bundle),
        workload_principal=PRINCIPAL,
        metrics_listen="127.0.0.1:0",
        allow_unsigned=False,
        bundle_public_key=[str(signer.public_path)],
        bundle_poll_interval=3600.0,
        **extra,
    )
    # Ready comes with the activation; the download is recorded a moment later.
    url = f"http://{sidecar.sidecar.http.address}"
    wait_until(lambda: status_json(url)["last_successful_download"], what="the first download")
    return sidecar, bundle, signer


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_healthy_sidecar_prints_its_bundle_and_exits_0(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sidecar, bundle, _ = _signed_sidecar(sidecar_factory, redis_server.url, tmp_path)
    url = f"http://{sidecar.sidecar.http.address}"
    status = status_json(url)
    code, out, err = _run(capsys, "--url", url)
    assert (code, err) == (0, "")
    active = status["active"]
    assert out.splitlines() == [
        f"feature sidecar at {url}",
        "ready:                    yes",
        f"bundle source:            {bundle}",
        f"active bundle:            revision 5, signed by {active['key_id']}, "
        f"{active['digest']}, from {bundle}",
        f"last attempt:             {status['last_attempt']}",
        f"last successful download: {status['last_successful_download']}",
        f"last activation:          {status['last_activation']}",
        "consecutive failures:     0",
        "last error:               none",
    ]

    code, out, err = _run(capsys, "--url", url, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == status_json(url)


def test_no_active_bundle_exits_1(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sidecar = sidecar_factory(
        ready=False,
        redis=redis_server.url,
        bundle=str(tmp_path / "missing.yaml"),
        workload_principal=PRINCIPAL,
        metrics_listen="127.0.0.1:0",
    )
    url = f"http://{sidecar.sidecar.http.address}"
    wait_until(lambda: status_json(url)["last_error"], what="the first failed attempt")
    code, out, err = _run(capsys, "--url", url)
    assert code == 1
    assert "active bundle:            none" in out
    assert "ready:                    no (no policy bundle is active yet" in out
    error_line = next(line for line in out.splitlines() if line.startswith("last error:"))
    assert error_line.endswith(
        f"io: cannot read {tmp_path / 'missing.yaml'}: No such file or directory"
    )
    assert err.splitlines()[0] == "feature-sidecar status: no policy bundle is active"


def test_a_failed_last_attempt_exits_1_and_says_why(
    redis_server: Any,
    sidecar_factory: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sidecar, bundle, signer = _signed_sidecar(sidecar_factory, redis_server.url, tmp_path)
    bundle.write_bytes(BundleSigner(tmp_path, "stranger").bundle(6))
    sidecar.sidecar.sync.poll_once()
    port = sidecar.sidecar.http.address.rsplit(":", 1)[1]
    # The default URL comes from the serve setting, a wildcard bind reached on loopback.
    monkeypatch.setenv("FEATURE_SIDECAR_METRICS_LISTEN", f"0.0.0.0:{port}")
    code, out, err = _run(capsys)
    assert code == 1
    assert "active bundle:            revision 5, signed by" in out
    assert "consecutive failures:     1" in out
    message = sidecar.sidecar.activator.status.last_error["message"]
    assert err == f"feature-sidecar status: the last bundle attempt failed (signature: {message})\n"

    bundle.write_bytes(signer.bundle(6))
    sidecar.sidecar.sync.poll_once()
    code, out, err = _run(capsys)
    assert (code, err) == (0, "")
    assert "revision 6" in out
    # The error stays visible after recovery, but no longer counts.
    assert f"signature: {message}" in out


def test_a_sidecar_that_cannot_be_asked_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEATURE_SIDECAR_METRICS_LISTEN", raising=False)
    code, out, err = _run(capsys)
    assert (code, out) == (2, "")
    assert err == (
        "feature-sidecar status: give --url http://HOST:PORT "
        "or set FEATURE_SIDECAR_METRICS_LISTEN\n"
    )
    port = free_port()
    code, out, err = _run(capsys, "--url", f"127.0.0.1:{port}", "--timeout", "2")
    assert (code, out) == (2, "")
    assert err.startswith(
        f"feature-sidecar status: cannot reach the sidecar at http://127.0.0.1:{port}/status: "
    )
    monkeypatch.setenv("FEATURE_SIDECAR_METRICS_LISTEN", "nonsense")
    code, _, err = _run(capsys)
    assert code == 2
    assert err == (
        "feature-sidecar status: FEATURE_SIDECAR_METRICS_LISTEN='nonsense': expected host:port\n"
    )


def test_the_installed_command(redis_server: Any, sidecar_factory: Any, tmp_path: Path) -> None:
    sidecar, _, _ = _signed_sidecar(sidecar_factory, redis_server.url, tmp_path)
    url = f"http://{sidecar.sidecar.http.address}"
    result = subprocess.run(
        [EXE, "status", "--url", url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ready:                    yes" in result.stdout
    result = subprocess.run(
        [EXE, "status", "--url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
