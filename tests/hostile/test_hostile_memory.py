"""Memory stays bounded under hostile calls: a few hundred of them, repeated, against one real
sidecar running in this process (so /proc/self/status VmRSS is the sidecar's, plus the client's).

The first round fills what is meant to fill (caches, gRPC buffers, arenas); the later rounds
repeat the same calls, so any growth after the first round is a leak.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable

import grpc
from hostile_support import (
    ACTIONABLE,
    FEATURES,
    GET,
    LIST,
    USERS,
    Hostile,
    MiB,
    call_raw,
    check_get_answer,
    get,
    rss_bytes,
)

from featuresidecar.v1 import feature_service_pb2 as pb

# Growth allowed over three repeated rounds of ~350 calls, after the first round. A leak of
# one response per call (the smallest here is a few KiB, the largest 1 MiB) exceeds it.
CEILING_AFTER_WARM_UP = 32 * MiB
# Growth allowed by the first round itself: caches filling, 1 MiB messages passing through.
CEILING_FIRST_ROUND = 160 * MiB
ROUNDS = 3


def _calls(hostile: Hostile) -> list[Callable[[], grpc.StatusCode]]:
    """About 350 hostile calls, the same every round."""
    rng = random.Random(20261130)
    alice = hostile.alice
    calls: list[Callable[[], grpc.StatusCode]] = []

    def raw(method: str, body: bytes, metadata: list[tuple[str, str]] | None) -> None:
        calls.append(lambda: call_raw(hostile.unix, method, body, metadata).code)

    def message(request: pb.GetFeaturesRequest, metadata: list[tuple[str, str]] | None) -> None:
        def call() -> grpc.StatusCode:
            answer = get(hostile.unix, request, metadata)
            check_get_answer(answer, request)
            return answer.code

        calls.append(call)

    for _ in range(60):
        raw(GET, rng.randbytes(rng.randrange(1, 2048)), alice)
    for i in range(40):
        unknown = pb.GetFeaturesRequest(features=[f"profile:nope{i}-{j}" for j in range(10_000)])
        unknown.entities["user_id"].int64_values.values.append(1)
        message(unknown, alice)
    for i in range(40):
        wide = pb.GetFeaturesRequest(features=["pair:affinity"])
        wide.entities["user_id"].int64_values.values.append(1)
        wide.entities["item_id"].string_values.values.append(chr(97 + i % 26) * (1 << 20))
        message(wide, alice)
    for _ in range(40):
        big = pb.GetFeaturesRequest(features=list(FEATURES), allow_partial=True)
        big.entities["user_id"].int64_values.values.extend(rng.choice(USERS) for _ in range(499))
        big.entities["item_id"].string_values.values.extend(["a"] * 499)
        big.entities["shard_id"].int64_values.values.extend([0] * 499)
        message(big, alice)
    for i in range(60):
        token = f"{i:04d}" + "".join(rng.choices("abcdefghijklmnop.", k=4000))
        message(
            pb.GetFeaturesRequest(features=["profile:age"]), [("authorization", f"Bearer {token}")]
        )
    for i in range(40):
        long_ref = pb.GetFeaturesRequest(features=[f"profile:{i:04d}" + "z" * 5000])
        long_ref.entities["user_id"].int64_values.values.append(1)
        message(long_ref, alice)
    for i in range(40):
        raw(LIST, pb.ListFeaturesRequest(view=f"v{i}" * 100).SerializeToString(), alice)
    for _ in range(30):
        forged = [("x-principal", "alice"), ("x-forwarded-user", "alice")]
        message(pb.GetFeaturesRequest(features=["stats:ctr"]), forged)
    return calls


def _round(calls: list[Callable[[], grpc.StatusCode]]) -> None:
    for call in calls:
        code = call()
        assert code in ACTIONABLE, code


def _settled_rss() -> int:
    gc.collect()
    return rss_bytes()


def test_hostile_calls_do_not_grow_the_sidecars_memory(hostile: Hostile) -> None:
    calls = _calls(hostile)
    assert len(calls) >= 300
    start = _settled_rss()
    _round(calls)
    warm = _settled_rss()
    for _ in range(ROUNDS):
        _round(calls)
    end = _settled_rss()
    first, later = warm - start, end - warm
    print(
        f"RSS: +{first / MiB:.1f} MiB in the first round, +{later / MiB:.1f} MiB in {ROUNDS} more"
    )
    assert first < CEILING_FIRST_ROUND, f"first round grew RSS by {first / MiB:.1f} MiB"
    assert later < CEILING_AFTER_WARM_UP, (
        f"{ROUNDS} repeated rounds grew RSS by {later / MiB:.1f} MiB"
    )


# The sidecar caches verified tokens and per-caller plans, 4096 of each; callers that never
# repeat must fill those caches once and then evict, never grow them.
FILL_CALLS = 4200  # past both caches
MORE_CALLS = 2000


def _distinct_callers(hostile: Hostile, first: int, count: int) -> None:
    issuer = hostile.issuers.ed  # EdDSA: the cheapest signature, so the calls dominate
    request = pb.GetFeaturesRequest(features=["profile:age", "stats:ctr"])
    request.entities["user_id"].int64_values.values.append(1)
    body = request.SerializeToString()
    rpc = hostile.unix.unary_unary(GET, request_serializer=None, response_deserializer=None)
    # A few calls in flight at once: the sidecar's loop, not the client, sets the pace.
    for start in range(first, first + count, 50):
        futures = [
            rpc.future(body, metadata=[("authorization", f"Bearer {token}")], timeout=30)
            for token in (
                issuer.token(f"caller-{i}", ["readers"], ttl=600)
                for i in range(start, min(start + 50, first + count))
            )
        ]
        for future in futures:
            future.result()


def test_callers_that_never_repeat_do_not_grow_the_sidecars_memory(hostile: Hostile) -> None:
    start = _settled_rss()
    _distinct_callers(hostile, 0, FILL_CALLS)
    full = _settled_rss()
    _distinct_callers(hostile, FILL_CALLS, MORE_CALLS)
    end = _settled_rss()
    print(f"RSS: +{(full - start) / MiB:.1f} MiB filling, +{(end - full) / MiB:.1f} MiB after")
    assert end - full < 8 * MiB
