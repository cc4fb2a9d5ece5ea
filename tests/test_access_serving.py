"""Access decisions and serving rules, seen by callers through real gRPC."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import (
    EXAMPLE_POLICY,
    MASK_KEY_FILE,
    TokenIssuer,
    bearer,
    by_name,
    code_of,
    column_values,
    put_entity,
    request,
    statuses,
    stub,
)

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar_server.bundle_format import content_digest
from featuresidecar_server.codec import encode_value
from featuresidecar_server.valuetypes import KINDS

HOUR = 3600 * 10**9
RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"

RULES_POLICY = """
version: 1
project: shop
catalog:
  entities:
    - name: user
      join_keys: [{name: user_id, type: int64}]
  views:
    - name: profile
      entities: [user]
      features:
        - {name: email, type: string, tags: [pii]}
        - {name: phone, type: string, tags: [pii]}
        - {name: age, type: int64}
        - {name: ctr_1d, type: double}
        - {name: ctr_7d, type: double}
        - {name: score, type: double}
  services:
    - name: scoring
      features: ["profile:score"]
roles:
  - name: by-glob
    allow: ["*:ctr_*"]
  - name: by-service
    allow: ["service:scoring"]
  - name: by-tag
    allow: ["tag:pii"]
  - name: everything
    allow: ["profile:*"]
  - name: no-phone
    deny: ["profile:phone"]
rules:
  - match: {features: ["profile:phone"]}
    mask: redact
  - match: {features: ["tag:pii"]}
    mask: hash
  - match: {features: ["profile:age"], roles: [by-tag]}
    default: -1
  - match: {features: ["profile:age"]}
    default: 0
limits:
  - roles: [everything]
    max_entities: 3
bindings:
  - {principal: glob, roles: [by-glob]}
  - {principal: service, roles: [by-service]}
  - {principal: tag, roles: [by-tag, everything]}
  - {principal: all, roles: [everything]}
  - {principal: all-but-phone, roles: [everything, no-phone]}
"""


@pytest.fixture
def example(redis_server: Any, sidecar_factory: Any, tmp_path: Path) -> dict[str, Any]:
    now = time.time_ns()
    for user, email in ((1, "a@example.com"), (2, "b@example.com"), (3, "a@example.com")):
        put_entity(
            redis_server.url,
            EXAMPLE_POLICY,
            "user_profile",
            {"user_id": user},
            {"age": 30 + user, "country": "DE", "email": email, "embedding": [0.0] * 32},
            now - HOUR,
        )
    issuer = TokenIssuer(tmp_path)
    sidecar = sidecar_factory(
        redis=redis_server.url, bundle=str(EXAMPLE_POLICY), **issuer.settings()
    )
    _, client = stub(sidecar.address)
    return {"client": client, "issuer": issuer, "sidecar": sidecar}


def _call(ctx: dict[str, Any], principal: str, message: Any, groups: tuple[str, ...] = ()) -> Any:
    token = ctx["issuer"].token(principal, groups)
    return ctx["client"].GetFeatures(message, metadata=bearer(token), timeout=10)


def test_deny_wins_over_allow(example: dict[str, Any]) -> None:
    # analyst: allow "*:*", deny "tag:pii"
    message = request(["user_profile:age", "user_profile:email"], {"user_id": [1]})
    assert code_of(lambda: _call(example, "ana", message, ("data-science",))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "principal 'ana' may not read: user_profile:email",
    )


def test_deny_by_default_for_a_principal_without_roles(example: dict[str, Any]) -> None:
    message = request(["user_profile:age"], {"user_id": [1]})
    assert code_of(lambda: _call(example, "stranger", message)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "principal 'stranger' holds no role in this policy and may not read: user_profile:age",
    )


def test_allow_partial_serves_what_is_allowed_and_marks_the_rest_denied(
    example: dict[str, Any],
) -> None:
    message = request(
        ["user_profile:email", "user_profile:age"], {"user_id": [1, 2]}, allow_partial=True
    )
    response = _call(example, RANKER, message)
    cols = by_name(response)
    assert statuses(cols["user_profile:email"]) == ["DENIED", "DENIED"]
    assert column_values(cols["user_profile:email"]) == [None, None]
    assert column_values(cols["user_profile:age"]) == [31, 32]


def test_mask_hash_is_keyed_stable_and_joinable(example: dict[str, Any]) -> None:
    message = request(["user_profile:email", "user_profile:country"], {"user_id": [1, 2, 3, 9]})
    first = _call(example, "support-console", message)
    second = _call(example, "support-console", message)
    email = by_name(first)["user_profile:email"]
    assert statuses(email) == ["MASKED", "MASKED", "MASKED", "NOT_FOUND"]
    assert email.type == pb.STRING
    assert email.mask == pb.MASK_HASH
    hashes = column_values(email)
    assert hashes[0] == hashes[2] != hashes[1]
    assert hashes[3] is None
    assert column_values(by_name(second)["user_profile:email"]) == hashes
    # The key comes from the sidecar's secret and the bundle digest: equal values, equal hashes.
    digest = content_digest(EXAMPLE_POLICY.read_text())
    secret = Path(MASK_KEY_FILE).read_bytes().strip()
    key = hmac.new(secret, f"mask:{digest}".encode(), hashlib.sha256).digest()
    expected = hmac.new(key, encode_value("a@example.com", KINDS["string"]), hashlib.sha256)
    assert hashes[0] == expected.hexdigest()[:32]
    assert column_values(by_name(first)["user_profile:country"]) == ["DE", "DE", "DE", None]


def test_max_entities_limit(example: dict[str, Any]) -> None:
    message = request(["user_profile:age"], {"user_id": list(range(1001))})
    assert code_of(lambda: _call(example, RANKER, message)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "entities: 1001 rows exceed this caller's limit of 1000 per request; split the batch",
    )
    ok = _call(example, RANKER, request(["user_profile:age"], {"user_id": list(range(1000))}))
    assert ok.row_count == 1000


def test_requests_per_second_limit_gives_a_retry_hint(example: dict[str, Any]) -> None:
    message = request(["user_profile:age"], {"user_id": [1]})
    token = example["issuer"].token("ana", ("data-science",))
    client = example["client"]
    limited = None
    for count in range(1, 200):
        try:
            client.GetFeatures(message, metadata=bearer(token), timeout=10)
        except grpc.RpcError as exc:
            limited = (count, exc)
            break
    assert limited is not None
    count, exc = limited
    # A bucket of 50 that refills at 50/s while calls take time: at least 50 pass first.
    assert count > 50
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert exc.details().startswith("principal 'ana' is over its limit of 50 requests per second")
    trailing = dict(exc.trailing_metadata())
    assert 1 <= int(trailing["retry-after-ms"]) <= 20
    # Other principals have their own budget (and the ranker has no rate limit).
    assert _call(example, RANKER, message).row_count == 1


def test_list_features_lists_only_what_the_caller_may_read(example: dict[str, Any]) -> None:
    def listed(principal: str, groups: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
        token = example["issuer"].token(principal, groups)
        response = example["client"].ListFeatures(
            pb.ListFeaturesRequest(), metadata=bearer(token), timeout=10
        )
        return [f.ref for f in response.features], [s.name for s in response.feature_services]

    assert listed(RANKER) == (
        [
            "user_profile:age",
            "user_profile:embedding",
            "user_stats:ctr_7d",
            "user_stats:orders_30d",
            "user_stats:is_premium",
            "user_item:affinity",
        ],
        ["ranking_v3"],
    )
    assert listed("support-console") == (
        [
            "user_profile:age",
            "user_profile:country",
            "user_profile:email",
            "user_profile:embedding",
            "user_stats:is_premium",
        ],
        [],
    )
    everything_but_pii = listed("ana", ("data-science",))
    assert "user_profile:email" not in everything_but_pii[0]
    assert len(everything_but_pii[0]) == 7
    assert everything_but_pii[1] == ["ranking_v3"]
    assert listed("stranger") == ([], [])


@pytest.fixture
def rules(redis_server: Any, sidecar_factory: Any, tmp_path: Path) -> dict[str, Any]:
    policy = tmp_path / "rules.yaml"
    policy.write_text(RULES_POLICY)
    now = time.time_ns()
    put_entity(
        redis_server.url,
        policy,
        "profile",
        {"user_id": 1},
        {
            "email": "x@example.com",
            "phone": "+49 1",
            "age": 40,
            "ctr_1d": 0.1,
            "ctr_7d": 0.2,
            "score": 0.9,
        },
        now - HOUR,
    )
    issuer = TokenIssuer(tmp_path)
    sidecar = sidecar_factory(redis=redis_server.url, bundle=str(policy), **issuer.settings())
    _, client = stub(sidecar.address)
    return {"client": client, "issuer": issuer}


def _readable(ctx: dict[str, Any], principal: str) -> list[str]:
    refs = [
        "profile:email",
        "profile:phone",
        "profile:age",
        "profile:ctr_1d",
        "profile:ctr_7d",
        "profile:score",
    ]
    response = _call(ctx, principal, request(refs, {"user_id": [1]}, allow_partial=True))
    return [r for r, c in zip(refs, response.columns, strict=True) if statuses(c) != ["DENIED"]]


def test_every_selector_kind(rules: dict[str, Any]) -> None:
    assert _readable(rules, "glob") == ["profile:ctr_1d", "profile:ctr_7d"]
    assert _readable(rules, "service") == ["profile:score"]
    assert _readable(rules, "all-but-phone") == [
        "profile:email",
        "profile:age",
        "profile:ctr_1d",
        "profile:ctr_7d",
        "profile:score",
    ]


def test_redact_and_hash_first_matching_rule_wins_per_setting(rules: dict[str, Any]) -> None:
    response = _call(
        rules,
        "all",
        request(["profile:phone", "profile:email", "profile:age"], {"user_id": [1, 2]}),
    )
    cols = by_name(response)
    phone = cols["profile:phone"]
    # Rule 0 (redact) comes before rule 1 (hash, which also matches tag:pii).
    assert statuses(phone) == ["MASKED", "NOT_FOUND"]
    assert phone.mask == pb.MASK_REDACT
    assert phone.type == pb.STRING
    assert column_values(phone) == [None, None]
    assert list(phone.strings) == ["", ""]
    assert cols["profile:email"].mask == pb.MASK_HASH
    assert len(column_values(cols["profile:email"])[0]) == 32
    # Default: rule 3 applies to everybody; rule 2 only to holders of by-tag.
    assert column_values(cols["profile:age"]) == [40, 0]


def test_rule_roles_limit_which_callers_a_rule_applies_to(rules: dict[str, Any]) -> None:
    response = _call(rules, "tag", request(["profile:age"], {"user_id": [1, 2]}))
    assert column_values(response.columns[0]) == [40, -1]
    assert statuses(response.columns[0]) == ["PRESENT", "NOT_FOUND"]


def test_limit_applies_to_its_roles_only(rules: dict[str, Any]) -> None:
    message = request(["profile:ctr_1d"], {"user_id": [1, 2, 3, 4]})
    assert code_of(lambda: _call(rules, "all", message))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _call(rules, "glob", message).row_count == 4


def test_the_sidecar_caps_entities_per_request_whatever_the_policy(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        workload_principal=RANKER,
        max_request_entities=10,
    )
    _, client = stub(sidecar.address)
    assert (
        client.GetFeatures(
            request(["user_profile:age"], {"user_id": list(range(10))}), timeout=5
        ).row_count
        == 10
    )
    assert code_of(
        lambda: client.GetFeatures(
            request(["user_profile:age"], {"user_id": list(range(11))}), timeout=5
        )
    ) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "entities.user_id: 11 rows exceed the sidecar's limit of 10 per request "
        "(--max-request-entities); split the batch",
    )
