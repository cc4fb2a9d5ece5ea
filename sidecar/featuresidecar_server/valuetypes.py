"""The value types a feature can have, and how each travels on the wire and in Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class ValueKind:
    """One feature value type, e.g. ``int64`` or ``float_list``."""

    name: str
    # The number shared by our ValueType enum, Feast's ValueType enum and Feast's Value oneof.
    number: int
    element: str
    is_list: bool
    # NumPy dtype of one element in a column's `data` buffer; None for strings and bytes.
    dtype: str | None

    @property
    def fixed_width(self) -> bool:
        return self.dtype is not None

    @property
    def numeric(self) -> bool:
        """Whether a scalar of this kind fits a float64 matrix cell."""
        return not self.is_list and self.element in _NUMERIC


_NUMERIC: Final = frozenset({"int32", "int64", "float", "double", "bool"})

_ELEMENTS: Final = (
    # name, scalar number, list number, dtype
    ("bytes", 1, 11, None),
    ("string", 2, 12, None),
    ("int32", 3, 13, "<i4"),
    ("int64", 4, 14, "<i8"),
    ("double", 5, 15, "<f8"),
    ("float", 6, 16, "<f4"),
    ("bool", 7, 17, "u1"),
    ("timestamp", 8, 18, "<i8"),
)

KINDS: Final[dict[str, ValueKind]] = {}
for _name, _scalar, _list, _dtype in _ELEMENTS:
    KINDS[_name] = ValueKind(_name, _scalar, _name, False, _dtype)
    KINDS[f"{_name}_list"] = ValueKind(f"{_name}_list", _list, _name, True, _dtype)

BY_NUMBER: Final[dict[int, ValueKind]] = {k.number: k for k in KINDS.values()}

STRING: Final = KINDS["string"]

# Join keys can hold these types (what Feast's entity key serialization supports).
JOIN_KEY_KINDS: Final = frozenset({"int32", "int64", "string", "bytes"})
