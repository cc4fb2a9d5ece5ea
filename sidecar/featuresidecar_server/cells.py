"""Typed loader input as Feast Value bytes, strictly and a column at a time (pure).

`encode_column` turns a column of typed values (a Python sequence with None for null, a NumPy
array, or a masked array whose mask marks nulls) into the bytes the sidecar reads; join keys and
event times have their own encoders. Nothing is guessed: a value that is not exactly of the
declared type raises `CellError`, naming its index in the column, the value and the problem.
Numeric NumPy columns are encoded without a Python check per value. `cell_text` reads CSV text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final

import numpy as np

from .codec import encode_timestamp, encode_value, varint
from .entity_key import serialize_value
from .valuetypes import KINDS, ValueKind

_NS: Final = 1_000_000_000
INT_RANGE: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
_SHOWN_CHARS: Final = 60
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# One column of input: a Python sequence (None for null), a NumPy array, or a masked array whose
# mask marks nulls.
Values = Sequence[Any] | np.ndarray


class CellError(ValueError):
    """One value that does not convert; `index` is its position in the column.

    The message reads on from "row N, column 'c': ", e.g. "'abc' is not an int64".
    """

    def __init__(self, index: int, value: Any, problem: str) -> None:
        super().__init__(f"{show(value)} {problem}")
        self.index = index
        self.value = value
        self.problem = problem


class MissingValue(CellError):
    """A null where the loader needs a value (a join key, an event time)."""

    def __init__(self, index: int, needed: str) -> None:
        ValueError.__init__(self, f"no value, and every row needs {needed}")
        self.index = index
        self.value = None
        self.problem = f"needs {needed}"


def show(value: Any) -> str:
    """A value as an error message quotes it, cut short when long."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def noun(kind_name: str) -> str:
    """'an int64', 'a double', ...: what a value failed to be."""
    return ("an " if kind_name[0] in "aeiou" else "a ") + kind_name


def datetime_ns(stamp: datetime) -> int:
    """Exact Unix nanoseconds of a datetime; a naive one is taken as UTC."""
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    delta = stamp - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000


def in_ns_range(ns: int) -> int:
    if not -(2**63) < ns < 2**63:
        raise ValueError("is out of range for a timestamp (years 1678 to 2262)")
    return ns


def fits_float(value: float, element: str) -> float:
    if element == "float" and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise ValueError("is out of range for float")
    return value


# --- Python values ------------------------------------------------------------------------------


def _py_int(element: str) -> Callable[[Any], Any]:
    low, high = INT_RANGE[element]

    def check(value: Any) -> int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"is not {noun(element)}")
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"is out of range for {element}")
        return number

    return check


def _py_float(element: str) -> Callable[[Any], Any]:
    def check(value: Any) -> float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise ValueError(f"is not {noun(element)}")
        return fits_float(float(value), element)

    return check


def _py_bool(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise ValueError("is not a bool (use True, False, 1 or 0)")


def _py_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("is not a string")
    return value


def _py_bytes(value: Any) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueError("is not bytes")
    return bytes(value)


def _py_timestamp(value: Any) -> int:
    """Unix nanoseconds from an int (already nanoseconds), a datetime or a numpy datetime64."""
    if isinstance(value, datetime):
        return in_ns_range(datetime_ns(value))
    if isinstance(value, date):
        return in_ns_range(datetime_ns(datetime(value.year, value.month, value.day)))
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise ValueError("is not a timestamp (NaT)")
        return int(value.astype("datetime64[ns]").astype(np.int64))
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return in_ns_range(int(value))
    raise ValueError("is not a timestamp (give Unix nanoseconds or a datetime)")


PYTHON_SCALARS: Final[dict[str, Callable[[Any], Any]]] = {
    "int32": _py_int("int32"),
    "int64": _py_int("int64"),
    "float": _py_float("float"),
    "double": _py_float("double"),
    "bool": _py_bool,
    "string": _py_string,
    "bytes": _py_bytes,
    "timestamp": _py_timestamp,
}


def bad_item(kind: ValueKind, index: int, item: Any, problem: str) -> ValueError:
    """The problem of a list whose item `index` does not convert."""
    if item is None:
        return ValueError(
            f"is not {noun(kind.name)} (item {index + 1} is null; a list cannot hold nulls)"
        )
    return ValueError(f"is not {noun(kind.name)} (item {index + 1}: {show(item)} {problem})")


def check_value(value: Any, kind: ValueKind, dim: int = 0) -> Any:
    """`value` as the plain Python value `codec.encode_value` takes; ValueError(problem)."""
    scalar = PYTHON_SCALARS[kind.element]
    if not kind.is_list:
        return scalar(value)
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"is not {noun(kind.name)} (give a list)")
    items = []
    for i, item in enumerate(value):
        if item is None:
            raise bad_item(kind, i, item, "")
        try:
            items.append(scalar(item))
        except ValueError as exc:
            raise bad_item(kind, i, item, str(exc)) from None
    _check_dim(len(items), dim)
    return items


def _check_dim(length: int, dim: int) -> None:
    if dim and length != dim:
        raise ValueError(f"has {length} items, but the feature declares dim {dim}")


# --- encoding -----------------------------------------------------------------------------------

# Tag byte and NumPy dtype of the one-field Value Feast writes for fixed-width scalars.
_FIXED: Final = {"double": (0x29, "<f8"), "float": (0x35, "<f4")}
_BOOL_BYTES: Final = (encode_value(False, KINDS["bool"]), encode_value(True, KINDS["bool"]))


def encode_column(values: Values, kind: ValueKind, dim: int = 0) -> list[bytes]:
    """Value bytes for every row (null rows get the null Value); CellError on a bad value."""
    if isinstance(values, np.ndarray):
        fast = _encode_array(values, kind)
        if fast is not None:
            return fast
        values = values.tolist()  # masked rows become None
    if kind.is_list and kind.element in _FIXED:
        return _encode_float_lists(values, kind, dim)
    null = encode_value(None, kind)
    out: list[bytes] = []
    for i, value in enumerate(values):
        if value is None:
            out.append(null)
            continue
        try:
            out.append(encode_value(check_value(value, kind, dim), kind))
        except ValueError as exc:
            raise CellError(i, value, str(exc)) from None
    return out


def _encode_array(array: np.ndarray, kind: ValueKind) -> list[bytes] | None:
    """The column encoded from NumPy without a Python check per value, or None to go slow."""
    if kind.is_list or array.ndim != 1:
        return None
    nulls = np.ma.getmaskarray(array) if isinstance(array, np.ma.MaskedArray) else None
    data = np.ma.getdata(array)
    kinds = data.dtype.kind
    element = kind.element
    if element in _FIXED and kinds in "fiu":
        if element == "float":
            bad = np.isfinite(data) & (np.abs(data.astype(np.float64)) > FLOAT32_MAX)
            _raise_first(bad, nulls, data, "is out of range for float")
        out = _fixed_width(data, element)
    elif element == "bool" and kinds == "b":
        out = [_BOOL_BYTES[v] for v in data.tolist()]
    elif element in INT_RANGE and kinds in "iu":
        low, high = INT_RANGE[element]
        if data.size and (int(data.min()) < low or int(data.max()) > high):
            bad = (data < low) | (data > high) if kinds == "i" else data > high
            _raise_first(bad, nulls, data, f"is out of range for {element}")
        out = [encode_value(v, kind) for v in data.tolist()]
    elif element == "timestamp" and kinds in "iuM":
        ns = data.astype("datetime64[ns]").view(np.int64) if kinds == "M" else data
        if kinds == "M":
            nat = np.isnat(data)
            nulls = nat if nulls is None else nulls | nat
        out = [encode_value(v, kind) for v in ns.tolist()]
    else:
        return None
    if nulls is not None and nulls.any():
        null = encode_value(None, kind)
        for i in np.flatnonzero(nulls).tolist():
            out[i] = null
    return out


def _raise_first(bad: np.ndarray, nulls: np.ndarray | None, data: np.ndarray, problem: str) -> None:
    if nulls is not None:
        bad = bad & ~nulls
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise CellError(index, data[index].item(), problem)


def _fixed_width(data: np.ndarray, element: str) -> list[bytes]:
    tag, dtype = _FIXED[element]
    rows = len(data)
    width = np.dtype(dtype).itemsize
    block = np.empty((rows, width + 1), dtype=np.uint8)
    block[:, 0] = tag
    block[:, 1:] = np.ascontiguousarray(data, dtype=dtype).view(np.uint8).reshape(rows, width)
    raw = block.tobytes()
    step = width + 1
    return [raw[i : i + step] for i in range(0, rows * step, step)]


def _encode_float_lists(values: Values, kind: ValueKind, dim: int) -> list[bytes]:
    """float_list/double_list rows: NumPy packs each row's elements in one call."""
    dtype = _FIXED[kind.element][1]
    header = varint(kind.number << 3 | 2)
    out: list[bytes] = []
    for i, value in enumerate(values):
        if value is None:
            out.append(b"")
            continue
        try:
            if (
                isinstance(value, np.ndarray)
                and value.ndim == 1
                and value.dtype.kind in "fiu"
                and not isinstance(value, np.ma.MaskedArray)
            ):
                if kind.element == "float" and bool(
                    (np.isfinite(value) & (np.abs(value.astype(np.float64)) > FLOAT32_MAX)).any()
                ):
                    raise ValueError("is not a float_list (an item is out of range for float)")
                _check_dim(len(value), dim)
                packed = value.astype(dtype).tobytes()
            else:
                packed = np.asarray(check_value(value, kind, dim), dtype=dtype).tobytes()
        except ValueError as exc:
            raise CellError(i, value, str(exc)) from None
        inner = (b"\x0a" + varint(len(packed)) + packed) if packed else b""
        out.append(header + varint(len(inner)) + inner)
    return out


# --- join keys ----------------------------------------------------------------------------------


def encode_key_column(values: Values, kind: ValueKind) -> list[bytes]:
    """Each row's join key value serialized as Feast's entity key carries it."""
    if isinstance(values, np.ndarray):
        values = values.tolist()  # masked rows become None
    check = PYTHON_SCALARS[kind.element]
    out: list[bytes] = []
    for i, value in enumerate(values):
        if value is None:
            raise MissingValue(i, "a join key value")
        try:
            out.append(serialize_value(kind, check(value)))
        except ValueError as exc:
            raise CellError(i, value, str(exc)) from None
    return out


# --- event times --------------------------------------------------------------------------------


def encode_event_times(values: Values) -> list[bytes]:
    """`_ts:<view>` bytes for every row from Unix nanoseconds, datetimes or datetime64s."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        if bool(np.isnat(values).any()):
            raise MissingValue(int(np.flatnonzero(np.isnat(values))[0]), "an event time")
        values = values.astype("datetime64[ns]").view(np.int64)
    if (
        isinstance(values, np.ndarray)
        and values.dtype.kind in "iu"
        and not isinstance(values, np.ma.MaskedArray)
    ):
        return [encode_timestamp(v) for v in values.tolist()]
    if isinstance(values, np.ndarray):
        values = values.tolist()
    out: list[bytes] = []
    for i, value in enumerate(values):
        if value is None:
            raise MissingValue(i, "an event time")
        try:
            out.append(encode_timestamp(_py_timestamp(value)))
        except ValueError as exc:
            raise CellError(i, value, str(exc)) from None
    return out
