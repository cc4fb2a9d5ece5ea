"""One active policy, compiled for serving, and the per-caller plans cached on it.

A snapshot never changes after it is built; activation swaps the whole object, so a call that
started on one revision finishes on it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass

from . import wire
from .access import Access, Decision, Identity, Limits
from .catalog import Catalog
from .columns import ColumnPlan, plan_columns, wanted_of
from .layout import ReadPlan, build_plan
from .policy import Feature, Policy
from .valuetypes import ValueKind


@dataclass(frozen=True)
class Prepared:
    """Everything about a call that depends only on who asks for which features."""

    roles: tuple[str, ...]
    features: tuple[Feature, ...]
    decisions: tuple[Decision, ...]
    denied: tuple[str, ...]
    plan: ReadPlan
    # For each requested feature: its slot in `plan`, or -1 when denied.
    slot_of: tuple[int, ...]
    # Join keys the allowed features need: name -> (type, a view that needs it).
    join_keys: dict[str, tuple[ValueKind, str]]
    limits: Limits
    # For the decision log: what the caller may read and what gets masked.
    allowed: list[str]
    masked: list[str]
    # How the columns are built, and the encoded feature_names field of the response.
    columns: ColumnPlan
    names: bytes


class Snapshot:
    def __init__(
        self,
        policy: Policy,
        *,
        revision: int,
        digest: str,
        source: str,
        signed: bool,
        mask_secret: bytes = b"",
        cache_size: int = 4096,
        cache_features: int = 65536,
    ) -> None:
        self.policy = policy
        self.revision = revision
        self.digest = digest
        self.source = source
        self.signed = signed
        self.catalog = Catalog(policy)
        self.access = Access(policy, self.catalog)
        self.project = policy.project.encode("utf-8")
        # Stable for a given bundle (so masked columns join), different across bundles and
        # secrets (so nobody precomputes hashes without the bundle).
        self.mask_key = hmac.new(mask_secret, f"mask:{digest}".encode(), hashlib.sha256).digest()
        self._cache: OrderedDict[tuple[str, tuple[str, ...], tuple[str, ...]], Prepared] = (
            OrderedDict()
        )
        self._cache_size = cache_size
        # Plans grow with the features they name: bounded by those too, not by count alone,
        # so that callers naming many large feature sets cannot grow the cache without end.
        self._cache_features = cache_features
        self._cached_features = 0

    def prepare(self, identity: Identity, refs: tuple[str, ...]) -> Prepared:
        key = (identity.principal, identity.groups, refs)
        prepared = self._cache.get(key)
        if prepared is not None:
            self._cache.move_to_end(key)
            return prepared
        prepared = self._prepare(identity, refs)
        cache = self._cache
        cache[key] = prepared
        self._cached_features += len(refs)
        while len(cache) > self._cache_size or (
            self._cached_features > self._cache_features and len(cache) > 1
        ):
            (_, _, gone), _ = cache.popitem(last=False)
            self._cached_features -= len(gone)
        return prepared

    def _prepare(self, identity: Identity, refs: tuple[str, ...]) -> Prepared:
        features = tuple(self.catalog.resolve(refs))
        roles = self.access.roles_of(identity)
        decisions = tuple(self.access.decide(roles, f.ref) for f in features)
        allowed = [f for f, d in zip(features, decisions, strict=True) if d.allowed]
        plan = build_plan(self.catalog, allowed)
        slot_of: list[int] = []
        next_slot = 0
        for decision in decisions:
            if decision.allowed:
                slot_of.append(next_slot)
                next_slot += 1
            else:
                slot_of.append(-1)
        join_keys: dict[str, tuple[ValueKind, str]] = {}
        for feature in allowed:
            for name, kind in self.catalog.views[feature.view].join_keys:
                join_keys.setdefault(name, (kind, feature.view))
        return Prepared(
            roles=roles,
            features=features,
            decisions=decisions,
            denied=tuple(d.ref for d in decisions if not d.allowed),
            plan=plan,
            slot_of=tuple(slot_of),
            join_keys=join_keys,
            limits=self.access.limits_of(roles),
            allowed=[d.ref for d in decisions if d.allowed],
            masked=[d.ref for d in decisions if d.allowed and d.mask],
            columns=plan_columns(wanted_of(features, decisions, slot_of, plan)),
            names=wire.names(refs),
        )


class ActivePolicy:
    """The snapshot calls read now; replaced whole by activation."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None

    def swap(self, snapshot: Snapshot) -> Snapshot | None:
        previous, self.current = self.current, snapshot
        return previous
