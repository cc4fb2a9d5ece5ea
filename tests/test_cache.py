"""The optional local entity cache: hits within the TTL, LRU bound, single flight, real Redis."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import grpc
import pytest
import redis
from support import EXAMPLE_POLICY, column_values, put_entity, request, stub

from featuresidecar_server.cache import EntityCache
from featuresidecar_server.catalog import Catalog
from featuresidecar_server.devredis import LocalRedis
from featuresidecar_server.entity_key import redis_key
from featuresidecar_server.errors import Unavailable
from featuresidecar_server.layout import build_plan
from featuresidecar_server.policy_yaml import load_policy_file
from featuresidecar_server.store import RedisStore

RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"
CATALOG = Catalog(load_policy_file(str(EXAMPLE_POLICY)))
PLAN = build_plan(CATALOG, [CATALOG.features["user_profile:age"]])
GROUP = PLAN.groups[0]


def _key(user: int) -> bytes:
    return redis_key(CATALOG.views["user_profile"].join_keys, [user], "demo")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _age(url: str, user: int, age: int) -> None:
    put_entity(url, EXAMPLE_POLICY, "user_profile", {"user_id": user}, {"age": age}, 10**18)


def _ages(replies: list[Any]) -> list[bytes | None]:
    return [reply[0] for reply in replies]


def test_hits_within_the_ttl_then_reads_again(redis_server: LocalRedis) -> None:
    _age(redis_server.url, 1, 30)
    clock = Clock()
    cache = EntityCache(10, ttl=1.0, clock=clock)

    async def main() -> list[list[bytes | None]]:
        store = RedisStore(redis_server.url)
        seen = []
        seen.append(_ages(await cache.fetch(store.fetch, [GROUP], [[_key(1)]])))
        _age(redis_server.url, 1, 31)
        clock.now += 0.5
        seen.append(_ages(await cache.fetch(store.fetch, [GROUP], [[_key(1)]])))
        clock.now += 0.6
        seen.append(_ages(await cache.fetch(store.fetch, [GROUP], [[_key(1)]])))
        await store.close()
        return seen

    first, cached, fresh = asyncio.run(main())
    assert first == [b"\x20\x1e"]  # int64_val 30
    assert cached == first  # Redis changed, but the entry is younger than the TTL
    assert fresh == [b"\x20\x1f"]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.shared) == (1, 2, 0)


def test_the_least_recently_used_entry_goes_first(redis_server: LocalRedis) -> None:
    for user in (1, 2, 3):
        _age(redis_server.url, user, user)
    cache = EntityCache(2, ttl=60.0, clock=Clock())

    async def main() -> None:
        store = RedisStore(redis_server.url)
        await cache.fetch(store.fetch, [GROUP], [[_key(1), _key(2)]])
        await cache.fetch(store.fetch, [GROUP], [[_key(1)]])  # 1 is now the most recent
        await cache.fetch(store.fetch, [GROUP], [[_key(3)]])  # evicts 2
        await cache.fetch(store.fetch, [GROUP], [[_key(1), _key(2)]])
        await store.close()

    asyncio.run(main())
    assert len(cache) == 2
    assert (cache.stats.hits, cache.stats.misses) == (2, 4)


def test_concurrent_misses_share_one_read(redis_server: LocalRedis) -> None:
    _age(redis_server.url, 7, 70)
    cache = EntityCache(10, ttl=60.0, clock=Clock())
    client = redis.Redis.from_url(redis_server.url)
    before = client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)

    async def main() -> list[list[Any]]:
        store = RedisStore(redis_server.url)
        results = await asyncio.gather(
            *(cache.fetch(store.fetch, [GROUP], [[_key(7)]]) for _ in range(5))
        )
        await store.close()
        return list(results)

    results = asyncio.run(main())
    after = client.info("commandstats")["cmdstat_hmget"]["calls"]
    client.close()
    assert [_ages(r) for r in results] == [[b"\x20\x46"]] * 5
    assert after - before == 1
    assert (cache.stats.misses, cache.stats.shared, cache.stats.hits) == (1, 4, 0)


def test_a_failed_read_reaches_every_waiter_and_caches_nothing() -> None:
    server = LocalRedis()  # never started
    cache = EntityCache(10, ttl=60.0, clock=Clock())

    async def main() -> list[Any]:
        store = RedisStore(server.url, timeout=0.2)
        results = await asyncio.gather(
            *(cache.fetch(store.fetch, [GROUP], [[_key(1)]]) for _ in range(3)),
            return_exceptions=True,
        )
        await store.close()
        return list(results)

    results = asyncio.run(main())
    server.close()
    assert [type(r) for r in results] == [Unavailable] * 3
    assert len(cache) == 0


@pytest.mark.parametrize("entries", [0, 100])
def test_served_values_are_the_same_with_and_without_the_cache(
    redis_server: LocalRedis, sidecar_factory: Any, tmp_path: Any, entries: int
) -> None:
    now = time.time_ns()
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_stats",
        {"user_id": 1},
        {"ctr_7d": 0.5, "orders_30d": 3, "is_premium": True},
        now,
    )
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_stats",
        {"user_id": 2},
        {"ctr_7d": 0.25, "orders_30d": 1, "is_premium": False},
        now - 7 * 3600 * 10**9,
    )
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        workload_principal=RANKER,
        cache_entries=entries,
        cache_ttl=60.0,
    )
    _, client = stub(sidecar.address)
    message = request(["user_stats:ctr_7d"], {"user_id": [1, 2, 3]})
    for _ in range(3):
        response = client.GetFeatures(message, timeout=5)
        assert column_values(response.columns[0]) == [0.5, 0.0, 0.0]  # 2 is stale: default 0
        assert list(response.columns[0].statuses) == [1, 4, 3]
    cache = sidecar.sidecar.reader.cache
    registry = sidecar.sidecar.metrics.registry
    lookups = {
        result: registry.get_sample_value("feature_sidecar_cache_lookups_total", {"result": result})
        for result in ("hit", "miss", "shared")
    }
    if entries:
        assert cache is not None
        assert (cache.stats.misses, cache.stats.hits) == (3, 6)
        assert lookups == {"hit": 6.0, "miss": 3.0, "shared": 0.0}
    else:
        assert cache is None
        assert lookups == {"hit": 0.0, "miss": 0.0, "shared": 0.0}


def _paused_shared_read(
    redis_server: LocalRedis, sidecar_factory: Any
) -> tuple[Any, Any, Any, EntityCache]:
    """A sidecar with the cache on, and Redis paused (SIGSTOP) until the caller resumes it."""
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 5},
        {"age": 50},
        time.time_ns(),
    )
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        workload_principal=RANKER,
        cache_entries=100,
        cache_ttl=60.0,
        redis_timeout=5.0,
    )
    cache = sidecar.sidecar.reader.cache
    assert cache is not None
    _, client = stub(sidecar.address)
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    return sidecar, client, request(["user_profile:age"], {"user_id": [5]}), cache


def test_one_callers_deadline_does_not_reach_another_waiting_on_the_same_entity(
    redis_server: LocalRedis, sidecar_factory: Any
) -> None:
    sidecar, client, message, cache = _paused_shared_read(redis_server, sidecar_factory)
    assert redis_server.process is not None
    try:
        short = client.GetFeatures.future(message, timeout=0.3)
        sidecar.wait_for(lambda: cache.stats.misses == 1)
        patient = client.GetFeatures.future(message, timeout=10)
        sidecar.wait_for(lambda: cache.stats.shared == 1)
        with pytest.raises(grpc.RpcError) as failed:
            short.result()
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not patient.done()
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    response = patient.result(timeout=10)
    assert column_values(response.columns[0]) == [50]
    assert list(response.columns[0].statuses) == [1]


def test_a_cancelled_caller_does_not_cancel_the_read_another_waits_for(
    redis_server: LocalRedis, sidecar_factory: Any
) -> None:
    sidecar, client, message, cache = _paused_shared_read(redis_server, sidecar_factory)
    assert redis_server.process is not None
    try:
        first = client.GetFeatures.future(message, timeout=10)
        sidecar.wait_for(lambda: cache.stats.misses == 1)
        second = client.GetFeatures.future(message)  # no deadline at all
        sidecar.wait_for(lambda: cache.stats.shared == 1)
        assert first.cancel()
        # The cancellation reaches the sidecar's handler of the first call before Redis resumes.
        sidecar.wait_for(
            lambda: (
                sidecar.sidecar.metrics.registry.get_sample_value(
                    "grpc_server_handled_total",
                    {
                        "grpc_type": "unary",
                        "grpc_service": "featuresidecar.v1.FeatureService",
                        "grpc_method": "GetFeatures",
                        "grpc_code": "Canceled",
                    },
                )
                == 1.0
            )
        )
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    response = second.result(timeout=10)
    assert column_values(response.columns[0]) == [50]
    # The read finished for the waiter and was cached: the next call is a hit.
    client.GetFeatures(message, timeout=5)
    assert cache.stats.hits == 1
