"""`feature-sidecar serve` as a real process: settings precedence, logs, SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import (
    EXAMPLE_POLICY,
    column_values,
    put_entity,
    request,
    serve_environment,
    stub,
)

from featuresidecar_server import config, processes
from featuresidecar_server.devredis import LocalRedis
from featuresidecar_server.probe import wait_serving
from featuresidecar_server.settings import SERVE_OPTIONS

RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"
EXE = str(Path(sys.executable).parent / "feature-sidecar")


def _serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EXE, "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=serve_environment(env),
    )


def _wait_serving(address: str, process: subprocess.Popen[str], timeout: float = 15.0) -> None:
    try:
        wait_serving(address, process, timeout)
    except RuntimeError as exc:
        processes.stop(process, 5)  # a sidecar that never served must not outlive the test
        details = process.stderr.read() if process.stderr else ""
        raise AssertionError(f"{exc}: {details}") from None


def _stop(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    return process.returncode, out, err


def _namespace(**flags: Any) -> argparse.Namespace:
    return argparse.Namespace(**flags)


def test_precedence_is_flag_then_env_then_file_then_default(tmp_path: Path) -> None:
    file_values = {"redis-timeout": "3s", "grace_period": 7, "listen": ["unix:/from/file"]}
    env = {"FEATURE_SIDECAR_REDIS_TIMEOUT": "2s", "FEATURE_SIDECAR_LISTEN": "a:1,b:2"}
    values = config.resolve(SERVE_OPTIONS, _namespace(redis_timeout="250ms"), env, file_values)
    assert values["redis_timeout"] == 0.25  # flag
    assert values["listen"] == ["a:1", "b:2"]  # env over file
    assert values["grace_period"] == 7.0  # file over default
    assert values["bundle_poll_interval"] == 30.0  # default
    assert config.resolve(SERVE_OPTIONS, _namespace(), env, file_values)["redis_timeout"] == 2.0
    assert config.resolve(SERVE_OPTIONS, _namespace(), {}, file_values)["redis_timeout"] == 3.0
    off = config.resolve(SERVE_OPTIONS, _namespace(), {"FEATURE_SIDECAR_NO_REFLECTION": "1"}, {})
    assert off["reflection"] is False
    assert (
        config.resolve(SERVE_OPTIONS, _namespace(reflection=False), {}, {})["reflection"] is False
    )


@pytest.mark.parametrize(
    ("flags", "env", "file_values", "message"),
    [
        (
            {},
            {"FEATURE_SIDECAR_REDIS_TIMEOUT": "soon"},
            {},
            "FEATURE_SIDECAR_REDIS_TIMEOUT: 'soon' is not a valid duration "
            "('soon' is not a duration "
            "(use a number with a unit: ms, s, m, h, d, w; e.g. '6h'))",
        ),
        (
            {},
            {"FEATURE_SIDECAR_ALLOW_UNSIGNED": "maybe"},
            {},
            "FEATURE_SIDECAR_ALLOW_UNSIGNED: 'maybe' is not a boolean (use true or false)",
        ),
        ({}, {}, {"redis_timout": 1}, "config file: unknown setting 'redis_timout'"),
        ({"workers": "two"}, {}, {}, "--workers: 'two' is not a valid integer"),
    ],
)
def test_bad_settings_name_their_source(
    flags: dict[str, Any], env: dict[str, str], file_values: dict[str, Any], message: str
) -> None:
    with pytest.raises(config.ConfigError) as error:
        config.resolve(SERVE_OPTIONS, _namespace(**flags), env, file_values)
    assert str(error.value) == message


def test_serve_reads_a_config_file_and_env(redis_server: LocalRedis, tmp_path: Path) -> None:
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 1},
        {"age": 34},
        time.time_ns(),
    )
    sock = tmp_path / "s.sock"
    settings_file = tmp_path / "sidecar.yaml"
    settings_file.write_text(
        json.dumps(
            {
                "listen": [f"unix:{sock}"],
                "bundle": str(EXAMPLE_POLICY),
                "workload-principal": "nobody",
                "allow_unsigned": True,
            }
        )
    )
    process = _serve(
        ["--config", str(settings_file), "--workload-principal", RANKER],
        env={"FEATURE_SIDECAR_REDIS": redis_server.url, "FEATURE_SIDECAR_LOG_FORMAT": "json"},
    )
    try:
        _wait_serving(f"unix:{sock}", process)
        _, client = stub(f"unix:{sock}")
        response = client.GetFeatures(request(["user_profile:age"], {"user_id": [1]}), timeout=5)
        assert column_values(response.columns[0]) == [34]  # the flag's principal, not the file's
    finally:
        code, _, err = _stop(process)
    assert code == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    started = [line for line in lines if line["msg"] == "feature sidecar started"]
    assert started and started[0]["redis"] == redis_server.url
    assert {"time", "level", "logger", "msg"} <= set(started[0])


def test_bad_flags_exit_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [EXE, "serve", "--bundle", str(EXAMPLE_POLICY)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")},
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "feature-sidecar serve: --bundle-public-key is required to verify signed bundles "
        "(or --allow-unsigned, for development only)"
    )


@pytest.mark.parametrize(
    ("flag", "content", "reason"),
    [
        ("--mask-key-file", None, "No such file or directory"),
        ("--bundle-public-key", None, "No such file or directory"),
        ("--redis-password-file", None, "No such file or directory"),
        ("--redis-password-file", b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_unreadable_files_named_by_flags_exit_2_naming_flag_and_file(
    tmp_path: Path, flag: str, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "given"
    if content is not None:
        path.write_bytes(content)
    result = subprocess.run(
        [EXE, "serve", "--listen", "127.0.0.1:0", "--redis", "redis://127.0.0.1:1",
         "--bundle", str(EXAMPLE_POLICY), "--allow-unsigned", flag, str(path)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")},
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"feature-sidecar serve: {flag} {path}: {reason}"


def test_passwords_and_tokens_never_reach_the_log(tmp_path: Path) -> None:
    secret = "s3cret-Pa55word"
    with LocalRedis(password=secret) as server:
        sock = tmp_path / "s.sock"
        url = f"redis://default:{secret}@127.0.0.1:{server.port}/0"
        process = _serve(
            [
                "--listen",
                f"unix:{sock}",
                "--redis",
                url,
                "--bundle",
                str(EXAMPLE_POLICY),
                "--allow-unsigned",
                "--workload-principal",
                RANKER,
                "--log-level",
                "debug",
            ],
        )
        try:
            _wait_serving(f"unix:{sock}", process)
            _, client = stub(f"unix:{sock}")
            token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
            with pytest.raises(grpc.RpcError) as error:
                client.GetFeatures(
                    request(["user_profile:age"], {"user_id": [1]}),
                    metadata=[("authorization", f"Bearer {token}")],
                    timeout=5,
                )
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            server.stop()  # Redis errors get logged too
            with pytest.raises(grpc.RpcError):
                client.GetFeatures(request(["user_profile:age"], {"user_id": [1]}), timeout=5)
        finally:
            code, out, err = _stop(process)
    assert code == 0
    assert "default:***@127.0.0.1" in err
    assert secret not in err + out
    assert token not in err + out


def test_sigterm_lets_in_flight_calls_finish_and_exits_0(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 1},
        {"age": 34},
        time.time_ns(),
    )
    sock = tmp_path / "s.sock"
    process = _serve(
        [
            "--listen",
            f"unix:{sock}",
            "--redis",
            redis_server.url,
            "--bundle",
            str(EXAMPLE_POLICY),
            "--allow-unsigned",
            "--workload-principal",
            RANKER,
            "--redis-timeout",
            "5s",
            "--grace-period",
            "5s",
        ],
    )
    _wait_serving(f"unix:{sock}", process)
    _, client = stub(f"unix:{sock}")
    message = request(["user_profile:age"], {"user_id": [1]})
    client.GetFeatures(message, timeout=5)
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)  # hold the next call in flight
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["response"] = client.GetFeatures(message, timeout=10)
        except grpc.RpcError as exc:
            result["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    try:
        # New calls are refused while draining.
        with pytest.raises(grpc.RpcError) as refused:
            stub(f"unix:{sock}")[1].GetFeatures(message, timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    caller.join(timeout=10)
    assert "error" not in result, result.get("error")
    assert column_values(result["response"].columns[0]) == [34]
    code, _, _ = _stop(process)
    assert code == 0
