"""GetFeatures and ListFeatures end to end: real Redis, real gRPC, the example policy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from support import (
    EXAMPLE_POLICY,
    TokenIssuer,
    bearer,
    by_name,
    code_of,
    column_values,
    put_entity,
    request,
    statuses,
    stub,
    timestamps,
)

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar_server.catalog import Catalog
from featuresidecar_server.devredis import LocalRedis
from featuresidecar_server.entity_key import redis_key
from featuresidecar_server.errors import listed
from featuresidecar_server.layout import ts_field_of
from featuresidecar_server.policy_yaml import load_policy_file

HOUR = 3600 * 10**9
RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"
CATALOG = Catalog(load_policy_file(str(EXAMPLE_POLICY)))
EMBEDDING = [0.5, -0.25] * 16


@pytest.fixture
def world(redis_server: Any, sidecar_factory: Any, tmp_path: Path) -> dict[str, Any]:
    now = time.time_ns()
    url = redis_server.url
    put_entity(
        url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 1},
        {"age": 34, "country": "DE", "email": "a@example.com", "embedding": EMBEDDING},
        now - HOUR,
    )
    put_entity(
        url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 2},
        {"age": None, "country": "FR", "email": "a@example.com", "embedding": None},
        now - HOUR,
    )
    put_entity(
        url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 4},
        {"age": 51, "country": "PL", "email": "d@example.com", "embedding": EMBEDDING},
        now - 8 * 24 * HOUR,
    )
    put_entity(
        url,
        EXAMPLE_POLICY,
        "user_stats",
        {"user_id": 1},
        {"ctr_7d": 0.25, "orders_30d": 7, "is_premium": True},
        now - HOUR,
    )
    put_entity(
        url,
        EXAMPLE_POLICY,
        "user_stats",
        {"user_id": 2},
        {"ctr_7d": 0.5, "orders_30d": 3, "is_premium": False},
        now - 10 * HOUR,
    )
    put_entity(
        url,
        EXAMPLE_POLICY,
        "user_item",
        {"user_id": 1, "item_id": "i1"},
        {"affinity": 0.75},
        now - HOUR // 6,
    )
    put_entity(
        url,
        EXAMPLE_POLICY,
        "user_item",
        {"user_id": 2, "item_id": "i2"},
        {"affinity": 0.125},
        now - 2 * HOUR,
    )
    issuer = TokenIssuer(tmp_path)
    sidecar = sidecar_factory(
        redis=url,
        bundle=str(EXAMPLE_POLICY),
        listen=[f"unix:{tmp_path}/s.sock"],
        **issuer.settings(),
    )
    _, client = stub(sidecar.address)
    return {"client": client, "issuer": issuer, "now": now, "sidecar": sidecar, "url": url}


def _as(world: dict[str, Any], principal: str, groups: tuple[str, ...] = ()) -> list[Any]:
    return bearer(world["issuer"].token(principal, groups))


def _get(world: dict[str, Any], who: list[Any], message: pb.GetFeaturesRequest) -> Any:
    return world["client"].GetFeatures(message, metadata=who, timeout=10)


def test_feature_service_returns_every_status_and_the_rules(world: dict[str, Any]) -> None:
    response = _get(
        world,
        _as(world, RANKER),
        request(
            service="ranking_v3",
            entities={"user_id": [1, 2, 3, 4], "item_id": ["i1", "i2", "i3", "i4"]},
        ),
    )
    assert list(response.feature_names) == [
        "user_profile:age",
        "user_profile:embedding",
        "user_stats:ctr_7d",
        "user_stats:orders_30d",
        "user_stats:is_premium",
        "user_item:affinity",
    ]
    assert response.row_count == 4
    assert response.policy_revision == 0
    cols = by_name(response)
    age = cols["user_profile:age"]
    assert column_values(age) == [34, None, None, None]
    assert statuses(age) == ["PRESENT", "NULL_VALUE", "NOT_FOUND", "STALE"]
    assert age.type == pb.INT64
    embedding = cols["user_profile:embedding"]
    assert column_values(embedding) == [EMBEDDING, None, None, None]
    assert statuses(embedding) == ["PRESENT", "NULL_VALUE", "NOT_FOUND", "STALE"]
    # user_stats: rule max_age 6h and default 0 (false for the bool); user 2 is 10 h old.
    ctr = cols["user_stats:ctr_7d"]
    assert statuses(ctr) == ["PRESENT", "STALE", "NOT_FOUND", "NOT_FOUND"]
    assert column_values(ctr) == [0.25, 0.0, 0.0, 0.0]
    assert ctr.has_default
    assert column_values(cols["user_stats:orders_30d"]) == [7, 0, 0, 0]
    assert column_values(cols["user_stats:is_premium"]) == [True, False, False, False]
    affinity = cols["user_item:affinity"]
    assert statuses(affinity) == ["PRESENT", "STALE", "NOT_FOUND", "NOT_FOUND"]
    assert column_values(affinity) == [0.75, None, None, None]
    assert not affinity.has_default
    stamps = timestamps(age)
    assert stamps[0] == world["now"] - HOUR
    assert stamps[2] == 0


def test_features_come_back_in_request_order(world: dict[str, Any]) -> None:
    response = _get(
        world,
        _as(world, "x", ("data-science",)),
        request(
            ["user_stats:orders_30d", "user_profile:country", "user_profile:age"],
            {"user_id": [2, 1]},
        ),
    )
    assert list(response.feature_names) == [
        "user_stats:orders_30d",
        "user_profile:country",
        "user_profile:age",
    ]
    assert [column_values(c) for c in response.columns] == [[0, 7], ["FR", "DE"], [None, 34]]


def test_empty_batch_is_an_empty_answer(world: dict[str, Any]) -> None:
    response = _get(world, _as(world, RANKER), request(["user_profile:age"], {"user_id": []}))
    assert response.row_count == 0
    assert column_values(response.columns[0]) == []
    assert response.columns[0].statuses == b""


@pytest.mark.parametrize(
    ("message", "code", "details"),
    [
        (
            request(["user_profile:agee"], {"user_id": [1]}),
            grpc.StatusCode.NOT_FOUND,
            "features[0]: view 'user_profile' has no feature 'agee'",
        ),
        (
            request(["user_profil:age"], {"user_id": [1]}),
            grpc.StatusCode.NOT_FOUND,
            "features[0]: unknown feature view 'user_profil' in 'user_profil:age'",
        ),
        (
            request(service="ranking_v9", entities={"user_id": [1]}),
            grpc.StatusCode.NOT_FOUND,
            "feature_service: unknown feature service 'ranking_v9'",
        ),
        (
            request(["user_profile"], {"user_id": [1]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "features[0]: 'user_profile' is not a feature reference of the form 'view:feature'",
        ),
        (
            request(["user_profile:age:x"], {"user_id": [1]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "features[0]: 'user_profile:age:x' is not a feature reference of the form "
            "'view:feature'",
        ),
        (
            request(["user_profile:age", "user_profile:age"], {"user_id": [1]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "features[1]: 'user_profile:age' is requested twice",
        ),
        (
            request([], {"user_id": [1]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "features: name at least one feature, or set feature_service",
        ),
        (
            request(["user_profile:age"], {"user_id": [1]}, service="ranking_v3"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "features and feature_service are exclusive: set one of them, not both",
        ),
        (
            request(["user_item:affinity"], {"user_id": [1, 2], "item_id": ["a"]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "entities.user_id: has 2 values but entities.item_id has 1; every join key needs one "
            "value per row",
        ),
        (
            request(["user_profile:age"], {"user_id": ["1"]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "entities.user_id: join key 'user_id' takes int64 values, "
            "but the request carries string "
            "values",
        ),
        (
            request(["user_item:affinity"], {"user_id": [1], "item_id": [5]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "entities.item_id: join key 'item_id' takes string values, "
            "but the request carries int64 "
            "values",
        ),
        (
            request(["user_item:affinity"], {"user_id": [1]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "entities: missing join key 'item_id', needed by feature view 'user_item'",
        ),
        (
            request(["user_profile:age"], {}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "entities: missing join key 'user_id', needed by feature view 'user_profile'",
        ),
        (
            request(["user_profile:age"], {"userid": [1]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "entities.userid: unknown join key (the catalog has: item_id, user_id)",
        ),
    ],
)
def test_bad_requests_get_the_right_code_and_one_clear_sentence(
    world: dict[str, Any], message: pb.GetFeaturesRequest, code: grpc.StatusCode, details: str
) -> None:
    who = _as(world, "x", ("data-science",))
    assert code_of(lambda: _get(world, who, message)) == (code, details)


def test_an_entity_column_without_values_is_invalid(world: dict[str, Any]) -> None:
    message = request(["user_profile:age"])
    message.entities["user_id"].SetInParent()
    assert code_of(lambda: _get(world, _as(world, RANKER), message)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "entities.user_id: no values; set int64_values or string_values",
    )


def test_list_features_shows_the_catalog_entries(world: dict[str, Any]) -> None:
    response = world["client"].ListFeatures(
        pb.ListFeaturesRequest(view="user_profile"),
        metadata=_as(world, "x", ("data-science",)),
        timeout=10,
    )
    refs = [f.ref for f in response.features]
    assert refs == ["user_profile:age", "user_profile:country", "user_profile:embedding"]
    age = response.features[0]
    assert (age.view, age.name, age.type, age.description, age.owner, list(age.tags)) == (
        "user_profile",
        "age",
        pb.INT64,
        "Age in whole years",
        "growth",
        ["demographic"],
    )
    assert list(age.entities) == ["user"]
    assert list(age.join_keys) == ["user_id"]
    assert age.max_age_seconds == 7 * 24 * 3600

    assert response.features[2].dim == 32
    assert response.features[2].type == pb.FLOAT_LIST
    assert [(e.name, [(k.name, k.type) for k in e.join_keys]) for e in response.entities] == [
        ("user", [("user_id", pb.INT64)]),
        ("item", [("item_id", pb.STRING)]),
    ]
    tagged = world["client"].ListFeatures(
        pb.ListFeaturesRequest(tag="demographic"),
        metadata=_as(world, "x", ("data-science",)),
        timeout=10,
    )
    assert [f.ref for f in tagged.features] == ["user_profile:age"]
    assert code_of(
        lambda: world["client"].ListFeatures(
            pb.ListFeaturesRequest(view="nope"), metadata=_as(world, RANKER), timeout=10
        )
    ) == (grpc.StatusCode.NOT_FOUND, "view: unknown feature view 'nope'")


def test_bytes_that_are_no_request_are_an_invalid_argument(world: dict[str, Any]) -> None:
    channel = grpc.insecure_channel(world["sidecar"].address)
    raw = channel.unary_unary("/featuresidecar.v1.FeatureService/GetFeatures")
    token = _as(world, RANKER)
    assert code_of(lambda: raw(b"\xff\xff\xff\xff", metadata=token, timeout=5)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request is not a valid featuresidecar.v1.GetFeaturesRequest message",
    )
    listing = channel.unary_unary("/featuresidecar.v1.FeatureService/ListFeatures")
    assert code_of(lambda: listing(b"\x0a\x05ab", metadata=token, timeout=5))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    channel.close()


def _raw_timestamp(seconds: int) -> bytes:
    """google.protobuf.Timestamp bytes of any int64 seconds, as another writer may store."""
    value, out = seconds & (2**64 - 1), bytearray(b"\x08")
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


ODD_TIMES = {
    "year 9999": 253_402_300_799,
    "1e10 s": 10**10,
    "INT64_MIN s": -(2**63),
    "-9e9 s": -9 * 10**9,
}


@pytest.mark.parametrize("rows", ["one at a time", "together"])
def test_odd_stored_event_times_are_stale_and_touch_no_other_row(
    redis_server: LocalRedis, sidecar_factory: Any, rows: str
) -> None:
    now = time.time_ns()
    users = {name: 100 + n for n, name in enumerate(ODD_TIMES)}
    put_entity(redis_server.url, EXAMPLE_POLICY, "user_stats", {"user_id": 1}, {"ctr_7d": 0.5}, now)
    for name, user in users.items():
        put_entity(
            redis_server.url, EXAMPLE_POLICY, "user_stats", {"user_id": user}, {"ctr_7d": 0.9}, None
        )
        key = redis_key(CATALOG.views["user_stats"].join_keys, [user], "demo")
        client = redis.Redis.from_url(redis_server.url)
        client.hset(key, ts_field_of("user_stats"), _raw_timestamp(ODD_TIMES[name]))
        client.close()
    sidecar = sidecar_factory(
        redis=redis_server.url, bundle=str(EXAMPLE_POLICY), workload_principal=RANKER
    )
    _, stub_ = stub(sidecar.address)
    # user_stats: 6 h maximum age, default 0; ranking reads ctr_7d (a double: the fast path)
    # and orders_30d (an int64: the general path).
    features = ["user_stats:ctr_7d", "user_stats:orders_30d"]
    batches = (
        [[1, u] for u in users.values()] if rows == "one at a time" else [[1, *users.values()]]
    )
    for batch in batches:
        response = stub_.GetFeatures(request(features, {"user_id": batch}), timeout=5)
        ctr, orders = by_name(response).values()
        assert statuses(ctr) == ["PRESENT"] + ["STALE"] * (len(batch) - 1)
        assert column_values(ctr) == [0.5] + [0.0] * (len(batch) - 1)
        assert timestamps(ctr)[0] == now
        assert statuses(orders) == ["NOT_FOUND"] * len(batch)
    # Single rows take their own path.
    for user in users.values():
        response = stub_.GetFeatures(request(features[:1], {"user_id": [user]}), timeout=5)
        assert statuses(response.columns[0]) == ["STALE"]


def test_the_longest_maximum_age_a_policy_may_set_serves_without_overflow(
    redis_server: LocalRedis, sidecar_factory: Any, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        EXAMPLE_POLICY.read_text()
        .replace("max_age: 1d", "max_age: 36500d")  # 100 years: the parser's limit
        .replace("max_age: 6h ", "max_age: 36500d")
    )
    put_entity(redis_server.url, policy, "user_stats", {"user_id": 1}, {"ctr_7d": 0.5}, 10**18)
    sidecar = sidecar_factory(redis=redis_server.url, bundle=str(policy), workload_principal=RANKER)
    _, stub_ = stub(sidecar.address)
    for users in ([1], [1, 2]):
        message = request(["user_stats:ctr_7d", "user_stats:orders_30d"], {"user_id": users})
        ctr, _ = by_name(stub_.GetFeatures(message, timeout=5)).values()
        assert statuses(ctr)[0] == "PRESENT"  # stored in 2001


LONG = "x" * 20_000
CUT = f"{'x' * 80!r}… (20000 characters)"


@pytest.mark.parametrize(
    ("message", "code", "details"),
    [
        (
            request([f"user_stats:{LONG}"], {"user_id": [1]}),
            grpc.StatusCode.NOT_FOUND,
            f"features[0]: view 'user_stats' has no feature {CUT}",
        ),
        (
            request([f"{LONG}:ctr_7d"], {"user_id": [1]}),
            grpc.StatusCode.NOT_FOUND,
            f"features[0]: unknown feature view {CUT} in {'x' * 80!r}… (20007 characters)",
        ),
        (
            request(["user_stats:ctr_7d"], {LONG: [1]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"entities.{'x' * 80}…: unknown join key (the catalog has: item_id, user_id)",
        ),
        (
            request([], {"user_id": [1]}, service=LONG),
            grpc.StatusCode.NOT_FOUND,
            f"feature_service: unknown feature service {CUT}",
        ),
    ],
)
def test_errors_echo_at_most_80_characters_of_the_callers_input(
    world: dict[str, Any], message: pb.GetFeaturesRequest, code: grpc.StatusCode, details: str
) -> None:
    who = _as(world, "x", ("data-science",))
    assert code_of(lambda: _get(world, who, message)) == (code, details)


def test_a_long_principal_and_a_long_list_of_denied_features_are_cut(
    world: dict[str, Any],
) -> None:
    who = _as(world, "x" * 5000, ())  # a principal with no role: every feature denied
    features = list(CATALOG.features)
    code, details = code_of(lambda: _get(world, who, request(features, {"user_id": [1]})))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == (
        f"principal {'x' * 80!r}… (5000 characters) holds no role in this policy and may not "
        f"read: {', '.join(features)}"
    )
    names = [f"view:feature_{n}" for n in range(5000)]
    assert listed(names) == ", ".join(names[:10]) + " and 4990 more"


def test_list_features_reports_the_maximum_age_enforced_for_the_caller(
    world: dict[str, Any],
) -> None:
    # The view user_stats keeps values for 1 d; a rule tightens its features to 6 h.
    response = world["client"].ListFeatures(
        pb.ListFeaturesRequest(view="user_stats"),
        metadata=_as(world, "x", ("data-science",)),
        timeout=10,
    )
    assert {f.ref: f.max_age_seconds for f in response.features} == {
        "user_stats:ctr_7d": 6 * 3600,
        "user_stats:orders_30d": 6 * 3600,
        "user_stats:is_premium": 6 * 3600,
    }
    # ... and so it is enforced: a value 7 hours old is STALE.
    seven_hours = world["now"] - 7 * HOUR
    put_entity(
        world["url"], EXAMPLE_POLICY, "user_stats", {"user_id": 77}, {"ctr_7d": 0.1}, seven_hours
    )
    who = _as(world, "x", ("data-science",))
    column = _get(world, who, request(["user_stats:ctr_7d"], {"user_id": [77]})).columns[0]
    assert statuses(column) == ["STALE"]
