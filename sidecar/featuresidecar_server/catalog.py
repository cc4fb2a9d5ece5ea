"""The feature catalog compiled for serving: lookups by reference, resolved services (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidArgument, NotFound, quoted
from .policy import Entity, Feature, Policy, View
from .selectors import FeatureIndex, parse_selector
from .valuetypes import ValueKind


@dataclass(frozen=True)
class ViewInfo:
    view: View
    # Join keys of the view sorted by name, as Feast sorts them in the entity key.
    join_keys: tuple[tuple[str, ValueKind], ...]
    max_age_ns: int | None


def age_ns(seconds: float | None) -> int | None:
    """A maximum age in nanoseconds (the policy parser keeps it within 100 years, which int64
    arithmetic on event times holds)."""
    return None if seconds is None else int(seconds * 1e9)


class Catalog:
    """Everything the request path asks of the catalog, precomputed once per policy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.project = policy.project
        self.entities: dict[str, Entity] = {e.name: e for e in policy.catalog.entities}
        self.join_keys: dict[str, ValueKind] = {
            k.name: k.kind for e in policy.catalog.entities for k in e.join_keys
        }
        self.views: dict[str, ViewInfo] = {}
        self.features: dict[str, Feature] = {}
        for view in policy.catalog.views:
            keys = sorted(
                ((k.name, k.kind) for e in view.entities for k in self.entities[e].join_keys),
                key=lambda pair: pair[0],
            )
            self.views[view.name] = ViewInfo(view, tuple(keys), age_ns(view.max_age))
            for feature in view.features:
                self.features[feature.ref] = feature
        self.services: dict[str, tuple[str, ...]] = {}
        # Only services need the index, and only now: serving looks features up by reference.
        index = FeatureIndex(self.features.values())
        service_sets: dict[str, frozenset[str]] = {}
        for service in policy.catalog.services:
            refs: dict[str, None] = {}
            for text in service.selectors:
                for feature in index.select(parse_selector(text), service_sets):
                    refs[feature.ref] = None
            self.services[service.name] = tuple(refs)
            service_sets[service.name] = frozenset(refs)
        self.service_sets = service_sets
        self.service_descriptions = {s.name: s.description for s in policy.catalog.services}

    def resolve(self, refs: Sequence[str]) -> list[Feature]:
        """Features for references, in order; the first bad one raises."""
        out = []
        seen: set[str] = set()
        for i, ref in enumerate(refs):
            feature = self.features.get(ref)
            if feature is None:
                raise self._unknown(ref, i)
            if ref in seen:
                raise InvalidArgument(f"features[{i}]: {quoted(ref)} is requested twice")
            seen.add(ref)
            out.append(feature)
        return out

    def _unknown(self, ref: str, index: int) -> InvalidArgument | NotFound:
        view, sep, name = ref.partition(":")
        if not sep or not view or not name or ":" in name:
            return InvalidArgument(
                f"features[{index}]: {quoted(ref)} is not a feature reference of the form "
                "'view:feature'"
            )
        if view not in self.views:
            return NotFound(
                f"features[{index}]: unknown feature view {quoted(view)} in {quoted(ref)}"
            )
        return NotFound(f"features[{index}]: view {quoted(view)} has no feature {quoted(name)}")

    def service(self, name: str) -> tuple[str, ...]:
        refs = self.services.get(name)
        if refs is None:
            raise NotFound(f"feature_service: unknown feature service {quoted(name)}")
        return refs
