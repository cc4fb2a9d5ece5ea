"""Feast's Redis online-store layout: which keys and hash fields answer a request (pure).

One hash per entity key; its fields are the 4-byte little-endian murmur3_32 of ``view:feature``
and ``_ts:<view>``. Views with the same join keys share a hash, so a request costs one HMGET per
distinct join-key set and row, all sent in one pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import mmh3

from .catalog import Catalog
from .entity_key import EntityValueError, key_prefix, serialize_value
from .errors import InvalidArgument
from .policy import Feature
from .resp import pack_args
from .valuetypes import ValueKind


@lru_cache(maxsize=65536)
def field_of(ref: str) -> bytes:
    """The hash field of feature ``view:feature``."""
    return mmh3.hash(ref, signed=False).to_bytes(4, "little")


def ts_field_of(view: str) -> bytes:
    return f"_ts:{view}".encode()


@dataclass(frozen=True)
class Group:
    """Views that share one entity key: one HMGET per row."""

    join_keys: tuple[tuple[str, ValueKind], ...]
    prefix: bytes
    fields: tuple[bytes, ...]

    @cached_property
    def command_head(self) -> bytes:
        """RESP of `HMGET` up to the key: the same for every row."""
        return b"*%d\r\n$5\r\nHMGET\r\n" % (len(self.fields) + 2)

    @cached_property
    def command_tail(self) -> bytes:
        """RESP of the field arguments after the key: packed once per plan."""
        return pack_args(self.fields)


@dataclass(frozen=True)
class Slot:
    """Where one requested feature's value and timestamp sit in the replies."""

    feature: Feature
    group: int
    field: int
    ts_field: int
    max_age_ns: int | None


@dataclass(frozen=True)
class ReadPlan:
    groups: tuple[Group, ...]
    slots: tuple[Slot, ...]


def build_plan(catalog: Catalog, features: Sequence[Feature]) -> ReadPlan:
    by_keys: dict[tuple[str, ...], int] = {}
    group_keys: list[tuple[tuple[str, ValueKind], ...]] = []
    group_fields: list[dict[bytes, int]] = []
    slots: list[Slot] = []
    for feature in features:
        info = catalog.views[feature.view]
        names = tuple(name for name, _ in info.join_keys)
        g = by_keys.get(names)
        if g is None:
            g = by_keys[names] = len(group_keys)
            group_keys.append(info.join_keys)
            group_fields.append({})
        fields = group_fields[g]
        field = fields.setdefault(field_of(feature.ref), len(fields))
        ts = fields.setdefault(ts_field_of(feature.view), len(fields))
        slots.append(Slot(feature, g, field, ts, info.max_age_ns))
    groups = tuple(
        Group(keys, key_prefix([n for n, _ in keys]), tuple(fields))
        for keys, fields in zip(group_keys, group_fields, strict=True)
    )
    return ReadPlan(groups, tuple(slots))


def entity_keys(
    group: Group,
    entities: Mapping[str, Sequence[int | str]],
    rows: int,
    project: bytes,
) -> list[bytes]:
    """The Redis key of every row for one group; entity columns were validated already."""
    if len(group.join_keys) == 1:
        name, kind = group.join_keys[0]
        column = entities[name]
        prefix = group.prefix
        try:
            return [prefix + serialize_value(kind, v) + project for v in column]
        except EntityValueError as exc:
            raise InvalidArgument(f"entities.{name}: {exc}") from None
    columns = [(name, kind, entities[name]) for name, kind in group.join_keys]
    keys = []
    for row in range(rows):
        parts = [group.prefix]
        for name, kind, column in columns:
            try:
                parts.append(serialize_value(kind, column[row]))
            except EntityValueError as exc:
                raise InvalidArgument(f"entities.{name}[{row}]: {exc}") from None
        parts.append(project)
        keys.append(b"".join(parts))
    return keys


def hmget(group: Group, key: bytes) -> bytes:
    """The RESP of one HMGET of `group`'s fields for one entity."""
    return b"%s$%d\r\n%s\r\n%s" % (group.command_head, len(key), key, group.command_tail)


def pack_commands(
    plan: ReadPlan, entities: Mapping[str, Sequence[int | str]], rows: int, project: bytes
) -> bytes:
    """Every HMGET of a request as one RESP payload (groups in order, rows in order)."""
    return b"".join(
        hmget(group, key)
        for group in plan.groups
        for key in entity_keys(group, entities, rows, project)
    )
