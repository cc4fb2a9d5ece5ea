"""One FeatureColumn of a response read as NumPy views over its bytes, checked once (pure).

Fixed-width values are never turned into Python objects here: `np.frombuffer` views the bytes
the message holds. Reading a bytes field of a upb-backed protobuf message returns a fresh copy
each time, so the column reads each field once and keeps it: every view shares that one copy.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from ._errors import malformed
from ._types import VALUE_TYPES, Status, ValueType
from .v1 import feature_service_pb2 as pb

ColumnValues: TypeAlias = (
    npt.NDArray[Any]
    | list[str]
    | list[bytes]
    | list[npt.NDArray[Any]]
    | list[list[str]]
    | list[list[bytes]]
)

_NAT = np.datetime64("NaT", "ns")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_MIN = -(2**63)
_OFFSET = np.dtype("<u4")
_TIME = np.dtype("<i8")


class Column:
    """The decoded view of one feature's column; every check happens in the constructor."""

    def __init__(self, name: str, message: pb.FeatureColumn, rows: int) -> None:
        kind = VALUE_TYPES.get(message.type)
        if kind is None:
            raise malformed(
                f"column {name!r} has value type {message.type}, unknown to this client "
                "(a newer sidecar? upgrade featuresidecar)"
            )
        self.name = name
        self.kind: ValueType = kind
        self.rows = rows
        self.message = message
        self.has_default = bool(message.has_default)
        self.mask = int(message.mask)
        self._statuses = _view(message.statuses, np.dtype(np.uint8))
        if self._statuses.size != rows:
            raise malformed(f"column {name!r} has {self._statuses.size} statuses for {rows} rows")
        times = message.event_timestamps
        if len(times) not in (0, rows * 8):
            raise malformed(
                f"column {name!r} has {len(times)} bytes of event timestamps; "
                f"expected {rows * 8} for {rows} rows"
            )
        self._times = _view(times, _TIME)
        self._offsets: npt.NDArray[np.uint32] | None = None
        elements = rows
        if kind.is_list:
            self._offsets = self._read_offsets(message.offsets)
            elements = int(self._offsets[-1]) if self._offsets.size else 0
        self._data: npt.NDArray[Any] | None = None
        if kind.dtype is not None:
            data = message.data
            if len(data) != elements * kind.dtype.itemsize:
                raise malformed(
                    f"column {name!r} ({kind.name}) has {len(data)} bytes of data; expected "
                    f"{elements * kind.dtype.itemsize} for {elements} values"
                )
            self._data = _view(data, kind.dtype)
        else:
            count = len(message.strings) if kind.element == "string" else len(message.binaries)
            if count != elements:
                raise malformed(
                    f"column {name!r} ({kind.name}) has {count} values; expected {elements}"
                )

    def _read_offsets(self, raw: bytes) -> npt.NDArray[np.uint32]:
        if self.rows == 0 and not raw:
            return _view(raw, _OFFSET)
        if len(raw) != (self.rows + 1) * _OFFSET.itemsize:
            raise malformed(
                f"column {self.name!r} has {len(raw)} bytes of list offsets; expected "
                f"{(self.rows + 1) * _OFFSET.itemsize} for {self.rows} rows"
            )
        offsets = _view(raw, _OFFSET)
        if offsets[0] != 0 or bool(np.any(offsets[1:] < offsets[:-1])):
            raise malformed(
                f"column {self.name!r} has list offsets that do not start at 0 and grow"
            )
        return offsets

    @property
    def numeric(self) -> bool:
        return self.kind.numeric

    def describe(self) -> str:
        """The column's type for error messages."""
        if self.mask == pb.MASK_HASH:
            return f"{self.kind.name}, masked by hash"
        return self.kind.name

    def statuses(self) -> npt.NDArray[np.uint8]:
        return self._statuses

    def valid(self) -> npt.NDArray[np.bool_]:
        """Rows that hold a value, by the rules of the wire contract."""
        # Recomputed on each call (a few vector compares) rather than kept: no memory held.
        st = self._statuses
        valid: npt.NDArray[np.bool_] = np.equal(st, Status.PRESENT)
        if self.has_default:
            valid |= st == Status.NOT_FOUND
            valid |= st == Status.STALE
        if self.mask == pb.MASK_HASH:
            valid |= st == Status.MASKED
        return valid

    def event_times(self) -> npt.NDArray[np.datetime64]:
        if self._times.size == 0:
            return np.full(self.rows, _NAT)
        return np.where(self._times == 0, _NAT, self._times.view("<M8[ns]"))

    def elements(self) -> npt.NDArray[Any]:
        """All fixed-width elements in row order: a read-only view, no copy."""
        if self._data is None:
            raise TypeError(f"{self.name!r} holds {self.kind.name} values, not fixed-width ones")
        return self._data

    def values(self) -> ColumnValues:
        kind = self.kind
        if not kind.is_list:
            if self._data is not None:
                return self._data
            return list(self._texts())
        offsets = self._offsets_or_empty()
        if self._data is not None:
            if self.rows == 0:
                return []
            # np.split slices the one buffer: each row is a view, not a copy.
            return np.split(self._data, offsets[1:-1].astype(np.intp))
        items = self._texts()
        bounds = offsets.tolist()
        return [list(items[bounds[i] : bounds[i + 1]]) for i in range(self.rows)]

    def python_values(self) -> list[Any]:
        """One Python value per row, None where the row holds none."""
        valid = self.valid().tolist()
        kind = self.kind
        flat: list[Any]
        if self._data is None:
            flat = list(self._texts())
        elif kind.element == "timestamp":
            flat = [_datetime(ns) for ns in self._data.view("<i8").tolist()]
        else:
            flat = self._data.tolist()
        if kind.is_list:
            bounds = self._offsets_or_empty().tolist()
            rows: list[Any] = [flat[bounds[i] : bounds[i + 1]] for i in range(self.rows)]
        else:
            rows = flat
        return [value if ok else None for value, ok in zip(rows, valid, strict=True)]

    def matrix(self, dim: int | None, dtype: npt.DTypeLike | None) -> npt.NDArray[Any]:
        """Rows x dim of an equal-length numeric list column; NaN rows where no value."""
        kind = self.kind
        if not kind.is_list or kind.dtype is None or kind.element == "timestamp":
            raise TypeError(
                f"matrix() needs a numeric list feature such as float_list; {self.name!r} is "
                f"{self.describe()}"
            )
        out_dtype = np.dtype(dtype) if dtype is not None else _float_dtype(kind.dtype)
        if out_dtype.kind != "f":
            raise TypeError(
                f"matrix(dtype=...): needs a floating dtype to hold NaN, got {out_dtype}"
            )
        offsets = self._offsets_or_empty().astype(np.intp)
        flat = self.elements()
        valid = self.valid()
        width = self._width(offsets, valid, dim)
        if (
            bool(valid.all())
            and out_dtype == flat.dtype
            and flat.size == self.rows * width
            and bool(np.all(np.diff(offsets) == width))
        ):
            # Every row present and packed back to back: the buffer already is the matrix.
            return flat.reshape(self.rows, width)
        out = np.full((self.rows, width), np.nan, dtype=out_dtype)
        rows = np.flatnonzero(valid)
        if rows.size and width:
            out[rows] = flat[offsets[rows][:, None] + np.arange(width)]
        return out

    def _width(
        self, offsets: npt.NDArray[np.intp], valid: npt.NDArray[np.bool_], dim: int | None
    ) -> int:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 0):
            raise ValueError(f"matrix(dim=...): expected an int >= 0, got {dim!r}")
        lengths = np.diff(offsets)[valid] if offsets.size else np.zeros(0, dtype=np.intp)
        if lengths.size == 0:
            return dim or 0
        width = int(lengths[0])
        uneven = np.flatnonzero(lengths != width)
        rows = np.flatnonzero(valid)
        if uneven.size:
            other = int(uneven[0])
            raise ValueError(
                f"{self.name!r}: rows hold lists of different lengths (row {int(rows[0])} has "
                f"{width}, row {int(rows[other])} has {int(lengths[other])}); matrix() needs "
                "one length"
            )
        if dim is not None and dim != width:
            raise ValueError(f"{self.name!r}: lists have {width} elements, not dim={dim}")
        return width

    def _offsets_or_empty(self) -> npt.NDArray[np.uint32]:
        assert self._offsets is not None
        if self._offsets.size == 0:
            return np.zeros(1, dtype=np.uint32)
        return self._offsets

    def _texts(self) -> Any:
        return self.message.strings if self.kind.element == "string" else self.message.binaries


def _view(raw: bytes, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    return np.frombuffer(raw, dtype=dtype)


def _float_dtype(element: np.dtype[Any]) -> np.dtype[Any]:
    return element if element.kind == "f" else np.dtype(np.float64)


def _datetime(ns: int) -> datetime | None:
    if ns == _INT64_MIN:
        return None  # NaT: Feast's null item inside a timestamp list
    return _EPOCH + timedelta(microseconds=ns // 1000)
