"""Feast's `Value` and `Timestamp` protobuf bytes, read and written without generated code (pure).

Reading turns the raw values of one feature for every row into a `Column`: statuses plus NumPy
buffers (or Python strings/bytes for text types). Scalars of fixed width take a vectorized path
when every row holds the same one-field encoding, which is how Feast writes them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

# Row statuses as the wire numbers them: the client's definition serves both sides.
from featuresidecar import Status

from .valuetypes import KINDS, ValueKind


class DecodeError(ValueError):
    """Stored bytes that are not a Feast Value of the declared type."""


_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_NULL_FIELD: Final = 19
_NS: Final = 1_000_000_000

# Feast stores timestamps (values and list elements) as Unix seconds; the wire carries nanoseconds.
_TIMESTAMP_SCALE: Final = _NS
# Feast writes a null timestamp as INT64_MIN seconds; NumPy reads INT64_MIN as NaT.
_NULL_TIMESTAMP: Final = -(2**63)

# Stored scalar fields accepted for each declared element type (widening only), by field number.
_ACCEPT: Final[dict[str, frozenset[int]]] = {
    "bytes": frozenset({1}),
    "string": frozenset({2}),
    "int32": frozenset({3}),
    "int64": frozenset({3, 4}),
    "double": frozenset({5, 6, 3, 4}),
    "float": frozenset({6}),
    "bool": frozenset({7}),
    "timestamp": frozenset({8}),
}
_ELEMENT_OF_FIELD: Final = {
    1: "bytes",
    2: "string",
    3: "int32",
    4: "int64",
    5: "double",
    6: "float",
    7: "bool",
    8: "timestamp",
}


@dataclass
class Column:
    """One feature's values for every row of a request, ready for the wire."""

    kind: ValueKind
    statuses: np.ndarray  # uint8, one per row
    # Fixed-width elements (one per row, or the flat list elements); None for text types.
    data: np.ndarray | None = None
    # str or bytes elements for text types.
    items: list[Any] | None = None
    # List kinds: uint32, rows + 1.
    offsets: np.ndarray | None = None
    timestamps: np.ndarray | None = None  # int64 ns, one per row
    has_default: bool = False
    mask: int = 0
    decode_errors: int = 0

    @property
    def rows(self) -> int:
        return len(self.statuses)

    def row_values(self) -> list[Any]:
        """Python values per row (None where a row holds nothing): for rules and tests."""
        holds = self.holds_value()
        out: list[Any] = []
        for i in range(self.rows):
            if not holds[i]:
                out.append(None)
            elif self.kind.is_list:
                assert self.offsets is not None
                start, end = int(self.offsets[i]), int(self.offsets[i + 1])
                out.append(self._elements(start, end))
            else:
                out.append(self._elements(i, i + 1)[0])
        return out

    def _elements(self, start: int, end: int) -> list[Any]:
        if self.data is not None:
            return list(self.data[start:end].tolist())
        assert self.items is not None
        return self.items[start:end]

    def holds_value(self) -> np.ndarray:
        st = self.statuses
        held = st == Status.PRESENT
        if self.has_default:
            held |= (st == Status.NOT_FOUND) | (st == Status.STALE)
        if self.mask == 1:  # hash: masked rows carry the hash
            held |= st == Status.MASKED
        return np.asarray(held)


# --- varints ------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 10 bytes")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def varint(value: int) -> bytes:
    """A protobuf varint; negative numbers as their 64-bit two's complement (10 bytes)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _put_varint(out: bytearray, value: int) -> None:
    out += varint(value)


# --- reading a Value ----------------------------------------------------------------------------

_NULL: Final = object()


def _fields(raw: bytes) -> tuple[int, int, Any]:
    """The last oneof field of a Value: (field number, wire type, payload)."""
    pos = 0
    last: tuple[int, int, Any] = (0, 0, None)
    end = len(raw)
    payload: Any
    while pos < end:
        tag, pos = _varint(raw, pos)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            payload, pos = _varint(raw, pos)
        elif wire == _I64:
            payload, pos = raw[pos : pos + 8], pos + 8
        elif wire == _I32:
            payload, pos = raw[pos : pos + 4], pos + 4
        elif wire == _LEN:
            length, pos = _varint(raw, pos)
            payload, pos = raw[pos : pos + length], pos + length
        else:
            raise DecodeError(f"unsupported wire type {wire}")
        if pos > end:
            raise DecodeError("truncated value")
        last = (number, wire, payload)
    return last


def _scalar(number: int, wire: int, payload: Any, element: str) -> Any:
    stored = _ELEMENT_OF_FIELD.get(number)
    if stored is None or number not in _ACCEPT[element]:
        raise DecodeError(f"stored {stored or f'field {number}'} value where {element} is declared")
    if stored in ("int32", "int64", "bool", "timestamp"):
        if wire != _VARINT:
            raise DecodeError(f"bad encoding of {stored}")
        if stored == "bool":
            return bool(payload)
        value = _signed64(payload)
        if stored == "int32":
            value = ((value + 2**31) % 2**32) - 2**31
        if element == "timestamp":
            return None if value == _NULL_TIMESTAMP else _seconds_to_ns(value)
        return float(value) if element == "double" else value
    if stored == "double":
        if wire != _I64:
            raise DecodeError("bad encoding of double")
        return struct.unpack("<d", payload)[0]
    if stored == "float":
        if wire != _I32:
            raise DecodeError("bad encoding of float")
        return struct.unpack("<f", payload)[0]
    if wire != _LEN:
        raise DecodeError(f"bad encoding of {stored}")
    if stored == "string":
        try:
            return bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("string value is not UTF-8") from exc
    return bytes(payload)


_PACKED_FORMATS: Final = {"double": ("d", 8), "float": ("f", 4)}


def _list(payload: bytes, element: str) -> list[Any]:
    """Elements of a Feast *List message: field 1, packed or not."""
    out: list[Any] = []
    pos, end = 0, len(payload)
    while pos < end:
        tag, pos = _varint(payload, pos)
        number, wire = tag >> 3, tag & 7
        if number != 1:
            raise DecodeError(f"unexpected field {number} in a list")
        if wire == _LEN and element not in ("string", "bytes"):
            length, pos = _varint(payload, pos)
            chunk_end = pos + length
            if chunk_end > end:
                raise DecodeError("truncated list")
            if element in _PACKED_FORMATS:
                code, size = _PACKED_FORMATS[element]
                if length % size:
                    raise DecodeError("truncated packed list")
                out.extend(struct.unpack(f"<{length // size}{code}", payload[pos:chunk_end]))
                pos = chunk_end
            else:
                while pos < chunk_end:
                    value, pos = _varint(payload, pos)
                    out.append(_int_element(value, element))
        elif wire == _LEN:
            length, pos = _varint(payload, pos)
            if pos + length > end:
                raise DecodeError("truncated list")
            chunk = payload[pos : pos + length]
            pos += length
            if element == "string":
                try:
                    out.append(bytes(chunk).decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise DecodeError("string element is not UTF-8") from exc
            else:
                out.append(bytes(chunk))
        elif wire == _VARINT:
            value, pos = _varint(payload, pos)
            out.append(_int_element(value, element))
        elif wire == _I64 and element == "double":
            out.append(struct.unpack("<d", payload[pos : pos + 8])[0])
            pos += 8
        elif wire == _I32 and element == "float":
            out.append(struct.unpack("<f", payload[pos : pos + 4])[0])
            pos += 4
        else:
            raise DecodeError(f"bad encoding of a {element} list")
    if pos != end:
        raise DecodeError("truncated list")
    return out


def _int_element(value: int, element: str) -> Any:
    if element == "bool":
        return bool(value)
    signed = _signed64(value)
    if element == "int32":
        return ((signed + 2**31) % 2**32) - 2**31
    if element == "timestamp":
        return _NULL_TIMESTAMP if signed == _NULL_TIMESTAMP else _seconds_to_ns(signed)
    if element == "int64":
        return signed
    raise DecodeError(f"integer element in a {element} list")


def _stored_name(number: int) -> str:
    if number in _ELEMENT_OF_FIELD:
        return _ELEMENT_OF_FIELD[number]
    if number - 10 in _ELEMENT_OF_FIELD:
        return f"{_ELEMENT_OF_FIELD[number - 10]}_list"
    return f"field {number}"


def _seconds_to_ns(seconds: int) -> int:
    ns = seconds * _TIMESTAMP_SCALE
    if not _NULL_TIMESTAMP < ns < 2**63:
        raise DecodeError(f"timestamp {seconds} s is outside the nanosecond range")
    return ns


def decode_value(raw: bytes, kind: ValueKind) -> Any:
    """The Python value of stored Value bytes; None for a null value."""
    number, wire, payload = _fields(raw)
    if number == 0 or number == _NULL_FIELD:
        return None
    if kind.is_list:
        if number != kind.number or wire != _LEN:
            raise DecodeError(f"stored {_stored_name(number)} value where {kind.name} is declared")
        return _list(payload, kind.element)
    return _scalar(number, wire, payload, kind.element)


# --- columns ------------------------------------------------------------------------------------

# Feast writes one field: tag byte then the fixed-width payload. For these kinds the whole column
# is decoded by NumPy when every row has exactly that shape.
_FIXED_FAST: Final = {"double": (0x29, "<f8", 8), "float": (0x35, "<f4", 4)}


def decode_column(raws: Sequence[bytes | None], kind: ValueKind) -> Column:
    """Statuses and values of one feature for every row; `None` means not stored."""
    rows = len(raws)
    fast = _FIXED_FAST.get(kind.name)
    if fast is not None and rows:
        tag, dtype, size = fast
        if all(r is not None and len(r) == size + 1 for r in raws):
            block = np.frombuffer(b"".join(raws), dtype=np.uint8).reshape(rows, size + 1)  # type: ignore[arg-type]
            if bool((block[:, 0] == tag).all()):
                data = np.ascontiguousarray(block[:, 1:]).view(dtype).reshape(rows)
                statuses = np.full(rows, Status.PRESENT, dtype=np.uint8)
                return Column(kind, statuses, data=data)
    packed = _PACKED_LISTS.get(kind.name)
    if packed is not None and rows:
        column = _packed_lists(raws, kind, *packed)
        if column is not None:
            return column
    statuses = np.empty(rows, dtype=np.uint8)
    values: list[Any] = [None] * rows
    errors = 0
    for i, raw in enumerate(raws):
        if raw is None:
            statuses[i] = Status.NOT_FOUND
            continue
        try:
            value = decode_value(raw, kind)
        except DecodeError:
            value = None
            errors += 1
        statuses[i] = Status.NULL_VALUE if value is None else Status.PRESENT
        values[i] = value
    column = build_column(kind, statuses, values)
    column.decode_errors = errors
    return column


# Float and double lists (embeddings) as Feast writes them: list tag, length, then one packed
# field 1. When every row has the same header (same number of elements), one NumPy view reads
# all of them.
_PACKED_LISTS: Final = {"float_list": ("<f4", 4), "double_list": ("<f8", 8)}


def _packed_lists(
    raws: Sequence[bytes | None], kind: ValueKind, dtype: str, width: int
) -> Column | None:
    first = raws[0]
    if not first:
        return None
    try:
        tag, pos = _varint(first, 0)
        _, pos = _varint(first, pos)
        if tag != (kind.number << 3 | _LEN) or first[pos : pos + 1] != b"\x0a":
            return None
        length, start = _varint(first, pos + 1)
    except DecodeError:
        return None
    size = len(first)
    if start + length != size or length % width or not length:
        return None
    try:
        blob = b"".join(raws)  # type: ignore[arg-type]
    except TypeError:
        return None  # a row without a value
    rows = len(raws)
    if len(blob) != rows * size:
        return None
    block = np.frombuffer(blob, dtype=np.uint8).reshape(rows, size)
    if rows > 1 and not bool((block[:, :start] == block[0, :start]).all()):
        return None
    count = length // width
    data = np.ascontiguousarray(block[:, start:]).view(dtype).reshape(rows * count)
    offsets = np.arange(0, rows * count + 1, count, dtype=np.uint32)
    statuses = np.full(rows, Status.PRESENT, dtype=np.uint8)
    return Column(kind, statuses, data=data, offsets=offsets)


def build_column(kind: ValueKind, statuses: np.ndarray, values: Sequence[Any]) -> Column:
    """A column from Python values per row (None where a row holds nothing)."""
    if kind.is_list:
        lengths = [len(v) if v is not None else 0 for v in values]
        offsets = np.zeros(len(values) + 1, dtype=np.uint32)
        np.cumsum(lengths, out=offsets[1:])
        flat = [x for v in values if v for x in v]
        if kind.dtype is not None:
            return Column(kind, statuses, data=np.asarray(flat, dtype=kind.dtype), offsets=offsets)
        return Column(kind, statuses, items=flat, offsets=offsets)
    if kind.dtype is not None:
        filled = [0 if v is None else v for v in values]
        return Column(kind, statuses, data=np.asarray(filled, dtype=kind.dtype))
    empty: Any = "" if kind.element == "string" else b""
    return Column(kind, statuses, items=[empty if v is None else v for v in values])


# --- writing ------------------------------------------------------------------------------------


def _scalar_payload(out: bytearray, element: str, value: Any) -> None:
    """Appends tag and payload of a scalar oneof field."""
    number = KINDS[element].number
    if element in ("int32", "int64", "bool", "timestamp"):
        out.append(number << 3 | _VARINT)
        if element == "timestamp":
            value = _to_seconds(value)
        _put_varint(out, int(value))
    elif element == "double":
        out.append(number << 3 | _I64)
        out += struct.pack("<d", value)
    elif element == "float":
        out.append(number << 3 | _I32)
        out += struct.pack("<f", value)
    else:
        data = value.encode("utf-8") if element == "string" else bytes(value)
        out.append(number << 3 | _LEN)
        _put_varint(out, len(data))
        out += data


def _to_seconds(ns: int) -> int:
    ns = int(ns)
    return _NULL_TIMESTAMP if ns == _NULL_TIMESTAMP else ns // _TIMESTAMP_SCALE


def encode_value(value: Any, kind: ValueKind) -> bytes:
    """Feast Value bytes of a Python value (None gives the empty, null Value)."""
    if value is None:
        # Feast's own null timestamp is INT64_MIN seconds; other nulls are the empty Value.
        return encode_value(_NULL_TIMESTAMP, kind) if kind.name == "timestamp" else b""
    out = bytearray()
    element = kind.element
    if not kind.is_list:
        _scalar_payload(out, element, value)
        return bytes(out)
    inner = bytearray()
    if element in ("string", "bytes"):
        for item in value:
            data = item.encode("utf-8") if element == "string" else bytes(item)
            inner.append(0x0A)
            _put_varint(inner, len(data))
            inner += data
    elif value:
        packed = bytearray()
        if element in _PACKED_FORMATS:
            code, _ = _PACKED_FORMATS[element]
            packed += struct.pack(f"<{len(value)}{code}", *value)
        else:
            for item in value:
                _put_varint(packed, _to_seconds(item) if element == "timestamp" else int(item))
        inner.append(0x0A)
        _put_varint(inner, len(packed))
        inner += packed
    tag = kind.number << 3 | _LEN
    _put_varint(out, tag)
    _put_varint(out, len(inner))
    out += inner
    return bytes(out)


def encode_timestamp(ns: int) -> bytes:
    """google.protobuf.Timestamp bytes (zero fields omitted, as protobuf does)."""
    seconds, nanos = divmod(int(ns), _NS)
    out = bytearray()
    if seconds:
        out.append(0x08)
        _put_varint(out, seconds)
    if nanos:
        out.append(0x10)
        _put_varint(out, nanos)
    return bytes(out)


def decode_timestamp(raw: bytes) -> int:
    """Unix nanoseconds of google.protobuf.Timestamp bytes."""
    seconds = nanos = 0
    pos = 0
    while pos < len(raw):
        tag, pos = _varint(raw, pos)
        if tag & 7 != _VARINT:
            raise DecodeError("bad timestamp encoding")
        value, pos = _varint(raw, pos)
        if tag >> 3 == 1:
            seconds = _signed64(value)
        elif tag >> 3 == 2:
            nanos = _signed64(value)
    return seconds * _NS + nanos


__all__ = [
    "Column",
    "DecodeError",
    "Status",
    "build_column",
    "decode_column",
    "decode_timestamp",
    "decode_value",
    "encode_timestamp",
    "encode_value",
]
