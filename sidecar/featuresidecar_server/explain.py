"""Why a caller gets what it gets (pure): its roles and the bindings behind them, the allow and
deny entries that matched each feature, and the rule behind each serving setting.

Everything comes from the same `Access` that serves calls; this module only gathers and renders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .access import Access, Identity
from .catalog import Catalog
from .policy import NO_DEFAULT, Policy, Rule
from .selectors import SelectorError, parse_selector


class ExplainError(ValueError):
    """The question cannot be answered (e.g. an unknown feature); the message says why."""


@dataclass(frozen=True)
class BindingRef:
    index: int
    kind: str  # "principal" | "group"
    name: str

    def __str__(self) -> str:
        return f"bindings[{self.index}] ({self.kind} {self.name!r})"


@dataclass(frozen=True)
class RoleGrant:
    role: str
    bindings: tuple[BindingRef, ...]


@dataclass(frozen=True)
class Match:
    role: str
    selector: str


@dataclass(frozen=True)
class Setting:
    """One serving setting of an allowed feature and where its value comes from."""

    name: str  # "mask" | "max_age" | "default"
    # mask: "hash"/"redact"/None; max_age: seconds or None (never stale); default: the typed
    # value, or None when there is none (`has_value` tells a real None apart).
    value: Any
    has_value: bool
    rule: int | None  # index in `rules`, None when no rule sets it
    origin: str  # "rules[1] (features: ...)", "view user_stats", or "" when nothing sets it


@dataclass(frozen=True)
class LimitSetting:
    name: str  # "max_entities" | "requests_per_second"
    value: float
    burst: float | None  # tokens of the bucket, for requests_per_second
    limit: int  # index in `limits`


@dataclass(frozen=True)
class FeatureExplanation:
    ref: str
    verdict: str  # "allow" | "mask" | "deny"
    allowed_by: tuple[Match, ...]
    denied_by: tuple[Match, ...]
    settings: tuple[Setting, ...]  # empty when denied
    reason: str


@dataclass(frozen=True)
class Explanation:
    principal: str | None
    groups: tuple[str, ...]
    roles: tuple[RoleGrant, ...]
    limits: tuple[LimitSetting, ...]
    features: tuple[FeatureExplanation, ...]

    @property
    def caller(self) -> str:
        parts = [] if self.principal is None else [f"principal {self.principal!r}"]
        parts.extend(f"group {g!r}" for g in self.groups)
        return " and ".join(parts)


# --- gathering ----------------------------------------------------------------------------------


def explain(
    policy: Policy,
    principal: str | None,
    groups: Sequence[str],
    features: Sequence[str],
    access: Access | None = None,
) -> Explanation:
    """The decision for each feature; `features` may hold refs or selectors (expanded in order)."""
    if access is None:
        access = Access(policy, Catalog(policy))
    refs = resolve_features(access.catalog, features)
    roles = access.roles_of(Identity(principal or "", tuple(groups), source="explain"))
    return Explanation(
        principal=principal,
        groups=tuple(groups),
        roles=role_grants(policy, principal, groups, roles),
        limits=_limits(access, roles),
        features=tuple(explain_feature(policy, access, roles, ref) for ref in refs),
    )


def role_grants(
    policy: Policy, principal: str | None, groups: Sequence[str], roles: Sequence[str]
) -> tuple[RoleGrant, ...]:
    """Each of `roles` (what `Access.roles_of` gave the caller) with the bindings behind it."""
    found: dict[str, list[BindingRef]] = {role: [] for role in roles}
    for index, binding in enumerate(policy.bindings):
        if principal is not None and binding.principal == principal:
            ref = BindingRef(index, "principal", principal)
        elif binding.group is not None and binding.group in groups:
            ref = BindingRef(index, "group", binding.group)
        else:
            continue
        for role in binding.roles:
            if role in found:
                found[role].append(ref)
    return tuple(RoleGrant(role, tuple(refs)) for role, refs in found.items())


def explain_feature(
    policy: Policy, access: Access, roles: tuple[str, ...], ref: str
) -> FeatureExplanation:
    decision = access.decide(roles, ref)
    allowed_by = tuple(Match(role, selector) for role, selector in decision.allowed_by)
    denied_by = tuple(Match(role, selector) for role, selector in decision.denied_by)
    if not decision.allowed:
        return FeatureExplanation(
            ref, "deny", allowed_by, denied_by, (), _deny_reason(roles, denied_by)
        )
    source = dict(decision.rules)
    feature = access.catalog.features[ref]
    settings = (
        _setting(policy, "mask", decision.mask, decision.mask is not None, source.get("mask")),
        _max_age(policy, feature.view, decision.max_age_ns, source.get("max_age")),
        _setting(
            policy,
            "default",
            None if decision.default is NO_DEFAULT else decision.default,
            decision.has_default,
            source.get("default"),
        ),
    )
    if decision.mask is not None:
        reason = f"readable, served masked ({decision.mask}) by rules[{source['mask']}]"
    else:
        reason = "readable: a role allows it and none denies it"
    return FeatureExplanation(ref, decision.verdict, allowed_by, denied_by, settings, reason)


def resolve_features(catalog: Catalog, texts: Sequence[str]) -> list[str]:
    """Feature refs for refs or selectors, in order, without repeats."""
    refs: dict[str, None] = {}
    for text in texts:
        if text in catalog.features:
            refs[text] = None
            continue
        try:
            selector = parse_selector(text)
        except SelectorError as exc:
            raise ExplainError(f"--feature {text!r}: {exc}") from None
        if selector.kind == "service" and selector.name not in catalog.service_sets:
            raise ExplainError(
                f"--feature {text!r}: unknown feature service {selector.name!r}"
                f" (known: {', '.join(sorted(catalog.service_sets)) or 'none'})"
            )
        matched = selector.select(catalog.features.values(), catalog.service_sets)
        if not matched:
            raise ExplainError(f"--feature {text!r}: {_no_match(catalog, selector.view, text)}")
        for feature in matched:
            refs[feature.ref] = None
    return list(refs)


def _no_match(catalog: Catalog, view: str, text: str) -> str:
    if view and "*" not in view and "?" not in view and view not in catalog.views:
        return f"unknown feature view {view!r} (known: {', '.join(sorted(catalog.views))})"
    if view in catalog.views:
        names = ", ".join(f.name for f in catalog.views[view].view.features)
        return f"no feature of view {view!r} matches (its features: {names})"
    return f"no feature of the catalog matches {text!r}"


def _deny_reason(roles: tuple[str, ...], denied_by: tuple[Match, ...]) -> str:
    if denied_by:
        first = denied_by[0]
        return f"role {first.role} denies it with {first.selector!r}, and deny wins over allow"
    if not roles:
        return "no binding gives this caller a role, so nothing is allowed (deny by default)"
    return "none of the caller's roles allows it (deny by default)"


def _rule_origin(rule: Rule) -> str:
    roles = "any role" if rule.roles is None else ", ".join(rule.roles)
    return f"rules[{rule.index}] (features: {', '.join(rule.features)}; roles: {roles})"


def _setting(policy: Policy, name: str, value: Any, has: bool, rule: int | None) -> Setting:
    origin = _rule_origin(policy.rules[rule]) if rule is not None else ""
    return Setting(name, value, has, rule, origin)


def _max_age(policy: Policy, view: str, max_age_ns: int | None, rule: int | None) -> Setting:
    seconds = None if max_age_ns is None else max_age_ns / 1e9
    if rule is not None:
        return Setting(
            "max_age", seconds, seconds is not None, rule, _rule_origin(policy.rules[rule])
        )
    return Setting("max_age", seconds, seconds is not None, None, f"view {view}")


def _limits(access: Access, roles: tuple[str, ...]) -> tuple[LimitSetting, ...]:
    limits = access.limits_of(roles)
    result = []
    for name, index in limits.sources:
        if name == "max_entities" and limits.max_entities is not None:
            result.append(LimitSetting(name, limits.max_entities, None, index))
        elif name == "requests_per_second" and limits.requests_per_second is not None:
            rate = limits.requests_per_second
            # The same bucket size the rate limiter uses when `burst` is not set.
            burst = float(limits.burst) if limits.burst else max(rate, 1.0)
            result.append(LimitSetting(name, rate, burst, index))
    return tuple(result)


# --- rendering ----------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``7d``, ``6h``, ``1h30m``, ``500ms``: the units the policy format reads."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts)


def _value_text(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _number(value: float) -> str:
    return f"{value:g}"


def render_text(explanation: Explanation) -> str:
    lines = [f"caller: {explanation.caller}"]
    if explanation.roles:
        lines.append("roles:")
        width = max(len(g.role) for g in explanation.roles)
        for grant in explanation.roles:
            sources = ", ".join(str(b) for b in grant.bindings)
            lines.append(f"  {grant.role:<{width}}  from {sources}")
    else:
        lines.append("roles: none (no binding names this principal or any of its groups)")
    if explanation.limits:
        lines.append("limits:")
        for limit in explanation.limits:
            text = f"{limit.name} {_number(limit.value)}"
            if limit.burst is not None:
                text += f" (burst {_number(limit.burst)})"
            lines.append(f"  {text}  from limits[{limit.limit}]")
    else:
        lines.append("limits: none")
    for feature in explanation.features:
        lines.append("")
        lines.extend(_render_feature(feature))
    return "\n".join(lines) + "\n"


def _matches(matches: tuple[Match, ...]) -> str:
    return ", ".join(f"{m.role} ({m.selector!r})" for m in matches) or "none"


def _render_feature(feature: FeatureExplanation) -> list[str]:
    lines = [
        f"{feature.ref}: {feature.verdict.upper()}",
        f"  why:        {feature.reason}",
        f"  allowed by: {_matches(feature.allowed_by)}",
        f"  denied by:  {_matches(feature.denied_by)}",
    ]
    for setting in feature.settings:
        lines.append(f"  {setting.name + ':':<11} {_setting_text(setting)}")
    return lines


def _setting_text(setting: Setting) -> str:
    if setting.name == "max_age":
        if setting.rule is not None:
            return f"{format_duration(setting.value)}, set by {setting.origin}"
        value = format_duration(setting.value) if setting.has_value else "none, never stale"
        return f"{value}, from {setting.origin} (no rule sets it)"
    if not setting.has_value:
        return "none (no rule sets it)"
    value = setting.value if setting.name == "mask" else _value_text(setting.value)
    return f"{value}, set by {setting.origin}"


def as_json(explanation: Explanation) -> dict[str, Any]:
    return {
        "caller": {"principal": explanation.principal, "groups": list(explanation.groups)},
        "roles": [
            {
                "role": g.role,
                "bindings": [{"index": b.index, b.kind: b.name} for b in g.bindings],
            }
            for g in explanation.roles
        ],
        "limits": [
            {"setting": lim.name, "value": lim.value, "burst": lim.burst, "limit": lim.limit}
            for lim in explanation.limits
        ],
        "features": [_feature_json(f) for f in explanation.features],
    }


def _feature_json(feature: FeatureExplanation) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for s in feature.settings:
        entry: dict[str, Any] = {"rule": s.rule, "from": s.origin or None}
        entry["value"] = _jsonable(s.value) if s.has_value else None
        if s.name == "max_age":
            entry["text"] = format_duration(s.value) if s.has_value else None
        settings[s.name] = entry
    return {
        "feature": feature.ref,
        "decision": feature.verdict,
        "reason": feature.reason,
        "allowed_by": [{"role": m.role, "selector": m.selector} for m in feature.allowed_by],
        "denied_by": [{"role": m.role, "selector": m.selector} for m in feature.denied_by],
        "settings": settings if feature.verdict != "deny" else None,
    }
