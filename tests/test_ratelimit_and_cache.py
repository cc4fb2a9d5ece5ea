"""Token buckets and decision caching, with an injected clock."""

from __future__ import annotations

from support import EXAMPLE_POLICY

from featuresidecar_server.access import Identity
from featuresidecar_server.policy_yaml import load_policy_file
from featuresidecar_server.ratelimit import RateLimiter
from featuresidecar_server.snapshot import Snapshot


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(lambda: now[0])
    assert [limiter.acquire("p", rate=2.0, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("p", rate=2.0, burst=3) == 0.5
    now[0] += 0.5
    assert limiter.acquire("p", rate=2.0, burst=3) == 0.0
    assert limiter.acquire("p", rate=2.0, burst=3) == 0.5
    assert limiter.acquire("q", rate=2.0, burst=3) == 0.0  # each principal has its own bucket
    now[0] += 60
    assert [limiter.acquire("p", rate=2.0, burst=3) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_without_burst_the_bucket_holds_one_second_of_requests() -> None:
    limiter = RateLimiter(lambda: 0.0)
    results = [limiter.acquire("p", rate=50.0) for _ in range(51)]
    assert results[:50] == [0.0] * 50
    assert results[50] == 0.02


def test_buckets_are_bounded() -> None:
    limiter = RateLimiter(lambda: 0.0, max_principals=2)
    for name in ("a", "b", "c"):
        limiter.acquire(name, rate=1.0)
    assert list(limiter._buckets) == ["b", "c"]


def test_decisions_are_prepared_once_per_principal_and_feature_set() -> None:
    snapshot = Snapshot(
        load_policy_file(str(EXAMPLE_POLICY)), revision=1, digest="d", source="s", signed=False
    )
    ranker = Identity("spiffe://cluster.local/ns/ml/sa/ranker")
    refs = ("user_profile:age", "user_stats:ctr_7d")
    first = snapshot.prepare(ranker, refs)
    assert snapshot.prepare(ranker, refs) is first
    assert snapshot.prepare(ranker, refs[::-1]) is not first
    assert snapshot.prepare(Identity("support-console"), refs) is not first
    assert first.roles == ("ranking-model",)
    assert [d.verdict for d in first.decisions] == ["allow", "allow"]
    assert first.decisions[1].max_age_ns == 6 * 3600 * 10**9
    assert first.limits.max_entities == 1000 and first.limits.requests_per_second is None
