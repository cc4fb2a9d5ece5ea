"""The request path of GetFeatures and ListFeatures, free of gRPC.

validate -> decide (cached per caller and feature set) -> one Redis round trip -> decode ->
serving rules -> response. The gRPC layer passes in the verified identity and converts errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featuresidecar.v1 import feature_service_pb2 as pb

from . import wire
from .access import Identity
from .cache import EntityCache
from .columns import Served, TimestampCache, build_columns
from .errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    listed,
    named,
    quoted,
)
from .layout import ReadPlan, entity_keys, pack_commands
from .ratelimit import RateLimiter
from .snapshot import ActivePolicy, Prepared, Snapshot


@dataclass
class CallRecord:
    """What one call did, for the decision log and metrics."""

    # Size of the request on the wire: what the call's entity values cost to hold, roughly.
    request_bytes: int = 0
    principal: str = ""
    roles: tuple[str, ...] = ()
    revision: int = 0
    entities: int = 0
    features: int = 0
    # Shared with the caller's cached plan: never changed in place.
    allowed: Sequence[str] = ()
    denied: Sequence[str] = ()
    masked: Sequence[str] = ()
    entity_values: dict[str, list[Any]] = field(default_factory=dict)
    # (view, statuses, event timestamps, how many columns share them) of served columns, or a
    # group of them shared by calls (see columns.StatsGroup).
    columns: list[Served] = field(default_factory=list)
    rate_limited: bool = False
    now_ns: int = 0


class FeatureReader:
    def __init__(
        self,
        active: ActivePolicy,
        store: Any,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        limiter: RateLimiter | None = None,
        cache: EntityCache | None = None,
        max_rows: int = 100_000,
    ) -> None:
        self.active = active
        self.store = store
        self.cache = cache
        self.max_rows = max_rows
        self.clock_ns = clock_ns
        self.limiter = limiter or RateLimiter(time.monotonic)
        self.stamps = TimestampCache()

    def snapshot(self) -> Snapshot:
        snapshot = self.active.current
        if snapshot is None:
            raise Unavailable("no policy bundle is active yet; the sidecar is starting")
        return snapshot

    async def get_features(
        self,
        request: pb.GetFeaturesRequest,
        identity: Identity,
        record: CallRecord,
        timeout: float | None = None,
    ) -> bytes:
        """The serialized GetFeaturesResponse; `timeout` is what is left of the caller's
        deadline, if it set one."""
        snapshot = self.snapshot()
        record.principal = identity.principal
        record.revision = snapshot.revision
        refs = _requested(request, snapshot)
        entities, rows = _entities(request.entities, snapshot, self.max_rows)
        record.entities = rows
        record.features = len(refs)
        record.entity_values = entities
        prepared = snapshot.prepare(identity, refs)
        record.roles = prepared.roles
        self._check_access(prepared, identity, request.allow_partial, rows, record)
        _check_join_keys(prepared, entities)
        # Shared with the cached plan: readers only.
        record.allowed = prepared.allowed
        record.masked = prepared.masked

        plan = prepared.plan
        replies: list[Any] = []
        cache = self.cache
        if rows and plan.slots and cache is None:
            payload = pack_commands(plan, entities, rows, snapshot.project)
            replies = await self.store.fetch(payload, rows * len(plan.groups), timeout)
        elif rows and plan.slots and cache is not None:
            keys = [entity_keys(g, entities, rows, snapshot.project) for g in plan.groups]
            # A cached read may serve other callers too: it runs under the store's own
            # timeout, and this caller waits for it within its deadline.
            replies = await cache.fetch(self.store.fetch, plan.groups, keys, timeout)
        if replies:
            _check_widths(plan, replies, rows)
        now = self.clock_ns()
        record.now_ns = now
        try:
            columns = build_columns(
                prepared.columns,
                plan,
                replies,
                rows,
                now,
                snapshot.mask_key,
                self.stamps,
                record.columns,
            )
        except (TypeError, ValueError, IndexError):
            # Looked into only when decoding failed: a value that is neither a string nor nil
            # is garbage from the server, not a bug of the sidecar.
            foreign = _foreign_value(replies)
            if foreign is None:
                raise
            raise Unavailable(f"Redis answered HMGET with {foreign} among the values") from None
        return wire.response(prepared.names, columns, snapshot.revision, rows)

    def _check_access(
        self,
        prepared: Prepared,
        identity: Identity,
        allow_partial: bool,
        rows: int,
        record: CallRecord,
    ) -> None:
        record.denied = prepared.denied
        if prepared.denied and not allow_partial:
            if not prepared.roles:
                raise PermissionDenied(
                    f"principal {quoted(identity.principal)} holds no role in this policy and may "
                    f"not read: {listed(prepared.denied)}"
                )
            raise PermissionDenied(
                f"principal {quoted(identity.principal)} may not read: {listed(prepared.denied)}"
            )
        limits = prepared.limits
        if limits.max_entities is not None and rows > limits.max_entities:
            raise ResourceExhausted(
                f"entities: {rows} rows exceed this caller's limit of {limits.max_entities} "
                f"per request; split the batch"
            )
        if limits.requests_per_second is not None:
            wait = self.limiter.acquire(
                identity.principal, limits.requests_per_second, limits.burst
            )
            if wait > 0:
                record.rate_limited = True
                wait_ms = max(1, int(wait * 1000 + 0.999))
                raise ResourceExhausted(
                    f"principal {quoted(identity.principal)} is over its limit of "
                    f"{limits.requests_per_second:g} requests per second; retry in {wait_ms} ms",
                    metadata=(("retry-after-ms", str(wait_ms)),),
                )

    def list_features(
        self, request: pb.ListFeaturesRequest, identity: Identity
    ) -> pb.ListFeaturesResponse:
        snapshot = self.snapshot()
        catalog = snapshot.catalog
        access = snapshot.access
        roles = access.roles_of(identity)
        if request.view and request.view not in catalog.views:
            raise NotFound(f"view: unknown feature view {quoted(request.view)}")
        response = pb.ListFeaturesResponse(policy_revision=snapshot.revision)
        readable: set[str] = set()
        for ref, feature in catalog.features.items():
            decision = access.decide(roles, ref)
            if not decision.allowed:
                continue
            readable.add(ref)
            if request.view and feature.view != request.view:
                continue
            if request.tag and request.tag not in feature.tags:
                continue
            info = catalog.views[feature.view]
            response.features.add(
                ref=ref,
                view=feature.view,
                name=feature.name,
                type=feature.kind.number,
                description=feature.description,
                owner=feature.owner,
                tags=feature.tags,
                entities=info.view.entities,
                join_keys=[name for name, _ in info.join_keys],
                # What is enforced for this caller: a rule may tighten the view's maximum age.
                max_age_seconds=(decision.max_age_ns or 0) // 1_000_000_000,
                dim=feature.dim,
            )
        for name, refs in catalog.services.items():
            if refs and all(ref in readable for ref in refs):
                response.feature_services.add(
                    name=name, description=catalog.service_descriptions[name], features=refs
                )
        for entity in catalog.entities.values():
            message = response.entities.add(name=entity.name, description=entity.description)
            for key in entity.join_keys:
                message.join_keys.add(name=key.name, type=key.kind.number)
        return response


def _requested(request: pb.GetFeaturesRequest, snapshot: Snapshot) -> tuple[str, ...]:
    if request.feature_service:
        if request.features:
            raise InvalidArgument(
                "features and feature_service are exclusive: set one of them, not both"
            )
        return snapshot.catalog.service(request.feature_service)
    if not request.features:
        raise InvalidArgument("features: name at least one feature, or set feature_service")
    return tuple(request.features)


def _entities(
    columns: Mapping[str, pb.EntityColumn], snapshot: Snapshot, max_rows: int
) -> tuple[dict[str, list[Any]], int]:
    """Entity columns as Python lists, checked against the catalog's join keys."""
    out: dict[str, list[Any]] = {}
    rows = -1
    first = ""
    known = snapshot.catalog.join_keys
    for name in sorted(columns):
        column = columns[name]
        kind = known.get(name)
        if kind is None:
            raise InvalidArgument(
                f"entities.{named(name)}: unknown join key (the catalog has: "
                f"{listed(sorted(known))})"
            )
        which = column.WhichOneof("values")
        if which is None:
            raise InvalidArgument(f"entities.{name}: no values; set int64_values or string_values")
        expected = "string_values" if kind.element in ("string", "bytes") else "int64_values"
        if which != expected:
            wanted = "string" if expected == "string_values" else "int64"
            given = "string" if which == "string_values" else "int64"
            raise InvalidArgument(
                f"entities.{name}: join key {name!r} takes {wanted} values, "
                f"but the request carries {given} values"
            )
        given = getattr(column, which).values
        if len(given) > max_rows:
            raise ResourceExhausted(
                f"entities.{name}: {len(given)} rows exceed the sidecar's limit of {max_rows} "
                f"per request (--max-request-entities); split the batch"
            )
        values = list(given)
        if rows < 0:
            rows, first = len(values), name
        elif len(values) != rows:
            raise InvalidArgument(
                f"entities.{name}: has {len(values)} values but entities.{first} has {rows}; "
                f"every join key needs one value per row"
            )
        if kind.element == "int32":
            for i, value in enumerate(values):
                if not -(2**31) <= value < 2**31:
                    raise InvalidArgument(
                        f"entities.{name}[{i}]: {value} is out of range for int32"
                    )
        out[name] = values
    return out, max(rows, 0)


def _check_widths(plan: ReadPlan, replies: Sequence[Any], rows: int) -> None:
    """Each HMGET reply holds one value per field asked: anything else (a server that is not
    a sound Redis) would put values in the wrong columns."""
    for number, group in enumerate(plan.groups):
        widths = set(map(len, replies[number * rows : (number + 1) * rows]))
        if widths != {len(group.fields)}:
            wrong = min(widths - {len(group.fields)})
            raise Unavailable(
                f"Redis answered an HMGET of {len(group.fields)} fields with {wrong} values"
            )


def _foreign_value(replies: Sequence[Any]) -> str | None:
    """What a reply holds that is neither a string nor nil, if anything."""
    for reply in replies:
        for value in reply:
            if isinstance(value, list):
                return "an array"
            if value is not None and not isinstance(value, bytes):
                return f"a value of type {type(value).__name__}"
    return None


def _check_join_keys(prepared: Prepared, entities: Mapping[str, Any]) -> None:
    for name, (_, view) in prepared.join_keys.items():
        if name not in entities:
            raise InvalidArgument(
                f"entities: missing join key {name!r}, needed by feature view {view!r}"
            )
