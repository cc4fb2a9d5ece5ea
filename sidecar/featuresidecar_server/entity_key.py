"""Feast entity key serialization, version 3: the Redis key of one entity (pure).

Layout (all integers little-endian uint32 unless noted), join keys sorted by name:
``count`` then per key ``type=2 (STRING), len, utf-8 name``, then per value ``type, len, bytes``
(int64 as int64 LE, int32 as int32 LE, string as utf-8, bytes as is). The Redis key is that
serialization followed by the project name. docs/redis-layout.md has a worked example.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from .valuetypes import ValueKind

_STRING: Final = 2
_INT64 = struct.Struct("<IIq")
_INT32 = struct.Struct("<IIi")
_HEADER = struct.Struct("<II")


class EntityValueError(ValueError):
    """An entity value that does not fit its join key's type."""


def key_prefix(join_key_names: Sequence[str]) -> bytes:
    """The part of every key that depends only on the (sorted) join key names."""
    names = sorted(join_key_names)
    out = [struct.pack("<I", len(names))]
    for name in names:
        encoded = name.encode("utf-8")
        out.append(_HEADER.pack(_STRING, len(encoded)))
        out.append(encoded)
    return b"".join(out)


def serialize_value(kind: ValueKind, value: int | str | bytes) -> bytes:
    """One entity value, as Feast writes it after the key names."""
    element = kind.element
    if element == "int64":
        if not isinstance(value, int):
            raise EntityValueError(f"expected an int64, got {type(value).__name__}")
        if not -(2**63) <= value < 2**63:
            raise EntityValueError(f"{value} is out of range for int64")
        return _INT64.pack(4, 8, value)
    if element == "int32":
        if not isinstance(value, int):
            raise EntityValueError(f"expected an int32, got {type(value).__name__}")
        if not -(2**31) <= value < 2**31:
            raise EntityValueError(f"{value} is out of range for int32")
        return _INT32.pack(3, 4, value)
    if element == "string":
        if not isinstance(value, str):
            raise EntityValueError(f"expected a string, got {type(value).__name__}")
        encoded = value.encode("utf-8")
        return _HEADER.pack(_STRING, len(encoded)) + encoded
    if element == "bytes":
        raw = value.encode("utf-8") if isinstance(value, str) else value
        if not isinstance(raw, bytes):
            raise EntityValueError(f"expected bytes, got {type(value).__name__}")
        return _HEADER.pack(1, len(raw)) + raw
    raise EntityValueError(f"join keys cannot have type {kind.name}")


def redis_key(
    join_keys: Sequence[tuple[str, ValueKind]],
    values: Sequence[int | str | bytes],
    project: str,
) -> bytes:
    """The Redis key of one entity; `values` follow the order of `join_keys`."""
    order = sorted(range(len(join_keys)), key=lambda i: join_keys[i][0])
    parts = [key_prefix([name for name, _ in join_keys])]
    parts.extend(serialize_value(join_keys[i][1], values[i]) for i in order)
    parts.append(project.encode("utf-8"))
    return b"".join(parts)
