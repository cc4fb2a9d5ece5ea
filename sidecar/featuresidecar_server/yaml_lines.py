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


class _Loader(_BASE):  # type: ignore[misc]
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    result = LineMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise YamlError(line, f"keys must be strings, got {key!r}", own=True)
        if key in result:
            raise YamlError(line, f"duplicate key {key!r}", own=True)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_list(loader: _Loader, node: yaml.SequenceNode) -> LineList:
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
        return yaml.load(text, Loader=_BASE)
    except yaml.YAMLError as exc:
        raise YamlError(0, str(exc)) from None
    except RecursionError:
        raise YamlError(0, "nested too deeply") from None
