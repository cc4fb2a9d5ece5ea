"""The fixed corpus of nasty policy sources: each case, its exact outcome and message.

Line numbers are those of tests/fixtures/example/policy.yaml (86 lines; an appended line is 87).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hostile_support import alias_bomb, exercise
from support import EXAMPLE_POLICY

from featuresidecar_server import bundle_format
from featuresidecar_server.policy_yaml import PolicyError, parse_policy, plain_data

EXAMPLE = EXAMPLE_POLICY.read_text()
SOURCE = "hostile.yaml"


def _appended(line: str) -> str:
    return EXAMPLE + line + "\n"


def _replaced(old: str, new: str) -> str:
    assert old in EXAMPLE, old
    return EXAMPLE.replace(old, new, 1)


def _nested_block(levels: int) -> str:
    body = "".join("  " * (i + 1) + f"k{i}:\n" for i in range(levels))
    return EXAMPLE + "x-deep:\n" + body + "  " * (levels + 1) + "leaf\n"


# Values PyYAML's constructors cannot build: before the fix each escaped parse_policy as a bare
# ValueError, KeyError, IndexError or AttributeError (and crashed `bundle test` with a traceback).
UNREADABLE_VALUES = {
    "a 5000-digit integer": (
        _appended("x-big: " + "1" * 5000),
        f"{SOURCE}:87: not valid YAML: cannot read '{'1' * 56}... as int: Exceeds the limit "
        "(4300 digits) for integer string conversion: value has 5000 digits",
    ),
    "a date of month 13": (
        _appended("x-date: 2020-13-45"),
        f"{SOURCE}:87: not valid YAML: cannot read '2020-13-45' as timestamp: "
        "month must be in 1..12",
    ),
    "!!int of letters": (
        _appended("x-v: !!int abc"),
        f"{SOURCE}:87: not valid YAML: cannot read 'abc' as int: "
        "invalid literal for int() with base 10: 'abc'",
    ),
    "!!int of nothing": (
        _appended("x-v: !!int ''"),
        f"{SOURCE}:87: not valid YAML: cannot read '' as int",
    ),
    "!!float of letters": (
        _appended("x-v: !!float abc"),
        f"{SOURCE}:87: not valid YAML: cannot read 'abc' as float: "
        "could not convert string to float: 'abc'",
    ),
    "!!bool of a word": (
        _appended("x-v: !!bool maybe"),
        f"{SOURCE}:87: not valid YAML: cannot read 'maybe' as bool",
    ),
    "!!timestamp of a word": (
        _appended("x-v: !!timestamp nonsense"),
        f"{SOURCE}:87: not valid YAML: cannot read 'nonsense' as timestamp",
    ),
    "!!map on a scalar": (
        _appended("x-v: !!map scalar"),
        f"{SOURCE}:87: not valid YAML: cannot read 'scalar' as map",
    ),
    "!!seq on a mapping": (
        _appended("x-v: !!seq {a: 1}"),
        f"{SOURCE}:87: not valid YAML: cannot read a mapping as seq",
    ),
}


@pytest.mark.parametrize("case", list(UNREADABLE_VALUES))
def test_a_value_yaml_cannot_construct_is_a_policy_error_at_its_line(case: str) -> None:
    text, message = UNREADABLE_VALUES[case]
    with pytest.raises(PolicyError) as error:
        parse_policy(text, SOURCE)
    assert str(error.value) == message


STRUCTURE = {
    "a duplicate key": (_appended("project: other"), f"{SOURCE}:87: duplicate key 'project'"),
    "a non-string key": (
        _appended("x-k: {2020-01-01: a}"),
        f"{SOURCE}:87: keys must be strings, got datetime.date(2020, 1, 1)",
    ),
    "an alias inside itself": (
        _appended("x-r: &a [*a]"),
        f"{SOURCE}:87: not valid YAML: found unconstructable recursive node",
    ),
    "an undefined alias": (
        _appended("x-a: *nowhere"),
        f"{SOURCE}:87: not valid YAML: found undefined alias",
    ),
    "a lone surrogate escape": (
        _replaced('"Age in whole years"', '"\\uD800"'),
        f"{SOURCE}:23: not valid YAML: found invalid Unicode character escape code",
    ),
    "a 10,000-level flow nesting": (
        _appended("x-deep: " + "[" * 10_000 + "]" * 10_000),
        f"{SOURCE}:87: not valid YAML: exceeded maximum nesting depth",
    ),
    "a 400-level block nesting": (
        _nested_block(400),
        f"{SOURCE}: not valid YAML: nested too deeply",
    ),
    "a NUL byte in a name": (
        _replaced("project: demo", 'project: "de\\0mo"'),
        f"{SOURCE}:8: project: 'de\\x00mo' is not a valid name (letters, digits, '_' and '-')",
    ),
    "a non-ASCII name": (
        _replaced("project: demo", "project: d\u00e9mo"),
        f"{SOURCE}:8: project: 'd\u00e9mo' is not a valid name (letters, digits, '_' and '-')",
    ),
    "a 1 MiB name": (
        _replaced("project: demo", "project: " + "x" * (1 << 20) + "!"),
        f"{SOURCE}:8: project: '{'x' * 76}... is not a valid name (letters, digits, '_' and '-')",
    ),
    "a 1 MiB type": (
        _replaced("type: int64}", "type: " + "q" * (1 << 20) + "}"),
        f"{SOURCE}:14: catalog.entities[0].join_keys[0].type: unknown type '{'q' * 76}... "
        "(known: bytes, bytes_list, string, string_list, int32, int32_list, int64, int64_list, "
        "double, double_list, float, float_list, bool, bool_list, timestamp, timestamp_list)",
    ),
    "a 100,000-character unknown key": (
        _replaced("  entities:\n", "  " + "k" * 100_000 + ": 1\n  entities:\n"),
        # libyaml reads a key of more than 1024 characters as no key at all.
        f"{SOURCE}:11: not valid YAML: mapping values are not allowed in this context",
    ),
    "a 1,000-character unknown key": (
        _replaced("version: 1\n", "version: 1\nx" + "k" * 999 + ": 1\n"),
        f"{SOURCE}:8: {'x' + 'k' * 76}...: unknown key (expected one of: bindings, catalog, "
        "description, limits, project, roles, rules, tests, version)",
    ),
}


@pytest.mark.parametrize("case", list(STRUCTURE))
def test_nasty_structure_is_a_policy_error_that_names_it(case: str) -> None:
    text, message = STRUCTURE[case]
    with pytest.raises(PolicyError) as error:
        parse_policy(text, SOURCE)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "text",
    [
        _appended("x-deep: " + "[" * 100 + "]" * 100),
        _nested_block(100),
        _appended('x-text: "\\0\\x01\\uFFFF\\U0001F600"'),
        _replaced('"Age in whole years"', '"a\\0b \u4e2d\u6587 \U0001f600"'),
    ],
    ids=["100-level flow nesting", "100-level block nesting", "control characters", "unicode"],
)
def test_nasty_but_valid_sources_parse(text: str) -> None:
    assert parse_policy(text, SOURCE).project == "demo"


# Numbers that parsed before and broke serving later: a view max_age of NaN or infinity
# crashed the catalog (every call INTERNAL), a huge one broke ListFeatures (int64 seconds); a
# NaN rule max_age made GetFeatures and ListFeatures INTERNAL; a dim past uint32 broke
# ListFeatures; a burst past a float broke GetFeatures; a rate of 5e-324 made the retry hint
# infinite (INTERNAL) and a NaN rate switched the limit off.
NUMBERS = {
    "view max_age NaN": (
        _replaced("max_age: 7d", "max_age: .nan"),
        f"{SOURCE}:21: catalog.views[0].max_age: a duration must be positive, got float nan",
    ),
    "view max_age infinite": (
        _replaced("max_age: 7d", "max_age: .inf"),
        f"{SOURCE}:21: catalog.views[0].max_age: float inf is too long a duration "
        "(at most 100 years)",
    ),
    "view max_age of 99999999999999 weeks": (
        _replaced("max_age: 7d", "max_age: 99999999999999w"),
        f"{SOURCE}:21: catalog.views[0].max_age: '99999999999999w' is too long a duration "
        "(at most 100 years)",
    ),
    "view max_age of 10**400 seconds": (
        _replaced("max_age: 7d", "max_age: 1" + "0" * 400),
        f"{SOURCE}:21: catalog.views[0].max_age: an integer of about 401 digits is too long a "
        "duration (at most 100 years)",
    ),
    "rule max_age NaN": (
        _replaced("max_age: 6h", "max_age: .nan"),
        f"{SOURCE}:57: rules[1].max_age: a duration must be positive, got float nan",
    ),
    "dim past uint32": (
        _replaced("dim: 32", "dim: 4294967296"),
        f"{SOURCE}:26: catalog.views[0].features[3].dim: 4294967296 is too large "
        "(at most 4294967295)",
    ),
    "max_entities past int64": (
        _replaced("max_entities: 1000", "max_entities: 9223372036854775808"),
        f"{SOURCE}:62: limits[0].max_entities: 9223372036854775808 is too large "
        "(at most 9223372036854775807)",
    ),
    "burst of 10**400": (
        _replaced("requests_per_second: 50", "requests_per_second: 50\n    burst: 1" + "0" * 400),
        f"{SOURCE}:65: limits[1].burst: an integer of about 401 digits is too large "
        "(at most 9223372036854775807)",
    ),
    "requests_per_second NaN": (
        _replaced("requests_per_second: 50", "requests_per_second: .nan"),
        f"{SOURCE}:64: limits[1].requests_per_second: expected a positive number, got float nan",
    ),
    "requests_per_second infinite": (
        _replaced("requests_per_second: 50", "requests_per_second: .inf"),
        f"{SOURCE}:64: limits[1].requests_per_second: expected a finite number, got float inf",
    ),
    "requests_per_second 5e-324": (
        _replaced("requests_per_second: 50", "requests_per_second: 5.0e-324"),
        f"{SOURCE}:64: limits[1].requests_per_second: 5e-324 is too small (at least 1.15741e-05)",
    ),
}


@pytest.mark.parametrize("case", list(NUMBERS))
def test_a_number_that_cannot_be_served_is_a_policy_error(case: str) -> None:
    text, message = NUMBERS[case]
    with pytest.raises(PolicyError) as error:
        parse_policy(text, SOURCE)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max_age: 7d", "max_age: 3153600000"),  # 100 years, in seconds
        ("dim: 32", "dim: 4294967295"),
        ("max_entities: 1000", "max_entities: 9223372036854775807"),
        ("requests_per_second: 50", "requests_per_second: 0.0000116"),  # once a day, about
    ],
)
def test_the_largest_and_smallest_numbers_allowed_are_served(old: str, new: str) -> None:
    exercise(parse_policy(_replaced(old, new), SOURCE))


# --- the parsed copy a bundle carries ---------------------------------------------------------


PLAIN = {
    # Before the fix the copy expanded every alias: gigabytes of JSON from 4 KB of YAML.
    "an alias bomb": (alias_bomb(), "aliases expand this document to more than 100000 values"),
    # Before the fix json.dumps raised "Circular reference detected" out of bundle_format.build.
    "an alias inside itself": (
        _appended("x-r: &a [*a]"),
        "an alias refers to a node that contains it",
    ),
    # Before the fix json.dumps raised TypeError out of bundle_format.build.
    "a non-string key": (
        _appended("x-k: {2020-01-01: a}"),
        "keys must be strings, got date datetime.date(2020, 1, 1)",
    ),
}


@pytest.mark.parametrize("case", list(PLAIN))
def test_a_source_without_a_plain_copy_is_a_policy_error(case: str) -> None:
    text, message = PLAIN[case]
    with pytest.raises(PolicyError) as error:
        plain_data(text)
    assert str(error.value) == message


@pytest.mark.parametrize("case", list(PLAIN))
def test_build_leaves_the_plain_copy_out_and_the_bundle_still_verifies(case: str) -> None:
    text, _ = PLAIN[case]
    key = Ed25519PrivateKey.generate()
    data = bundle_format.build(text, 3, key)
    assert len(data) < 64 * 1024
    bundle = bundle_format.verify(data, bundle_format.trusted_keys([key.public_key()]))
    assert (bundle.revision, bundle.policy_source, bundle.policy_data) == (3, text, None)
