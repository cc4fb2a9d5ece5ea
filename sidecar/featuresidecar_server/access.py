"""Access decisions: who holds which roles, what each role may read, which rules apply (pure).

A feature is readable when some role of the caller allows it and none denies it (deny wins,
deny by default). For each serving setting (mask, max_age, default) the first matching rule in
file order wins; limits work the same way per setting. Results are cached per role set and
feature, so the hot path pays for a decision once per bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog, age_ns
from .policy import NO_DEFAULT, Policy, Rule
from .policy_yaml import coerce_default
from .selectors import Selector, parse_selector


@dataclass(frozen=True)
class Identity:
    """A verified caller."""

    principal: str
    groups: tuple[str, ...] = ()
    # How it was established: "jwt", "mtls", "workload" or "policy-test".
    source: str = ""


@dataclass(frozen=True)
class Decision:
    """What one caller may do with one feature, and why."""

    ref: str
    allowed: bool
    mask: str | None = None
    # Nanoseconds; None means no limit.
    max_age_ns: int | None = None
    default: Any = NO_DEFAULT
    allowed_by: tuple[tuple[str, str], ...] = ()  # (role, selector)
    denied_by: tuple[tuple[str, str], ...] = ()
    rules: tuple[tuple[str, int], ...] = ()  # (setting, rule index)

    @property
    def verdict(self) -> str:
        if not self.allowed:
            return "deny"
        return "mask" if self.mask else "allow"

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


@dataclass(frozen=True)
class Limits:
    max_entities: int | None = None
    requests_per_second: float | None = None
    burst: int | None = None
    sources: tuple[tuple[str, int], ...] = field(default=())  # (setting, limit index)


@dataclass(frozen=True)
class _CompiledRole:
    name: str
    allow: tuple[Selector, ...]
    deny: tuple[Selector, ...]


@dataclass(frozen=True)
class _CompiledRule:
    rule: Rule
    selectors: tuple[Selector, ...]


class Access:
    def __init__(self, policy: Policy, catalog: Catalog) -> None:
        self.catalog = catalog
        self.roles = {
            r.name: _CompiledRole(
                r.name,
                tuple(parse_selector(s) for s in r.allow),
                tuple(parse_selector(s) for s in r.deny),
            )
            for r in policy.roles
        }
        self.rules = tuple(
            _CompiledRule(r, tuple(parse_selector(s) for s in r.features)) for r in policy.rules
        )
        self.limits = policy.limits
        self._by_principal: dict[str, list[str]] = {}
        self._by_group: dict[str, list[str]] = {}
        for binding in policy.bindings:
            if binding.principal is not None:
                self._by_principal.setdefault(binding.principal, []).extend(binding.roles)
            if binding.group is not None:
                self._by_group.setdefault(binding.group, []).extend(binding.roles)
        self._decisions: dict[tuple[tuple[str, ...], str], Decision] = {}
        self._limits: dict[tuple[str, ...], Limits] = {}

    def roles_of(self, identity: Identity) -> tuple[str, ...]:
        """The caller's roles, sorted (a stable cache key)."""
        roles = set(self._by_principal.get(identity.principal, ()))
        for group in identity.groups:
            roles.update(self._by_group.get(group, ()))
        return tuple(sorted(roles))

    def decide(self, roles: tuple[str, ...], ref: str) -> Decision:
        key = (roles, ref)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(roles, ref)
            if len(self._decisions) > 200_000:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _decide(self, roles: tuple[str, ...], ref: str) -> Decision:
        feature = self.catalog.features[ref]
        services = self.catalog.service_sets
        allowed_by = tuple(
            (name, s.text)
            for name in roles
            for s in self.roles[name].allow
            if s.matches(feature, services)
        )
        denied_by = tuple(
            (name, s.text)
            for name in roles
            for s in self.roles[name].deny
            if s.matches(feature, services)
        )
        if not allowed_by or denied_by:
            return Decision(ref, False, allowed_by=allowed_by, denied_by=denied_by)
        held = set(roles)
        mask: str | None = None
        max_age: float | None = None
        default: Any = NO_DEFAULT
        applied: list[tuple[str, int]] = []
        for compiled in self.rules:
            rule = compiled.rule
            if rule.roles is not None and "*" not in rule.roles and not held & set(rule.roles):
                continue
            if not any(s.matches(feature, services) for s in compiled.selectors):
                continue
            if mask is None and rule.mask is not None:
                mask = rule.mask
                applied.append(("mask", rule.index))
            if max_age is None and rule.max_age is not None:
                max_age = rule.max_age
                applied.append(("max_age", rule.index))
            if default is NO_DEFAULT and rule.has_default:
                default = coerce_default(rule.default, feature.kind)
                applied.append(("default", rule.index))
        view_age = self.catalog.views[feature.view].max_age_ns
        max_age_ns = age_ns(max_age) if max_age is not None else view_age
        return Decision(
            ref,
            True,
            mask=mask,
            max_age_ns=max_age_ns,
            default=default,
            allowed_by=allowed_by,
            rules=tuple(applied),
        )

    def limits_of(self, roles: tuple[str, ...]) -> Limits:
        limits = self._limits.get(roles)
        if limits is None:
            limits = self._limits[roles] = self._compute_limits(roles)
        return limits

    def _compute_limits(self, roles: Sequence[str]) -> Limits:
        held = set(roles)
        max_entities: int | None = None
        rps: float | None = None
        burst: int | None = None
        sources: list[tuple[str, int]] = []
        for limit in self.limits:
            if "*" not in limit.roles and not held & set(limit.roles):
                continue
            if max_entities is None and limit.max_entities is not None:
                max_entities = limit.max_entities
                sources.append(("max_entities", limit.index))
            if rps is None and limit.requests_per_second is not None:
                rps = limit.requests_per_second
                burst = limit.burst
                sources.append(("requests_per_second", limit.index))
        return Limits(max_entities, rps, burst, tuple(sources))
