"""Row statuses and value types as the wire numbers them (featuresidecar.v1)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import numpy as np


class Status(enum.IntEnum):
    """The status of one row of one feature; the numbers are the wire's FeatureStatus."""

    PRESENT = 1
    NULL_VALUE = 2
    NOT_FOUND = 3
    STALE = 4
    MASKED = 5
    DENIED = 6


def status_name(number: int) -> str:
    try:
        return Status(number).name
    except ValueError:
        # A newer sidecar may add statuses; show the number instead of failing the whole result.
        return f"STATUS_{number}"


@dataclass(frozen=True)
class ValueType:
    """One value type of the wire: its lower-case name and how its elements are laid out."""

    name: str
    number: int
    element: str
    is_list: bool
    # dtype of one element in the column's `data` buffer; None for strings and bytes.
    dtype: np.dtype[np.generic] | None

    @property
    def numeric(self) -> bool:
        """Whether a scalar of this type fits a float matrix cell."""
        return not self.is_list and self.element in _NUMERIC


_NUMERIC: Final = frozenset({"int32", "int64", "float", "double", "bool"})

_ELEMENTS: Final = (
    # element, scalar number, list number, element dtype on the wire (little-endian)
    ("bytes", 1, 11, None),
    ("string", 2, 12, None),
    ("int32", 3, 13, "<i4"),
    ("int64", 4, 14, "<i8"),
    ("double", 5, 15, "<f8"),
    ("float", 6, 16, "<f4"),
    # One byte 0 or 1 per value: NumPy's bool has the same layout, so no conversion is needed.
    ("bool", 7, 17, "?"),
    # int64 Unix nanoseconds: the layout of datetime64[ns].
    ("timestamp", 8, 18, "<M8[ns]"),
)

VALUE_TYPES: Final[dict[int, ValueType]] = {}
for _element, _scalar, _list, _dtype in _ELEMENTS:
    _np_dtype = None if _dtype is None else np.dtype(_dtype)
    VALUE_TYPES[_scalar] = ValueType(_element, _scalar, _element, False, _np_dtype)
    VALUE_TYPES[_list] = ValueType(f"{_element}_list", _list, _element, True, _np_dtype)


def type_name(number: int) -> str:
    """Lower-case type name ("double", "float_list"); unknown numbers stay visible."""
    known = VALUE_TYPES.get(number)
    return known.name if known is not None else f"unknown_type_{number}"
