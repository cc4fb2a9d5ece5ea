"""Access decisions (access.py), pinned through the policy test runner and explanations.

Each test writes a small policy, asks the same `Access` that serves calls, and checks the exact
verdict and the exact reason: roles from bindings, deny by default, deny wins, the selectors,
first-matching rule per setting, first-matching limit per setting, and what `expect` means.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from support import EXAMPLE_POLICY

from featuresidecar_server.catalog import Catalog
from featuresidecar_server.explain import (
    BindingRef,
    ExplainError,
    Explanation,
    FeatureExplanation,
    LimitSetting,
    Match,
    RoleGrant,
    as_json,
    explain,
    format_duration,
    render_text,
    resolve_features,
)
from featuresidecar_server.policy import Policy
from featuresidecar_server.policy_tests import run_tests
from featuresidecar_server.policy_yaml import PolicyError, load_policy_file, parse_policy

CATALOG = """\
version: 1
project: t
catalog:
  entities:
    - name: user
      join_keys: [{name: user_id, type: int64}]
  views:
    - name: profile
      entities: [user]
      max_age: 7d
      tags: [people]
      features:
        - {name: age, type: int64}
        - {name: email, type: string, tags: [pii]}
        - {name: phone, type: string, tags: [pii]}
        - {name: ctr_1d, type: double}
    - name: stats
      entities: [user]
      features:
        - {name: ctr_1d, type: double}
        - {name: ctr_7d, type: double}
        - {name: clicks, type: int64}
        - {name: premium, type: bool}
  services:
    - name: svc
      features: ["profile:age", "stats:ctr_*"]
"""

ALL = [
    "profile:age",
    "profile:email",
    "profile:phone",
    "profile:ctr_1d",
    "stats:ctr_1d",
    "stats:ctr_7d",
    "stats:clicks",
    "stats:premium",
]


def policy(rest: str) -> Policy:
    return parse_policy(CATALOG + rest, "p.yaml")


def why(
    p: Policy, feature: str, principal: str | None = "p", groups: Sequence[str] = ()
) -> FeatureExplanation:
    (result,) = explain(p, principal, groups, [feature]).features
    return result


def readable(p: Policy, principal: str | None = "p", groups: Sequence[str] = ()) -> list[str]:
    return [f.ref for f in explain(p, principal, groups, ALL).features if f.verdict != "deny"]


def settings(result: FeatureExplanation) -> dict[str, tuple[object, int | None]]:
    return {s.name: (s.value if s.has_value else "-", s.rule) for s in result.settings}


# --- roles and bindings ---------------------------------------------------------------------------


def test_a_caller_without_a_binding_is_denied_by_default() -> None:
    p = policy(
        'roles:\n  - {name: r, allow: ["*:*"]}\nbindings:\n  - {principal: alice, roles: [r]}\n'
    )
    result = why(p, "profile:age", principal="mallory")
    assert (result.verdict, result.allowed_by, result.denied_by, result.settings) == (
        "deny",
        (),
        (),
        (),
    )
    assert result.reason == (
        "no binding gives this caller a role, so nothing is allowed (deny by default)"
    )
    assert explain(p, "mallory", (), ["profile:age"]).roles == ()


def test_a_role_that_allows_nothing_matching_still_denies() -> None:
    p = policy(
        'roles:\n  - {name: r, allow: ["stats:*"]}\nbindings:\n  - {principal: p, roles: [r]}\n'
    )
    result = why(p, "profile:age")
    assert result.verdict == "deny"
    assert result.reason == "none of the caller's roles allows it (deny by default)"
    assert readable(p) == ["stats:ctr_1d", "stats:ctr_7d", "stats:clicks", "stats:premium"]


def test_roles_come_from_the_principal_and_from_each_group_with_their_bindings() -> None:
    p = policy(
        "roles:\n"
        '  - {name: a, allow: ["profile:age"]}\n'
        '  - {name: b, allow: ["stats:clicks"]}\n'
        '  - {name: c, allow: ["stats:premium"]}\n'
        "bindings:\n"
        "  - {principal: p, roles: [b]}\n"
        "  - {group: g1, roles: [a, b]}\n"
        "  - {group: g2, roles: [c]}\n"
        "  - {principal: someone-else, roles: [c]}\n"
    )
    explained = explain(p, "p", ["g1"], ["profile:age"])
    assert explained.roles == (
        RoleGrant("a", (BindingRef(1, "group", "g1"),)),
        RoleGrant("b", (BindingRef(0, "principal", "p"), BindingRef(1, "group", "g1"))),
    )
    assert str(explained.roles[1].bindings[0]) == "bindings[0] (principal 'p')"
    assert readable(p, "p") == ["stats:clicks"]
    assert readable(p, "p", ["g1"]) == ["profile:age", "stats:clicks"]
    assert readable(p, None, ["g1", "g2"]) == ["profile:age", "stats:clicks", "stats:premium"]


def test_a_group_binding_does_not_apply_to_a_principal_of_the_same_name() -> None:
    p = policy('roles:\n  - {name: r, allow: ["*:*"]}\nbindings:\n  - {group: ops, roles: [r]}\n')
    assert readable(p, "ops") == []
    assert readable(p, None, ["ops"]) == ALL


# --- deny wins ------------------------------------------------------------------------------------


def test_deny_in_one_role_wins_over_allow_in_another() -> None:
    p = policy(
        "roles:\n"
        '  - {name: wide, allow: ["profile:*"]}\n'
        '  - {name: careful, allow: ["stats:clicks"], deny: ["tag:pii"]}\n'
        "bindings:\n"
        "  - {principal: p, roles: [wide, careful]}\n"
    )
    email = why(p, "profile:email")
    assert email.verdict == "deny"
    assert email.allowed_by == (Match("wide", "profile:*"),)
    assert email.denied_by == (Match("careful", "tag:pii"),)
    assert email.reason == "role careful denies it with 'tag:pii', and deny wins over allow"
    assert readable(p) == ["profile:age", "profile:ctr_1d", "stats:clicks"]


def test_deny_alone_allows_nothing() -> None:
    p = policy(
        'roles:\n  - {name: r, deny: ["tag:pii"]}\nbindings:\n  - {principal: p, roles: [r]}\n'
    )
    assert readable(p) == []


# --- selectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("profile:age", ["profile:age"]),
        ("profile:*", ["profile:age", "profile:email", "profile:phone", "profile:ctr_1d"]),
        ("*:ctr_1d", ["profile:ctr_1d", "stats:ctr_1d"]),
        ("*:ctr_*", ["profile:ctr_1d", "stats:ctr_1d", "stats:ctr_7d"]),
        ("stats:ctr_?d", ["stats:ctr_1d", "stats:ctr_7d"]),
        ("*:*", ALL),
        ("service:svc", ["profile:age", "stats:ctr_1d", "stats:ctr_7d"]),
        ("tag:pii", ["profile:email", "profile:phone"]),
        # Tags of a view are tags of each of its features.
        ("tag:people", ["profile:age", "profile:email", "profile:phone", "profile:ctr_1d"]),
    ],
)
def test_selectors_in_allow(selector: str, expected: list[str]) -> None:
    p = policy(
        f'roles:\n  - {{name: r, allow: ["{selector}"]}}\n'
        "bindings:\n  - {principal: p, roles: [r]}\n"
    )
    assert readable(p) == expected
    assert {m.selector for ref in expected for m in why(p, ref).allowed_by} == {selector}


def test_a_glob_matches_case_sensitively() -> None:
    with pytest.raises(PolicyError) as error:
        policy('roles:\n  - {name: r, allow: ["Profile:*"]}\n')
    assert str(error.value) == (
        "p.yaml:28: roles[0].allow[0]: selector 'Profile:*' matches no feature of the catalog"
    )


# --- rules ----------------------------------------------------------------------------------------

RULES = """\
roles:
  - {name: support, allow: ["*:*"]}
  - {name: analyst, allow: ["*:*"]}
rules:
  - match: {features: ["stats:ctr_*"]}
    max_age: 1h
  - match: {features: ["stats:*"]}
    max_age: 6h
    default: 0
  - match: {features: ["tag:pii"], roles: [support]}
    mask: hash
  - match: {features: ["tag:pii"]}
    mask: redact
    max_age: 30m
bindings:
  - {principal: s, roles: [support]}
  - {principal: a, roles: [analyst]}
"""


def test_for_each_setting_the_first_matching_rule_wins() -> None:
    p = policy(RULES)
    ctr = why(p, "stats:ctr_7d", "s")
    # max_age from rules[0]; rules[1] still supplies the default, which rules[0] leaves unset.
    assert settings(ctr) == {"mask": ("-", None), "max_age": (3600.0, 0), "default": (0.0, 1)}
    clicks = why(p, "stats:clicks", "s")
    assert settings(clicks) == {"mask": ("-", None), "max_age": (21600.0, 1), "default": (0, 1)}
    premium = why(p, "stats:premium", "s")
    # `default: 0` on a bool feature is false, typed for that feature.
    assert settings(premium)["default"] == (False, 1)
    assert premium.settings[2].value is False


def test_a_rule_limited_to_roles_is_skipped_for_other_callers() -> None:
    p = policy(RULES)
    support = why(p, "profile:email", "s")
    analyst = why(p, "profile:email", "a")
    assert (support.verdict, settings(support)["mask"]) == ("mask", ("hash", 2))
    assert (analyst.verdict, settings(analyst)["mask"]) == ("mask", ("redact", 3))
    # rules[3] also sets max_age, which no earlier rule set for pii features.
    assert settings(support)["max_age"] == (1800.0, 3)
    assert support.reason == "readable, served masked (hash) by rules[2]"


def test_max_age_is_the_views_when_no_rule_sets_it_and_none_for_a_view_without_one() -> None:
    p = policy(RULES)
    age = why(p, "profile:age", "s")
    assert settings(age) == {
        "mask": ("-", None),
        "max_age": (604800.0, None),
        "default": ("-", None),
    }
    assert age.settings[1].origin == "view profile"
    p2 = policy(
        'roles:\n  - {name: r, allow: ["*:*"]}\nbindings:\n  - {principal: p, roles: [r]}\n'
    )
    premium = why(p2, "stats:premium")
    assert premium.verdict == "allow"
    assert settings(premium)["max_age"] == ("-", None)


def test_a_rule_for_every_role_with_star() -> None:
    p = policy(
        "roles:\n  - {name: r, allow: ['*:*']}\n"
        "rules:\n  - match: {features: ['profile:age'], roles: ['*']}\n    mask: redact\n"
        "bindings:\n  - {principal: p, roles: [r]}\n"
    )
    assert (why(p, "profile:age").verdict, settings(why(p, "profile:age"))["mask"]) == (
        "mask",
        ("redact", 0),
    )


def test_rules_do_not_apply_to_a_denied_feature() -> None:
    p = policy(
        "roles:\n  - {name: r, allow: ['*:*'], deny: ['tag:pii']}\n"
        "rules:\n  - match: {features: ['tag:pii']}\n    mask: hash\n"
        "bindings:\n  - {principal: p, roles: [r]}\n"
    )
    email = why(p, "profile:email")
    assert (email.verdict, email.settings) == ("deny", ())


def test_an_empty_roles_list_in_a_rule_is_an_error_not_a_rule_that_never_applies() -> None:
    with pytest.raises(PolicyError) as error:
        policy(
            "roles:\n  - {name: r, allow: ['*:*']}\n"
            "rules:\n  - match: {features: ['tag:pii'], roles: []}\n    mask: hash\n"
        )
    assert str(error.value) == (
        "p.yaml:30: rules[0].match.roles: an empty list matches no caller; "
        "leave 'roles' out to match every role"
    )


# --- limits ---------------------------------------------------------------------------------------

LIMITS = """\
roles:
  - {name: a, allow: ['*:*']}
  - {name: b, allow: ['*:*']}
limits:
  - {roles: [a], max_entities: 10}
  - {roles: ['*'], max_entities: 1000, requests_per_second: 5}
  - {roles: [a], requests_per_second: 100, burst: 7}
  - {roles: [b], requests_per_second: 0.5}
bindings:
  - {principal: pa, roles: [a]}
  - {principal: pb, roles: [b]}
"""


def test_for_each_limit_setting_the_first_matching_entry_wins() -> None:
    p = policy(LIMITS)
    assert explain(p, "pa", (), ["profile:age"]).limits == (
        LimitSetting("max_entities", 10, None, 0),
        LimitSetting("requests_per_second", 5.0, 5.0, 1),
    )
    assert explain(p, "pb", (), ["profile:age"]).limits == (
        LimitSetting("max_entities", 1000, None, 1),
        LimitSetting("requests_per_second", 5.0, 5.0, 1),
    )
    # "*" applies to every caller, even one without roles.
    assert explain(p, "nobody", (), ["profile:age"]).limits[0] == LimitSetting(
        "max_entities", 1000, None, 1
    )


def test_the_burst_is_the_explicit_one_or_one_seconds_worth_and_at_least_one() -> None:
    p = policy(LIMITS.replace(", requests_per_second: 5}", "}"))
    assert explain(p, "pa", (), ["profile:age"]).limits[1] == LimitSetting(
        "requests_per_second", 100.0, 7.0, 2
    )
    assert explain(p, "pb", (), ["profile:age"]).limits[1] == LimitSetting(
        "requests_per_second", 0.5, 1.0, 3
    )


def test_an_empty_roles_list_in_a_limit_is_an_error() -> None:
    with pytest.raises(PolicyError) as error:
        policy("roles:\n  - {name: a}\nlimits:\n  - {roles: [], max_entities: 3}\n")
    assert str(error.value) == (
        "p.yaml:30: limits[0].roles: a limit needs at least one role (or '*' for every caller)"
    )


# --- the policy's test cases ----------------------------------------------------------------------


CASES = """\
roles:
  - {name: r, allow: ['profile:*'], deny: ['profile:phone']}
rules:
  - match: {features: ['profile:email']}
    mask: hash
bindings:
  - {principal: p, roles: [r]}
  - {group: g, roles: [r]}
tests:
  - {principal: p, feature: 'profile:email', expect: mask}
  - {principal: p, feature: 'profile:email', expect: allow}
  - {principal: p, feature: 'profile:age', expect: allow}
  - {principal: p, feature: 'profile:age', expect: mask}
  - {principal: p, feature: 'profile:phone', expect: deny}
  - {principal: p, feature: 'stats:clicks', expect: allow}
  - {group: g, feature: 'profile:age', expect: allow}
  - {groups: [x, g], feature: 'profile:email', expect: mask}
  - {principal: q, group: g, feature: 'profile:age', expect: deny}
"""


def test_expect_mask_allow_and_deny_mean_what_the_decision_says() -> None:
    report = run_tests(policy(CASES))
    assert [(r.case.index, r.got, r.passed) for r in report.results] == [
        (0, "mask", True),
        (1, "mask", False),
        (2, "allow", True),
        (3, "allow", False),
        (4, "deny", True),
        (5, "deny", False),
        (6, "allow", True),
        (7, "mask", True),
        (8, "allow", False),
    ]
    assert [r.description for r in report.failures] == [
        "tests[1]: principal 'p' reading profile:email: expected allow, got mask",
        "tests[3]: principal 'p' reading profile:age: expected mask, got allow",
        "tests[5]: principal 'p' reading stats:clicks: expected allow, got deny",
        "tests[8]: principal 'q' and group 'g' reading profile:age: expected deny, got allow",
    ]
    assert report.results[7].description == (
        "tests[7]: group 'x' and group 'g' reading profile:email: expected mask, got mask"
    )
    assert (report.passed, report.summary) == (False, "5 passed, 4 failed")


def test_a_group_only_case_gets_exactly_the_groups_roles() -> None:
    result = run_tests(policy(CASES)).results[6]
    assert (result.case.principal, result.case.groups, result.roles) == (None, ("g",), ("r",))


def test_a_policy_without_tests_passes_vacuously() -> None:
    report = run_tests(policy("roles:\n  - {name: r}\n"))
    assert (report.results, report.passed, report.summary) == ((), True, "0 passed, 0 failed")


# --- the example policy ---------------------------------------------------------------------------


def test_every_test_case_of_the_example_policy_passes() -> None:
    example = load_policy_file(str(EXAMPLE_POLICY))
    report = run_tests(example)
    assert [r.description for r in report.results] == [
        "tests[0]: principal 'spiffe://cluster.local/ns/ml/sa/ranker' reading user_profile:age: "
        "expected allow, got allow",
        "tests[1]: principal 'spiffe://cluster.local/ns/ml/sa/ranker' reading user_profile:email: "
        "expected deny, got deny",
        "tests[2]: group 'data-science' reading user_profile:email: expected deny, got deny",
        "tests[3]: principal 'support-console' reading user_profile:email: expected mask, got mask",
    ]
    assert report.passed


def test_the_example_explained_for_the_ranking_model() -> None:
    example = load_policy_file(str(EXAMPLE_POLICY))
    ranker = "spiffe://cluster.local/ns/ml/sa/ranker"
    explained = explain(example, ranker, (), ["service:ranking_v3", "user_profile:email"])
    assert [(f.ref, f.verdict) for f in explained.features] == [
        ("user_profile:age", "allow"),
        ("user_profile:embedding", "allow"),
        ("user_stats:ctr_7d", "allow"),
        ("user_stats:orders_30d", "allow"),
        ("user_stats:is_premium", "allow"),
        ("user_item:affinity", "allow"),
        ("user_profile:email", "deny"),
    ]
    by_ref = {f.ref: f for f in explained.features}
    assert settings(by_ref["user_stats:ctr_7d"]) == {
        "mask": ("-", None),
        "max_age": (21600.0, 1),
        "default": (0.0, 1),
    }
    assert settings(by_ref["user_item:affinity"])["max_age"] == (3600.0, None)
    assert by_ref["user_profile:age"].allowed_by == (Match("ranking-model", "service:ranking_v3"),)


def test_the_example_explained_as_text_for_the_support_console() -> None:
    example = load_policy_file(str(EXAMPLE_POLICY))
    text = render_text(explain(example, "support-console", (), ["user_profile:email"]))
    assert text == (
        "caller: principal 'support-console'\n"
        "roles:\n"
        "  support-tool  from bindings[1] (principal 'support-console')\n"
        "limits:\n"
        "  max_entities 1000  from limits[0]\n"
        "\n"
        "user_profile:email: MASK\n"
        "  why:        readable, served masked (hash) by rules[0]\n"
        "  allowed by: support-tool ('user_profile:*')\n"
        "  denied by:  none\n"
        "  mask:       hash, set by rules[0] (features: tag:pii; roles: support-tool)\n"
        "  max_age:    7d, from view user_profile (no rule sets it)\n"
        "  default:    none (no rule sets it)\n"
    )


def test_the_example_explained_as_json_for_an_analyst() -> None:
    example = load_policy_file(str(EXAMPLE_POLICY))
    explained: Explanation = explain(
        example, None, ["data-science"], ["user_profile:email", "user_stats:is_premium"]
    )
    document = as_json(explained)
    assert document["caller"] == {"principal": None, "groups": ["data-science"]}
    assert document["roles"] == [
        {"role": "analyst", "bindings": [{"index": 2, "group": "data-science"}]}
    ]
    assert document["limits"] == [
        {"setting": "max_entities", "value": 1000, "burst": None, "limit": 0},
        {"setting": "requests_per_second", "value": 50.0, "burst": 50.0, "limit": 1},
    ]
    email, premium = document["features"]
    assert email == {
        "feature": "user_profile:email",
        "decision": "deny",
        "reason": "role analyst denies it with 'tag:pii', and deny wins over allow",
        "allowed_by": [{"role": "analyst", "selector": "*:*"}],
        "denied_by": [{"role": "analyst", "selector": "tag:pii"}],
        "settings": None,
    }
    rule = "rules[1] (features: user_stats:*; roles: any role)"
    assert premium["settings"] == {
        "mask": {"rule": None, "from": None, "value": None},
        "max_age": {"rule": 1, "from": rule, "value": 21600.0, "text": "6h"},
        "default": {"rule": 1, "from": rule, "value": False},
    }


# --- resolving what to explain --------------------------------------------------------------------


def test_features_to_explain_may_be_refs_or_selectors_without_repeats() -> None:
    catalog = Catalog(policy("roles:\n  - {name: r}\n"))
    assert resolve_features(catalog, ["stats:clicks", "stats:*", "tag:pii", "profile:email"]) == [
        "stats:clicks",
        "stats:ctr_1d",
        "stats:ctr_7d",
        "stats:premium",
        "profile:email",
        "profile:phone",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "stat:clicks",
            "--feature 'stat:clicks': unknown feature view 'stat' (known: profile, stats)",
        ),
        (
            "stats:click",
            "--feature 'stats:click': no feature of view 'stats' matches "
            "(its features: ctr_1d, ctr_7d, clicks, premium)",
        ),
        ("service:nope", "--feature 'service:nope': unknown feature service 'nope' (known: svc)"),
        ("tag:secret", "--feature 'tag:secret': no feature of the catalog matches 'tag:secret'"),
        (
            "clicks",
            "--feature 'clicks': selector 'clicks' must be 'view:feature', 'service:NAME' or "
            "'tag:TAG'",
        ),
    ],
)
def test_an_unknown_feature_is_named_with_what_exists(text: str, message: str) -> None:
    catalog = Catalog(policy("roles:\n  - {name: r}\n"))
    with pytest.raises(ExplainError) as error:
        resolve_features(catalog, [text])
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(604800, "7d"), (21600, "6h"), (5400, "1h30m"), (0.5, "500ms"), (90061.25, "1d1h1m1s250ms")],
)
def test_durations_are_shown_in_the_units_the_policy_reads(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- reserved names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tag", "service"])
def test_a_view_cannot_be_named_like_a_selector_prefix(name: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy(CATALOG.replace("- name: stats", f"- name: {name}"), "p.yaml")
    assert str(error.value) == (
        f"p.yaml:17: catalog.views[1].name: '{name}' cannot be a view name: "
        f"selectors read '{name}:...' as a {name} selector"
    )
