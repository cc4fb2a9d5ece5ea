"""CSV cells (text) as typed values, strictly (pure).

An empty cell is null. Numbers must look like numbers (`1.5` is not an int64, `1_000` is not a
number), bools are true/false/1/0 in any case, bytes are base64, timestamps are ISO-8601 (no
offset means UTC) or Unix seconds, lists are JSON arrays. Whole columns of plain numbers are
checked by one regular expression and converted by NumPy; anything else goes cell by cell, so a
`CellError` names the first cell that does not convert, as it was written.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import numpy as np

from .cells import (
    FLOAT32_MAX,
    INT_RANGE,
    PYTHON_SCALARS,
    CellError,
    Values,
    bad_item,
    datetime_ns,
    fits_float,
    in_ns_range,
    noun,
)
from .valuetypes import ValueKind

_NS: Final = 1_000_000_000
_INT_TEXT: Final = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT: Final = r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)"
_FLOAT_ONE: Final = re.compile(_FLOAT_TEXT, re.IGNORECASE)
# A whole column checked by one regex run over its cells joined by newlines.
_FLOAT_ALL: Final = re.compile(rf"(?:{_FLOAT_TEXT}\n)*{_FLOAT_TEXT}", re.IGNORECASE)
_INT_ALL: Final = re.compile(r"(?:[+-]?[0-9]+\n)*[+-]?[0-9]+")
_BOOLS: Final = {"true": True, "false": False, "1": True, "0": False}
_UNIX_SECONDS: Final = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]{1,9}))?")
_ISO: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?)?"
    r"(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)


def parse_timestamp_text(text: str) -> int:
    """Unix nanoseconds of ISO-8601 (no offset means UTC) or Unix seconds text."""
    match = _UNIX_SECONDS.fullmatch(text)
    if match:
        sign, whole, fraction = match.groups()
        ns = int(whole) * _NS + int((fraction or "").ljust(9, "0"))
        return in_ns_range(-ns if sign == "-" else ns)
    match = _ISO.fullmatch(text)
    if match is None:
        raise ValueError(
            "is not a timestamp (use ISO-8601, e.g. 2024-05-01T12:00:00Z, or Unix seconds)"
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        stamp = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=_offset(offset),
        )
    except ValueError as exc:
        raise ValueError(f"is not a timestamp ({exc})") from None
    return in_ns_range(datetime_ns(stamp) + int((fraction or "").ljust(9, "0")))


def _offset(text: str | None) -> timezone:
    if not text or text in "Zz":
        return UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"bad UTC offset {text!r}")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def _text_int(element: str) -> Callable[[str], Any]:
    low, high = INT_RANGE[element]

    def parse(text: str) -> int:
        if not _INT_TEXT.fullmatch(text):
            raise ValueError(f"is not {noun(element)}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"is out of range for {element}")
        return value

    return parse


def _text_float(element: str) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        if not _FLOAT_ONE.fullmatch(text):
            raise ValueError(f"is not {noun(element)}")
        return fits_float(float(text), element)

    return parse


def _text_bool(text: str) -> bool:
    value = _BOOLS.get(text.lower())
    if value is None:
        raise ValueError("is not a bool (use true, false, 1 or 0)")
    return value


def _text_bytes(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64 text (bytes values are written in base64)") from None


_TEXT_SCALARS: Final[dict[str, Callable[[str], Any]]] = {
    "int32": _text_int("int32"),
    "int64": _text_int("int64"),
    "float": _text_float("float"),
    "double": _text_float("double"),
    "bool": _text_bool,
    "string": str,
    "bytes": _text_bytes,
    "timestamp": parse_timestamp_text,
}


def parse_text(text: str, kind: ValueKind) -> Any:
    """The typed value of one non-empty CSV cell; ValueError(problem) if it does not convert."""
    if not kind.is_list:
        return _TEXT_SCALARS[kind.element](text)
    try:
        items = json.loads(text)
    except ValueError:
        items = None
    if not isinstance(items, list):
        raise ValueError(f"is not {noun(kind.name)} (write lists as JSON arrays, e.g. [1, 2])")
    return [_json_item(item, i, kind) for i, item in enumerate(items)]


def _json_item(item: Any, index: int, kind: ValueKind) -> Any:
    element = kind.element
    if item is None:
        raise bad_item(kind, index, item, "")
    try:
        if element == "bytes" and isinstance(item, str):
            return _text_bytes(item)
        if element == "timestamp" and isinstance(item, str):
            return parse_timestamp_text(item)
        if element == "timestamp" and isinstance(item, int) and not isinstance(item, bool):
            return in_ns_range(item * _NS)  # JSON numbers are Unix seconds, as in cells
        if element == "timestamp":
            raise ValueError("is not a timestamp (use ISO-8601 text or integer Unix seconds)")
        return PYTHON_SCALARS[element](item)
    except ValueError as exc:
        raise bad_item(kind, index, item, str(exc)) from None


def parse_text_column(cells: Sequence[str], kind: ValueKind) -> Values:
    """Typed values of CSV cells (an empty cell is null); CellError on the first bad one."""
    if not kind.is_list and kind.element in ("double", "float", "int32", "int64") and cells:
        fast = _numeric_text(cells, kind.element)
        if fast is not None:
            return fast
    parse = _TEXT_SCALARS[kind.element] if not kind.is_list else None
    out: list[Any] = []
    for i, cell in enumerate(cells):
        if cell == "":
            out.append(None)
            continue
        try:
            out.append(parse(cell) if parse is not None else parse_text(cell, kind))
        except ValueError as exc:
            raise CellError(i, cell, str(exc)) from None
    return out


def _numeric_text(cells: Sequence[str], element: str) -> np.ndarray | None:
    """The column as one NumPy array when every cell is a plain number; None otherwise."""
    joined = "\n".join(cells)
    try:
        if element in ("double", "float"):
            if _FLOAT_ALL.fullmatch(joined):
                array = np.array(list(map(float, cells)), dtype=np.float64)
                if element == "float" and bool((np.abs(array) > FLOAT32_MAX).any()):
                    return None  # the per-cell path names the cell as written
                return array
        elif _INT_ALL.fullmatch(joined):
            array = np.array(list(map(int, cells)), dtype=np.int64)
            low, high = INT_RANGE[element]
            if int(array.min()) < low or int(array.max()) > high:
                return None  # the per-cell path names the cell as written
            return array
    except (ValueError, OverflowError):
        pass  # a cell holding a newline, or an int beyond int64: the per-cell path says which
    return None
