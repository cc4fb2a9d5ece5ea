"""The policy document: feature catalog plus access policy, as plain immutable data.

`policy_yaml` builds it from the YAML source; `catalog` and `access` compile it for serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from .valuetypes import ValueKind


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Final = _NoDefault()


@dataclass(frozen=True, slots=True)
class JoinKey:
    name: str
    kind: ValueKind


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    join_keys: tuple[JoinKey, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Feature:
    view: str
    name: str
    kind: ValueKind
    description: str = ""
    owner: str = ""
    tags: tuple[str, ...] = ()
    dim: int = 0

    @property
    def ref(self) -> str:
        return f"{self.view}:{self.name}"


@dataclass(frozen=True, slots=True)
class View:
    name: str
    entities: tuple[str, ...]
    features: tuple[Feature, ...]
    # Seconds; None means values never go stale.
    max_age: float | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class FeatureServiceDef:
    name: str
    # Selectors as written; resolved against the catalog when compiled.
    selectors: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Catalog:
    entities: tuple[Entity, ...]
    views: tuple[View, ...]
    services: tuple[FeatureServiceDef, ...] = ()


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    features: tuple[str, ...]
    # None: the rule applies to every role.
    roles: tuple[str, ...] | None = None
    mask: str | None = None  # "hash" | "redact"
    max_age: float | None = None
    default: Any = NO_DEFAULT
    # Where the rule sits in the file (0-based), for explanations.
    index: int = 0

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


@dataclass(frozen=True, slots=True)
class Limit:
    roles: tuple[str, ...]
    max_entities: int | None = None
    requests_per_second: float | None = None
    # Token bucket size; defaults to one second's worth of requests.
    burst: int | None = None
    index: int = 0


@dataclass(frozen=True, slots=True)
class Binding:
    roles: tuple[str, ...]
    principal: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyTest:
    feature: str
    expect: str  # "allow" | "deny" | "mask"
    principal: str | None = None
    groups: tuple[str, ...] = ()
    index: int = 0

    @property
    def who(self) -> str:
        parts = []
        if self.principal is not None:
            parts.append(f"principal {self.principal!r}")
        parts.extend(f"group {g!r}" for g in self.groups)
        return " and ".join(parts) or "anonymous"


@dataclass(frozen=True, slots=True)
class Policy:
    version: int
    project: str
    catalog: Catalog
    roles: tuple[Role, ...] = ()
    rules: tuple[Rule, ...] = ()
    limits: tuple[Limit, ...] = ()
    bindings: tuple[Binding, ...] = ()
    tests: tuple[PolicyTest, ...] = field(default=())
