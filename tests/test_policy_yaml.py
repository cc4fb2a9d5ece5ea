"""The policy format: every key of the example parses; every mistake names its line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import EXAMPLE_POLICY

from featuresidecar_server.config import ConfigError, read_config_file
from featuresidecar_server.policy import NO_DEFAULT
from featuresidecar_server.policy_yaml import PolicyError, parse_duration, parse_policy

BASE = """\
version: 1
project: demo
catalog:
  entities:
    - name: user
      join_keys:
        - {name: user_id, type: int64}
  views:
    - name: stats
      entities: [user]
      max_age: 1d
      features:
        - {name: ctr, type: double, tags: [kpi]}
        - {name: n, type: int64}
roles:
  - name: reader
    allow: ["stats:*"]
"""


def test_the_example_policy_parses_completely() -> None:
    policy = parse_policy(EXAMPLE_POLICY.read_text(), "policy-example.yaml")
    assert policy.project == "demo"
    assert [e.name for e in policy.catalog.entities] == ["user", "item"]
    assert [v.name for v in policy.catalog.views] == ["user_profile", "user_stats", "user_item"]
    assert policy.catalog.views[0].max_age == 7 * 86400
    embedding = policy.catalog.views[0].features[3]
    assert (embedding.kind.name, embedding.dim, embedding.owner) == ("float_list", 32, "ranking")
    assert policy.catalog.services[0].selectors == (
        "user_profile:age",
        "user_profile:embedding",
        "user_stats:*",
        "user_item:affinity",
    )
    assert [r.name for r in policy.roles] == ["ranking-model", "support-tool", "analyst"]
    assert policy.roles[2].deny == ("tag:pii",)
    assert policy.rules[0].mask == "hash" and policy.rules[0].roles == ("support-tool",)
    assert policy.rules[1].max_age == 6 * 3600 and policy.rules[1].default == 0
    assert policy.rules[1].roles is None and policy.rules[0].default is NO_DEFAULT
    assert [(lim.max_entities, lim.requests_per_second) for lim in policy.limits] == [
        (1000, None),
        (None, 50.0),
    ]
    assert [(b.principal, b.group, b.roles) for b in policy.bindings] == [
        ("spiffe://cluster.local/ns/ml/sa/ranker", None, ("ranking-model",)),
        ("support-console", None, ("support-tool",)),
        (None, "data-science", ("analyst",)),
    ]
    assert [(t.expect, t.groups) for t in policy.tests] == [
        ("allow", ()),
        ("deny", ()),
        ("deny", ("data-science",)),
        ("mask", ()),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("type: double", "type: doubel"),
            "p.yaml:13: catalog.views[0].features[0].type: unknown type 'doubel' (known: bytes, "
            "bytes_list, string, string_list, int32, int32_list, int64, int64_list, double, "
            "double_list, float, float_list, bool, bool_list, timestamp, timestamp_list)",
        ),
        (
            ("max_age: 1d", "max_age: 1 day"),
            "p.yaml:11: catalog.views[0].max_age: '1 day' is not a duration (use a number with a "
            "unit: ms, s, m, h, d, w; e.g. '6h')",
        ),
        (
            ("entities: [user]", "entities: [usr]"),
            "p.yaml:10: catalog.views[0].entities[0]: unknown entity 'usr' (known: user)",
        ),
        (
            ("max_age: 1d", "max_ages: 1d"),
            "p.yaml:11: catalog.views[0].max_ages: unknown key (expected one of: description, "
            "entities, features, max_age, name, owner, tags)",
        ),
        (
            ('allow: ["stats:*"]', 'allow: ["stat:*"]'),
            "p.yaml:17: roles[0].allow[0]: selector 'stat:*' matches no feature of the catalog",
        ),
        (
            ('allow: ["stats:*"]', 'allow: ["stats"]'),
            "p.yaml:17: roles[0].allow[0]: selector 'stats' must be 'view:feature', 'service:NAME' "
            "or 'tag:TAG'",
        ),
        (
            ("version: 1", "version: 2"),
            "p.yaml:1: version: unsupported format version 2 (this sidecar reads 1)",
        ),
        (
            ("project: demo", "project: [demo]"),
            "p.yaml:2: project: expected a non-empty string, got a list",
        ),
        (
            ("type: int64}\n", "type: float}\n"),
            "p.yaml:7: catalog.entities[0].join_keys[0].type: a join key cannot have type 'float' "
            "(use one of: bytes, int32, int64, string)",
        ),
        (
            (
                "  views:",
                "  views:\n    - name: stats\n      entities: [user]\n      features: "
                "[{name: x, type: bool}]",
            ),
            "p.yaml:12: catalog.views[1].name: view 'stats' is defined twice",
        ),
        (
            ("    allow:", "    description: 3\n    allow:"),
            "p.yaml:17: roles[0].description: expected a non-empty string, got int 3",
        ),
        (
            ("  views:\n", "  views: []\n  old_views:\n"),
            "p.yaml:9: catalog.old_views: unknown key (expected one of: entities, services, views)",
        ),
        (
            ("- name: reader", "- name: reader\n  - name: reader"),
            "p.yaml:17: roles[1].name: role 'reader' is defined twice",
        ),
    ],
)
def test_mistakes_name_the_line_and_key(change: tuple[str, str], message: str) -> None:
    text = BASE.replace(*change, 1)
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "p.yaml")
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "rules:\n  - match: {features: ['stats:ctr']}\n",
            "p.yaml:19: rules[0]: a rule must set at least one of: mask, max_age, default",
        ),
        (
            "rules:\n  - match: {features: ['stats:ctr']}\n    mask: blur\n",
            "p.yaml:20: rules[0].mask: unknown mask 'blur' (expected 'hash' or 'redact')",
        ),
        (
            "rules:\n  - match: {features: ['stats:*']}\n    default: yes-please\n",
            "p.yaml:20: rules[0].default: not a valid default for stats:ctr: "
            "expected a number, got "
            "str 'yes-please'",
        ),
        (
            "rules:\n  - match: {features: ['stats:ctr'], roles: [writer]}\n    mask: hash\n",
            "p.yaml:19: rules[0].match.roles[0]: unknown role 'writer' (known: reader)",
        ),
        (
            "bindings:\n  - {principal: a, group: b, roles: [reader]}\n",
            "p.yaml:19: bindings[0]: a binding names exactly one of 'principal' or 'group'",
        ),
        (
            "limits:\n  - roles: ['*']\n    max_entities: 0\n",
            "p.yaml:20: limits[0].max_entities: expected a positive integer, got int 0",
        ),
        (
            "limits:\n  - roles: ['*']\n",
            "p.yaml:19: limits[0]: a limit must set max_entities or requests_per_second",
        ),
        (
            "tests:\n  - {principal: a, feature: 'stats:nope', expect: allow}\n",
            "p.yaml:19: tests[0].feature: unknown feature 'stats:nope'",
        ),
        (
            "tests:\n  - {principal: a, feature: 'stats:ctr', expect: maybe}\n",
            "p.yaml:19: tests[0].expect: expect must be 'allow', 'deny' or 'mask', not 'maybe'",
        ),
        ("roles: []\n", "p.yaml:18: duplicate key 'roles'"),
        ("x-notes: {1: one}\n", "p.yaml:18: keys must be strings, got 1"),
    ],
)
def test_policy_section_mistakes(extra: str, message: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy(BASE + extra, "p.yaml")
    assert str(error.value) == message


def test_a_catalog_needs_views() -> None:
    text = BASE[: BASE.index("  views:")] + "  views: []\n"
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "p.yaml")
    assert str(error.value) == "p.yaml:8: catalog.views: the catalog needs at least one view"


def test_not_yaml_at_all() -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy("version: 1\n  project: [\n", "p.yaml")
    assert str(error.value).startswith("p.yaml:2: not valid YAML:")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 604800.0),
        ("6h", 21600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        (90, 90.0),
        ("2w", 1209600.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_worker_loads_neither_the_yaml_parser_nor_the_flag_parser() -> None:
    # A worker activates a bundle from its parsed copy and gets its settings from its start-up
    # message: PyYAML and argparse stay out of its memory.
    code = (
        "import sys, featuresidecar_server.app, featuresidecar_server.workers; "
        "print('yaml' in sys.modules, 'argparse' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (result.returncode, result.stdout.strip()) == (0, "False False")


def test_a_config_file_that_is_not_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("listen: [\n")
    with pytest.raises(ConfigError) as error:
        read_config_file(str(path))
    message = str(error.value)
    assert message.startswith(f"--config {path}: not valid YAML (")
    assert "line 2" in message
