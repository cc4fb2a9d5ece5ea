"""Test helpers: real Redis processes, a real sidecar in a thread, request builders, decoders."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar.v1 import feature_service_pb2_grpc as pb_grpc
from featuresidecar_server import app
from featuresidecar_server.grpc_service import Observer
from featuresidecar_server.settings import SERVE_OPTIONS, ServeSettings

FIXTURES = Path(__file__).parent / "fixtures"
FEAST_DUMP = FIXTURES / "feast" / "redis_dump.jsonl"
FEAST_POLICY = FIXTURES / "feast" / "policy.yaml"

_DTYPES = {3: "<i4", 4: "<i8", 5: "<f8", 6: "<f4", 7: "u1", 8: "<i8"}
_LIST_BASE = 10


def load_dump(url: str, path: Path = FEAST_DUMP) -> None:
    """Writes a JSONL dump of hashes (hex keys, fields, values) into Redis."""
    client = redis.Redis.from_url(url)
    try:
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            client.hset(
                bytes.fromhex(entry["key"]),
                mapping={bytes.fromhex(k): bytes.fromhex(v) for k, v in entry["fields"].items()},
            )
    finally:
        client.close()


def _mask_key_file() -> str:
    """A mask secret for the tests' sidecars (policies that mask by hash need one), in a
    directory of this test process, removed when it exits."""
    directory = tempfile.mkdtemp(prefix="fs-test-secret-")
    atexit.register(shutil.rmtree, directory, True)
    path = Path(directory) / "mask.key"
    path.write_bytes(os.urandom(24).hex().encode())
    path.chmod(0o600)
    return str(path)


MASK_KEY_FILE = _mask_key_file()


def settings(**overrides: Any) -> ServeSettings:
    values = {option.dest: option.default for option in SERVE_OPTIONS}
    values.update(
        mask_key_file=MASK_KEY_FILE,
        allow_unsigned=True,
        bundle_poll_interval=0.2,
        redis_health_interval=0.2,
        grace_period=1.0,
        reflection=True,
    )
    values.update(overrides)
    return ServeSettings.from_values(values)


class SidecarThread:
    """A real sidecar (gRPC server, Redis client, bundle sync) on its own event loop thread."""

    def __init__(self, config: ServeSettings, observers: Sequence[Observer] = ()) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sidecar: app.Sidecar = self.call(self._build, list(observers))
        self.call(self.sidecar.start)

    async def _build(self, observers: list[Observer]) -> app.Sidecar:
        return app.build(self.config, observers)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(_as_coroutine(fn, *args), self.loop)
        return future.result(timeout=30)

    @property
    def address(self) -> str:
        return self.sidecar.addresses[0]

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sidecar.readiness.serving:
                return
            time.sleep(0.01)
        raise AssertionError(f"sidecar not ready: {self.sidecar.activator.status.as_dict()}")

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.01)
        raise AssertionError("condition not reached in time")

    def stop(self, grace: float = 0.5) -> None:
        if not self.thread.is_alive():
            return
        try:
            self.call(self.sidecar.stop, grace)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


async def _as_coroutine(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if asyncio.iscoroutine(result):
        return await result
    return result


def stub(address: str) -> tuple[grpc.Channel, pb_grpc.FeatureServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.FeatureServiceStub(channel)


def request(
    features: Sequence[str] = (),
    entities: Mapping[str, Sequence[int] | Sequence[str]] | None = None,
    *,
    service: str = "",
    allow_partial: bool = False,
) -> pb.GetFeaturesRequest:
    message = pb.GetFeaturesRequest(
        features=list(features), feature_service=service, allow_partial=allow_partial
    )
    for name, values in (entities or {}).items():
        column = message.entities[name]
        if values and isinstance(values[0], str):
            column.string_values.values.extend(values)  # type: ignore[arg-type]
        else:
            column.int64_values.values.extend(values)  # type: ignore[arg-type]
    return message


def column_values(column: pb.FeatureColumn) -> list[Any]:
    """Python values per row, read straight off the wire format (None where no value)."""
    statuses = list(column.statuses)
    rows = len(statuses)
    holds = [
        s == pb.PRESENT
        or (column.has_default and s in (pb.NOT_FOUND, pb.STALE))
        or (column.mask == pb.MASK_HASH and s == pb.MASKED)
        for s in statuses
    ]
    number = int(column.type)
    is_list = number > _LIST_BASE
    element = number - _LIST_BASE if is_list else number
    if element in _DTYPES:
        elements: list[Any] = np.frombuffer(column.data, dtype=_DTYPES[element]).tolist()
        if element == 7:
            elements = [bool(v) for v in elements]
    elif element == 2:
        elements = list(column.strings)
    else:
        elements = list(column.binaries)
    if is_list:
        offsets = np.frombuffer(column.offsets, dtype="<u4").tolist()
        assert len(offsets) == rows + 1
        values = [elements[offsets[i] : offsets[i + 1]] for i in range(rows)]
    else:
        assert len(elements) == rows, (len(elements), rows)
        values = elements
    return [v if h else None for v, h in zip(values, holds, strict=True)]


def statuses(column: pb.FeatureColumn) -> list[str]:
    return [pb.FeatureStatus.Name(s) for s in column.statuses]


def timestamps(column: pb.FeatureColumn) -> list[int]:
    return np.frombuffer(column.event_timestamps, dtype="<i8").tolist()


def by_name(response: pb.GetFeaturesResponse) -> dict[str, pb.FeatureColumn]:
    return dict(zip(response.feature_names, response.columns, strict=True))


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError("the call succeeded")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


EXAMPLE_POLICY = FIXTURES / "example" / "policy.yaml"


def put_entity(
    url: str,
    policy_path: Path,
    view: str,
    entity: Mapping[str, int | str],
    values: Mapping[str, Any],
    event_ns: int | None,
) -> None:
    """Writes one entity's feature values the way Feast lays them out (None -> null value)."""
    from featuresidecar_server.catalog import Catalog
    from featuresidecar_server.codec import encode_timestamp, encode_value
    from featuresidecar_server.entity_key import redis_key
    from featuresidecar_server.layout import field_of, ts_field_of
    from featuresidecar_server.policy_yaml import load_policy_file

    catalog = Catalog(load_policy_file(str(policy_path)))
    info = catalog.views[view]
    key = redis_key(info.join_keys, [entity[name] for name, _ in info.join_keys], catalog.project)
    mapping: dict[bytes, bytes] = {}
    for name, value in values.items():
        feature = catalog.features[f"{view}:{name}"]
        mapping[field_of(feature.ref)] = encode_value(value, feature.kind)
    if event_ns is not None:
        mapping[ts_field_of(view)] = encode_timestamp(event_ns)
    client = redis.Redis.from_url(url)
    try:
        client.hset(key, mapping=mapping)  # type: ignore[arg-type]
    finally:
        client.close()


class TokenIssuer:
    """A signing key, its JWKS file, and tokens signed with it."""

    ISSUER = "https://issuer.test"
    AUDIENCE = "feature-sidecar"

    def __init__(self, directory: Path, alg: str = "RS256", kid: str = "test-key") -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        self.alg = alg
        self.kid = kid
        if alg == "RS256":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
        algorithm = jwt.get_algorithm_by_name(alg)
        public_jwk = json.loads(algorithm.to_jwk(self.private.public_key()))
        public_jwk.update(kid=kid, use="sig", alg=alg)
        self.jwks_path = directory / f"jwks-{kid}.json"
        self.jwks_path.write_text(json.dumps({"keys": [public_jwk]}))

    def token(
        self,
        sub: str,
        groups: Sequence[str] = (),
        *,
        ttl: float = 300.0,
        now: float | None = None,
        **claims: Any,
    ) -> str:
        import jwt

        issued = time.time() if now is None else now
        payload: dict[str, Any] = {
            "sub": sub,
            "iss": self.ISSUER,
            "aud": self.AUDIENCE,
            "iat": int(issued),
            "exp": int(issued + ttl),
        }
        if groups:
            payload["groups"] = list(groups)
        payload.update(claims)
        return jwt.encode(payload, self.private, algorithm=self.alg, headers={"kid": self.kid})

    def settings(self) -> dict[str, Any]:
        return {
            "jwt_jwks": str(self.jwks_path),
            "jwt_issuer": self.ISSUER,
            "jwt_audience": self.AUDIENCE,
        }


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


FEATURE_SIDECAR = str(Path(sys.executable).parent / "feature-sidecar")


def serve_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a `feature-sidecar serve` process: none of this process's
    FEATURE_SIDECAR_* settings, the tests' mask secret, then `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")}
    environment["FEATURE_SIDECAR_MASK_KEY_FILE"] = MASK_KEY_FILE
    environment.update(env or {})
    return environment


class ServeProcess:
    """`feature-sidecar serve` as a real process; its log goes to a file, so that a chatty
    sidecar never blocks on a full pipe."""

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        *,
        stdout: int | None = None,
    ):
        """`stdout`: e.g. subprocess.PIPE, for a stdout nobody reads; else it joins the log."""
        self.log = log
        with open(log, "wb") as handle:
            self.process = subprocess.Popen(
                [FEATURE_SIDECAR, "serve", *args],
                stdout=handle if stdout is None else stdout,
                stderr=handle,
                env=serve_environment(env),
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_serving(self, address: str, timeout: float = 20.0) -> ServeProcess:
        from featuresidecar_server.probe import wait_serving

        try:
            wait_serving(address, self.process, timeout)
        except RuntimeError as exc:
            self.stop(timeout=5)  # a sidecar that never served must not outlive the test
            raise AssertionError(f"{exc}: {self.log.read_text()}") from None
        return self

    def memory_mib(self, field: str = "VmRSS") -> float:
        """VmRSS (resident now) or VmHWM (the peak so far) of the process, in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field} for pid {self.pid}")

    def exit_code(self, timeout: float = 20.0) -> int:
        """The code of a sidecar expected to exit by itself; one still running after `timeout`
        is stopped and fails the test."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(timeout=5)
            raise AssertionError(f"the sidecar did not exit: {self.log.read_text()}") from None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then its exit code (SIGKILL if it outlives `timeout`)."""
        from featuresidecar_server import processes

        return processes.stop(self.process, timeout)
