"""YAML text to plain data, with the line of every mapping key and list item (PyYAML).

Imported only where YAML text is read (a policy source, a `--config` file): a worker serving a
bundle's parsed copy of its policy never loads PyYAML.
"""

from __future__ import annotations

from typing import Any

import yaml

# libyaml's parser when PyYAML has it (10x faster on large catalogs); marks work the same.
_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    """Text that is not valid YAML, or a document the policy format cannot hold (`own`: a
    duplicate or non-string key). `line` is 1-based, 0 when unknown."""

    def __init__(self, line: int, problem: str, own: bool = False) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem
        self.own = own


class LineMap(dict[str, Any]):
    line: int
    key_lines: dict[str, int]


class LineList(list[Any]):
    line: int
    item_lines: list[int]


# What PyYAML's constructors raise, unwrapped, for a scalar they cannot read: `!!int abc`,
# `2020-13-45` (a date of month 13), an integer of more digits than Python converts, `!!bool x`,
# `!!timestamp x`, ...
_CONSTRUCTOR_FAILURES = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


def _construct_object(loader: Any, node: yaml.Node, deep: bool = False) -> Any:
    """PyYAML's construct_object, with a value it cannot construct turned into a YAML error at
    the node's line: callers expect YamlError, and a hostile file must not get past them."""
    try:
        return _BASE.construct_object(loader, node, deep=deep)
    except (yaml.YAMLError, YamlError):
        raise
    except _CONSTRUCTOR_FAILURES as exc:
        # Only a ValueError says something a person can use (e.g. "month must be in 1..12").
        detail = str(exc).splitlines()[0].split(";")[0] if isinstance(exc, ValueError) else ""
        raise _unreadable(node, detail[:120]) from None


def _short_repr(value: Any) -> str:
    """repr() cut short: an error names a value, it does not repeat a hostile megabyte of it."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unreadable(node: yaml.Node, detail: str = "") -> yaml.constructor.ConstructorError:
    if isinstance(node, yaml.ScalarNode):
        what = _short_repr(node.value)
    else:
        what = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
    problem = f"cannot read {what} as {node.tag.rpartition(':')[2] or node.tag}"
    return yaml.constructor.ConstructorError(
        None, None, f"{problem}: {detail}" if detail else problem, node.start_mark
    )


class _Loader(_BASE):  # type: ignore[misc]
    construct_object = _construct_object


class _PlainLoader(_BASE):  # type: ignore[misc]
    construct_object = _construct_object


def _construct_map(loader: _Loader, node: yaml.Node) -> LineMap:
    if not isinstance(node, yaml.MappingNode):
        raise _unreadable(node)
    result = LineMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise YamlError(line, f"keys must be strings, got {_short_repr(key)}", own=True)
        if key in result:
            raise YamlError(line, f"duplicate key {_short_repr(key)}", own=True)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_list(loader: _Loader, node: yaml.Node) -> LineList:
    if not isinstance(node, yaml.SequenceNode):
        raise _unreadable(node)
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_list)


def load_with_lines(text: str) -> Any:
    """The document; its mappings are `LineMap`s and its lists `LineList`s."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(mark.line + 1 if mark is not None else 0, problem) from None
    except RecursionError:
        # PyYAML composes recursively; a hostile file must not crash the caller (e.g. the
        # bundle sync task), which only expects YamlError.
        raise YamlError(0, "nested too deeply") from None


def load_plain(text: str) -> Any:
    """The document as plain dicts and lists."""
    try:
        return yaml.load(text, Loader=_PlainLoader)
    except yaml.YAMLError as exc:
        raise YamlError(0, str(exc)) from None
    except RecursionError:
        raise YamlError(0, "nested too deeply") from None
