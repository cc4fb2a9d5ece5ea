"""`feature-sidecar serve --workers N` as real processes: shared port, summed metrics, restarts."""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from support import TokenIssuer, bearer, request, serve_environment
from test_metrics_support import (
    PRINCIPAL,
    Samples,
    http_get,
    scrape,
    scrape_until,
    seed,
    status_json,
    total,
    value,
    wait_until,
    write_policy,
)

from featuresidecar.v1 import feature_service_pb2_grpc as pb_grpc
from featuresidecar_server import probe
from featuresidecar_server.cli import main
from featuresidecar_server.devredis import free_port
from featuresidecar_server.metrics import FLUSH_SECONDS
from featuresidecar_server.metrics_calls import CallMetrics
from featuresidecar_server.workers import PeerGate

EXE = str(Path(sys.executable).parent / "feature-sidecar")
GET_OK = {
    "grpc_type": "unary",
    "grpc_service": "featuresidecar.v1.FeatureService",
    "grpc_method": "GetFeatures",
    "grpc_code": "OK",
}
CALL = request(["profile:age"], {"user_id": [1]})


class Supervisor:
    """`feature-sidecar serve --workers N` in a subprocess, its output in a file."""

    def __init__(self, directory: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        environment = serve_environment(env)
        if "PROMETHEUS_MULTIPROC_DIR" not in (env or {}):
            environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.output = directory / "supervisor.log"
        with self.output.open("wb") as log:
            self.process = subprocess.Popen(
                [EXE, "serve", *args], stdout=log, stderr=subprocess.STDOUT, env=environment
            )

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"the supervisor ignored SIGTERM:\n{self.log()}") from None


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    started: list[Supervisor] = []
    yield started
    for supervisor in started:
        if supervisor.process.poll() is None:
            supervisor.process.kill()
            supervisor.process.wait(timeout=10)


def _handled_by(directory: Path, pid: int) -> float:
    """GetFeatures calls answered OK by one worker, from its own counter file."""
    source = directory / f"counter_{pid}.db"
    if not source.exists():
        return 0.0
    with tempfile.TemporaryDirectory() as copy:
        shutil.copy(source, copy)
        for family in MultiProcessCollector(None, path=copy).collect():  # type: ignore[no-untyped-call]
            if family.name == "grpc_server_handled":
                return sum(
                    s.value
                    for s in family.samples
                    if s.labels.get("grpc_method") == "GetFeatures"
                    and s.labels["grpc_code"] == "OK"
                )
    return 0.0


def _call_on_a_new_connection(address: str, token: str) -> None:
    # A local subchannel pool: a new TCP connection, which the kernel may give to either worker.
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(address, options=options) as channel:
        response = pb_grpc.FeatureServiceStub(channel).GetFeatures(
            CALL, metadata=bearer(token), timeout=10
        )
    assert list(response.feature_names) == ["profile:age"]


def _values_counted(calls: int) -> Callable[[Samples], bool]:
    """Workers count served values in batches, at least once a second."""
    return lambda samples: (
        value(samples, "feature_sidecar_values_total", view="profile", status="PRESENT") == calls
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_share_the_port_sum_their_metrics_and_survive_a_killed_worker(
    redis_server: Any,
    supervisors: list[Supervisor],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issuer = TokenIssuer(tmp_path)
    token = issuer.token(PRINCIPAL)
    policy = tmp_path / "policy.yaml"  # written once the workers run
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    (multiproc / "counter_424242.db").write_bytes(b"left over by an earlier run")
    (multiproc / "worker-7.json").write_text("{}")
    port, metrics_port = free_port(), free_port()
    address, base = f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    socket_path = tmp_path / "worker0.sock"
    supervisor = Supervisor(
        tmp_path,
        [
            "--workers",
            "2",
            "--listen",
            address,
            "--listen",
            f"unix:{socket_path}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
            "--redis",
            redis_server.url,
            "--bundle",
            str(policy),
            "--allow-unsigned",
            "--workload-principal",
            PRINCIPAL,
            "--jwt-jwks",
            str(issuer.jwks_path),
            "--jwt-issuer",
            issuer.ISSUER,
            "--jwt-audience",
            issuer.AUDIENCE,
            "--bundle-poll-interval",
            "0.2",
            "--redis-health-interval",
            "0.2",
            "--grace-period",
            "1",
        ],
        env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
    )
    supervisors.append(supervisor)

    def both_started() -> dict[str, Any] | None:
        try:
            status = status_json(base)
        except OSError:
            assert supervisor.process.poll() is None, supervisor.log()
            return None
        workers = status["workers"]
        return status if all(w["alive"] and "no policy" in w["reason"] for w in workers) else None

    status = wait_until(both_started, timeout=30, what="two workers without a bundle")
    assert [w["worker"] for w in status["workers"]] == [0, 1]
    code, _, body = http_get(f"{base}/readyz")
    assert code == 503
    assert body.startswith(b"not ready: worker 0: no policy bundle is active yet")
    assert b"; worker 1: no policy bundle is active yet" in body
    assert not (multiproc / "counter_424242.db").exists()
    assert not (multiproc / "worker-7.json").exists()

    seed(redis_server.url, write_policy(tmp_path))
    wait_until(lambda: http_get(f"{base}/readyz")[0] == 200, timeout=30, what="ready workers")
    # Activation makes a worker ready; the download that brought the bundle, which clears the
    # earlier failures, is recorded a moment later.
    status = wait_until(
        lambda: (found := status_json(base))["consecutive_failures"] == 0 and found,
        what="the failures before the bundle existed to clear",
    )
    pids = [w["pid"] for w in status["workers"]]
    assert len(set(pids)) == 2
    assert status["supervisor_pid"] == supervisor.process.pid not in pids
    assert status["active"]["revision"] == 0
    assert status["ready"] is True and status["consecutive_failures"] == 0
    assert [w["restarts"] for w in status["workers"]] == [0, 0]
    assert main(["status", "--url", base]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-3:] == [
        "workers:",
        f"  0: pid {pids[0]}, yes, revision 0, failures 0, restarts 0",
        f"  1: pid {pids[1]}, yes, revision 0, failures 0, restarts 0",
    ]

    calls = 0
    while min(_handled_by(multiproc, pid) for pid in pids) == 0:
        assert calls < 200, "the kernel never gave a connection to one of the workers"
        _call_on_a_new_connection(address, token)
        calls += 1
    # Only worker 0 serves the unix socket (with the workload identity, no token).
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        pb_grpc.FeatureServiceStub(channel).GetFeatures(CALL, timeout=10)
    calls += 1

    # Workers apply their calls' counts to their files every 50 ms.
    samples = scrape_until(
        base,
        lambda s: value(s, "grpc_server_handled_total", **GET_OK) == calls,
        "the counts of every call",
    )
    assert total(samples, "grpc_server_started_total", grpc_method="GetFeatures") == calls
    assert value(samples, "feature_sidecar_worker_restarts_total") == 0
    assert value(samples, "feature_sidecar_redis_up") == 1
    assert value(samples, "feature_sidecar_build_info", version="0.1.0") == 1
    workers_seen = {
        dict(labels)["worker"] for name, labels in samples if name == "process_cpu_seconds_total"
    }
    assert workers_seen == {"supervisor", "0", "1"}
    scrape_until(base, _values_counted(calls), "the values of every call")
    infos = [(n, dict(ls)) for n, ls in samples if n == "feature_sidecar_bundle_info"]
    assert infos == [("feature_sidecar_bundle_info", {"revision": "0", "source": str(policy)})]

    killed = pids[1]
    os.kill(killed, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        status = status_json(base)
        worker = status["workers"][1]
        fresh = worker["pid"] not in (None, killed) and worker["ready"]
        return status if fresh else None

    status = wait_until(restarted, timeout=30, what="worker 1 to be restarted")
    assert status["workers"][1]["restarts"] == 1
    assert status["workers"][0]["pid"] == pids[0]
    samples = scrape(base)
    # The dead worker's counts stay; its replacement starts from zero: no reset, no double.
    assert value(samples, "grpc_server_handled_total", **GET_OK) == calls
    assert value(samples, "feature_sidecar_worker_restarts_total") == 1
    assert "worker died; restarting it" in supervisor.log()

    for _ in range(10):
        _call_on_a_new_connection(address, token)
    calls += 10
    scrape_until(
        base,
        lambda s: value(s, "grpc_server_handled_total", **GET_OK) == calls,
        "the counts of every call",
    )
    scrape_until(base, _values_counted(calls), "the values of every call")

    worker_pids = [w["pid"] for w in status_json(base)["workers"]]
    assert supervisor.stop() == 0
    assert not any(_pid_alive(pid) for pid in worker_pids)
    assert "supervisor stopped exit_code=0" in supervisor.log()


def test_workers_need_a_tcp_listener_with_a_fixed_port(tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    for listen, message in (
        (f"unix:{tmp_path}/s.sock", "needs a TCP --listen address (host:port) that the workers"),
        ("127.0.0.1:0", "--listen 127.0.0.1:0: with --workers 2 give a fixed port"),
    ):
        result = subprocess.run(
            [
                EXE,
                "serve",
                "--workers",
                "2",
                "--listen",
                listen,
                "--bundle",
                str(policy),
                "--allow-unsigned",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert message in result.stderr


def test_an_unusable_multiprocess_directory_is_a_clear_error(tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")}
    environment["PROMETHEUS_MULTIPROC_DIR"] = str(not_a_directory)
    result = subprocess.run(
        [
            EXE,
            "serve",
            "--workers",
            "2",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--bundle",
            str(policy),
            "--allow-unsigned",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"feature-sidecar serve: PROMETHEUS_MULTIPROC_DIR {not_a_directory}: not a directory\n"
    )


def test_a_worker_that_cannot_start_stops_the_supervisor_with_exit_2(
    supervisors: list[Supervisor], tmp_path: Path
) -> None:
    policy = write_policy(tmp_path)
    supervisor = Supervisor(
        tmp_path,
        [
            "--workers",
            "2",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--bundle",
            str(policy),
            "--allow-unsigned",
            "--tls-cert",
            str(tmp_path / "missing.crt"),
            "--tls-key",
            str(tmp_path / "missing.key"),
        ],
    )
    supervisors.append(supervisor)
    assert supervisor.process.wait(timeout=60) == 2
    output = supervisor.log()
    assert f"--tls-key {tmp_path / 'missing.key'}: No such file or directory" in output
    assert "a worker could not start" in output
    assert "Traceback" not in output


def _listening_sockets(port: int) -> int:
    """TCP sockets listening on `port` (each worker's SO_REUSEPORT socket is one)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    count += 1
    return count


def test_no_worker_serves_before_every_worker_listens(
    redis_server: Any, supervisors: list[Supervisor], tmp_path: Path
) -> None:
    # A connection made once the port answers SERVING stays with the worker that accepted it;
    # had worker 0 served alone for a moment, every early connection would have gone to it.
    policy = write_policy(tmp_path)
    seed(redis_server.url, policy)
    port = free_port()
    args = ["--workers", "3", "--listen", f"127.0.0.1:{port}", "--redis", redis_server.url]
    args += ["--bundle", str(policy), "--allow-unsigned", "--workload-principal", PRINCIPAL]
    supervisor = Supervisor(tmp_path, args)
    supervisors.append(supervisor)
    target = f"127.0.0.1:{port}"
    wait_until(lambda: _listening_sockets(port) >= 1, timeout=30, what="a first listener")
    seen_serving = wait_until(
        lambda: probe.serving(target, timeout=1) and _listening_sockets(port),
        timeout=30,
        what="SERVING",
    )
    assert seen_serving == 3
    assert supervisor.stop() == 0


def test_the_peer_gate_opens_when_every_worker_listened_or_after_its_patience(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = [str(tmp_path / f"worker-{i}.json") for i in range(2)]
    gate = PeerGate(paths, started=100.0, patience=5.0)
    Path(paths[0]).write_text("{}")
    assert gate.open(now=101.0) is False
    Path(paths[1]).write_text("{}")
    assert gate.open(now=101.0) is True

    late = PeerGate([str(tmp_path / "never.json")], started=100.0, patience=5.0)
    assert late.open(now=104.9) is False
    assert caplog.records == []
    assert late.open(now=105.0) is True
    assert [r.getMessage() for r in caplog.records] == [
        "not every worker listens yet; serving without waiting longer"
    ]


def test_the_documented_loss_of_a_killed_worker_is_the_flush_interval() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    interval_ms = round(FLUSH_SECONDS * 1000)
    assert f"killed with SIGKILL loses at most its last {interval_ms} ms of counts" in docs
    assert "stopped by SIGTERM writes everything before it exits, and loses nothing" in docs
    assert f"every {interval_ms} ms" in docs
    assert inspect.signature(CallMetrics.run).parameters["every"].default == FLUSH_SECONDS
