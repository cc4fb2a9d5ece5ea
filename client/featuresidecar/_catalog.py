"""What ListFeatures answers, as plain frozen dataclasses (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from ._types import type_name
from .v1 import feature_service_pb2 as pb


@dataclass(frozen=True)
class FeatureInfo:
    """One feature the caller may read."""

    ref: str
    view: str
    name: str
    # Lower-case value type: "int64", "double", "string", "float_list", ...
    type: str
    description: str
    owner: str
    tags: tuple[str, ...]
    entities: tuple[str, ...]
    # The join keys a request must carry for this feature, sorted by name.
    join_keys: tuple[str, ...]
    # Values older than this are served as STALE; 0 means no limit.
    max_age_seconds: int
    # Declared length of a list feature (an embedding's dimension); 0 when not declared.
    dim: int


@dataclass(frozen=True)
class FeatureServiceInfo:
    """A named set of features, listed only when the caller may read all of them."""

    name: str
    description: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class JoinKeyInfo:
    name: str
    type: str


@dataclass(frozen=True)
class EntityInfo:
    name: str
    join_keys: tuple[JoinKeyInfo, ...]
    description: str


@dataclass(frozen=True)
class Catalog:
    """The features, feature services and entities of the sidecar's active policy."""

    features: tuple[FeatureInfo, ...]
    services: tuple[FeatureServiceInfo, ...]
    entities: tuple[EntityInfo, ...]
    policy_revision: int

    def feature(self, ref: str) -> FeatureInfo:
        for info in self.features:
            if info.ref == ref:
                return info
        raise KeyError(f"{ref!r} is not in this catalog (it lists {len(self.features)} features)")

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(info.ref for info in self.features)


def catalog_from(response: pb.ListFeaturesResponse) -> Catalog:
    return Catalog(
        features=tuple(
            FeatureInfo(
                ref=f.ref,
                view=f.view,
                name=f.name,
                type=type_name(f.type),
                description=f.description,
                owner=f.owner,
                tags=tuple(f.tags),
                entities=tuple(f.entities),
                join_keys=tuple(f.join_keys),
                max_age_seconds=int(f.max_age_seconds),
                dim=int(f.dim),
            )
            for f in response.features
        ),
        services=tuple(
            FeatureServiceInfo(s.name, s.description, tuple(s.features))
            for s in response.feature_services
        ),
        entities=tuple(
            EntityInfo(
                e.name,
                tuple(JoinKeyInfo(k.name, type_name(k.type)) for k in e.join_keys),
                e.description,
            )
            for e in response.entities
        ),
        policy_revision=int(response.policy_revision),
    )


def list_request(view: str | None, tag: str | None) -> pb.ListFeaturesRequest:
    for field, value in (("view", view), ("tag", tag)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{field}: expected a str, got {type(value).__name__}")
    return pb.ListFeaturesRequest(view=view or "", tag=tag or "")
