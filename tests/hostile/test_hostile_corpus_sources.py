"""The fixed corpus of nasty policy sources: each case, its exact outcome and message.

Line numbers are those of tests/fixtures/example/policy.yaml (86 lines; an appended line is 87).
"""

from __future__ import annotations

import pytest
from support import EXAMPLE_POLICY

from featuresidecar_server.policy_yaml import PolicyError, parse_policy

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
    "a 100,000-character unknown key": (
        _replaced("  entities:\n", "  " + "k" * 100_000 + ": 1\n  entities:\n"),
        # libyaml reads a key of more than 1024 characters as no key at all.
        f"{SOURCE}:11: not valid YAML: mapping values are not allowed in this context",
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
