"""Retries, deadlines, typed errors and metadata, against tiny real gRPC servers on loopback.

Each server implements the generated FeatureServiceServicer and follows a script per attempt
(fail with a code, wait past the deadline, answer), recording what every attempt received.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest

from featuresidecar import (
    AsyncFeatureClient,
    DeadlineExceededError,
    FeatureClient,
    FeatureNotFoundError,
    FeatureSidecarError,
    InternalError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    Retry,
    UnauthenticatedError,
    UnavailableError,
)
from featuresidecar._retry import Attempts
from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar.v1 import feature_service_pb2_grpc as pb_grpc

SLACK = 0.25  # scheduling noise allowed on a loaded 2-core machine
ROUNDING = 0.02
# Metadata gRPC adds by itself; everything else is what the client sent.
TRANSPORT_KEYS = ("user-agent", "grpc-accept-encoding", "grpc-encoding")


@dataclass
class Attempt:
    at: float
    metadata: tuple[tuple[str, str | bytes], ...]
    time_remaining: float | None
    request: Any


Step = Callable[[Any], Any]  # gets the servicer context; returns a response or aborts


def answer(value: float = 4.5) -> pb.GetFeaturesResponse:
    response = pb.GetFeaturesResponse(feature_names=["v:x"], row_count=1, policy_revision=3)
    response.columns.add(
        type=pb.DOUBLE,
        statuses=bytes([1]),
        event_timestamps=np.array([7], dtype="<i8").tobytes(),
        data=np.array([value], dtype="<f8").tobytes(),
    )
    return response


def fail(code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...] = ()) -> Step:
    def step(context: Any) -> Any:
        if trailing:
            context.set_trailing_metadata(trailing)
        context.abort(code, details)

    return step


def succeed(context: Any) -> Any:
    return answer()


@dataclass
class ScriptedServicer(pb_grpc.FeatureServiceServicer):
    """Attempt n runs script[n] (the last entry repeats)."""

    script: list[Step]
    attempts: list[Attempt] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.attempts.append(
                Attempt(
                    time.monotonic(),
                    tuple((m.key, m.value) for m in context.invocation_metadata()),
                    context.time_remaining(),
                    request,
                )
            )
            step = self.script[min(len(self.attempts), len(self.script)) - 1]
        return step(context)

    def GetFeatures(self, request: Any, context: Any) -> Any:
        return self._run(request, context)

    def ListFeatures(self, request: Any, context: Any) -> Any:
        result = self._run(request, context)
        return pb.ListFeaturesResponse(policy_revision=9) if result is not None else None

    def wait_past_deadline(self, context: Any) -> Any:
        # Holds the call until the client gives up (or the test ends).
        while context.is_active() and not self.release.wait(0.01):
            pass
        return answer()

    def user_metadata(self, index: int) -> list[tuple[str, str | bytes]]:
        return [(k, v) for k, v in self.attempts[index].metadata if k not in TRANSPORT_KEYS]


@pytest.fixture
def serve(tmp_path) -> Iterator[Callable[..., tuple[str, ScriptedServicer]]]:
    servers: list[tuple[grpc.Server, ScriptedServicer]] = []

    def start(*script: Step | str, unix: bool = False) -> tuple[str, ScriptedServicer]:
        servicer = ScriptedServicer([])
        servicer.script = [
            servicer.wait_past_deadline if step == "wait" else step  # type: ignore[misc]
            for step in script
        ]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_FeatureServiceServicer_to_server(servicer, server)
        if unix:
            address = f"unix:{tmp_path}/scripted-{len(servers)}.sock"
            server.add_insecure_port(address)
        else:
            port = server.add_insecure_port("127.0.0.1:0")
            address = f"127.0.0.1:{port}"
        server.start()
        servers.append((server, servicer))
        return address, servicer

    yield start
    for server, servicer in servers:
        servicer.release.set()
        server.stop(0).wait(5)


def _gaps(servicer: ScriptedServicer) -> list[float]:
    times = [a.at for a in servicer.attempts]
    return [b - a for a, b in itertools.pairwise(times)]


# --- retries ----------------------------------------------------------------------------------


def test_unavailable_twice_then_success_takes_exactly_three_attempts(serve) -> None:
    down = fail(grpc.StatusCode.UNAVAILABLE, "redis is down")
    address, servicer = serve(down, down, succeed)
    with FeatureClient(address, deadline=2.0) as client:
        result = client.get_features(["v:x"], {"k": [1]})
    assert result.to_dict() == {"v:x": [4.5]}
    assert len(servicer.attempts) == 3
    first, second = _gaps(servicer)
    # Default backoff: 0.05 s, then 0.1 s.
    assert 0.05 <= first < 0.05 + SLACK
    assert 0.10 <= second < 0.10 + SLACK


def test_always_unavailable_gives_up_after_the_attempts_allowed(serve) -> None:
    address, servicer = serve(fail(grpc.StatusCode.UNAVAILABLE, "redis is down"))
    retry = Retry(attempts=4, initial_backoff=0.01, max_backoff=0.05)
    with FeatureClient(address, deadline=2.0, retry=retry) as client:
        start = time.monotonic()
        with pytest.raises(UnavailableError) as caught:
            client.get_features(["v:x"], {"k": [1]})
        elapsed = time.monotonic() - start
    assert len(servicer.attempts) == 4
    assert caught.value.attempts == 4
    assert caught.value.details == "redis is down"
    assert str(caught.value) == "UNAVAILABLE: redis is down (after 4 attempts)"
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    assert caught.value.__cause__.code() == grpc.StatusCode.UNAVAILABLE
    # Sleeps of 0.01 + 0.02 + 0.04 s: well inside the 2 s deadline.
    assert 0.07 <= elapsed < 0.07 + SLACK


def test_a_backoff_that_would_reach_the_deadline_is_not_slept(serve) -> None:
    address, servicer = serve(fail(grpc.StatusCode.UNAVAILABLE, "redis is down"))
    retry = Retry(attempts=10, initial_backoff=0.2, max_backoff=0.2, multiplier=1.0)
    with FeatureClient(address, deadline=0.5, retry=retry) as client:
        start = time.monotonic()
        with pytest.raises(UnavailableError) as caught:
            client.get_features(["v:x"], {"k": [1]})
        elapsed = time.monotonic() - start
    # Attempts at 0, 0.2 and 0.4 s; a fourth would start after the 0.5 s deadline.
    assert len(servicer.attempts) == 3
    assert caught.value.attempts == 3
    assert 0.4 <= elapsed < 0.55  # the deadline, plus a little scheduling noise
    # Each attempt is given what is left of the one deadline.
    remaining = [a.time_remaining for a in servicer.attempts]
    assert all(r is not None for r in remaining)
    # (gRPC rounds the deadline it sends up to its wire units: a few ms of tolerance.)
    assert 0.5 - SLACK < remaining[0] <= 0.5 + ROUNDING
    assert 0.3 - SLACK < remaining[1] <= 0.3 + ROUNDING
    assert 0.1 - SLACK < remaining[2] <= 0.1 + ROUNDING


def test_a_slow_answer_is_deadline_exceeded_and_not_retried(serve) -> None:
    address, servicer = serve("wait")
    with FeatureClient(address, deadline=0.3) as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError) as caught:
            client.get_features(["v:x"], {"k": [1]})
        elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 0.3 + SLACK
    assert len(servicer.attempts) == 1
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.details == "Deadline Exceeded"


def test_a_per_call_deadline_overrides_the_default(serve) -> None:
    address, _ = serve("wait")
    with FeatureClient(address, deadline=30.0) as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.get_features(["v:x"], {"k": [1]}, deadline=0.2)
        assert 0.2 <= time.monotonic() - start < 0.2 + SLACK


def test_nothing_listening_is_unavailable_within_the_deadline() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with FeatureClient(f"127.0.0.1:{port}", deadline=1.0) as client:
        start = time.monotonic()
        with pytest.raises(UnavailableError) as caught:
            client.get_features(["v:x"], {"k": [1]})
        elapsed = time.monotonic() - start
    assert caught.value.attempts == 3
    assert elapsed < 1.0


def test_list_features_is_retried_too(serve) -> None:
    address, servicer = serve(fail(grpc.StatusCode.UNAVAILABLE, "starting"), succeed)
    with FeatureClient(address) as client:
        catalog = client.list_features(view="v")
    assert catalog.policy_revision == 9
    assert [a.request.view for a in servicer.attempts] == ["v", "v"]


def test_retry_after_hint_is_parsed_and_not_retried_by_default(serve) -> None:
    limited = fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", (("retry-after-ms", "250"),))
    address, servicer = serve(limited)
    with FeatureClient(address) as client, pytest.raises(ResourceExhaustedError) as caught:
        client.get_features(["v:x"], {"k": [1]})
    assert caught.value.retry_after == 0.25
    assert caught.value.attempts == 1
    assert len(servicer.attempts) == 1


def test_a_retry_after_hint_stretches_the_backoff_when_that_code_is_retried(serve) -> None:
    limited = fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", (("retry-after-ms", "300"),))
    address, servicer = serve(limited, succeed)
    retry = Retry(codes=(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED))
    with FeatureClient(address, retry=retry) as client:
        assert client.get_features(["v:x"], {"k": [1]}).to_dict() == {"v:x": [4.5]}
    (gap,) = _gaps(servicer)
    assert 0.3 <= gap < 0.3 + SLACK


ERRORS = [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
    (grpc.StatusCode.NOT_FOUND, FeatureNotFoundError),
    (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
    (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
    (grpc.StatusCode.INTERNAL, InternalError),
    (grpc.StatusCode.FAILED_PRECONDITION, InternalError),
    (grpc.StatusCode.UNIMPLEMENTED, InternalError),
    (grpc.StatusCode.UNKNOWN, InternalError),
]


@pytest.mark.parametrize(("code", "error_class"), ERRORS, ids=[c.name for c, _ in ERRORS])
def test_each_code_becomes_its_typed_error_without_retry(serve, code, error_class) -> None:
    address, servicer = serve(fail(code, f"the {code.name} sentence"), succeed)
    with FeatureClient(address) as client, pytest.raises(error_class) as caught:
        client.get_features(["v:x"], {"k": [1]})
    error = caught.value
    assert type(error) is error_class
    assert isinstance(error, FeatureSidecarError)
    assert error.code == code
    assert error.details == f"the {code.name} sentence"
    assert str(error) == f"{code.name}: the {code.name} sentence"
    assert isinstance(error.__cause__, grpc.RpcError)
    assert len(servicer.attempts) == 1


# --- metadata ---------------------------------------------------------------------------------


def test_token_and_metadata_reach_the_server_exactly(serve) -> None:
    address, servicer = serve(succeed, unix=True)
    with FeatureClient(
        address,
        token="header.payload.signature",
        metadata=[("x-tenant", "blue"), ("trace-bin", b"\x00\xff")],
    ) as client:
        client.get_features(["v:x"], {"k": [1]})
        client.get_features(["v:x"], {"k": [1]}, metadata=[("x-request-id", "req-1")])
    assert servicer.user_metadata(0) == [
        ("authorization", "Bearer header.payload.signature"),
        ("x-tenant", "blue"),
        ("trace-bin", b"\x00\xff"),
    ]
    assert servicer.user_metadata(1) == [
        ("authorization", "Bearer header.payload.signature"),
        ("x-tenant", "blue"),
        ("trace-bin", b"\x00\xff"),
        ("x-request-id", "req-1"),
    ]
    request = servicer.attempts[0].request
    assert list(request.features) == ["v:x"]
    assert list(request.entities["k"].int64_values.values) == [1]


def test_no_token_sends_no_authorization(serve) -> None:
    address, servicer = serve(succeed)
    with FeatureClient(address) as client:
        client.get_features(["v:x"], {"k": ["a"]})
    assert servicer.user_metadata(0) == []
    assert list(servicer.attempts[0].request.entities["k"].string_values.values) == ["a"]


def test_a_closed_client_refuses_calls(serve) -> None:
    address, _ = serve(succeed)
    client = FeatureClient(address)
    client.close()
    client.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="this FeatureClient is closed"):
        client.get_features(["v:x"], {"k": [1]})


# --- the asyncio client -------------------------------------------------------------------------


def test_async_retries_then_succeeds(serve) -> None:
    down = fail(grpc.StatusCode.UNAVAILABLE, "redis is down")
    address, servicer = serve(down, down, succeed)

    async def run() -> Any:
        async with AsyncFeatureClient(address, token="t0ken") as client:
            return await client.get_features(["v:x"], {"k": [1]}, metadata=[("x-a", "1")])

    result = asyncio.run(run())
    assert result.to_dict() == {"v:x": [4.5]}
    assert len(servicer.attempts) == 3
    assert all(
        servicer.user_metadata(i) == [("authorization", "Bearer t0ken"), ("x-a", "1")]
        for i in range(3)
    )
    first, second = _gaps(servicer)
    assert 0.05 <= first < 0.05 + SLACK and 0.10 <= second < 0.10 + SLACK


def test_async_gives_up_within_the_deadline(serve) -> None:
    address, servicer = serve(fail(grpc.StatusCode.UNAVAILABLE, "redis is down"))
    retry = Retry(attempts=10, initial_backoff=0.2, max_backoff=0.2, multiplier=1.0)

    async def run() -> tuple[FeatureSidecarError, float]:
        async with AsyncFeatureClient(address, deadline=0.5, retry=retry) as client:
            start = time.monotonic()
            with pytest.raises(UnavailableError) as caught:
                await client.get_features(["v:x"], {"k": [1]})
            return caught.value, time.monotonic() - start

    error, elapsed = asyncio.run(run())
    assert error.attempts == 3 and len(servicer.attempts) == 3
    assert 0.4 <= elapsed < 0.55  # the deadline, plus a little scheduling noise
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)


def test_async_deadline_and_typed_errors(serve) -> None:
    slow_address, slow = serve("wait")
    denied_address, _ = serve(fail(grpc.StatusCode.PERMISSION_DENIED, "no: v:x"))
    limited_address, _ = serve(
        fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", (("retry-after-ms", "1250"),))
    )

    async def run() -> tuple[Any, float, Any, Any]:
        async with AsyncFeatureClient(slow_address, deadline=0.3) as client:
            start = time.monotonic()
            with pytest.raises(DeadlineExceededError) as late:
                await client.get_features(["v:x"], {"k": [1]})
            elapsed = time.monotonic() - start
        async with AsyncFeatureClient(denied_address) as client:
            with pytest.raises(PermissionDeniedError) as denied:
                await client.list_features()
        async with AsyncFeatureClient(limited_address) as client:
            with pytest.raises(ResourceExhaustedError) as limited:
                await client.get_features(["v:x"], {"k": [1]})
        return late.value, elapsed, denied.value, limited.value

    late, elapsed, denied, limited = asyncio.run(run())
    assert limited.retry_after == 1.25 and limited.attempts == 1
    assert 0.3 <= elapsed < 0.3 + SLACK
    assert len(slow.attempts) == 1
    assert late.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert denied.details == "no: v:x" and denied.attempts == 1


def test_async_closed_client_refuses_calls(serve) -> None:
    address, _ = serve(succeed)

    async def run() -> None:
        client = AsyncFeatureClient(address)
        await client.close()
        with pytest.raises(RuntimeError, match="this AsyncFeatureClient is closed"):
            await client.get_features(["v:x"], {"k": [1]})

    asyncio.run(run())


def test_a_backoff_that_overslept_the_deadline_ends_with_the_last_error(serve) -> None:
    # A real UNAVAILABLE from a real server, fed to one call's attempts under a manual clock.
    address, _ = serve(fail(grpc.StatusCode.UNAVAILABLE, "redis is down"))
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.FeatureServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetFeatures(pb.GetFeaturesRequest(), timeout=5)
    real = caught.value
    now = [100.0]
    attempts = Attempts(Retry(), deadline=1.0, clock=lambda: now[0])
    assert attempts.timeout() == 1.0
    now[0] = 100.9
    assert attempts.failed(real) == 0.05  # 0.1 s left: room for the 0.05 s backoff
    now[0] = 101.2  # the sleep overran the deadline
    with pytest.raises(UnavailableError) as last:
        attempts.timeout()
    assert last.value.__cause__ is real
    assert last.value.attempts == 1 and attempts.made == 1
