"""The input files of `feature-sidecar load`: CSV and Parquet, read in batches of typed columns.

CSV cells are text and go through `cells.parse_text_column`; Parquet columns keep their native
types (pyarrow is imported only when a Parquet file is read). Rows are numbered as a person
finds them: a CSV data row by its line number (the header is line 1), a Parquet row by its
1-based index. Every problem is a `loader.DataError` that names the file.
"""

from __future__ import annotations

import bisect
import csv
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from .cell_text import parse_text_column, parse_timestamp_text
from .cells import CellError, MissingValue, Values, noun
from .loader import Batch, DataError, UsageError
from .valuetypes import ValueKind

FORMATS = ("csv", "parquet")
_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_NS = 1_000_000_000


class Table(Protocol):
    source: str
    columns: tuple[str, ...]

    def estimate_rows(self) -> int | None: ...

    def batches(
        self, kinds: Mapping[str, ValueKind], timestamp_column: str | None, batch_size: int
    ) -> Iterator[Batch]: ...


def format_of(path: str, given: str | None) -> str:
    if given:
        if given not in FORMATS:
            raise UsageError(f"--format {given!r}: use one of {', '.join(FORMATS)}")
        return given
    found = _EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if found is None:
        raise UsageError(
            f"{path}: cannot tell the format from the file name (.csv, .parquet or .pq); "
            "give --format csv or --format parquet"
        )
    return found


def open_table(path: str, fmt: str) -> Table:
    """The table in `path`; UsageError if it cannot be opened, DataError if it is not readable."""
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    if fmt == "parquet":
        return ParquetTable(path)
    return CsvTable(path)


def _check_header(source: str, names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{source}: column {name!r} appears twice in the header")
        seen.add(name)


def _fail(source: str, row: int, column: str, exc: CellError) -> DataError:
    return DataError(f"{source}: row {row}, column {column!r}: {exc}")


# --- CSV ----------------------------------------------------------------------------------------


class CsvTable:
    """A CSV file with a header line; UTF-8 (a byte order mark is fine), comma-separated."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.source = path
        with self._open() as handle:
            try:
                header = next(csv.reader(self._lines(handle)), None)
            except csv.Error as exc:
                raise DataError(f"{path}: row 1: {_reason(exc)}") from None
        if not header:
            raise DataError(f"{path}: the first line must name the columns, and it is empty")
        _check_header(path, header)
        self.columns = tuple(header)

    def _open(self) -> Any:
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise UsageError(f"{self.path}: {exc.strerror}") from None

    def _lines(self, handle: Any) -> Iterator[str]:
        """Text lines, decoded one by one so that bad UTF-8 is pinned to its line."""
        for number, raw in enumerate(handle, 1):
            try:
                text: str = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{self.source}: row {number}: not UTF-8 text") from None
            yield text[1:] if number == 1 and text.startswith("\ufeff") else text

    def estimate_rows(self) -> int | None:
        """Data lines (a quoted value may span lines, so this can overshoot): for progress."""
        lines = 0
        last = b"\n"
        with open(self.path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        return max(lines + (last != b"\n") - 1, 0)

    def batches(
        self, kinds: Mapping[str, ValueKind], timestamp_column: str | None, batch_size: int
    ) -> Iterator[Batch]:
        index = {name: i for i, name in enumerate(self.columns)}
        width = len(self.columns)
        with self._open() as handle:
            reader = csv.reader(self._lines(handle))
            line = 0
            records: list[list[str]] = []
            numbers: list[int] = []
            try:
                next(reader)
                line = reader.line_num
                for record in reader:
                    start, line = line + 1, reader.line_num
                    if not record:
                        continue  # a blank line
                    if len(record) != width:
                        raise DataError(
                            f"{self.source}: row {start}: {len(record)} fields where the "
                            f"header has {width}"
                        )
                    records.append(record)
                    numbers.append(start)
                    if len(records) == batch_size:
                        yield self._batch(records, numbers, index, kinds, timestamp_column)
                        records, numbers = [], []
            except csv.Error as exc:
                raise DataError(f"{self.source}: row {line + 1}: {_reason(exc)}") from None
            if records:
                yield self._batch(records, numbers, index, kinds, timestamp_column)

    def _batch(
        self,
        records: list[list[str]],
        numbers: list[int],
        index: Mapping[str, int],
        kinds: Mapping[str, ValueKind],
        timestamp_column: str | None,
    ) -> Batch:
        cells = list(zip(*records, strict=True))
        columns: dict[str, Values] = {}
        name = ""
        try:
            for name, kind in kinds.items():
                columns[name] = parse_text_column(cells[index[name]], kind)
            timestamps = None
            if timestamp_column is not None:
                name = timestamp_column
                timestamps = _text_event_times(cells[index[name]])
        except CellError as exc:
            raise _fail(self.source, numbers[exc.index], name, exc) from None
        return Batch(columns, numbers, timestamps)


def _text_event_times(cells: Sequence[str]) -> list[int]:
    out = []
    for i, cell in enumerate(cells):
        if cell == "":
            raise MissingValue(i, "an event time")
        try:
            out.append(parse_timestamp_text(cell))
        except ValueError as exc:
            raise CellError(i, cell, str(exc)) from None
    return out


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]


# --- Parquet ------------------------------------------------------------------------------------


class ParquetTable:
    def __init__(self, path: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.source = path
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({_reason(exc)})") from None
        self.columns = tuple(self._file.schema_arrow.names)
        _check_header(path, self.columns)

    def estimate_rows(self) -> int | None:
        return int(self._file.metadata.num_rows)

    def batches(
        self, kinds: Mapping[str, ValueKind], timestamp_column: str | None, batch_size: int
    ) -> Iterator[Batch]:
        import pyarrow as pa

        wanted = list(dict.fromkeys([*kinds, *([timestamp_column] if timestamp_column else [])]))
        if timestamp_column is not None:
            stamp_type = self._file.schema_arrow.field(timestamp_column).type
            if not (_is_timestamp_like(stamp_type)):
                raise DataError(
                    f"{self.source}: column {timestamp_column!r} has type {stamp_type}; the "
                    "timestamp column needs a timestamp type, integer Unix seconds or text"
                )
        start = 0
        records = self._file.iter_batches(batch_size=batch_size, columns=wanted)
        while True:
            try:
                record = next(records, None)
            except (pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"{self.source}: cannot read the rows after row {start} ({_reason(exc)})"
                ) from None
            if record is None:
                return
            rows = range(start + 1, start + record.num_rows + 1)
            columns: dict[str, Values] = {}
            name = ""
            try:
                for name, kind in kinds.items():
                    columns[name] = arrow_values(record.column(name), kind)
                timestamps = None
                if timestamp_column is not None:
                    name = timestamp_column
                    timestamps = arrow_event_times(record.column(name))
            except CellError as exc:
                raise _fail(self.source, rows[exc.index], name, exc) from None
            yield Batch(columns, rows, timestamps)
            start += record.num_rows


def arrow_values(array: Any, kind: ValueKind) -> Values:
    """Values of one Arrow column for `cells.encode_column`: NumPy where the type allows.

    A string column for a non-text feature is read like CSV cells; any other type that is not
    the feature's own goes value by value, so the error names the first value that does not fit.
    """
    import pyarrow.types as pt

    if pt.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind_type = array.type
    if kind.is_list and (
        pt.is_list(kind_type) or pt.is_large_list(kind_type) or pt.is_fixed_size_list(kind_type)
    ):
        return _arrow_lists(array, kind)
    if not kind.is_list:
        native = _arrow_scalars(array, kind.element)
        if native is not None:
            return native
    if pt.is_string(kind_type) or pt.is_large_string(kind_type):
        return parse_text_column(["" if v is None else v for v in array.to_pylist()], kind)
    return list(array.to_pylist())


def _arrow_scalars(array: Any, element: str) -> Values | None:
    """The column in the feature's own type, or None when its Arrow type is another."""
    import pyarrow.types as pt

    kind_type = array.type
    numeric = (
        (element in ("int32", "int64") and pt.is_integer(kind_type))
        or (
            element in ("float", "double")
            and (pt.is_integer(kind_type) or pt.is_floating(kind_type))
        )
        or (element == "bool" and pt.is_boolean(kind_type))
    )
    if numeric:
        data = array.fill_null(False if element == "bool" else 0).to_numpy(zero_copy_only=False)
        return _masked(data, array)
    if element == "timestamp" and (pt.is_timestamp(kind_type) or pt.is_integer(kind_type)):
        return _masked(_arrow_ns(array), array)
    if element == "string" and (pt.is_string(kind_type) or pt.is_large_string(kind_type)):
        return list(array.to_pylist())
    binary = pt.is_binary(kind_type) or pt.is_large_binary(kind_type)
    if element == "bytes" and (binary or pt.is_fixed_size_binary(kind_type)):
        return list(array.to_pylist())
    return None


def _is_timestamp_like(arrow_type: Any) -> bool:
    import pyarrow.types as pt

    return bool(
        pt.is_timestamp(arrow_type)
        or pt.is_integer(arrow_type)
        or pt.is_string(arrow_type)
        or pt.is_large_string(arrow_type)
    )


def _masked(data: np.ndarray, array: Any) -> np.ndarray:
    if not array.null_count:
        return data
    return np.ma.MaskedArray(data, mask=array.is_null().to_numpy(zero_copy_only=False))


_UNIT_NS = {"s": _NS, "ms": 1_000_000, "us": 1000, "ns": 1}


def _arrow_ns(array: Any) -> np.ndarray:
    """Unix nanoseconds of a timestamp column (any unit) or of integer Unix seconds."""
    import pyarrow as pa
    import pyarrow.types as pt

    if pt.is_timestamp(array.type):
        factor = _UNIT_NS[array.type.unit]
        raw = array.cast(pa.int64())
    else:
        factor = _NS
        raw = array
    values = raw.fill_null(0).to_numpy(zero_copy_only=False)
    if factor != 1:
        limit = (2**63 - 1) // factor
        too_big = (values > limit) | (values < -limit)
        if array.null_count:
            too_big &= ~array.is_null().to_numpy(zero_copy_only=False)
        if too_big.any():
            index = int(np.flatnonzero(too_big)[0])
            raise CellError(index, values[index].item(), "is out of range for a timestamp")
        return np.asarray(values, dtype=np.int64) * factor
    return np.asarray(values, dtype=np.int64)


def _arrow_lists(array: Any, kind: ValueKind) -> Values:
    """Per row: a NumPy slice (or list) of the elements, or None for a null list."""
    import pyarrow as pa
    import pyarrow.types as pt

    if pt.is_fixed_size_list(array.type):
        array = array.cast(pa.list_(array.type.value_type))
    child = array.values
    offsets = array.offsets.to_numpy(zero_copy_only=False).tolist()
    try:
        flat = None if child.null_count else _arrow_scalars(child, kind.element)
    except CellError as exc:
        row = bisect.bisect_right(offsets, exc.index) - 1
        raise CellError(row, array[row].as_py(), f"is not {noun(kind.name)} ({exc})") from None
    if flat is None:
        return list(array.to_pylist())  # value by value: names the bad item
    nulls = array.is_null().to_numpy(zero_copy_only=False).tolist()
    return [None if nulls[i] else flat[offsets[i] : offsets[i + 1]] for i in range(len(array))]


def arrow_event_times(array: Any) -> Values:
    """Event times from a timestamp column, integer Unix seconds or text; every row needs one."""
    import pyarrow.types as pt

    if pt.is_string(array.type) or pt.is_large_string(array.type):
        return _text_event_times(["" if v is None else v for v in array.to_pylist()])
    if array.null_count:
        first = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise MissingValue(first, "an event time")
    return _arrow_ns(array)
