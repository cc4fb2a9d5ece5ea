"""Parse and validate the policy source (YAML, format version 1) into a `Policy`.

Every error names the key path and the line, e.g.
``policy.yaml:23: catalog.views[1].features[2].type: unknown type 'doubel'``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, NoReturn

from .policy import (
    NO_DEFAULT,
    Binding,
    Catalog,
    Entity,
    Feature,
    FeatureServiceDef,
    JoinKey,
    Limit,
    Policy,
    PolicyTest,
    Role,
    Rule,
    View,
)
from .selectors import FeatureIndex, Selector, SelectorError, parse_selector
from .valuetypes import JOIN_KEY_KINDS, KINDS, ValueKind

SUPPORTED_VERSIONS = (1,)
# Bounds that keep every number of a valid policy servable: counts fit int64 (and a burst a
# float), a dimension fits the wire's uint32, a duration in nanoseconds fits int64 with room
# (100 years), and a rate's retry hint stays a finite number of milliseconds.
_MAX_COUNT = 2**63 - 1
_MAX_DIM = 2**32 - 1
_MAX_DURATION = 100 * 365 * 86400.0
_MIN_RATE = 1 / 86400  # one request a day
# The parsed copy of a source kept in a bundle holds at most this many values (or ten per
# character of the source, if more): an alias bomb would otherwise expand to gigabytes.
_PLAIN_VALUES_FLOOR = 100_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
# Selector prefixes: a view of one of these names could not be selected as "view:feature".
_RESERVED_VIEW_NAMES = ("service", "tag")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class PolicyError(ValueError):
    """The policy source is not valid; the message names where and why."""


class _Node:
    """A value in the document with its key path and line, for precise errors."""

    def __init__(self, value: Any, path: str, line: int, source: str) -> None:
        self.value = value
        self.path = path
        self.line = line
        self.source = source

    def fail(self, message: str) -> NoReturn:
        where = f"{self.source}:{self.line}" if self.line else self.source
        subject = f"{self.path}: " if self.path else ""
        raise PolicyError(f"{where}: {subject}{message}")

    def child(self, key: str) -> _Node:
        mapping = self.value
        lines = getattr(mapping, "key_lines", None)
        line = lines.get(key, self.line) if lines is not None else self.line
        # An error's key path names a hostile key; it does not repeat all of it.
        label = key if len(key) <= 80 else key[:77] + "..."
        path = f"{self.path}.{label}" if self.path else label
        return _Node(mapping.get(key), path, line, self.source)

    # Typed accessors ---------------------------------------------------------------------------

    def mapping(self, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> _Node:
        if not isinstance(self.value, dict):
            self.fail(f"expected a mapping, got {_describe(self.value)}")
        for key in required:
            if key not in self.value:
                self.fail(f"missing required key {key!r}")
        known = set(required) | set(optional)
        for key in self.value:
            if key not in known and not key.startswith("x-"):
                self.child(key).fail(f"unknown key (expected one of: {', '.join(sorted(known))})")
        return self

    def items(self, allow_missing: bool = True) -> Iterator[_Node]:
        if self.value is None and allow_missing:
            return
        if not isinstance(self.value, list):
            self.fail(f"expected a list, got {_describe(self.value)}")
        lines = getattr(self.value, "item_lines", [self.line] * len(self.value))
        for i, item in enumerate(self.value):
            yield _Node(item, f"{self.path}[{i}]", lines[i], self.source)

    def string(self, default: str | None = None) -> str:
        if self.value is None and default is not None:
            return default
        if not isinstance(self.value, str) or not self.value:
            self.fail(f"expected a non-empty string, got {_describe(self.value)}")
        return self.value

    def name(self) -> str:
        text = self.string()
        if not _NAME.match(text):
            self.fail(f"{_quoted(text)} is not a valid name (letters, digits, '_' and '-')")
        return text

    def strings(self) -> tuple[str, ...]:
        if isinstance(self.value, str):
            self.fail(f"expected a list of strings, got the string {_quoted(self.value)}")
        return tuple(item.string() for item in self.items())

    def positive_int(self, maximum: int = _MAX_COUNT) -> int | None:
        if self.value is None:
            return None
        if isinstance(self.value, bool) or not isinstance(self.value, int) or self.value <= 0:
            self.fail(f"expected a positive integer, got {_describe(self.value)}")
        if self.value > maximum:
            self.fail(f"{_short_number(self.value)} is too large (at most {maximum})")
        return self.value

    def positive_number(self, minimum: float = 0.0) -> float | None:
        if self.value is None:
            return None
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            self.fail(f"expected a positive number, got {_describe(value)}")
        if not math.isfinite(value):
            self.fail(f"expected a finite number, got {_describe(value)}")
        if value > _MAX_COUNT:
            self.fail(f"{_describe(value)} is too large (at most {_MAX_COUNT})")
        if value < minimum:
            self.fail(f"{value!r} is too small (at least {minimum:.6g})")
        return float(value)

    def duration(self) -> float | None:
        if self.value is None:
            return None
        try:
            return parse_duration(self.value)
        except ValueError as exc:
            self.fail(str(exc))


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"int {value}" if -(10**30) < value < 10**30 else _short_number(value)
    return f"{type(value).__name__} {_quoted(value)}"


def _short_number(value: int) -> str:
    if -(10**30) < value < 10**30:
        return str(value)
    # str() of an integer past 4300 digits raises; its bit length tells the size well enough.
    digits = int(abs(value).bit_length() * math.log10(2)) + 1
    return f"an integer of about {digits} digits"


def _quoted(value: Any) -> str:
    """repr() of a value, cut short: a message names the value, it does not repeat a hostile
    megabyte of it."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_duration(value: Any) -> float:
    """Seconds from ``"7d"``, ``"1h30m"``, ``"500ms"`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '6h' or '7d', got {_quoted(value)}")
    if isinstance(value, (int, float)):
        if not value > 0:
            raise ValueError(f"a duration must be positive, got {_describe(value)}")
        return _bounded_duration(value, value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '6h' or '7d', got {_describe(value)}")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"{_quoted(value)} is not a duration "
            "(use a number with a unit: ms, s, m, h, d, w; e.g. '6h')"
        )
    if total <= 0:
        raise ValueError(f"a duration must be positive, got {_quoted(value)}")
    return _bounded_duration(total, value)


def _bounded_duration(seconds: float, value: Any) -> float:
    # Compared before any conversion: float() of a huge integer overflows.
    if not seconds <= _MAX_DURATION:
        shown = _describe(value) if not isinstance(value, str) else _quoted(value)
        raise ValueError(f"{shown} is too long a duration (at most 100 years)")
    return float(seconds)


# --- The document -----------------------------------------------------------------------------


def load_policy_file(path: str) -> Policy:
    with open(path, encoding="utf-8") as handle:
        return parse_policy(handle.read(), source=path)


def plain_data(text: str) -> Any:
    """The policy source as plain JSON-ready data, for the bundle payload (no line numbers)."""
    from . import yaml_lines

    try:
        data = yaml_lines.load_plain(text)
    except yaml_lines.YamlError as exc:
        raise PolicyError(f"not valid YAML: {exc.problem}") from None
    _check_plain(data, max(_PLAIN_VALUES_FLOOR, 10 * len(text)))
    return data


def _check_plain(data: Any, limit: int) -> None:
    """PolicyError unless `data`, with every alias expanded, is JSON of at most `limit` values.

    Aliases make a YAML document a graph; written as JSON it becomes a tree, exponentially
    larger for a bomb, and infinite for an alias inside itself. Counted once per shared node.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        known = sizes.get(id(value))
        if known is not None:
            return known
        if id(value) in open_nodes:
            raise PolicyError("an alias refers to a node that contains it")
        open_nodes.add(id(value))
        total = 1
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    raise PolicyError(f"keys must be strings, got {_describe(key)}")
        for child in value.values() if isinstance(value, dict) else value:
            total += size(child)
            if total > limit:
                raise PolicyError(f"aliases expand this document to more than {limit} values")
        open_nodes.discard(id(value))
        sizes[id(value)] = total
        return total

    try:
        size(data)
    except RecursionError:
        raise PolicyError("nested too deeply") from None


def parse_policy_data(data: Any, source: str = "policy") -> Policy:
    """A policy from plain data (a bundle's parsed copy of its source): the same checks as
    `parse_policy`, with key paths but no line numbers; much faster and lighter than YAML for
    large catalogs, which matters at start and in memory."""
    return _Parser(_Node(data, "", 0, source)).policy()


def parse_policy(text: str, source: str = "policy") -> Policy:
    # PyYAML is loaded only here: a worker serving a bundle's parsed copy never needs it.
    from . import yaml_lines

    try:
        document = yaml_lines.load_with_lines(text)
    except yaml_lines.YamlError as exc:
        line = f":{exc.line}" if exc.line else ""
        prefix = "" if exc.own else "not valid YAML: "
        raise PolicyError(f"{source}{line}: {prefix}{exc.problem}") from None
    root = _Node(document, "", 1, source)
    return _Parser(root).policy()


class _Parser:
    def __init__(self, root: _Node) -> None:
        self.root = root
        self.features: list[Feature] = []
        self.index = FeatureIndex(())
        self.services: dict[str, frozenset[str]] = {}

    def policy(self) -> Policy:
        root = self.root.mapping(
            ("version", "project", "catalog"),
            ("roles", "rules", "limits", "bindings", "tests", "description"),
        )
        version_node = root.child("version")
        if version_node.value not in SUPPORTED_VERSIONS or isinstance(version_node.value, bool):
            version_node.fail(
                f"unsupported format version {_quoted(version_node.value)} "
                f"(this sidecar reads {', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
        project = root.child("project").name()
        catalog = self.catalog(root.child("catalog"))
        roles = self.roles(root.child("roles"))
        role_names = {r.name for r in roles}
        rules = tuple(
            self.rule(node, i, role_names) for i, node in enumerate(root.child("rules").items())
        )
        limits = tuple(
            self.limit(node, i, role_names) for i, node in enumerate(root.child("limits").items())
        )
        bindings = tuple(self.binding(node, role_names) for node in root.child("bindings").items())
        tests = tuple(self.test(node, i) for i, node in enumerate(root.child("tests").items()))
        return Policy(
            version=int(version_node.value),
            project=project,
            catalog=catalog,
            roles=roles,
            rules=rules,
            limits=limits,
            bindings=bindings,
            tests=tests,
        )

    # Catalog -----------------------------------------------------------------------------------

    def catalog(self, node: _Node) -> Catalog:
        node.mapping(("entities", "views"), ("services",))
        entities: dict[str, Entity] = {}
        key_types: dict[str, tuple[ValueKind, str]] = {}
        for item in node.child("entities").items(allow_missing=False):
            entity = self.entity(item, key_types)
            if entity.name in entities:
                item.child("name").fail(f"entity {entity.name!r} is defined twice")
            entities[entity.name] = entity
        if not entities:
            node.child("entities").fail("the catalog needs at least one entity")
        views: dict[str, View] = {}
        for item in node.child("views").items(allow_missing=False):
            view = self.view(item, entities)
            if view.name in views:
                item.child("name").fail(f"view {view.name!r} is defined twice")
            views[view.name] = view
            self.features.extend(view.features)
        self.index = FeatureIndex(self.features)
        if not views:
            node.child("views").fail("the catalog needs at least one view")
        services: dict[str, FeatureServiceDef] = {}
        for item in node.child("services").items():
            service = self.service(item)
            if service.name in services:
                item.child("name").fail(f"feature service {service.name!r} is defined twice")
            services[service.name] = service
        return Catalog(tuple(entities.values()), tuple(views.values()), tuple(services.values()))

    def entity(self, node: _Node, key_types: dict[str, tuple[ValueKind, str]]) -> Entity:
        node.mapping(("name", "join_keys"), ("description",))
        name = node.child("name").name()
        keys: list[JoinKey] = []
        for item in node.child("join_keys").items(allow_missing=False):
            item.mapping(("name", "type"), ("description",))
            key_name = item.child("name").name()
            type_node = item.child("type")
            kind = self.kind(type_node)
            if kind.name not in JOIN_KEY_KINDS:
                type_node.fail(
                    f"a join key cannot have type {kind.name!r} "
                    f"(use one of: {', '.join(sorted(JOIN_KEY_KINDS))})"
                )
            if any(k.name == key_name for k in keys):
                item.child("name").fail(f"join key {key_name!r} appears twice")
            seen = key_types.get(key_name)
            if seen is not None and seen[0] != kind:
                type_node.fail(
                    f"join key {key_name!r} is {kind.name} here but {seen[0].name} "
                    f"in entity {seen[1]!r}"
                )
            key_types[key_name] = (kind, name)
            keys.append(JoinKey(key_name, kind))
        if not keys:
            node.child("join_keys").fail("an entity needs at least one join key")
        return Entity(name, tuple(keys), node.child("description").string(""))

    def view(self, node: _Node, entities: dict[str, Entity]) -> View:
        node.mapping(("name", "entities", "features"), ("max_age", "description", "owner", "tags"))
        name = node.child("name").name()
        if name in _RESERVED_VIEW_NAMES:
            # Selectors read "tag:x" and "service:x" as a tag or a service, never as this view.
            node.child("name").fail(
                f"{name!r} cannot be a view name: selectors read '{name}:...' as a {name} selector"
            )
        entity_names = node.child("entities").strings()
        if not entity_names:
            node.child("entities").fail("a view needs at least one entity")
        for i, entity_name in enumerate(entity_names):
            if entity_name not in entities:
                list(node.child("entities").items())[i].fail(
                    f"unknown entity {_quoted(entity_name)} (known: {', '.join(sorted(entities))})"
                )
        if len(set(entity_names)) != len(entity_names):
            node.child("entities").fail("an entity is listed twice")
        join_keys = [k.name for e in entity_names for k in entities[e].join_keys]
        if len(set(join_keys)) != len(join_keys):
            node.child("entities").fail("these entities share a join key name")
        view_owner = node.child("owner").string("")
        view_tags = node.child("tags").strings()
        features: list[Feature] = []
        names: set[str] = set()
        for item in node.child("features").items(allow_missing=False):
            feature = self.feature(item, name, view_owner, view_tags)
            if feature.name in names:
                item.child("name").fail(f"feature {feature.name!r} appears twice in view {name!r}")
            names.add(feature.name)
            features.append(feature)
        if not features:
            node.child("features").fail("a view needs at least one feature")
        return View(
            name=name,
            entities=entity_names,
            features=tuple(features),
            max_age=node.child("max_age").duration(),
            description=node.child("description").string(""),
        )

    def feature(self, node: _Node, view: str, owner: str, tags: tuple[str, ...]) -> Feature:
        node.mapping(("name", "type"), ("description", "owner", "tags", "dim"))
        kind = self.kind(node.child("type"))
        dim_node = node.child("dim")
        dim = dim_node.positive_int(_MAX_DIM) or 0
        if dim and not kind.is_list:
            dim_node.fail(f"dim applies to list types only, not {kind.name!r}")
        return Feature(
            view=view,
            name=node.child("name").name(),
            kind=kind,
            description=node.child("description").string(""),
            owner=node.child("owner").string(owner),
            tags=tuple(dict.fromkeys(tags + node.child("tags").strings())),
            dim=dim,
        )

    def kind(self, node: _Node) -> ValueKind:
        text = node.string()
        kind = KINDS.get(text)
        if kind is None:
            node.fail(f"unknown type {_quoted(text)} (known: {', '.join(KINDS)})")
        return kind

    def service(self, node: _Node) -> FeatureServiceDef:
        node.mapping(("name", "features"), ("description",))
        name = node.child("name").name()
        selectors = self.selectors(node.child("features"), allow_services=False)
        if not selectors:
            node.child("features").fail("a feature service needs at least one feature")
        refs: list[str] = []
        for selector in selectors:
            refs.extend(f.ref for f in self.index.select(selector, self.services))
        self.services[name] = frozenset(refs)
        return FeatureServiceDef(
            name, tuple(s.text for s in selectors), node.child("description").string("")
        )

    def selectors(self, node: _Node, allow_services: bool = True) -> list[Selector]:
        result = []
        for item in node.items():
            text = item.string()
            try:
                selector = parse_selector(text)
            except SelectorError as exc:
                # The selector module quotes the whole text; a hostile one can be megabytes.
                message = str(exc)
                item.fail(message if len(message) <= 300 else message[:297] + "...")
            if selector.kind == "service":
                if not allow_services:
                    item.fail("a feature service cannot include another service")
                if selector.name not in self.services:
                    item.fail(f"unknown feature service {_quoted(selector.name)}")
            if not self.index.select(selector, self.services):
                item.fail(f"selector {_quoted(text)} matches no feature of the catalog")
            result.append(selector)
        return result

    # Policy ------------------------------------------------------------------------------------

    def roles(self, node: _Node) -> tuple[Role, ...]:
        roles: dict[str, Role] = {}
        for item in node.items():
            item.mapping(("name",), ("allow", "deny", "description"))
            name = item.child("name").name()
            if name in roles:
                item.child("name").fail(f"role {name!r} is defined twice")
            allow = tuple(s.text for s in self.selectors(item.child("allow")))
            deny = tuple(s.text for s in self.selectors(item.child("deny")))
            roles[name] = Role(name, allow, deny, item.child("description").string(""))
        return tuple(roles.values())

    def role_refs(self, node: _Node, role_names: set[str], wildcard: bool) -> tuple[str, ...]:
        names = node.strings()
        for item, name in zip(node.items(), names, strict=True):
            if name == "*" and wildcard:
                continue
            if name not in role_names:
                item.fail(f"unknown role {_quoted(name)} (known: {', '.join(sorted(role_names))})")
        return names

    def rule(self, node: _Node, index: int, role_names: set[str]) -> Rule:
        node.mapping(("match",), ("mask", "max_age", "default", "description"))
        match = node.child("match").mapping(("features",), ("roles",))
        selectors = self.selectors(match.child("features"))
        if not selectors:
            match.child("features").fail("a rule must match at least one feature")
        roles_node = match.child("roles")
        roles = (
            self.role_refs(roles_node, role_names, True) if roles_node.value is not None else None
        )
        if roles == ():
            # An empty list would make the rule match nobody, silently.
            roles_node.fail(
                "an empty list matches no caller; leave 'roles' out to match every role"
            )
        mask_node = node.child("mask")
        mask = None
        if mask_node.value is not None:
            mask = mask_node.string()
            if mask not in ("hash", "redact"):
                mask_node.fail(f"unknown mask {_quoted(mask)} (expected 'hash' or 'redact')")
        default: Any = NO_DEFAULT
        if "default" in node.value:
            default = node.value["default"]
            matched = [f for s in selectors for f in self.index.select(s, self.services)]
            for feature in matched:
                try:
                    coerce_default(default, feature.kind)
                except ValueError as exc:
                    node.child("default").fail(f"not a valid default for {feature.ref}: {exc}")
        rule = Rule(
            features=tuple(s.text for s in selectors),
            roles=roles,
            mask=mask,
            max_age=node.child("max_age").duration(),
            default=default,
            index=index,
        )
        if rule.mask is None and rule.max_age is None and not rule.has_default:
            node.fail("a rule must set at least one of: mask, max_age, default")
        return rule

    def limit(self, node: _Node, index: int, role_names: set[str]) -> Limit:
        node.mapping(("roles",), ("max_entities", "requests_per_second", "burst", "description"))
        limit = Limit(
            roles=self.role_refs(node.child("roles"), role_names, True),
            max_entities=node.child("max_entities").positive_int(),
            requests_per_second=node.child("requests_per_second").positive_number(_MIN_RATE),
            burst=node.child("burst").positive_int(),
            index=index,
        )
        if not limit.roles:
            node.child("roles").fail("a limit needs at least one role (or '*' for every caller)")
        if limit.max_entities is None and limit.requests_per_second is None:
            node.fail("a limit must set max_entities or requests_per_second")
        if limit.burst is not None and limit.requests_per_second is None:
            node.child("burst").fail("burst needs requests_per_second")
        return limit

    def binding(self, node: _Node, role_names: set[str]) -> Binding:
        node.mapping(("roles",), ("principal", "group", "description"))
        principal = node.child("principal").value
        group = node.child("group").value
        if (principal is None) == (group is None):
            node.fail("a binding names exactly one of 'principal' or 'group'")
        roles = self.role_refs(node.child("roles"), role_names, False)
        if not roles:
            node.child("roles").fail("a binding needs at least one role")
        return Binding(
            roles=roles,
            principal=node.child("principal").string() if principal is not None else None,
            group=node.child("group").string() if group is not None else None,
        )

    def test(self, node: _Node, index: int) -> PolicyTest:
        node.mapping(("feature", "expect"), ("principal", "group", "groups", "description"))
        principal_node = node.child("principal")
        principal = principal_node.string() if principal_node.value is not None else None
        groups: tuple[str, ...] = ()
        if node.child("group").value is not None:
            groups += (node.child("group").string(),)
        groups += node.child("groups").strings()
        if principal is None and not groups:
            node.fail("a test names a 'principal', a 'group' or 'groups'")
        feature_node = node.child("feature")
        ref = feature_node.string()
        if ref not in self.index.by_ref:
            feature_node.fail(f"unknown feature {_quoted(ref)}")
        expect_node = node.child("expect")
        expect = expect_node.string()
        if expect not in ("allow", "deny", "mask"):
            expect_node.fail(f"expect must be 'allow', 'deny' or 'mask', not {_quoted(expect)}")
        return PolicyTest(ref, expect, principal, groups, index)


# --- Defaults -----------------------------------------------------------------------------------


def coerce_default(value: Any, kind: ValueKind) -> Any:
    """The rule default converted to the feature's type; ValueError when it does not fit."""
    if kind.is_list:
        if not isinstance(value, list):
            raise ValueError(f"expected a list for type {kind.name}, got {_describe(value)}")
        return [_coerce_scalar(v, kind.element) for v in value]
    return _coerce_scalar(value, kind.element)


def _coerce_scalar(value: Any, element: str) -> Any:
    if value is None:
        raise ValueError("null cannot be a default")
    if element in ("int32", "int64", "timestamp"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_describe(value)}")
        bits = 31 if element == "int32" else 63
        if not -(2**bits) <= value < 2**bits:
            raise ValueError(f"{value} is out of range for {element}")
        return value
    if element in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {_describe(value)}")
        return float(value)
    if element == "bool":
        # `default: 0` over a mix of numeric and boolean features means false.
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        raise ValueError(f"expected true, false, 0 or 1, got {_describe(value)}")
    if element == "string":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_describe(value)}")
        return value
    if element == "bytes":
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytes):
            return value
        raise ValueError(f"expected a string, got {_describe(value)}")
    raise ValueError(f"unsupported type {element}")
